"""Walltime is the job's timeout, with real worker processes: a worker with --deadline takes only
the jobs whose timeout fits in what is left of its time and says why it leaves the others."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import Api, ServerProcess
from helpers import records, spawn_worker


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
