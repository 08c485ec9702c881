"""Preemptions and checkpoints through the API: ``max_preempted`` set on tasks and jobs (REST, SDK,
CLI) and shown with ``preempted`` and ``attempts_used``; a report's ``checkpoint`` kept, listed
among the job's artifacts and in its history, and handed to the next claim with ``resume``."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any

import asyncpg
from conftest import Api
from helpers import cli

from whatsnext.api.client import AsyncServer, Job


async def new_project(api: Api) -> str:
    name = f"pre-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": name}, expect=201)
    return name


async def claim(api: Api, project: str) -> dict[str, Any]:
    [job] = (await api.ok("POST", f"/projects/{project}/claim", {"worker_name": "w"}))["jobs"]
    return job


async def run_cli(app_url: str, *args: str) -> Any:
    """``whatsnext ARGS`` against the application in this process (in a thread: the application
    answers on this loop while the command waits)."""
    return await asyncio.to_thread(cli, SimpleNamespace(url=app_url), *args)


async def test_max_preempted_on_tasks_and_jobs(app_api: Api, app_url: str) -> None:
    project = await new_project(app_api)
    task = await app_api.ok("POST", "/tasks/", {"name": "spot", "project_id": project, "max_preempted": 2})
    assert task["max_preempted"] == 2
    listed = (await app_api.ok("GET", f"/projects/{project}/tasks"))["tasks"]
    assert [t["max_preempted"] for t in listed] == [2]
    default = await app_api.ok("POST", "/tasks/", {"name": "plain", "project_id": project})
    assert default["max_preempted"] == 10
    inherited = await app_api.ok("POST", f"/projects/{project}/jobs", {"name": "a", "task": "spot"})
    own = await app_api.ok(
        "POST", f"/projects/{project}/jobs", {"name": "b", "task": "spot", "max_preempted": 0}
    )
    assert (inherited["max_preempted"], own["max_preempted"]) == (2, 0)
    assert (inherited["preempted"], inherited["attempts_used"], inherited["checkpoint"]) == (0, 0, None)
    batch = await app_api.ok(
        "POST", f"/projects/{project}/jobs/batch", [{"name": "c", "task": "spot", "max_preempted": 7}]
    )
    assert (await app_api.ok("GET", f"/jobs/{batch['ids'][0]}"))["max_preempted"] == 7
    for bad in (-1, 1001, 1.5):
        status, body = await app_api.post(
            f"/projects/{project}/jobs", {"name": "x", "task": "spot", "max_preempted": bad}
        )
        assert status == 422 and body["error"]["details"][0]["field"] == "max_preempted", body
    status, body = await app_api.post("/tasks/", {"name": "bad", "project_id": project, "max_preempted": -1})
    assert status == 422 and body["error"]["details"][0]["field"] == "max_preempted", body

    # The SDK.
    async with AsyncServer(app_url) as server:
        sdk = await server.get_project(project)
        made = await sdk.create_task("sdk-task", max_preempted=4)
        assert made["max_preempted"] == 4
        job = await sdk.append_queue(Job("d", "sdk-task", max_preempted=1))
        assert job.max_preempted == 1
        assert (await app_api.ok("GET", f"/jobs/{job.id}"))["max_preempted"] == 1

    # The CLI.
    added = await run_cli(app_url, "tasks", "add", "cli-task", "--project", project, "--max-preempted", "3")
    assert added.returncode == 0, added.stderr
    queued = await run_cli(
        app_url, "jobs", "add", "cli-task", "--project", project, "--max-preempted", "5", "--json"
    )
    assert queued.returncode == 0, queued.stderr
    job_id = json.loads(queued.stdout)["id"]
    assert (await app_api.ok("GET", f"/jobs/{job_id}"))["max_preempted"] == 5
    taken = await run_cli(app_url, "jobs", "add", "cli-task", "--project", project, "--json")
    assert json.loads(taken.stdout)["max_preempted"] == 3


async def test_preemptions_use_no_attempt_until_the_bound(app_api: Api, app_url: str) -> None:
    project = await new_project(app_api)
    job = await app_api.ok(
        "POST", f"/projects/{project}/jobs", {"name": "j", "task": "t", "max_preempted": 2}
    )
    for n in (1, 2):
        claimed = await claim(app_api, project)
        assert claimed["attempt"] == n
        out = await app_api.ok(
            "POST", f"/jobs/{job['id']}/fail", {"attempt": n, "requeue": True, "error": "preempted"}
        )
        assert out["status"] == "PENDING"
    shown = await app_api.ok("GET", f"/jobs/{job['id']}")
    assert (shown["attempt"], shown["attempts_used"], shown["preempted"], shown["max_preempted"]) == (
        2,
        0,
        2,
        2,
    )
    await claim(app_api, project)
    status, out = await app_api.post(
        "/jobs/reports", [{"id": job["id"], "attempt": 3, "status": "FAILED", "requeue": True}]
    )
    assert status == 200 and out["results"][0]["status"] == "FAILED"
    shown = await app_api.ok("GET", f"/jobs/{job['id']}")
    assert (shown["status"], shown["error"], shown["preempted"], shown["attempts_used"]) == (
        "FAILED",
        "preempted 3 times",
        3,
        0,
    )
    text = await run_cli(app_url, "jobs", "show", str(job["id"]))
    assert text.returncode == 0, text.stderr
    for line in ("attempt                3", "attempts_used          0", "preempted              3"):
        assert line in text.stdout, text.stdout
    assert "max_preempted          2" in text.stdout and "preempted 3 times" in text.stdout


async def test_a_checkpoint_goes_from_one_attempt_to_the_next(app_api: Api, database_url: str) -> None:
    project = await new_project(app_api)
    job = await app_api.ok("POST", f"/projects/{project}/jobs", {"name": "j", "task": "t", "max_attempts": 2})
    jid = job["id"]
    first = await claim(app_api, project)
    assert (first["checkpoint"], first["resume"]) == (None, False)
    # Preempted with a checkpoint, named as a file:// URI: kept as its path.
    out = await app_api.ok(
        "POST",
        f"/jobs/{jid}/fail",
        {"attempt": 1, "requeue": True, "error": "preempted", "checkpoint": "file:///ck/j/step-100.pt"},
    )
    assert out["status"] == "PENDING"
    shown = await app_api.ok("GET", f"/jobs/{jid}")
    assert (shown["checkpoint"], shown["attempts_used"], shown["preempted"]) == ("/ck/j/step-100.pt", 0, 1)
    [artifact] = (await app_api.ok("GET", f"/jobs/{jid}/artifacts"))["artifacts"]
    assert (artifact["direction"], artifact["uri"], artifact["kind"], artifact["attempt"]) == (
        "out",
        "/ck/j/step-100.pt",
        "checkpoint",
        1,
    )
    found = (await app_api.ok("GET", f"/projects/{project}/artifacts?uri=/ck/j/step-100.pt"))["artifacts"]
    assert [(a["job_id"], a["kind"]) for a in found] == [(jid, "checkpoint")]
    events = (await app_api.ok("GET", f"/jobs/{jid}/events"))["events"]
    assert (events[-1]["status"], events[-1]["reason"], events[-1]["checkpoint"]) == (
        "PENDING",
        "preempted",
        "/ck/j/step-100.pt",
    )
    second = await claim(app_api, project)
    assert (second["attempt"], second["checkpoint"], second["resume"]) == (2, "/ck/j/step-100.pt", True)

    # Lost (its lease runs out, the reaper sweeps): the next attempt resumes from the same checkpoint.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", jid
        )
        await conn.fetchval("SELECT wn_reap(1000)")
    finally:
        await conn.close()
    third = await claim(app_api, project)
    assert (third["attempt"], third["checkpoint"], third["resume"]) == (3, "/ck/j/step-100.pt", True)
    # A failure with a newer checkpoint: retried, handed the checkpoint, not resumed.
    out = await app_api.ok(
        "POST", f"/jobs/{jid}/fail", {"attempt": 3, "error": "exit code 1", "checkpoint": "/ck/j/step-200.pt"}
    )
    assert out["status"] == "PENDING"
    fourth = await claim(app_api, project)
    assert (fourth["attempt"], fourth["checkpoint"], fourth["resume"]) == (4, "/ck/j/step-200.pt", False)
    # The stale attempt 3 reports again with another checkpoint: 409, nothing recorded.
    status, body = await app_api.post(f"/jobs/{jid}/complete", {"attempt": 3, "checkpoint": "/ck/j/stale.pt"})
    assert status == 409, body
    done = await app_api.ok("POST", f"/jobs/{jid}/complete", {"attempt": 4})
    assert done["status"] == "COMPLETED"
    shown = await app_api.ok("GET", f"/jobs/{jid}")
    assert (shown["checkpoint"], shown["attempts_used"], shown["attempt"]) == ("/ck/j/step-200.pt", 2, 4)
    uris = [a["uri"] for a in (await app_api.ok("GET", f"/jobs/{jid}/artifacts"))["artifacts"]]
    assert uris == ["/ck/j/step-100.pt", "/ck/j/step-200.pt"]


async def test_a_checkpoint_is_refused_naming_the_field(app_api: Api) -> None:
    project = await new_project(app_api)
    job = await app_api.ok("POST", f"/projects/{project}/jobs", {"name": "j", "task": "t"})
    await claim(app_api, project)
    for bad in ("", "x" * 4097, 7, "a\u0000b"):
        status, body = await app_api.post(f"/jobs/{job['id']}/complete", {"attempt": 1, "checkpoint": bad})
        assert status == 422 and body["error"]["details"][0]["field"] == "checkpoint", body
    status, out = await app_api.post(
        "/jobs/reports", [{"id": job["id"], "attempt": 1, "status": "COMPLETED", "checkpoint": ""}]
    )
    assert status == 200 and out["results"][0]["code"] == 422 and "checkpoint" in out["results"][0]["message"]
    assert (await app_api.ok("GET", f"/jobs/{job['id']}"))["status"] == "RUNNING"
