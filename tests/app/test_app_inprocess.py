"""Route behaviour tested in-process: the real application on the real database, served by
aiohttp's test server in this process (no subprocess adds anything to these checks)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp.test_utils import TestClient
from helpers import call

from whatsnext.api.server import schema
from whatsnext.api.server.background import is_background


async def project_with_running_job(client: TestClient) -> tuple[str, dict[str, Any]]:
    name = f"inproc-{uuid.uuid4().hex[:8]}"
    assert (await call(client, "POST", "/projects", {"name": name}))[0] == 201
    assert (await call(client, "POST", f"/projects/{name}/jobs", {"name": "j", "task": "t"}))[0] == 201
    status, out = await call(client, "POST", f"/projects/{name}/claim", {"worker_name": "w"})
    assert status == 200 and len(out["jobs"]) == 1
    return name, out["jobs"][0]


async def test_a_repeated_report_answers_the_recorded_status(client: TestClient) -> None:
    _, job = await project_with_running_job(client)
    report = {"attempt": job["attempt"], "exit_code": 0}
    first = await call(client, "POST", f"/jobs/{job['id']}/complete", report)
    again = await call(client, "POST", f"/jobs/{job['id']}/complete", report)
    assert first == again == (200, {"id": job["id"], "status": "COMPLETED"})
    status, body = await call(client, "POST", f"/jobs/{job['id']}/fail", {"attempt": job["attempt"]})
    assert status == 409 and body["error"]["details"]["field"] == "attempt"
    events = (await call(client, "GET", f"/jobs/{job['id']}/events"))[1]["events"]
    assert [e["status"] for e in events] == ["PENDING", "RUNNING", "COMPLETED"]


async def test_a_report_batch_answers_each_entry_on_its_own(client: TestClient) -> None:
    _, job = await project_with_running_job(client)
    batch = [
        {"id": job["id"], "attempt": job["attempt"], "status": "COMPLETED"},
        {"id": job["id"], "attempt": "not a number", "status": "COMPLETED"},
        {"id": 2**62, "attempt": 1, "status": "FAILED"},
    ]
    status, out = await call(client, "POST", "/jobs/reports", batch)
    assert status == 200
    assert [(r["id"], r["code"]) for r in out["results"]] == [
        (job["id"], 200),
        (job["id"], 422),
        (2**62, 404),
    ]
    assert "attempt" in out["results"][1]["message"]


async def test_started_records_handle_and_gpus_of_the_current_attempt(client: TestClient) -> None:
    _, job = await project_with_running_job(client)
    body = {"attempt": job["attempt"], "external_id": "slurm:77", "gpus": [1, 3]}
    assert await call(client, "POST", f"/jobs/{job['id']}/started", body) == (
        200,
        {"id": job["id"], "status": "RUNNING"},
    )
    data = (await call(client, "GET", f"/jobs/{job['id']}"))[1]
    assert (data["external_id"], data["gpus"]) == ("slurm:77", [1, 3])
    status, err = await call(client, "POST", f"/jobs/{job['id']}/started", {**body, "attempt": 9})
    assert status == 409 and err["error"]["code"] == "stale_attempt"


async def test_health_shows_the_schema_level(client: TestClient) -> None:
    status, health = await call(client, "GET", "/health")
    assert status == 200 and health["schema_level"] == schema.schema_level()


class CountingPool:
    """A pool that records each statement the store sends through it (by method name) while
    serving requests: the server's background loops (a claim mark sweep every second) are not
    counted."""

    STATEMENTS = frozenset({"fetch", "fetchrow", "fetchval", "execute", "executemany", "acquire"})

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.pool, name)
        if name not in self.STATEMENTS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            if not is_background(asyncio.current_task()):
                self.calls.append(name)
            return attr(*args, **kwargs)

        return counted


async def test_queueing_one_job_is_one_statement_answering_as_get_shows_the_job(
    client: TestClient, monkeypatch: Any
) -> None:
    from whatsnext.api.server.keys import store_key
    from whatsnext.api.server.store.base import Table

    name = f"inproc-{uuid.uuid4().hex[:8]}"
    assert (await call(client, "POST", "/projects", {"name": name}))[0] == 201
    project_id = (await call(client, "GET", f"/projects/{name}"))[1]["id"]
    store = client.app[store_key]
    counting = CountingPool(store.pool)
    for table in vars(store).values():
        if isinstance(table, Table):
            monkeypatch.setattr(table, "pool", counting)
    monkeypatch.setattr(store, "pool", counting)
    for key, task in ((name, "t"), (str(project_id), "t"), (name, "tt")):  # by name, by id, a new task
        counting.calls.clear()
        status, created = await call(client, "POST", f"/projects/{key}/jobs", {"name": "j", "task": task})
        assert status == 201
        assert counting.calls == ["fetchrow"], f"POST /projects/{key}/jobs ran {counting.calls}"
        shown = (await call(client, "GET", f"/jobs/{created['id']}"))[1]
        on_submission = ["created_tasks", "existing", "warnings"]  # said on submission only
        assert list(created) == [*shown, *on_submission]
        assert {k: v for k, v in created.items() if k not in on_submission} == shown
    assert created["created_tasks"] == [
        {"name": "tt", "required_cpu": 1, "required_accelerators": 0, "did_you_mean": "t"}
    ]
    text = await (await client.get("/metrics")).text()
    assert f'whatsnext_jobs_submitted_total{{project="{name}"}} 3.0' in text


async def test_a_batch_with_an_old_and_the_current_attempt_applies_the_current(
    client: TestClient, database_url: str
) -> None:
    """After a lease expiry the job is handed out again; a batch that reports both attempts
    applies the current one (200) and answers the old one 409, in their places."""
    import asyncpg

    _, job = await project_with_running_job(client)
    name = (await call(client, "GET", f"/jobs/{job['id']}"))[1]["project"]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", job["id"]
        )
        await conn.fetchval("SELECT wn_reap(1000)")
    finally:
        await conn.close()
    status, out = await call(client, "POST", f"/projects/{name}/claim", {"worker_name": "w2"})
    assert status == 200 and [j["id"] for j in out["jobs"]] == [job["id"]]
    current = out["jobs"][0]["attempt"]
    assert current == job["attempt"] + 1
    batch = [
        {"id": job["id"], "attempt": job["attempt"], "status": "COMPLETED"},
        {"id": job["id"], "attempt": current, "status": "COMPLETED"},
    ]
    status, out = await call(client, "POST", "/jobs/reports", batch)
    assert status == 200
    assert [(r["code"], r["status"]) for r in out["results"]] == [(409, "COMPLETED"), (200, "COMPLETED")]
    events = (await call(client, "GET", f"/jobs/{job['id']}/events"))[1]["events"]
    assert [e["status"] for e in events][-1] == "COMPLETED"
    assert [e["status"] for e in events].count("COMPLETED") == 1


async def project_counting_idle_summaries(client: TestClient, monkeypatch: Any) -> tuple[str, list[int]]:
    """A new project, and the list of the projects whose idle summary the server makes from now
    on (``store.projects.idle``), one entry per summary."""
    from whatsnext.api.server.keys import store_key

    name = f"inproc-{uuid.uuid4().hex[:8]}"
    assert (await call(client, "POST", "/projects", {"name": name}))[0] == 201
    projects = client.app[store_key].projects
    asked: list[int] = []
    idle = projects.idle

    async def counted(**kwargs: Any) -> Any:
        asked.append(kwargs["project_id"])
        return await idle(**kwargs)

    monkeypatch.setattr(projects, "idle", counted)
    return name, asked


async def test_a_waiting_claim_of_a_worker_that_runs_jobs_skips_the_idle_summary(
    client: TestClient, monkeypatch: Any
) -> None:
    """A worker that runs jobs has something running: the summary (a read of every pending and
    running job, which a held transaction makes long) cannot make its wait pointless, so a claim
    that finds nothing waits without it; the answer still carries it."""
    name, asked = await project_counting_idle_summaries(client, monkeypatch)
    claim = {"worker_name": "w", "max_jobs": 1, "idle_summary": True}
    # Nothing pending and nothing running: answered at once, from the summary.
    status, out = await call(client, "POST", f"/projects/{name}/claim", {**claim, "free_cpu": 2, "wait": 5})
    assert status == 200 and out["jobs"] == [] and out["idle"]["running"] == 0 and len(asked) == 1
    # It takes the one job there is; with one of its two CPUs in use, it claims again and waits
    # (here 0.2 s) without the summary, then answers with it.
    assert (await call(client, "POST", f"/projects/{name}/jobs", {"name": "j", "task": "t"}))[0] == 201
    status, out = await call(client, "POST", f"/projects/{name}/claim", {**claim, "free_cpu": 2})
    assert status == 200 and len(out["jobs"]) == 1
    asked.clear()
    body = {**claim, "free_cpu": 1, "total_cpu": 2, "wait": 0.2}
    status, out = await call(client, "POST", f"/projects/{name}/claim", body)
    assert status == 200 and out["jobs"] == [] and out["idle"]["running"] == 1 and len(asked) == 1


async def test_a_waiting_worker_asks_why_nothing_fits_once_a_minute_at_most(
    client: TestClient, monkeypatch: Any
) -> None:
    """A waiting worker (``forever``) asks for the idle summary as it starts waiting, to say why
    nothing fits it; a worker of short jobs starts waiting many times a second, and asks again
    only a minute later (the summary reads every pending and running job)."""
    from conftest import wait_until

    from whatsnext.api.client import AsyncServer, Client, PythonFormatter

    name, asked = await project_counting_idle_summaries(client, monkeypatch)
    done: list[int] = []

    def work(i: int) -> int:
        done.append(i)
        return i

    server = AsyncServer(str(client.server.make_url("")).rstrip("/"))
    worker = Client("t", "w", name, PythonFormatter(work), available_cpu=1, server=server)
    running = asyncio.create_task(worker.work_async(forever=True))
    try:
        for i in range(5):  # one job at a time: the worker waits again after each
            assert (await call(client, "POST", f"/projects/{name}/jobs", {"name": f"j{i}", "task": "t",
                                                                          "parameters": {"i": i}}))[0] == 201  # fmt: skip

            async def ran(n: int = i + 1) -> bool:
                return len(done) == n

            await wait_until(ran, timeout=20, what=f"job {i} to run")
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
        await server.close()
    # At most as it started waiting; it asked after each job before.
    assert done == [0, 1, 2, 3, 4] and len(asked) <= 1
