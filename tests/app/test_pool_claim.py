"""Claims of several projects (``POST /claim``): fair share between the projects, quotas and
concurrency keys held by the claim, the hand-off of a submission to a claim waiting for several
projects, and the answers to a malformed pool."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from conftest import wait_until
from helpers import call

from whatsnext.api.server.keys import hub_key


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def projects(client: TestClient, db: asyncpg.Connection, *shares: float) -> list[str]:
    """New projects with these shares."""
    names = []
    for share in shares:
        name = f"pool-{uuid.uuid4().hex[:8]}"
        assert (await call(client, "POST", "/projects", {"name": name}))[0] == 201
        await db.execute("UPDATE projects SET share = $2 WHERE name = $1", name, share)
        names.append(name)
    return names


async def queue(client: TestClient, project: str, n: int, **job: Any) -> list[int]:
    body = [{"name": f"j{i}", "task": "t", **job} for i in range(n)]
    status, out = await call(client, "POST", f"/projects/{project}/jobs/batch", body)
    assert status == 201, out
    return list(out["ids"])


async def pool_claim(client: TestClient, names: list[str], **body: Any) -> list[dict[str, Any]]:
    status, out = await call(client, "POST", "/claim", {"worker_name": "w", "projects": names, **body})
    assert status == 200, out
    return list(out["jobs"])


async def usage(db: asyncpg.Connection, project: str, value: float) -> None:
    """Give the project this much recent usage (as if its attempts had ended just now)."""
    await db.execute(
        "INSERT INTO project_usage (project_id, stripe, usage, attempts) "
        "SELECT id, 0, $2, 1 FROM projects WHERE name = $1 "
        "ON CONFLICT (project_id, stripe) DO UPDATE SET usage = excluded.usage, updated_at = now()",
        project,
        value,
    )


async def complete(client: TestClient, job: dict[str, Any]) -> None:
    status, out = await call(client, "POST", f"/jobs/{job['id']}/complete", {"attempt": job["attempt"]})
    assert status == 200, out


async def test_a_claim_of_several_projects_takes_from_each_and_names_the_project(
    client: TestClient, db: asyncpg.Connection
) -> None:
    a, b = await projects(client, db, 1, 1)
    await queue(client, a, 1)
    await queue(client, b, 1)
    jobs = await pool_claim(client, [a, b], free_cpu=4, max_jobs=4)
    assert sorted(j["project"] for j in jobs) == sorted([a, b])
    await queue(client, a, 1)
    status, out = await call(client, "POST", f"/projects/{a}/claim", {"worker_name": "w", "wait": 5})
    assert status == 200 and 0 <= out["waited"] < 1, "the leases began as the claim arrived"
    single = await call(client, "POST", f"/projects/{a}/claim", {"worker_name": "w"})
    assert single == (200, {"jobs": []})


async def test_the_next_job_goes_to_the_project_furthest_below_its_share(
    client: TestClient, db: asyncpg.Connection
) -> None:
    a, b = await projects(client, db, 2, 1)
    await queue(client, a, 3)
    await queue(client, b, 3)
    await usage(db, a, 300)  # 150 per share
    await usage(db, b, 100)  # 100 per share
    assert [j["project"] for j in await pool_claim(client, [a, b])] == [b]
    await usage(db, b, 400)
    assert [j["project"] for j in await pool_claim(client, [a, b])] == [a]


async def test_one_claim_of_many_jobs_is_shared_by_the_shares(
    client: TestClient, db: asyncpg.Connection
) -> None:
    a, b = await projects(client, db, 2, 1)
    await queue(client, a, 10)
    await queue(client, b, 10)
    jobs = await pool_claim(client, [a, b], free_cpu=6, max_jobs=6)
    assert Counter(j["project"] for j in jobs) == {a: 4, b: 2}


async def test_an_idle_share_is_used_by_the_others(client: TestClient, db: asyncpg.Connection) -> None:
    a, b = await projects(client, db, 100, 1)
    await queue(client, b, 3)
    jobs = await pool_claim(client, [a, b], free_cpu=3, max_jobs=3)
    assert [j["project"] for j in jobs] == [b, b, b]


@pytest.mark.parametrize(
    ("quota", "job", "capacity"),
    [
        (
            "max_gpus",
            {"required_accelerators": 1, "required_cpu": 1},
            {"free_cpu": 8, "free_accelerators": 8},
        ),
        ("max_cpus", {"required_cpu": 1}, {"free_cpu": 8}),
        ("max_running", {"required_cpu": 1}, {"free_cpu": 8}),
    ],
)
async def test_a_quota_caps_what_a_project_holds_across_claims(
    client: TestClient, db: asyncpg.Connection, quota: str, job: dict[str, int], capacity: dict[str, int]
) -> None:
    (a,) = await projects(client, db, 1)
    await db.execute(f"UPDATE projects SET {quota} = 2 WHERE name = $1", a)
    await queue(client, a, 5, **job)
    body = {"worker_name": "w", "max_jobs": 8, **capacity}
    first = (await call(client, "POST", f"/projects/{a}/claim", body))[1]["jobs"]
    assert len(first) == 2
    assert await pool_claim(client, [a], max_jobs=8, **capacity) == []
    await complete(client, first[0])
    assert len(await pool_claim(client, [a], max_jobs=8, **capacity)) == 1
    await db.execute(f"UPDATE projects SET {quota} = NULL WHERE name = $1", a)
    assert len(await pool_claim(client, [a], max_jobs=8, **capacity)) == 2


async def test_a_job_larger_than_its_quota_is_never_handed_out(
    client: TestClient, db: asyncpg.Connection
) -> None:
    (a,) = await projects(client, db, 1)
    await db.execute("UPDATE projects SET max_gpus = 1 WHERE name = $1", a)
    await queue(client, a, 1, required_accelerators=2)
    assert await pool_claim(client, [a], free_accelerators=4) == []


async def test_a_concurrency_key_caps_its_running_jobs_and_the_smallest_limit_holds(
    client: TestClient, db: asyncpg.Connection
) -> None:
    (a,) = await projects(client, db, 1)
    two = await queue(client, a, 4, concurrency_key="licence", concurrency_limit=2)
    (one,) = await queue(client, a, 1, concurrency_key="licence", concurrency_limit=1)
    free = await queue(client, a, 2)
    capacity = {"free_cpu": 10, "max_jobs": 10}
    jobs = {j["id"]: j for j in await pool_claim(client, [a], **capacity)}
    assert set(jobs) == {*two[:2], *free}  # two of the key; the job of limit 1 waits: two run
    await complete(client, jobs[two[0]])
    again = await pool_claim(client, [a], **capacity)
    assert [j["id"] for j in again] == [two[2]]
    await complete(client, jobs[two[1]])
    await complete(client, again[0])
    last = await pool_claim(client, [a], **capacity)
    assert [j["id"] for j in last] == [two[3]]  # alone, it still counts against the limit of 1
    await complete(client, last[0])
    assert [j["id"] for j in await pool_claim(client, [a], **capacity)] == [one]


async def test_the_end_of_a_job_under_quota_wakes_a_waiting_claim(
    client: TestClient, db: asyncpg.Connection
) -> None:
    (a,) = await projects(client, db, 1)
    await db.execute("UPDATE projects SET max_running = 1 WHERE name = $1", a)
    await queue(client, a, 2)
    (first,) = await pool_claim(client, [a])
    waiting = asyncio.create_task(
        call(client, "POST", "/claim", {"worker_name": "w2", "projects": [a], "wait": 20})
    )

    async def waits() -> bool:
        return client.app[hub_key].waiting() > 0

    await wait_until(waits, what="the claim to wait")
    await complete(client, first)
    status, out = await asyncio.wait_for(waiting, 10)
    assert status == 200 and len(out["jobs"]) == 1 and out["jobs"][0]["id"] != first["id"]


async def test_a_submission_hands_its_job_to_a_claim_waiting_for_several_projects(
    client: TestClient, db: asyncpg.Connection
) -> None:
    a, b = await projects(client, db, 1, 1)
    waiting = asyncio.create_task(
        call(client, "POST", "/claim", {"worker_name": "w1", "projects": [a, b], "wait": 20})
    )

    async def waits() -> bool:
        return client.app[hub_key].waiting() > 0

    await wait_until(waits, what="the claim to wait")
    status, created = await call(client, "POST", f"/projects/{b}/jobs", {"name": "j", "task": "t"})
    assert status == 201
    assert (created["status"], created["worker_name"]) == ("RUNNING", "w1")
    status, out = await asyncio.wait_for(waiting, 10)
    assert status == 200 and [(j["id"], j["project"]) for j in out["jobs"]] == [(created["id"], b)]


async def test_all_projects_claims_from_any_project(client: TestClient, db: asyncpg.Connection) -> None:
    (a,) = await projects(client, db, 1)
    task = f"only-{uuid.uuid4().hex[:6]}"
    status, _ = await call(client, "POST", f"/projects/{a}/jobs", {"name": "j", "task": task})
    assert status == 201
    status, out = await call(
        client, "POST", "/claim", {"worker_name": "w", "all_projects": True, "tasks": [task]}
    )
    assert status == 200 and [j["project"] for j in out["jobs"]] == [a]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "projects"),
        ({"projects": ["x"], "all_projects": True}, 422, "projects"),
        ({"projects": []}, 422, "projects"),
        ({"projects": ["no-such-project-anywhere"]}, 404, "projects"),
    ],
)
async def test_a_malformed_pool_is_answered_with_the_field(
    client: TestClient, body: dict[str, Any], status: int, field: str
) -> None:
    got, out = await call(client, "POST", "/claim", {"worker_name": "w", **body})
    assert got == status, out
    assert field in str(out)


async def test_a_claim_of_one_project_refuses_a_pool(client: TestClient, db: asyncpg.Connection) -> None:
    (a,) = await projects(client, db, 1)
    got, out = await call(client, "POST", f"/projects/{a}/claim", {"worker_name": "w", "projects": [a]})
    assert got == 422 and "projects" in str(out)


async def test_a_worker_registers_for_several_projects(client: TestClient, db: asyncpg.Connection) -> None:
    a, b = await projects(client, db, 1, 1)
    status, worker = await call(client, "POST", "/workers", {"name": "pool-w", "projects": [a, b], "cpu": 2})
    assert status == 201, worker
    ids = sorted(r["id"] for r in await db.fetch("SELECT id FROM projects WHERE name = ANY($1)", [a, b]))
    assert worker["project_ids"] == ids and worker["project_id"] is None
    status, listed = await call(client, "GET", f"/workers?project={b}")
    assert status == 200 and worker["id"] in [w["id"] for w in listed["workers"]]
    status, out = await call(client, "POST", "/workers", {"name": "x", "project": a, "projects": [b]})
    assert status == 422 and "project" in str(out)


async def test_a_worker_near_its_end_takes_only_jobs_whose_timeout_fits(
    client: TestClient, db: asyncpg.Connection
) -> None:
    (a,) = await projects(client, db, 1)
    (long,) = await queue(client, a, 1, timeout=3600)
    (short,) = await queue(client, a, 1, timeout=60)
    (endless,) = await queue(client, a, 1)
    body = {"worker_name": "w", "free_cpu": 3, "max_jobs": 3, "time_left": 600}
    status, out = await call(client, "POST", f"/projects/{a}/claim", body)
    assert status == 200 and sorted(j["id"] for j in out["jobs"]) == sorted([short, endless])
    assert await pool_claim(client, [a], time_left=600) == []
    assert [j["id"] for j in await pool_claim(client, [a], time_left=None)] == [long]
    status, out = await call(client, "POST", f"/projects/{a}/claim", {"time_left": -1})
    assert status == 422 and "time_left" in str(out)
