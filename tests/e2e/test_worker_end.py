"""Walltime is the job's timeout, with real worker processes: a worker with --deadline takes only
the jobs whose timeout fits in what is left of its time, says why it leaves the others, and near
its end hands back what still runs (PREEMPTED: back to the queue without using an attempt)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import Api, ServerProcess
from helpers import records, spawn_worker, wait_for_file


async def _job(api: Api, project: str, name: str, out: Path, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "task": "t", "parameters": {"out": str(out)}, **fields}
    return dict(await api.ok("POST", f"/projects/{project}/jobs", body))


async def test_a_worker_with_a_deadline_takes_only_jobs_whose_timeout_fits(
    server: ServerProcess, api: Api, project: dict[str, Any], tmp_path: Path
) -> None:
    p = project["name"]
    long = await _job(api, p, "long", tmp_path, timeout=3600)
    short = await _job(api, p, "short", tmp_path, timeout=60)
    log = tmp_path / "worker.log"
    registered = time.time()
    worker = spawn_worker(server.url, p, log, "--deadline", "10m", "--cpus", "2", "--gpus", "none")
    try:
        # Without --forever it ends once nothing left fits it: the long job does not keep it.
        code = await asyncio.to_thread(worker.wait, 60)
    finally:
        if worker.poll() is None:
            worker.kill()
    output = log.read_text()
    assert code == 0, output
    assert set(records(tmp_path)) == {short["id"]}
    assert (await api.ok("GET", f"/jobs/{short['id']}"))["status"] == "COMPLETED"
    assert (await api.ok("GET", f"/jobs/{long['id']}"))["status"] == "PENDING"
    assert f"job {long['id']}: its timeout (3600 s) is longer than this worker's time left" in output
    [w] = (await api.ok("GET", f"/workers?project={p}"))["workers"]
    end = datetime.fromisoformat(w["deadline"]).timestamp()
    assert registered + 600 - 5 < end < time.time() + 600


async def test_near_its_end_a_worker_hands_back_what_runs(
    server: ServerProcess, api: Api, project: dict[str, Any], tmp_path: Path
) -> None:
    p = project["name"]
    never = tmp_path / "never"  # the job waits for it: only the worker's end stops it
    job = await _job(api, p, "endless", tmp_path, parameters={"out": str(tmp_path), "wait-for": str(never)})
    log = tmp_path / "worker.log"
    worker = spawn_worker(server.url, p, log, "--deadline", "4s", "--grace", "1", "--cpus", "1", "--forever")
    try:
        await wait_for_file(tmp_path / f"{job['id']}.started")
        code = await asyncio.to_thread(worker.wait, 30)  # it stops at its end, --forever or not
    finally:
        if worker.poll() is None:
            worker.kill()
    output = log.read_text()
    assert code == 0, output
    assert "the worker's time ends" in output
    after = await api.ok("GET", f"/jobs/{job['id']}")
    assert after["status"] == "PENDING", after  # back in the queue, for a worker with time left
    events = (await api.ok("GET", f"/jobs/{job['id']}/events"))["events"]
    assert events[-1]["status"] == "PENDING" and "the worker's time ends" in (events[-1]["reason"] or "")
    assert not (tmp_path / f"{job['id']}.json").exists()  # stopped, not finished
