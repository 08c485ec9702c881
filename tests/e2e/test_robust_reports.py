"""Reports that a server or proxy refuses as a whole are split, not dropped; a server holding as
many waiting claims as it takes sends workers away politely."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Api, wait_until
from helpers import PYTHON

from whatsnext.api.client import AsyncServer, Client, CLIFormatter


async def test_a_refused_report_batch_is_split_and_no_job_runs_twice(
    server_factory: Any,
    http: aiohttp.ClientSession,
    project: dict[str, Any],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # A body limit far below what a batch of these reports weighs (each carries ~16 KiB of output).
    srv = await server_factory("--max-body-bytes", "65536")
    api = Api(srv.url, http)
    p = project["name"]
    n = 40
    # The jobs all run at once and end together (each blocks on a lock the test holds until all
    # have started), so their reports are pending together: the worker's batch is far above the limit.
    started = tmp_path / "started"
    started.mkdir()
    gate = tmp_path / "gate"
    gate.touch()
    script = tmp_path / "chatty.py"
    script.write_text(
        "import fcntl, os, sys\n"
        f"open(os.path.join({str(started)!r}, str(os.getpid())), 'w').close()\n"
        f"with open({str(gate)!r}) as gate:\n"
        "    fcntl.flock(gate, fcntl.LOCK_SH)\n"
        "sys.stdout.write('x' * 40000 + '\\n')\n"
    )
    await api.ok("POST", f"/projects/{p}/jobs/batch", [{"name": f"j{i}", "task": "t"} for i in range(n)])
    fmt = CLIFormatter(executable=PYTHON, script=str(script))
    worker = Client("t", "chatty", await AsyncServer(srv.url).get_project(p), fmt, available_cpu=n)

    async def all_started() -> bool:
        return len(os.listdir(started)) == n

    with open(gate) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        run = asyncio.create_task(worker.work_async())
        await wait_until(all_started, timeout=60, what="every job to start")
    summary = await asyncio.wait_for(run, 120)
    assert summary.completed == n
    assert "sending it in halves" in capfd.readouterr().out, "the server refused a batch as too large"
    jobs = (await api.ok("GET", f"/projects/{p}/jobs?limit=1000"))["jobs"]
    assert sorted(j["status"] for j in jobs) == ["COMPLETED"] * n
    assert all(j["attempt"] == 1 for j in jobs), "every job ran once: no report was dropped"
    one = await api.ok("GET", f"/jobs/{jobs[0]['id']}")
    assert one["log_tail"], "the output tail travelled with the report"


async def test_past_the_waiting_claims_cap_a_claim_answers_at_once(
    server_factory: Any, http: aiohttp.ClientSession, project: dict[str, Any]
) -> None:
    srv = await server_factory("--max-waiting-claims", "2")
    p = project["name"]
    body = {"worker_name": "w", "wait": 20}
    url = f"{srv.url}/projects/{p}/claim"

    async def claim() -> tuple[int, dict[str, Any], str | None]:
        async with http.post(url, json=body) as resp:
            return resp.status, await resp.json(), resp.headers.get("Retry-After")

    held = [asyncio.create_task(claim()) for _ in range(2)]
    try:

        async def two_waiting() -> bool:
            async with http.get(f"{srv.url}/health") as resp:
                return (await resp.json())["waiting_claims"] == 2

        await wait_until(two_waiting, what="two claims waiting")
        status, data, retry_after = await asyncio.wait_for(claim(), 5)
        assert status == 200 and data["jobs"] == [] and data["retry_after"] == 5 and retry_after == "5"
        # The two waiting claims still get jobs.
        async with http.post(f"{srv.url}/projects/{p}/jobs/batch", json=[{"name": "a", "task": "t"}]) as resp:
            assert resp.status == 201
        done, _ = await asyncio.wait(held, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert done and next(iter(done)).result()[1]["jobs"]
    finally:
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
