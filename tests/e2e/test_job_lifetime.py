"""A job's lifetime with real processes: a worker stopped by SIGTERM hands its job back (PREEMPTED,
no attempt used) and the next attempt resumes from the checkpoint the first one named; a server
paused past the fence suspends the job (SIGSTOP) until the lease is confirmed again; a job whose
lease was lost is killed and not reported; a cancel reaches the job's process within a second."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import Api, ServerProcess, create_database, drop_database, expire_lease, wait_until
from helpers import spawn_worker, wait_for_condition, wait_for_file

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Records what each attempt saw, names a checkpoint, notes SIGTERM; a first attempt waits for --go.
JOB = """\
import json, os, pathlib, signal, sys, threading, time

def arg(name):
    return sys.argv[sys.argv.index(name) + 1]

out = pathlib.Path(arg("--out"))
attempt = os.environ["WHATSNEXT_ATTEMPT"]

def note(word):
    with (out / "body.log").open("a") as fh:
        fh.write(f"{word} {attempt}\\n")

def stop(signum, frame):
    (out / f"stopped-{attempt}").write_text(repr(time.time()))
    note("stopped")
    sys.exit(143)

signal.signal(signal.SIGTERM, stop)
seen = {k: os.environ.get(k) for k in
        ("WHATSNEXT_RESUME", "WHATSNEXT_CHECKPOINT", "WHATSNEXT_CHECKPOINT_DIR", "WHATSNEXT_CHECKPOINT_FILE")}
seen["pid"] = os.getpid()
ckpt = pathlib.Path(os.environ["WHATSNEXT_CHECKPOINT_DIR"]) / f"step-{attempt}.pt"
ckpt.write_text("state")
pathlib.Path(os.environ["WHATSNEXT_CHECKPOINT_FILE"]).write_text(str(ckpt))
note("start")
tmp = out / f"attempt-{attempt}.tmp"
tmp.write_text(json.dumps(seen))
tmp.rename(out / f"attempt-{attempt}.json")
go = pathlib.Path(arg("--go"))
while not seen["WHATSNEXT_RESUME"] and not go.exists():
    threading.Event().wait(0.02)
note("end")
"""


def body(tmp: Path) -> list[str]:
    log = tmp / "body.log"
    return log.read_text().splitlines() if log.exists() else []


def state(pid: int) -> str | None:
    """The process's state letter in /proc (R, S, T for stopped...), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    letter = stat.rsplit(")", 1)[1].split()[0]
    return None if letter in ("Z", "X") else letter


async def _queue(api: Api, p: str, tmp: Path) -> tuple[dict[str, Any], Path]:
    script = tmp / "lifetime_job.py"
    script.write_text(JOB)
    job = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "train", "task": "t", "parameters": {"out": str(tmp), "go": str(tmp / "go")}},
    )
    return job, script


async def _worker_exit(worker: Any, log: Path, timeout: float = 60) -> None:
    try:
        code = await asyncio.to_thread(worker.wait, timeout)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 0, log.read_text()


@pytest.mark.parametrize(
    ("option", "signals"),
    [("drain", [signal.SIGTERM, signal.SIGTERM]), ("requeue", [signal.SIGTERM])],
    ids=["two-sigterms", "on-sigterm-requeue"],
)
async def test_a_stopped_worker_requeues_its_job_and_the_next_attempt_resumes_from_its_checkpoint(
    server: ServerProcess, api: Api, project: dict, tmp_path: Path, option: str, signals: list[int]
) -> None:
    p = project["name"]
    job, script = await _queue(api, p, tmp_path)
    roots = ["--checkpoint-root", str(tmp_path / "ckpt"), "--grace", "5", "--on-sigterm", option]
    log = tmp_path / "worker.log"
    worker = spawn_worker(server.url, p, log, "--cpus", "1", *roots, script=script)
    await wait_for_file(tmp_path / "attempt-1.json", 30)
    first = json.loads((tmp_path / "attempt-1.json").read_text())
    folder = tmp_path / "ckpt" / p / str(job["id"])
    assert first["WHATSNEXT_CHECKPOINT_DIR"] == str(folder)
    assert first["WHATSNEXT_RESUME"] is None and first["WHATSNEXT_CHECKPOINT"] is None
    used = (await api.ok("GET", f"/jobs/{job['id']}"))["attempts_used"]
    for n, sig in enumerate(signals):
        worker.send_signal(sig)
        if n + 1 < len(signals):
            await wait_for_condition(lambda: "signal received" in log.read_text(), 30, "the first signal")
    await _worker_exit(worker, log)
    assert body(tmp_path) == ["start 1", "stopped 1"]  # it got the job signal, and ran once
    back = await api.ok("GET", f"/jobs/{job['id']}")
    assert back["status"] == "PENDING" and back["preempted"] == 1
    assert used == 1 and back["attempts_used"] == 0  # the running attempt counted; handed back, it did not
    assert back["checkpoint"] == str(folder / "step-1.pt")
    events = (await api.ok("GET", f"/jobs/{job['id']}/events"))["events"]
    assert [e["status"] for e in events][-2:] == ["RUNNING", "PENDING"]

    again = spawn_worker(server.url, p, tmp_path / "again.log", "--cpus", "1", *roots, script=script)
    await _worker_exit(again, tmp_path / "again.log")
    second = json.loads((tmp_path / "attempt-2.json").read_text())
    assert second["WHATSNEXT_RESUME"] == "1"
    assert second["WHATSNEXT_CHECKPOINT"] == str(folder / "step-1.pt")
    assert second["WHATSNEXT_CHECKPOINT_DIR"] == str(folder)  # the same directory, every attempt
    done = await api.ok("GET", f"/jobs/{job['id']}")
    assert done["status"] == "COMPLETED" and done["attempts_used"] == 1 and done["attempt"] == 2
    assert done["checkpoint"] == str(folder / "step-2.pt")
    assert body(tmp_path) == ["start 1", "stopped 1", "start 2", "end 2"]
    # What each attempt wrote stays; the files through which the worker read its checkpoint go.
    assert sorted(os.listdir(folder)) == ["step-1.pt", "step-2.pt"]


async def test_a_server_paused_past_the_fence_suspends_the_job_until_its_lease_is_confirmed(
    server_factory: Any, http: Any, pg_root_url: str, tmp_path: Path
) -> None:
    """Lease 3 s (fence 2 s after each confirmation): the only server of a queue is paused
    (SIGSTOP) for longer than the lease. The job's processes are stopped ('T') while its lease
    cannot be renewed, go on once the server is back, and the job completes: its body ran once, as
    attempt 1 (the outage cost a pause, not a re-run)."""
    database = await create_database(pg_root_url, "wn_fence")
    try:
        srv = await server_factory("--lease-seconds", "3", database=database)
        api = Api(srv.url, http)
        p = (await api.ok("POST", "/projects", {"name": "fenced"}))["name"]
        job, script = await _queue(api, p, tmp_path)
        log = tmp_path / "worker.log"
        worker = spawn_worker(
            srv.url, p, log, "--cpus", "1", "--checkpoint-root", str(tmp_path / "ck"), script=script
        )
        assert srv.proc is not None
        try:
            await wait_for_file(tmp_path / "attempt-1.json", 30)
            pid = json.loads((tmp_path / "attempt-1.json").read_text())["pid"]
            assert state(pid) in ("S", "R")
            await wait_until(lambda: _swept(database), 15, what="the reaper's first sweep")
            srv.proc.send_signal(signal.SIGSTOP)
            paused = time.monotonic()
            try:
                await wait_for_condition(lambda: state(pid) == "T", 10, "the job to be suspended")
                assert time.monotonic() - paused < 3.0  # at its fence, before its lease ends
                # The outage goes on past the lease (the fault under test, not a synchronisation).
                await asyncio.sleep(max(0.0, paused + 6.0 - time.monotonic()))
                assert state(pid) == "T"
            finally:
                srv.proc.send_signal(signal.SIGCONT)
            await wait_for_condition(lambda: state(pid) in ("S", "R"), 15, "the job to be resumed")
            (tmp_path / "go").touch()
            await _worker_exit(worker, log)
        finally:
            if worker.poll() is None:
                worker.kill()
        done = await api.ok("GET", f"/jobs/{job['id']}")
        assert done["status"] == "COMPLETED" and done["attempt"] == 1, done
        assert body(tmp_path) == ["start 1", "end 1"]
        text = log.read_text()
        assert "suspending the job" in text and "resuming the job" in text
        await srv.stop()
    finally:
        await drop_database(pg_root_url, database)


async def test_the_second_attempt_starts_only_while_the_first_is_suspended(
    server_factory: Any, http: Any, pg_root_url: str, tmp_path: Path
) -> None:
    """Two servers on one queue, lease 3 s: the server of the worker running attempt 1 is paused,
    so that worker cannot renew the lease while the queue goes on. Attempt 1 is suspended at its
    fence; the other server's reaper requeues the job when the lease runs out and a worker of the
    other server runs attempt 2 meanwhile; when the first server is back, the first worker learns
    that attempt 1 is lost and kills it. The two attempts never run at once."""
    database = await create_database(pg_root_url, "wn_fence")
    try:
        a = await server_factory("--lease-seconds", "3", database=database)
        b = await server_factory("--lease-seconds", "3", database=database)
        api = Api(b.url, http)
        p = (await api.ok("POST", "/projects", {"name": "fenced"}))["name"]
        job, script = await _queue(api, p, tmp_path)
        ck = ("--checkpoint-root", str(tmp_path / "ck"))
        first = spawn_worker(a.url, p, tmp_path / "first.log", "--cpus", "1", *ck, script=script)
        second: Any = None
        assert a.proc is not None
        try:
            await wait_for_file(tmp_path / "attempt-1.json", 30)
            pid = json.loads((tmp_path / "attempt-1.json").read_text())["pid"]
            second = spawn_worker(
                b.url, p, tmp_path / "second.log", "--cpus", "1", "--forever", *ck, script=script
            )
            await wait_until(lambda: _registered(api, p, 2), 30, what="the second worker to register")
            a.proc.send_signal(signal.SIGSTOP)
            try:
                await wait_for_file(tmp_path / "attempt-2.json", 30)
                assert state(pid) == "T"  # attempt 2 runs while attempt 1 is stopped
                resumed = json.loads((tmp_path / "attempt-2.json").read_text())
                assert resumed["WHATSNEXT_RESUME"] == "1"
                # a lost attempt reports nothing: its checkpoint is only in the job's directory
                assert resumed["WHATSNEXT_CHECKPOINT"] is None
                assert resumed["WHATSNEXT_CHECKPOINT_DIR"] == str(tmp_path / "ck" / p / str(job["id"]))
            finally:
                a.proc.send_signal(signal.SIGCONT)
            await wait_for_condition(lambda: state(pid) is None, 20, "the lost attempt to be killed")
            await _worker_exit(first, tmp_path / "first.log")
        finally:
            for worker in (first, second):
                if worker is not None and worker.poll() is None:
                    worker.terminate()
                    await asyncio.to_thread(worker.wait, 30)
        done = await api.ok("GET", f"/jobs/{job['id']}")
        assert done["status"] == "COMPLETED" and done["attempt"] == 2, done
        assert body(tmp_path) == ["start 1", "start 2", "end 2"]  # attempt 1 never went on
        assert "lease lost" in (tmp_path / "first.log").read_text()
        await a.stop()
        await b.stop()
    finally:
        await drop_database(pg_root_url, database)


async def _swept(database: str) -> bool:
    """Whether the reaper swept once (it knows the queue was away only from its last sweep)."""
    conn = await asyncpg.connect(database)
    try:
        return bool(await conn.fetchval("SELECT last_sweep_at IS NOT NULL FROM reaper_clock"))
    finally:
        await conn.close()


async def _registered(api: Api, p: str, n: int) -> bool:
    return len((await api.ok("GET", f"/workers?project={p}&status=ONLINE"))["workers"]) >= n


async def test_a_job_whose_lease_was_lost_is_killed_and_not_reported(
    server: ServerProcess, api: Api, project: dict, database_url: str, tmp_path: Path
) -> None:
    """The job's lease runs out (backdated) and the reaper requeues it; another worker takes it. The
    first worker's next heartbeat says the attempt is no longer its own: its job is killed at once
    (no SIGTERM to clean up while attempt 2 runs), and attempt 1 is not reported."""
    p = project["name"]
    job, script = await _queue(api, p, tmp_path)
    log = tmp_path / "worker.log"
    worker = spawn_worker(
        server.url,
        p,
        log,
        "--cpus",
        "1",
        "--forever",
        "--checkpoint-root",
        str(tmp_path / "ck"),
        script=script,
    )
    try:
        await wait_for_file(tmp_path / "attempt-1.json", 30)
        pid = json.loads((tmp_path / "attempt-1.json").read_text())["pid"]
        await expire_lease(database_url, job["id"])
        server.sweep()

        async def requeued() -> bool:
            return (await api.ok("GET", f"/jobs/{job['id']}"))["status"] == "PENDING"

        await wait_until(requeued, 15, what="the reaper to requeue the job")
        other = await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "other"})
        assert [(j["id"], j["attempt"]) for j in other["jobs"]] == [(job["id"], 2)]
        worker.send_signal(signal.SIGUSR1)  # its heartbeat now
        await wait_for_condition(lambda: state(pid) is None, 15, "the lost attempt to be killed")
        assert body(tmp_path) == ["start 1"]  # killed, not asked to stop
        await wait_for_condition(lambda: "not reported" in log.read_text(), 15, "the worker to let it go")
        await api.ok("POST", f"/jobs/{job['id']}/complete", {"attempt": 2})
        done = await api.ok("GET", f"/jobs/{job['id']}")
        assert done["status"] == "COMPLETED" and done["attempt"] == 2
        assert "report refused" not in log.read_text()
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)


async def test_a_cancel_reaches_the_running_job_within_a_second(
    server: ServerProcess, api: Api, project: dict, tmp_path: Path
) -> None:
    """With the default lease (heartbeats every 20 s) a cancel reaches the job's process through
    the worker's control stream: SIGTERM within a second of the cancel's answer."""
    p = project["name"]
    job, script = await _queue(api, p, tmp_path)
    log = tmp_path / "worker.log"
    worker = spawn_worker(
        server.url, p, log, "--cpus", "1", "--checkpoint-root", str(tmp_path / "ck"), script=script
    )
    try:
        await wait_for_file(tmp_path / "attempt-1.json", 30)
        assert (await api.ok("POST", f"/jobs/{job['id']}/cancel"))["status"] == "RUNNING"
        answered = time.time()
        stopped = tmp_path / "stopped-1"
        await wait_for_file(stopped, 10)
        assert float(stopped.read_text()) - answered < 1.0
        await _worker_exit(worker, log)
    finally:
        if worker.poll() is None:
            worker.kill()
    done = await api.ok("GET", f"/jobs/{job['id']}")
    assert done["status"] == "CANCELLED"
    assert os.path.exists(tmp_path / "ck" / p / str(job["id"]))
