"""End to end on a real one-node SLURM: jobs submitted from Python run through sbatch via a worker."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from conftest import Api, wait_until

from whatsnext.api.client import AsyncServer, Client, Job
from whatsnext.api.client.formatters.slurm import SlurmFormatter


def slurm_job_names() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


async def test_python_jobs_run_through_sbatch(
    slurm: None, server_factory, http, project: dict, tmp_path: Path
) -> None:
    srv = await server_factory("--lease-seconds", "3")
    api = Api(srv.url, http)
    p = await AsyncServer(srv.url).get_project(project["name"])
    ok = Job("hello", "t", {"code": 0, "msg": "hello-from-slurm", "sleep": 0})
    gpu = Job("gpu", "t", {"code": 0, "msg": "gpu", "sleep": 0}, required_accelerators=1)
    bad = Job("bad", "t", {"code": 3, "msg": "failing", "sleep": 0})
    long = Job("long", "t", {"code": 0, "msg": "long", "sleep": 300}, priority=-1)
    await p.extend_queue([ok, gpu, bad, long])
    fmt = SlurmFormatter(
        command="echo {msg} CUDA=$CUDA_VISIBLE_DEVICES; sleep {sleep}; exit {code}",
        shell=True,
        log_dir=tmp_path,
        poll_interval=0.2,
        max_poll_interval=1.0,
    )
    client = Client("t", "slurm-worker", p, fmt, available_cpu=4, available_accelerators=2)
    worker = asyncio.create_task(client.work_async())
    try:

        async def long_running() -> bool:
            return (await api.ok("GET", f"/jobs/{long.id}"))["status"] == "RUNNING" and any(
                n.startswith(f"wn-{long.id}-") for n in slurm_job_names()
            )

        await wait_until(long_running, timeout=60, interval=0.2, what="the long job to run on SLURM")
        await api.ok("POST", f"/jobs/{long.id}/cancel")
        await asyncio.wait_for(worker, 90)
    finally:
        if not worker.done():
            worker.cancel()
    hello = await api.ok("GET", f"/jobs/{ok.id}")
    assert hello["status"] == "COMPLETED" and "hello-from-slurm" in hello["log_tail"]
    g = await api.ok("GET", f"/jobs/{gpu.id}")
    assert g["status"] == "COMPLETED"
    cuda = g["log_tail"].split("CUDA=", 1)[1].split()[0] if "CUDA=" in g["log_tail"] else ""
    assert cuda, f"the GPU job saw no CUDA_VISIBLE_DEVICES: {g['log_tail']!r}"
    failed = await api.ok("GET", f"/jobs/{bad.id}")
    assert failed["status"] == "FAILED" and failed["exit_code"] == 3
    cancelled = await api.ok("GET", f"/jobs/{long.id}")
    assert cancelled["status"] == "CANCELLED"
    assert not any(n.startswith(f"wn-{long.id}-") for n in slurm_job_names()), "the cancelled job left squeue"
