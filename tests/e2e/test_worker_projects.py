"""One worker serving several projects against a real server: `whatsnext worker --project a
--project b` and `--all-projects` run the jobs of each project with that project in
WHATSNEXT_PROJECT, and stop when none of them has anything left; the SDK's Client takes a list
of projects; the task checks before the first claim look across the projects."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, ServerProcess, create_database, drop_database
from helpers import PYTHON, RECORD, cli, records, wait_for_file

from whatsnext.api.client import AsyncServer, Client, CLIFormatter

REPO = Path(__file__).resolve().parents[2]


async def new_project(api: Api, prefix: str = "wp") -> dict[str, Any]:
    return await api.ok("POST", "/projects", {"name": f"{prefix}-{uuid.uuid4().hex[:10]}"})


async def queue(api: Api, project: dict[str, Any], out: Path, *names: str) -> dict[int, str]:
    """Queue one recording job per name in ``project``: the project's name by job id."""
    body = [{"name": n, "task": "rec", "parameters": {"out": str(out)}} for n in names]
    ids = (await api.ok("POST", f"/projects/{project['name']}/jobs/batch", body))["ids"]
    return {job_id: project["name"] for job_id in ids}


def worker(*args: str) -> list[str]:
    return ["worker", *args, "--script", RECORD, "--executable", PYTHON, "--cpus", "2", "--gpus", "none"]


async def statuses(api: Api, project: dict[str, Any]) -> set[str]:
    return {j["status"] for j in (await api.ok("GET", f"/projects/{project['name']}/jobs"))["jobs"]}


async def test_cli_worker_serves_two_projects(server: ServerProcess, api: Api, tmp_path: Path) -> None:
    a, b = await new_project(api), await new_project(api)
    expected = {
        **await queue(api, a, tmp_path, "a1", "a2", "a3"),
        **await queue(api, b, tmp_path, "b1", "b2"),
    }
    r = cli(server, *worker("--project", a["name"], "--project", b["name"]))
    assert r.returncode == 0, r.stderr
    assert "5 completed" in r.stderr
    assert {job_id: rec["project"] for job_id, rec in records(tmp_path).items()} == expected
    assert await statuses(api, a) == await statuses(api, b) == {"COMPLETED"}


async def test_cli_worker_given_one_project_twice_serves_it_alone(
    server: ServerProcess, api: Api, tmp_path: Path
) -> None:
    a, b = await new_project(api), await new_project(api)
    expected = await queue(api, a, tmp_path, "a1")
    await queue(api, b, tmp_path / "never", "b1")
    r = cli(server, *worker("--project", a["name"], "--project", a["name"]))
    assert r.returncode == 0, r.stderr
    assert {job_id: rec["project"] for job_id, rec in records(tmp_path).items()} == expected
    assert await statuses(api, b) == {"PENDING"}


async def test_sdk_client_serves_a_list_of_projects(server: ServerProcess, api: Api, tmp_path: Path) -> None:
    a, b, c = await new_project(api), await new_project(api), await new_project(api)
    expected = {
        **await queue(api, a, tmp_path, "a1"),
        **await queue(api, b, tmp_path, "b1", "b2"),
        **await queue(api, c, tmp_path, "c1"),
    }
    srv = AsyncServer(server.url)
    # A Project (sent by its id), a name and an id: each job runs with its project's name.
    projects = [await srv.get_project(a["name"]), b["name"], c["id"]]
    client = Client("t", "pool", projects, CLIFormatter(executable=PYTHON, script=RECORD), available_cpu=2)
    summary = await asyncio.wait_for(client.work_async(), 60)
    assert summary.completed == 4
    assert {job_id: rec["project"] for job_id, rec in records(tmp_path).items()} == expected
    await srv.close()


async def test_task_checks_look_across_the_projects(server: ServerProcess, api: Api, tmp_path: Path) -> None:
    a, b = await new_project(api), await new_project(api)
    await api.ok("POST", "/tasks/", {"name": "train", "project_id": a["name"]})
    await api.ok("POST", "/tasks/", {"name": "evaluate", "project_id": b["name"]})
    await api.ok("POST", f"/projects/{b['name']}/jobs", {"name": "j", "task": "evaluate"})
    r = cli(server, *worker("--project", a["name"], "--project", b["name"], "--task", "evaluat"))
    assert r.returncode == 2
    assert f"none of projects {a['name']}, {b['name']} has a task 'evaluat'" in r.stderr
    assert "did you mean 'evaluate'" in r.stderr
    # A task of either project passes.
    r = cli(
        server,
        "worker", "--project", a["name"], "--project", b["name"], "--task", "train,evaluate",
        "--command", f"{PYTHON} -c pass", "--cpus", "1", "--gpus", "none",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert await statuses(api, b) == {"COMPLETED"}


# ---------------------------------------------------------------- every project


@pytest.fixture
async def own_server(pg_root_url: str) -> AsyncIterator[ServerProcess]:
    """A server on a database of its own: --all-projects serves every project there is."""
    url = await create_database(pg_root_url, "wn_all_projects")
    srv = await ServerProcess(url).start()
    try:
        yield srv
    finally:
        await srv.stop()
        await drop_database(pg_root_url, url)


async def test_cli_worker_serves_all_projects(own_server: ServerProcess, http: Any, tmp_path: Path) -> None:
    api = Api(own_server.url, http)
    a, b = await new_project(api), await new_project(api)
    expected = {**await queue(api, a, tmp_path, "a1", "a2"), **await queue(api, b, tmp_path, "b1")}
    r = cli(own_server, *worker("--all-projects"))
    assert r.returncode == 0, r.stderr
    assert "3 completed" in r.stderr
    assert {job_id: rec["project"] for job_id, rec in records(tmp_path).items()} == expected


async def test_all_projects_takes_in_a_project_created_later(
    own_server: ServerProcess, http: Any, tmp_path: Path
) -> None:
    api = Api(own_server.url, http)
    first = await new_project(api)
    (job_a,) = await queue(api, first, tmp_path, "a1")
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "whatsnext", "--server", own_server.url,
         *worker("--all-projects", "--forever")],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    try:
        await wait_for_file(tmp_path / f"{job_a}.json", timeout=60)
        later = await new_project(api, "later")
        (job_b,) = await queue(api, later, tmp_path, "b1")
        await wait_for_file(tmp_path / f"{job_b}.json", timeout=60)
        assert records(tmp_path)[job_b]["project"] == later["name"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, log.read_text()
