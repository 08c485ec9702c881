"""A worker's idle timeout and token file, with real processes: ``worker --forever --idle-timeout``
runs what there is, then stops and deregisters once nothing ran or was claimed for that long; a
worker reads its token from ``--worker-token-file`` (never from the command line)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

from conftest import Api, ServerProcess
from helpers import records, spawn_worker

ADMIN = "wnt_" + "idle" * 10 + "abc"


async def test_an_idle_worker_stops_and_deregisters(server_factory: Any, http: Any, tmp_path: Path) -> None:
    admin_file = tmp_path / "admin-token"
    admin_file.write_text(ADMIN + "\n")
    srv: ServerProcess = await server_factory("--auth", "--admin-token-file", str(admin_file))
    root = Api(srv.url, http)
    p = f"idle-{uuid.uuid4().hex[:8]}"
    status, _ = await root.post("/projects", {"name": p})
    assert status == 401, "the server wants a token"

    async def as_admin(method: str, path: str, body: Any = None) -> Any:
        async with http.request(
            method, srv.url + path, json=body, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as resp:
            assert resp.status in (200, 201), await resp.text()
            return await resp.json()

    await as_admin("POST", "/projects", {"name": p})
    made = await as_admin("POST", "/tokens", {"name": "pilot", "role": "worker", "projects": [p]})
    token_file = tmp_path / "worker-token"
    token_file.write_text(made["token"] + "\n")
    token_file.chmod(0o600)
    jobs = [
        await as_admin(
            "POST",
            f"/projects/{p}/jobs",
            {"name": f"j{i}", "task": "t", "parameters": {"out": str(tmp_path)}},
        )
        for i in range(2)
    ]
    log = tmp_path / "worker.log"
    started = time.monotonic()
    env_token = os.environ.pop("WHATSNEXT_TOKEN", None)
    try:
        worker = spawn_worker(
            srv.url, p, log, "--forever", "--idle-timeout", "2s", "--worker-token-file", str(token_file),
            "--cpus", "2", "--gpus", "none",
        )  # fmt: skip
    finally:
        if env_token is not None:
            os.environ["WHATSNEXT_TOKEN"] = env_token
    try:
        code = await asyncio.to_thread(worker.wait, 60)
    finally:
        if worker.poll() is None:
            worker.kill()
    took = time.monotonic() - started
    output = log.read_text()
    assert code == 0, output
    assert set(records(tmp_path)) == {j["id"] for j in jobs}
    assert "idle: nothing ran or was claimed for the idle timeout; stopping" in output
    assert made["token"] not in output
    assert 2 <= took < 30, took
    workers = (await as_admin("GET", f"/workers?project={p}"))["workers"]
    assert [w["status"] for w in workers] == ["OFFLINE"], workers


def test_a_token_file_that_cannot_be_read_is_a_usage_error(tmp_path: Path) -> None:
    from helpers import cli

    missing = cli(None, "worker", "--worker-token-file", str(tmp_path / "nope"), "--forever")
    assert missing.returncode == 2
    assert "cannot read the token file" in missing.stderr and "nope" in missing.stderr
    empty = tmp_path / "empty"
    empty.write_text("\n\n")
    out = cli(None, "worker", "--token-file", str(empty))
    assert out.returncode == 2 and "holds no token" in out.stderr
    bad = cli(None, "worker", "--idle-timeout", "0")
    assert bad.returncode == 2 and "above 0" in bad.stderr


async def test_the_sdk_worker_returns_once_idle(
    server: ServerProcess, api: Api, project: dict[str, Any]
) -> None:
    from whatsnext.api.client import Client, CLIFormatter

    p = project["name"]
    job = await api.ok("POST", f"/projects/{p}/jobs", {"name": "j", "task": "t"})
    client = Client(
        "t",
        "idle-sdk",
        p,
        CLIFormatter(template="true"),
        available_cpu=1,
        server=server.url,
        idle_timeout=0.5,
    )
    summary = await asyncio.wait_for(client.work_async(forever=True), 30)
    assert summary.completed == 1
    assert (await api.ok("GET", f"/jobs/{job['id']}"))["status"] == "COMPLETED"
