"""A heartbeat answers the running attempts it holds (``leases``), in-process: the worker learns
which attempts are still its own, and that one the reaper handed to someone else is not."""

from __future__ import annotations

import uuid

import asyncpg
from aiohttp.test_utils import TestClient
from conftest import expire_lease
from helpers import call


async def test_a_heartbeat_lists_the_attempts_whose_leases_it_extended(
    client: TestClient, database_url: str
) -> None:
    project = f"leases-{uuid.uuid4().hex[:8]}"
    assert (await call(client, "POST", "/projects", {"name": project}))[0] == 201
    status, worker = await call(client, "POST", "/workers", {"name": "w", "project": project, "cpu": 4})
    assert status == 201
    batch = [{"name": f"j{i}", "task": "t"} for i in range(2)]
    assert (await call(client, "POST", f"/projects/{project}/jobs/batch", batch))[0] == 201
    claim = {"worker_id": worker["id"], "free_cpu": 2, "max_jobs": 2, "wait": 0}
    status, out = await call(client, "POST", f"/projects/{project}/claim", claim)
    assert status == 200
    first, second = sorted(out["jobs"], key=lambda j: j["id"])
    beat = f"/workers/{worker['id']}/heartbeat"
    running = {"running": [first["id"], second["id"]]}

    status, answer = await call(client, "POST", beat, running)
    assert status == 200 and answer["cancel"] == []
    assert answer["leases"] == [{"id": first["id"], "attempt": 1}, {"id": second["id"], "attempt": 1}]

    # The first job's lease runs out, the reaper requeues it, another worker takes it (attempt 2).
    await expire_lease(database_url, first["id"])
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT wn_reap(1000)") >= 1
    finally:
        await conn.close()
    status, taken = await call(
        client, "POST", f"/projects/{project}/claim", {"worker_name": "other", "wait": 0}
    )
    assert status == 200, taken
    got = [(j["id"], j["attempt"]) for j in taken["jobs"]]
    if got != [(first["id"], 2)]:  # say what the job was, and the claim mark, when it was not handed out
        conn = await asyncpg.connect(database_url)
        try:
            job = await conn.fetchrow(
                "SELECT status, attempt, available_at <= now() AS due, unmet_deps, worker_name FROM jobs"
                " WHERE id = $1",
                first["id"],
            )
            marks = await conn.fetchrow(
                "SELECT m.* FROM claim_marks m JOIN jobs j ON j.project_id = m.project_id WHERE j.id = $1",
                first["id"],
            )
        finally:
            await conn.close()
        raise AssertionError(f"claimed {got}, expected {[(first['id'], 2)]}: job {dict(job)}, mark {marks}")

    status, answer = await call(client, "POST", beat, running)
    assert status == 200
    assert answer["leases"] == [{"id": second["id"], "attempt": 1}]  # the first is no longer its own
