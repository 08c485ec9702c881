"""On a real one-node SLURM: what SLURM does to a running job ends its attempt as the worker's own
stop or timeout would. A job SLURM requeues (``scontrol requeue``) goes back to the WhatsNext queue
as PREEMPTED (its SLURM job cancelled, no attempt used) and runs again to completion; a job that
reaches its SLURM time limit fails as a timeout. Both run at once, so the test lasts as long as
SLURM takes to notice the time limit (it checks every 30 s)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Any

from conftest import Api, ServerProcess, wait_until

from whatsnext.api.client import AsyncServer, Client
from whatsnext.api.client.formatters.slurm import SlurmFormatter

ACTIVE = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED"}


def squeue_state(slurm_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-o", "%T", "-j", slurm_id], capture_output=True, text=True)
    return out.stdout.strip()


def scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True)


async def end_now(slurm_id: str) -> None:
    """Set a running SLURM job's end time to now. SLURM refuses an end time that is not after the
    job's start, in whole seconds ("Invalid time specified" in the job's first second): ask again
    until it is."""

    def accepted() -> bool:
        done = subprocess.run(
            ["scontrol", "update", f"JobId={slurm_id}", "EndTime=now"], capture_output=True, text=True
        )
        assert done.returncode == 0 or "Invalid time specified" in done.stderr, done.stderr
        return done.returncode == 0

    async def ended() -> bool:
        return await asyncio.to_thread(accepted)

    await wait_until(ended, timeout=10, interval=0.2, what=f"SLURM to take job {slurm_id}'s end time")


async def test_slurm_requeue_and_time_limit(
    slurm: None, server: ServerProcess, api: Api, tmp_path: Path
) -> None:
    p = (await api.ok("POST", "/projects", {"name": f"p-{uuid.uuid4().hex[:10]}"}))["name"]
    again = 'echo "attempt $WHATSNEXT_ATTEMPT"; if [ "$WHATSNEXT_ATTEMPT" = 1 ]; then sleep 300; fi'
    requeued = await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "requeued", "task": "t", "parameters": {"code": again}}
    )
    limited = await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "limited", "task": "t", "parameters": {"code": "sleep 300"}}
    )
    fmt = SlurmFormatter(command="bash -c {code}", log_dir=tmp_path, poll_interval=0.2, max_poll_interval=1.0)
    project = await AsyncServer(server.url).get_project(p)
    worker = asyncio.create_task(Client("t", "slurm-lifetime", project, fmt).work_async())
    handles: dict[int, str] = {}
    try:

        async def both_running() -> bool:
            for job in (requeued, limited):
                got = await api.ok("GET", f"/jobs/{job['id']}")
                if got["status"] == "RUNNING" and (got.get("external_id") or "").startswith("slurm:"):
                    handles[job["id"]] = got["external_id"].removeprefix("slurm:")
            return len(handles) == 2 and all(squeue_state(h) == "RUNNING" for h in handles.values())

        await wait_until(both_running, timeout=60, interval=0.2, what="both jobs running on SLURM")
        await asyncio.to_thread(scontrol, "requeue", handles[requeued["id"]])
        # Its time limit reached now: SLURM ends it as TIMEOUT at its next check of time limits.
        await end_now(handles[limited["id"]])
        await asyncio.wait_for(worker, 150)
    finally:
        if not worker.done():
            worker.cancel()
        for slurm_id in handles.values():
            subprocess.run(["scancel", slurm_id], check=False)
    done = await api.ok("GET", f"/jobs/{requeued['id']}")
    assert done["status"] == "COMPLETED" and done["attempt"] == 2, done
    assert "attempt 2" in done["log_tail"]
    events: list[dict[str, Any]] = (await api.ok("GET", f"/jobs/{requeued['id']}/events"))["events"]
    back = [e for e in events if e["status"] == "PENDING" and e["attempt"] == 1 and e["reason"] != "created"]
    assert [e["reason"] for e in back] == ["requeued by SLURM"], events
    assert squeue_state(handles[requeued["id"]]) not in ACTIVE  # SLURM does not run it a second time
    timed_out = await api.ok("GET", f"/jobs/{limited['id']}")
    assert timed_out["status"] == "FAILED" and timed_out["error"] == "timeout", timed_out
