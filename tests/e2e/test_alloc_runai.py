"""The allocator on RUN:AI, through a stand-in ``runai`` that runs each workload's command here:
under --auth, a workload's workers (with a worker token from a file, never the allocator's) run
the queue's jobs and end when idle, and the workload's output is kept; a workload still pending is
deleted when the work is gone; a refused submission is recorded and reported."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from alloc_env import allocations, allocators, make_queue, stop, wait_jobs  # noqa: F401  (fixture)
from conftest import Api, wait_until
from runai_standin import RunaiStandIn

ADMIN = "wnt_" + "alloc" * 8 + "abc"
ENDED = ("FINISHED", "FAILED", "CANCELLED")


class AuthApi(Api):
    """``Api`` with a bearer token."""

    def __init__(self, base: str, session: Any, token: str) -> None:
        super().__init__(base, session)
        self.token = token

    async def call(
        self, method: str, path: str, json: Any = None, data: Any = None, timeout: float = 60
    ) -> Any:
        import json as json_

        import aiohttp

        headers = {"Authorization": f"Bearer {self.token}"}
        kwargs: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=timeout), "headers": headers}
        if json is not None:
            kwargs["json"] = json
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            return resp.status, (json_.loads(text) if text else None)


@pytest.fixture
def runai(tmp_path: Path) -> Any:
    fake = RunaiStandIn(tmp_path / "runai")
    yield fake
    fake.stop_all()


async def _jobs(api: Api, project: str, out: Path, n: int) -> list[int]:
    out.mkdir(exist_ok=True)
    body = {"task": "t", "parameters": {"out": str(out), "sleep": 0.5}}
    return [
        (await api.ok("POST", f"/projects/{project}/jobs", {"name": f"j{i}", **body}))["id"] for i in range(n)
    ]


async def test_workloads_run_the_jobs_with_their_own_token_and_end_when_idle(
    server_factory: Any,
    http: Any,
    tmp_path: Path,
    runai: RunaiStandIn,
    allocators: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin_file = tmp_path / "admin-token"
    admin_file.write_text(ADMIN + "\n")
    srv = await server_factory("--auth", "--admin-token-file", str(admin_file))
    api = AuthApi(srv.url, http, ADMIN)
    p = f"runai-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": p})
    worker_token = (await api.ok("POST", "/tokens", {"name": "pilots", "role": "worker", "projects": [p]}))[
        "token"
    ]
    token_file = tmp_path / "worker-token"
    token_file.write_text(worker_token + "\n")
    token_file.chmod(0o600)
    options = {"runai_project": "team", "image": "registry.example/wn:1", "cpus_per_worker": 2}
    q = (await make_queue(api, p, backend="runai", options=options, max_workers=1, idle_timeout=2))["name"]
    ids = await _jobs(api, p, tmp_path / "out", 3)
    monkeypatch.setenv("WHATSNEXT_TOKEN", ADMIN)  # the allocator's own token
    loop = allocators(srv.url, q, tmp_path / "logs", runai_bin=str(runai.bin), token_file=str(token_file))
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stop=stopping))
    try:
        await wait_jobs(api, ids, "COMPLETED", timeout=60)

        async def ended() -> bool:
            recent = await allocations(api, q)
            return bool(recent) and all(a["state"] in ENDED for a in recent)

        await wait_until(ended, timeout=60, interval=0.2, what="the workload to end when idle")
    finally:
        await stop(task, stopping)
    [allocation] = await allocations(api, q)  # one worker at most, running 2 jobs at once
    assert allocation["state"] == "FINISHED" and allocation["external_id"] == allocation["name"], allocation
    [submit] = runai.calls("submit")
    assert submit[:12] == [
        "training", "submit", allocation["name"], "-p", "team", "-i", "registry.example/wn:1",
        "--cpu-core-request", "2", "--backoff-limit", "0", "--command",
    ]  # fmt: skip
    assert submit[12:15] == ["--", "bash", "-c"]
    script = submit[15]
    assert f"--worker-token-file {token_file}" in script and "--idle-timeout 2" in script
    assert ADMIN not in (runai.root / "calls.log").read_text(), "the allocator's token is never handed on"
    log = (tmp_path / "logs" / q / f"{allocation['name']}.log").read_text()
    assert "idle: nothing ran or was claimed for the idle timeout; stopping" in log, log
    assert "worker done: 3 completed" in log


async def test_a_pending_workload_is_deleted_when_the_work_is_gone_and_a_refusal_is_reported(
    server: Any,
    api: Api,
    project: dict[str, Any],
    tmp_path: Path,
    runai: RunaiStandIn,
    allocators: Any,  # noqa: F811
) -> None:
    p = project["name"]
    options = {"runai_project": "team", "image": "img"}
    q = (await make_queue(api, p, backend="runai", options=options))["name"]
    runai.set(hold=True)  # RUN:AI keeps the workload pending
    [job] = await _jobs(api, p, tmp_path / "out", 1)
    loop = allocators(server.url, q, tmp_path, runai_bin=str(runai.bin))
    await loop.run_pass()
    await loop.run_pass()
    [waiting] = await allocations(api, q)
    assert (waiting["state"], waiting["reason"]) == ("QUEUED", "Pending"), waiting
    await api.ok("POST", f"/jobs/{job}/cancel")
    await loop.run_pass()
    [cancelled] = await allocations(api, q)
    assert cancelled["state"] == "CANCELLED", cancelled
    assert [c[:3] for c in runai.calls("delete")] == [["training", "delete", waiting["name"]]]

    runai.set(hold=True, submit_error="Error: project team is over its GPU quota")
    await _jobs(api, p, tmp_path / "out", 1)
    await loop.run_pass()
    refused = [a for a in await allocations(api, q) if a["id"] != waiting["id"]]
    assert [(a["state"], a["reason"]) for a in refused] == [
        ("FAILED", "not submitted: runai submit failed: Error: project team is over its GPU quota")
    ]
    error = (await api.ok("GET", f"/alloc/queues/{q}"))["last_error"]
    assert error == "runai submit failed: Error: project team is over its GPU quota"
    await loop.release()
