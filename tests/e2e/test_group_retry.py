"""Rerunning what failed in a group, with a real server and a real worker: `groups retry` chooses
the failed, the lost or the cancelled members (or all of them), answers the ids it put back, and
with --downstream reruns an aggregate that already ran over the group's old results, after the
members it waits for."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
from conftest import Api, ServerProcess
from helpers import PYTHON, RECORD, cli, records


async def _lose(api: Api, database_url: str, project: str, job_id: int) -> None:
    """A worker that went away with the job (max_lost 0): its lease runs out (backdated) and the
    reaper ends it, FAILED with a lost last attempt."""
    got = await api.ok("POST", f"/projects/{project}/claim", {"worker_name": "ghost", "max_jobs": 1})
    assert [j["id"] for j in got["jobs"]] == [job_id]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", job_id
        )
        assert await conn.fetchval("SELECT wn_reap(1000)") >= 1
    finally:
        await conn.close()


def _work(server: ServerProcess, project: str) -> None:
    """A worker that runs the recording program for every job, until nothing is left to run."""
    done = cli(
        server, "worker", "--project", project, "--script", RECORD, "--executable", PYTHON,
        "--cpus", "4", "--gpus", "none",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


async def _statuses(api: Api, ids: dict[str, int]) -> dict[str, str]:
    return {name: (await api.ok("GET", f"/jobs/{i}"))["status"] for name, i in ids.items()}


async def test_retry_chooses_failed_lost_or_cancelled_and_reruns_downstream(
    server: ServerProcess, api: Api, project: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    p = project["name"]
    out = str(tmp_path)
    members = [
        {"name": "ok0", "parameters": {"out": out}},
        {"name": "ok1", "parameters": {"out": out}},
        {"name": "bad0", "parameters": {"out": out, "exit": 1}},
        {"name": "bad1", "parameters": {"out": out, "exit": 1}},
        {"name": "cx", "parameters": {"out": out}},
        {"name": "gone", "parameters": {"out": out}, "max_lost": 0, "priority": 9},
    ]
    batch = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        {"group": "hp1", "jobs": [{"task": "train", "max_attempts": 1, **m} for m in members]},
    )
    ids = dict(zip([m["name"] for m in members], batch["ids"], strict=True))
    agg = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {
            "name": "agg",
            "task": "aggregate",
            "parameters": {"out": out},
            "depends": [{"group": "hp1", "on": "finished"}],
        },
    )
    await _lose(api, database_url, p, ids["gone"])
    await api.ok("POST", f"/jobs/{ids['cx']}/cancel")
    _work(server, p)
    assert await _statuses(api, ids) == {
        "ok0": "COMPLETED", "ok1": "COMPLETED", "bad0": "FAILED", "bad1": "FAILED",
        "cx": "CANCELLED", "gone": "FAILED",
    }  # fmt: skip
    assert (await api.ok("GET", f"/jobs/{agg['id']}"))["status"] == "COMPLETED"
    first_agg = records(tmp_path)[agg["id"]]

    # --failed: only the two that failed on their own go back (the lost one stays FAILED).
    retried = cli(server, "groups", "retry", "hp1", "--project", p, "--failed")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == f"group hp1: 2 job(s) back in the queue: {ids['bad0']} {ids['bad1']}"
    now = await _statuses(api, ids)
    assert (now["bad0"], now["bad1"], now["cx"], now["gone"]) == ("PENDING", "PENDING", "CANCELLED", "FAILED")
    assert (await api.ok("GET", f"/jobs/{agg['id']}"))["status"] == "COMPLETED", "no --downstream"
    _work(server, p)  # they fail again; the aggregate does not run again
    assert (await api.ok("GET", f"/jobs/{agg['id']}"))["attempt"] == 1

    # --lost: only the one whose worker went away.
    lost = cli(server, "groups", "retry", "hp1", "--project", p, "--lost", "--json")
    assert lost.returncode == 0, lost.stderr
    answer = json.loads(lost.stdout)
    assert (answer["count"], answer["ids"], answer["downstream"]) == (1, [ids["gone"]], [])
    gone = await api.ok("GET", f"/jobs/{ids['gone']}")
    assert (gone["status"], gone["lost"]) == ("PENDING", 0)

    # --failed --downstream: the aggregate that ran over the old results runs again, after them.
    again = cli(server, "groups", "retry", "hp1", "--project", p, "--failed", "--downstream", "--json")
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert answer["ids"] == sorted([ids["bad0"], ids["bad1"], agg["id"]])
    assert answer["downstream"] == [agg["id"]] and answer["count"] == 3
    waiting = await api.ok("GET", f"/jobs/{agg['id']}")
    assert waiting["status"] == "PENDING" and waiting["unmet_deps"] == 3  # bad0, bad1 and gone
    events = (await api.ok("GET", f"/jobs/{agg['id']}/events"))["events"]
    assert events[-1]["status"] == "PENDING"
    assert events[-1]["reason"] == f"rerun: upstream {min(ids['bad0'], ids['bad1'])} retried"
    _work(server, p)
    rerun = await api.ok("GET", f"/jobs/{agg['id']}")
    assert (rerun["status"], rerun["attempt"]) == ("COMPLETED", 2)
    ran = records(tmp_path)
    assert ran[agg["id"]]["attempt"] == "2" and ran[agg["id"]]["start"] > first_agg["start"]
    assert ran[agg["id"]]["start"] >= max(ran[ids[n]]["end"] for n in ("bad0", "bad1", "gone"))
    assert (await _statuses(api, {"gone": ids["gone"]})) == {"gone": "COMPLETED"}

    # The SDK: the cancelled one.
    from whatsnext.api.client import AsyncServer

    async with AsyncServer(api.base) as sdk:
        pr = await sdk.get_project(p)
        got = await pr.retry_group("hp1", cancelled=True)
    assert (got["count"], got["ids"], got["name"]) == (1, [ids["cx"]], "hp1")


async def test_retry_body_and_defaults(api: Api, project: dict[str, Any]) -> None:
    p = project["name"]
    batch = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        {"group": "g", "jobs": [{"name": f"j{i}", "task": "t"} for i in range(3)]},
    )
    a, b, c = batch["ids"]
    claim = await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "w", "max_jobs": 1})
    assert [j["id"] for j in claim["jobs"]] == [a]
    await api.ok("POST", f"/jobs/{a}/fail", {"attempt": claim["jobs"][0]["attempt"], "error": "boom"})
    await api.ok("POST", f"/jobs/{b}/cancel")
    path = f"/projects/{p}/groups/g/retry"
    for bad, field in (({"failed": [1]}, "failed"), ({"lots": True}, "lots"), ([], "body")):
        status, body = await api.post(path, bad)
        details = body["error"]["details"]
        assert status == 422 and (details if isinstance(details, dict) else details[0])["field"] == field, (
            body
        )
    status, body = await api.post(f"/projects/{p}/groups/nope/retry", {"failed": True})
    assert status == 404 and body["error"]["details"]["field"] == "group"
    # Nothing chosen (no body, or every kind false) is every kind: the failed and the cancelled.
    got = await api.ok("POST", path, {"failed": False, "downstream": False})
    assert (got["count"], got["ids"], got["downstream"]) == (2, [a, b], [])
    assert (await api.ok("GET", f"/jobs/{c}"))["status"] == "PENDING"
    again = await api.ok("POST", path)
    assert (again["count"], again["ids"]) == (0, [])
    # The synchronous SDK, as a script calls it.
    from whatsnext.api.client import Server

    def sync_retry() -> dict[str, Any]:
        return Server(api.base).get_project(p).retry_group("g", failed=True)

    claim = await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "w", "max_jobs": 1})
    assert [j["id"] for j in claim["jobs"]] == [a]
    await api.ok("POST", f"/jobs/{a}/fail", {"attempt": claim["jobs"][0]["attempt"], "error": "again"})
    assert (await asyncio.to_thread(sync_retry))["ids"] == [a]
