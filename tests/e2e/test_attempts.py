"""Attempts are the unit a worker runs: a job handed back to the worker that still runs an older
attempt of it (the lease ran out meanwhile) runs one attempt at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from conftest import Api, ServerProcess, expire_lease, wait_until
from helpers import spawn_worker, wait_for_condition

JOB = """\
import os, pathlib, signal, sys, threading

def arg(name):
    return sys.argv[sys.argv.index(name) + 1]

log = pathlib.Path(arg("--out")) / "attempts.log"
attempt = os.environ["WHATSNEXT_ATTEMPT"]

def note(word):
    with log.open("a") as fh:
        fh.write(f"{word} {attempt}\\n")

def stop(signum, frame):
    note("stop")
    sys.exit(143)

signal.signal(signal.SIGTERM, stop)
note("start")
go = pathlib.Path(arg("--go"))
while not go.exists():
    threading.Event().wait(0.02)
note("end")
"""


async def test_a_job_handed_back_to_the_worker_running_it_runs_one_attempt_at_a_time(
    server: ServerProcess, api: Api, project: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    """The lease of a running job runs out (backdated) and the reaper requeues it; the same worker,
    with room for it, is handed attempt 2 while attempt 1 still runs: attempt 1 is stopped before
    attempt 2 starts, attempt 2 completes, and the worker's capacity comes back whole."""
    p = project["name"]
    script = tmp_path / "attempt_job.py"
    script.write_text(JOB)
    go = tmp_path / "go"
    job = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "again", "task": "t", "parameters": {"out": str(tmp_path), "go": str(go)}},
    )
    log = tmp_path / "attempts.log"

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    worker = spawn_worker(server.url, p, tmp_path / "worker.log", "--cpus", "2", "--forever", script=script)
    try:
        await wait_for_condition(lambda: "start 1" in lines(), 30, "attempt 1 to start")
        await expire_lease(database_url, job["id"])
        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT wn_reap(1000)") >= 1
        finally:
            await conn.close()
        await wait_for_condition(lambda: "start 2" in lines(), 30, "attempt 2 to start")
        assert lines()[:3] == ["start 1", "stop 1", "start 2"], lines()
        go.touch()

        async def completed() -> bool:
            return (await api.ok("GET", f"/jobs/{job['id']}"))["status"] == "COMPLETED"

        await wait_until(completed, 30, what="attempt 2 to complete")
        assert lines() == ["start 1", "stop 1", "start 2", "end 2"]
        done = await api.ok("GET", f"/jobs/{job['id']}")
        assert done["attempt"] == 2
        events = (await api.ok("GET", f"/jobs/{job['id']}/events"))["events"]
        assert [e["status"] for e in events].count("COMPLETED") == 1

        async def capacity_back() -> bool:
            workers = (await api.ok("GET", f"/workers?project={p}"))["workers"]
            return any(w["status"] == "ONLINE" and not w["running"] for w in workers)

        await wait_until(capacity_back, 30, what="the worker to hold nothing")
        text = (tmp_path / "worker.log").read_text()
        assert "job handed back while an older attempt runs here" in text
    finally:
        worker.terminate()
        worker.wait(20)
