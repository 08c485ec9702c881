"""Dependencies with conditions (success, finished, failure) and on groups, with a real server and
a real worker: an aggregate over a sweep with failures, failure handlers, and what a retry or a
later member changes."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from conftest import Api, ServerProcess
from helpers import PYTHON

from whatsnext.api.client import AsyncServer, Client, CLIFormatter


def exits_with_code() -> CLIFormatter:
    """Each job exits with its parameter ``code``."""
    return CLIFormatter(template=f'{PYTHON} -c "import sys; sys.exit({{code}})"')


async def run_worker(server: ServerProcess, project: dict[str, Any]) -> Any:
    p = await AsyncServer(server.url).get_project(project["name"])
    return await asyncio.wait_for(Client("t", "w", p, exits_with_code(), available_cpu=2).work_async(), 60)


def field_of(body: dict[str, Any]) -> str:
    details = body["error"]["details"]
    return details["field"] if isinstance(details, dict) else details[0]["field"]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_aggregate_over_a_sweep_with_failures_runs_once_after_all(
    server: ServerProcess, api: Api, project: dict[str, Any]
) -> None:
    p = project["name"]
    codes = [0, 3, 0, 0, 3, 0]
    sweep = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        {
            "group": "hp1",
            "jobs": [
                {"name": f"run{i}", "task": "t", "parameters": {"code": c}} for i, c in enumerate(codes)
            ],
        },
    )
    members = sweep["ids"]
    done = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        [
            # Runs once every member is final, whatever it ended as.
            {
                "name": "aggregate",
                "task": "t",
                "parameters": {"code": 0},
                "depends": [{"group": "hp1", "on": "finished"}],
            },
            # The default condition: blocked by the failures.
            {"name": "needs-all-good", "task": "t", "parameters": {"code": 0}, "depends": [{"group": "hp1"}]},
            # Failure handlers: one for a run that fails, one for a run that completes.
            {
                "name": "on-fail",
                "task": "t",
                "parameters": {"code": 0},
                "depends": [{"id": members[1], "on": "failure"}],
            },
            {
                "name": "on-fail-never",
                "task": "t",
                "parameters": {"code": 0},
                "depends": [{"id": members[0], "on": "failure"}],
            },
        ],
    )
    aggregate, needs_all, on_fail, on_fail_never = done["ids"]
    agg = await api.ok("GET", f"/jobs/{aggregate}")
    assert agg["status"] == "PENDING" and agg["unmet_deps"] == len(codes)
    assert agg["depends_on"] == [{"id": m, "on": "finished"} for m in members]

    summary = await run_worker(server, project)
    assert (summary.completed, summary.failed) == (4 + 2, 2)

    runs = [await api.ok("GET", f"/jobs/{m}") for m in members]
    assert [r["status"] for r in runs] == [
        "COMPLETED",
        "FAILED",
        "COMPLETED",
        "COMPLETED",
        "FAILED",
        "COMPLETED",
    ]
    agg = await api.ok("GET", f"/jobs/{aggregate}")
    assert agg["status"] == "COMPLETED" and agg["attempt"] == 1
    assert when(agg["started_at"]) >= max(when(r["finished_at"]) for r in runs)
    blocked = await api.ok("GET", f"/jobs/{needs_all}")
    assert blocked["status"] == "BLOCKED" and blocked["blocked_by"] == members[1]
    assert f"dependency {members[1]} (run1) failed" in blocked["error"]
    assert (await api.ok("GET", f"/jobs/{on_fail}"))["status"] == "COMPLETED"
    never = await api.ok("GET", f"/jobs/{on_fail_never}")
    assert never["status"] == "BLOCKED" and never["blocked_by"] == members[0]
    assert "completed: this job runs only if it fails" in never["error"]
    history = (await api.ok("GET", f"/jobs/{on_fail_never}/events"))["events"]
    assert history[-1]["status"] == "BLOCKED" and "only if it fails" in history[-1]["reason"]


async def test_a_group_counts_the_members_it_has_at_submission(api: Api, project: dict[str, Any]) -> None:
    p = project["name"]
    first = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        {"group": "g", "jobs": [{"name": "a", "task": "t"}, {"name": "b", "task": "t"}]},
    )
    waiter = await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "after", "task": "t", "depends": [{"group": "g"}]}
    )
    await api.ok("POST", f"/projects/{p}/jobs", {"name": "late", "task": "t", "group": "g"})
    job = await api.ok("GET", f"/jobs/{waiter['id']}")
    assert [d["id"] for d in job["depends_on"]] == first["ids"] and job["unmet_deps"] == 2
    # Members of the same batch count, the job itself does not.
    both = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        {"group": "g2", "jobs": [{"name": "x", "task": "t"}, {"name": "y", "task": "t"}]},
    )
    mixed = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        [
            {"name": "z", "task": "t", "group": "g2"},
            {"name": "sum", "task": "t", "depends": [{"group": "g2", "on": "finished"}]},
        ],
    )
    job = await api.ok("GET", f"/jobs/{mixed['ids'][1]}")
    assert [d["id"] for d in job["depends_on"]] == [*both["ids"], mixed["ids"][0]]


async def test_group_dependency_errors_name_the_field(api: Api, project: dict[str, Any]) -> None:
    p = project["name"]
    status, body = await api.post(
        f"/projects/{p}/jobs", {"name": "a", "task": "t", "depends": [{"group": "nope"}]}
    )
    assert status == 422 and field_of(body) == "depends" and "nope" in body["error"]["message"]
    status, body = await api.post(
        f"/projects/{p}/jobs", {"name": "a", "task": "t", "depends": [{"id": 1, "group": "g"}]}
    )
    assert status == 422 and field_of(body) == "depends.0", body
    assert "exactly one of id, name or group" in body["error"]["message"]
    status, body = await api.post(
        f"/projects/{p}/jobs", {"name": "a", "task": "t", "depends": [{"id": 1, "on": "maybe"}]}
    )
    assert status == 422 and field_of(body) == "depends.0.on", body
    # Two members of one group that each wait for the group wait for each other.
    status, body = await api.post(
        f"/projects/{p}/jobs/batch",
        {
            "group": "loop",
            "jobs": [{"name": n, "task": "t", "depends": [{"group": "loop"}]} for n in ("a", "b")],
        },
    )
    assert status == 422 and body["error"]["code"] == "dependency_cycle", body
    assert (await api.ok("GET", f"/projects/{p}/jobs"))["jobs"] == []


async def test_finished_dependency_waits_again_when_its_upstream_is_retried(
    api: Api, project: dict[str, Any]
) -> None:
    p = project["name"]
    up = await api.ok("POST", f"/projects/{p}/jobs", {"name": "up", "task": "t"})
    down = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "down", "task": "t", "depends": [{"id": up["id"], "on": "finished"}]},
    )
    [claimed] = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 4, "max_jobs": 4}))["jobs"]
    assert claimed["id"] == up["id"]
    await api.ok("POST", f"/jobs/{up['id']}/fail", {"attempt": 1, "exit_code": 1})
    job = await api.ok("GET", f"/jobs/{down['id']}")
    assert job["status"] == "PENDING" and job["unmet_deps"] == 0 and job["eligible_at"] is not None
    # Retried before the dependant ran: it waits for the new outcome.
    await api.ok("POST", f"/jobs/{up['id']}/retry")
    job = await api.ok("GET", f"/jobs/{down['id']}")
    assert job["status"] == "PENDING" and job["unmet_deps"] == 1 and job["eligible_at"] is None
    [again] = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 4, "max_jobs": 4}))["jobs"]
    assert again["id"] == up["id"]
    await api.ok("POST", f"/jobs/{up['id']}/complete", {"attempt": 2})
    [last] = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 4, "max_jobs": 4}))["jobs"]
    assert last["id"] == down["id"]


async def test_failure_dependency_on_a_cancelled_job_runs_and_unblocks_after_retry(
    api: Api, project: dict[str, Any]
) -> None:
    p = project["name"]
    up = await api.ok("POST", f"/projects/{p}/jobs", {"name": "up", "task": "t"})
    handler = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "h", "task": "t", "depends": [{"id": up["id"], "on": "failure"}]},
    )
    follower = await api.ok("POST", f"/projects/{p}/jobs", {"name": "f", "task": "t", "depends": [up["id"]]})
    await api.ok("POST", f"/jobs/{up['id']}/cancel")
    assert (await api.ok("GET", f"/jobs/{handler['id']}"))["unmet_deps"] == 0
    assert (await api.ok("GET", f"/jobs/{follower['id']}"))["status"] == "BLOCKED"
    # Retried: the follower waits again, so does the handler (the upstream may still fail).
    await api.ok("POST", f"/jobs/{up['id']}/retry")
    assert (await api.ok("GET", f"/jobs/{follower['id']}"))["status"] == "PENDING"
    h = await api.ok("GET", f"/jobs/{handler['id']}")
    assert h["status"] == "PENDING" and h["unmet_deps"] == 1


async def test_a_job_retried_after_its_upstream_ended_counts_it_anew(
    api: Api, project: dict[str, Any]
) -> None:
    """A cancelled job's count is not kept while it is final: a retry judges it from its
    dependencies as they are then."""
    p = project["name"]
    up = await api.ok("POST", f"/projects/{p}/jobs", {"name": "up", "task": "t"})
    down = await api.ok("POST", f"/projects/{p}/jobs", {"name": "down", "task": "t", "depends": [up["id"]]})
    await api.ok("POST", f"/jobs/{down['id']}/cancel")
    [claimed] = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 4, "max_jobs": 4}))["jobs"]
    await api.ok("POST", f"/jobs/{claimed['id']}/complete", {"attempt": 1})
    assert (await api.ok("POST", f"/jobs/{down['id']}/retry"))["requeued"] == 1
    job = await api.ok("GET", f"/jobs/{down['id']}")
    assert (job["status"], job["unmet_deps"]) == ("PENDING", 0) and job["eligible_at"] is not None
    [again] = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 4, "max_jobs": 4}))["jobs"]
    assert again["id"] == down["id"]
