"""A worker's events stream (``GET /workers/{id}/events``) and an operator's requeue
(``POST /jobs/{id}/requeue``), in-process: a cancel or a requeue reaches the stream of the job's
worker at once, woken by NOTIFY, and no other worker's."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from aiohttp.test_utils import TestClient
from helpers import call, wait_for_condition

from whatsnext.api.server.keys import hub_key
from whatsnext.api.server.notify import workers as worker_notify
from whatsnext.api.server.notify.keyed import wakeups_of


async def worker_with_jobs(client: TestClient, project: str, n: int) -> tuple[int, list[dict[str, Any]]]:
    """A registered worker of ``project`` holding ``n`` new running jobs."""
    status, worker = await call(client, "POST", "/workers", {"name": "w", "project": project, "cpu": 8})
    assert status == 201
    batch = [{"name": f"j{i}", "task": "t"} for i in range(n)]
    assert (await call(client, "POST", f"/projects/{project}/jobs/batch", batch))[0] == 201
    claim = {"worker_id": worker["id"], "free_cpu": n, "max_jobs": n, "wait": 0}
    status, out = await call(client, "POST", f"/projects/{project}/claim", claim)
    assert status == 200 and len(out["jobs"]) == n
    return worker["id"], out["jobs"]


async def new_project(client: TestClient) -> str:
    name = f"events-{uuid.uuid4().hex[:8]}"
    assert (await call(client, "POST", "/projects", {"name": name}))[0] == 201
    return name


def open_stream(client: TestClient, worker_id: int, query: str = "") -> asyncio.Task[tuple[int, Any]]:
    """An events request of the worker, waiting (once the server holds it: see :func:`held`)."""
    return asyncio.ensure_future(call(client, "GET", f"/workers/{worker_id}/events?wait=30{query}"))


async def held(client: TestClient, worker_id: int) -> None:
    """Wait until the server holds an events request of the worker (it registered for wake-ups)."""
    hub = client.app[hub_key]

    def waiting() -> bool:
        wakeups = wakeups_of(hub, worker_notify.WORKERS_CHANNEL)
        return wakeups is not None and bool(wakeups.events.get(worker_id))

    await wait_for_condition(waiting, 10, f"an events request of worker {worker_id}")


async def test_a_cancel_reaches_the_workers_stream_at_once_and_no_other(client: TestClient) -> None:
    project = await new_project(client)
    mine, (job, other_job) = await worker_with_jobs(client, project, 2)
    other, (theirs,) = await worker_with_jobs(client, project, 1)
    stream, bystander = open_stream(client, mine), open_stream(client, other)
    await held(client, mine)
    await held(client, other)
    assert not stream.done()

    assert await call(client, "POST", f"/jobs/{job['id']}/cancel") == (
        200,
        {"id": job["id"], "status": "RUNNING"},
    )
    answered = time.monotonic()
    status, events = await asyncio.wait_for(stream, 5)
    took = time.monotonic() - answered
    assert status == 200 and events == {
        "cancel": [job["id"]],
        "requeue": [],
        "jobs": [{"id": job["id"], "attempt": job["attempt"], "stop": "cancel"}],
    }
    assert took < 1.0, f"the stream answered {took:.3f} s after the cancel"
    assert not bystander.done(), "another worker's stream heard a cancel that is not its own"

    # What the worker already knows does not answer again; a requeue of another of its jobs does.
    seen = f"&seen={job['id']}:{job['attempt']}"
    assert await call(client, "GET", f"/workers/{mine}/events?wait=0{seen}") == (
        200,
        {"cancel": [], "requeue": [], "jobs": []},
    )
    stream = open_stream(client, mine, seen)
    await held(client, mine)
    assert await call(client, "POST", f"/jobs/{other_job['id']}/requeue") == (
        200,
        {"id": other_job["id"], "status": "RUNNING"},
    )
    answered = time.monotonic()
    status, events = await asyncio.wait_for(stream, 5)
    took = time.monotonic() - answered
    assert status == 200 and events["requeue"] == [other_job["id"]] and events["cancel"] == []
    assert events["jobs"] == [{"id": other_job["id"], "attempt": other_job["attempt"], "stop": "requeue"}]
    assert took < 1.0, f"the stream answered {took:.3f} s after the requeue"
    assert not bystander.done()

    # The bystander hears its own job's requeue.
    await call(client, "POST", f"/jobs/{theirs['id']}/requeue")
    status, events = await asyncio.wait_for(bystander, 5)
    assert status == 200 and events["requeue"] == [theirs["id"]]


async def test_a_requeued_job_goes_back_to_the_queue_without_using_an_attempt(client: TestClient) -> None:
    project = await new_project(client)
    worker, (job,) = await worker_with_jobs(client, project, 1)
    headers = {"X-WhatsNext-Actor": "alice@lab"}
    async with client.post(f"/jobs/{job['id']}/requeue", headers=headers) as resp:
        assert resp.status == 200
    # The heartbeat answer is the fallback: the job is among those to stop.
    status, beat = await call(client, "POST", f"/workers/{worker}/heartbeat", {"running": [job["id"]]})
    assert status == 200 and beat["cancel"] == [job["id"]]
    # The worker stops it as it stops a cancelled job and reports CANCELLED: the job is PENDING.
    report = {"id": job["id"], "attempt": job["attempt"], "status": "CANCELLED", "exit_code": -15}
    status, out = await call(client, "POST", "/jobs/reports", [report])
    assert status == 200 and out["results"][0]["code"] == 200
    status, data = await call(client, "GET", f"/jobs/{job['id']}")
    assert (data["status"], data["error"], data["cancel_requested"]) == (
        "PENDING",
        "requeued by alice@lab",
        False,
    )
    events = (await call(client, "GET", f"/jobs/{job['id']}/events"))[1]["events"]
    assert [(e["status"], e["reason"]) for e in events][-2:] == [
        ("RUNNING", "requeue requested"),
        ("PENDING", "requeued by alice@lab"),
    ]
    # It runs again as the next attempt; its attempt budget is whole (max_attempts 1).
    claim = {"worker_id": worker, "free_cpu": 1, "wait": 0}
    status, out = await call(client, "POST", f"/projects/{project}/claim", claim)
    assert [j["attempt"] for j in out["jobs"]] == [job["attempt"] + 1]
    done = {"id": job["id"], "attempt": job["attempt"] + 1, "status": "FAILED", "exit_code": 1}
    await call(client, "POST", "/jobs/reports", [done])
    assert (await call(client, "GET", f"/jobs/{job['id']}"))[1]["status"] == "FAILED"


async def test_bad_requests_name_the_field(client: TestClient) -> None:
    project = await new_project(client)
    worker, (job,) = await worker_with_jobs(client, project, 1)
    status, pending = await call(client, "POST", f"/projects/{project}/jobs", {"name": "p", "task": "t"})
    for path, code, field in (
        (f"/jobs/{pending['id']}/requeue", 409, "status"),
        (f"/jobs/{2**62}/requeue", 404, "job_id"),
        ("/jobs/abc/requeue", 422, "job_id"),
    ):
        status, body = await call(client, "POST", path)
        assert (status, body["error"]["details"]["field"]) == (code, field), (path, body)
    for query, code, field in (
        ("seen=12", 422, "seen"),
        ("seen=a:1", 422, "seen"),
        ("wait=soon", 422, "wait"),
        ("wait=-1", 422, "wait"),
        ("wait=99999", 422, "wait"),
    ):
        status, body = await call(client, "GET", f"/workers/{worker}/events?{query}")
        assert (status, body["error"]["details"]["field"]) == (code, field), (query, body)
    status, body = await call(client, "GET", f"/workers/{2**62}/events?wait=0")
    assert (status, body["error"]["details"]["field"]) == (404, "worker_id")
    # A job being cancelled cannot be requeued.
    await call(client, "POST", f"/jobs/{job['id']}/cancel")
    status, body = await call(client, "POST", f"/jobs/{job['id']}/requeue")
    assert status == 409 and "cancelled" in body["error"]["message"]
