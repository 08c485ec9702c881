"""Task versions: a change of a task is a new version for the jobs submitted after it, a job keeps
the version it was submitted with (its command, defaults and resources, run by a real worker), a
create with exist_ok names what it kept, and a project's strict_parameters setting round-trips."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from conftest import Api
from helpers import PYTHON, cli

from whatsnext.api.client import AsyncServer, Server
from whatsnext.api.client.tasks import TaskSettingsWarning

ROOT = Path(__file__).resolve().parents[2]
PRINT = "import sys; print(*sys.argv[1:])"


def printing(label: str) -> str:
    """A command template whose job prints ``label``, then its ``word`` and ``n`` parameters."""
    return f'{PYTHON} -c "{PRINT}" {label} {{word}} {{n}}'


async def new_project(api: Api) -> str:
    name = f"tv-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": name}, expect=201)
    return name


async def new_task(api: Api, project: str, **settings: Any) -> dict[str, Any]:
    body = {"name": "echo", "project_id": project, "command": printing("v1"), "defaults": {"word": "old"}}
    return dict(await api.ok("POST", "/tasks/", body | settings, expect=201))


async def submit(api: Api, project: str, n: int) -> dict[str, Any]:
    job = {"name": f"job{n}", "task": "echo", "parameters": {"n": n}}
    return dict(await api.ok("POST", f"/projects/{project}/jobs", job, expect=201))


async def printed(api: Api, job_id: int) -> list[str]:
    return [x["line"] for x in (await api.ok("GET", f"/jobs/{job_id}/logs"))["lines"]]


def refused(status: int, body: Any, field: str, code: int = 422) -> None:
    assert status == code, body
    details = body["error"]["details"]
    fields = [d["field"] for d in details] if isinstance(details, list) else [details["field"]]
    assert field in fields, body


# ---------------------------------------------------------------- a job keeps its version


async def test_a_queued_job_runs_the_version_it_was_submitted_with(app_api: Api, app_url: str) -> None:
    project = await new_project(app_api)
    task = await new_task(app_api, project)
    assert task["version"] == 1 and task["updated_at"] is None
    old = await submit(app_api, project, 1)

    changed = await app_api.ok(
        "PATCH",
        f"/projects/{project}/tasks/echo",
        {"command": printing("v2"), "defaults": {"word": "new"}, "required_cpu": 2},
    )
    assert changed["version"] == 2 and changed["command"] == printing("v2")
    assert changed["updated_at"] is not None and changed["id"] == task["id"]
    new = await submit(app_api, project, 2)
    listed = (await app_api.ok("GET", f"/projects/{project}/tasks"))["tasks"]
    assert [(t["name"], t["version"]) for t in listed] == [("echo", 2)]

    # Resources are copied onto a job when it is submitted: the old job keeps the old ones.
    assert (await app_api.ok("GET", f"/jobs/{old['id']}"))["required_cpu"] == 1
    assert (await app_api.ok("GET", f"/jobs/{new['id']}"))["required_cpu"] == 2

    # A real worker without a command of its own runs each job's task command.
    env = {**os.environ, "WHATSNEXT_SERVER": app_url, "PYTHONPATH": str(ROOT)}
    worker = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "whatsnext", "worker", "--project", project, "--cpus", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    for job in (old, new):
        assert (await app_api.ok("GET", f"/jobs/{job['id']}"))["status"] == "COMPLETED"
    assert await printed(app_api, old["id"]) == ["v1 old 1"]
    assert await printed(app_api, new["id"]) == ["v2 new 2"]

    history = await app_api.ok("GET", f"/projects/{project}/tasks/echo/versions")
    assert history["task"] == "echo" and history["version"] == 2
    first, second = history["versions"]
    assert (first["version"], first["command"], first["defaults"]) == (1, printing("v1"), {"word": "old"})
    assert (second["version"], second["command"], second["defaults"]) == (2, printing("v2"), {"word": "new"})
    assert first["settings"]["required_cpu"] == 1 and second["settings"]["required_cpu"] == 2
    assert second["created_at"] >= first["created_at"]


@pytest.mark.parametrize("kept", ["none", "without settings"])
async def test_a_version_from_before_versions_is_kept_when_the_task_changes(
    app_api: Api, database_url: str, kept: str
) -> None:
    """A task that a submission created, or that existed before versions (its first version copied
    without settings), has its current version written down when it first changes: a claim still
    hands a job of that version its command and defaults."""
    project = await new_project(app_api)
    task = await new_task(app_api, project)
    conn = await asyncpg.connect(database_url)
    try:
        if kept == "none":
            await conn.execute("DELETE FROM task_versions WHERE task_id = $1", task["id"])
        else:
            await conn.execute(
                "UPDATE task_versions SET settings = '{}', actor = NULL WHERE task_id = $1", task["id"]
            )
        old = await submit(app_api, project, 1)
        await app_api.ok(
            "PATCH", f"/projects/{project}/tasks/echo", {"command": printing("v2"), "max_attempts": 3}
        )
        new = await submit(app_api, project, 2)
        claimed = await app_api.ok(
            "POST", f"/projects/{project}/claim", {"worker_name": "test", "max_jobs": 2, "free_cpu": 2}
        )
        by_id = {j["id"]: j for j in claimed["jobs"]}
        assert (by_id[old["id"]]["command"], by_id[old["id"]]["max_attempts"]) == (printing("v1"), 1)
        assert (by_id[new["id"]]["command"], by_id[new["id"]]["max_attempts"]) == (printing("v2"), 3)
        versions = (await app_api.ok("GET", f"/projects/{project}/tasks/{task['id']}/versions"))["versions"]
        assert [v["version"] for v in versions] == [1, 2]
        assert versions[0]["settings"]["max_attempts"] == 1, "the first version's settings are filled in"
        assert versions[1]["settings"]["max_attempts"] == 3
        rows = await conn.fetchval("SELECT count(*) FROM task_versions WHERE task_id = $1", task["id"])
        assert rows == 2
    finally:
        await conn.close()


async def test_a_task_never_changed_lists_its_one_version(app_api: Api) -> None:
    project = await new_project(app_api)
    # A submission creates the task (no version written down): its listing still shows version 1.
    await app_api.ok("POST", f"/projects/{project}/jobs", {"name": "a", "task": "auto"}, expect=201)
    history = await app_api.ok("GET", f"/projects/{project}/tasks/auto/versions")
    assert history["version"] == 1
    assert [(v["version"], v["command"], v["actor"]) for v in history["versions"]] == [(1, None, None)]
    assert history["versions"][0]["settings"]["required_cpu"] == 1
    made = await new_task(app_api, project)
    shown = await app_api.ok("GET", f"/projects/{project}/tasks/echo")
    assert shown == await app_api.ok("GET", f"/projects/{project}/tasks/{made['id']}")
    assert shown["version"] == 1 and shown["command"] == printing("v1")


async def test_a_change_that_changes_nothing_keeps_the_version(app_api: Api) -> None:
    project = await new_project(app_api)
    task = await new_task(app_api, project, timeout=60.0, required_tags=["gpu"])
    same = {
        "command": task["command"],
        "defaults": {"word": "old"},
        "required_cpu": 1,
        "timeout": 60,
        "required_tags": ["gpu"],
        "retry_delay": 0,
    }
    answer = await app_api.ok("PATCH", f"/projects/{project}/tasks/echo", same)
    assert answer["version"] == 1 and answer["updated_at"] is None
    assert len((await app_api.ok("GET", f"/projects/{project}/tasks/echo/versions"))["versions"]) == 1
    # Fields that may be null: removing the timeout is a change.
    answer = await app_api.ok("PATCH", f"/projects/{project}/tasks/echo", {"timeout": None})
    assert (answer["version"], answer["timeout"]) == (2, None)
    pair = {"concurrency_key": "licence", "concurrency_limit": 2}
    answer = await app_api.ok("PATCH", f"/projects/{project}/tasks/echo", pair)
    assert (answer["version"], answer["concurrency_key"], answer["concurrency_limit"]) == (3, "licence", 2)
    answer = await app_api.ok(
        "PATCH", f"/projects/{project}/tasks/echo", {"concurrency_key": None, "concurrency_limit": None}
    )
    assert (answer["version"], answer["concurrency_key"]) == (4, None)


async def test_bad_changes_are_refused_naming_the_field(app_api: Api) -> None:
    project = await new_project(app_api)
    await new_task(app_api, project)
    path = f"/projects/{project}/tasks/echo"
    refused(*await app_api.patch(path, {"command": "python x.py {lr"}), "command")
    _, body = await app_api.patch(path, {"command": "python x.py {lr"})
    assert body["error"]["message"].startswith("command:"), body
    # Only the shell changes: the task's command is checked as a shell line.
    await app_api.ok("PATCH", path, {"command": "echo '{word}'"})
    refused(*await app_api.patch(path, {"shell": True}), "shell")
    refused(*await app_api.patch(path, {"command": "echo '{word}'", "shell": True}), "command")
    refused(*await app_api.patch(path, {"required_cpu": None}), "required_cpu")
    refused(*await app_api.patch(path, {"required_cpu": -1}), "required_cpu")
    refused(*await app_api.patch(path, {"max_attempts": 0}), "max_attempts")
    refused(*await app_api.patch(path, {"defaults": []}), "defaults")
    refused(*await app_api.patch(path, {"concurrency_key": "k"}), "concurrency_limit")
    refused(
        *await app_api.patch(path, {"concurrency_key": "k", "concurrency_limit": None}), "concurrency_limit"
    )
    refused(*await app_api.patch(path, {"name": "other"}), "name")
    refused(*await app_api.patch(path, {}), "body")
    refused(*await app_api.patch(f"/projects/{project}/tasks/nope", {"required_cpu": 2}), "task", 404)
    refused(
        *await app_api.patch(f"/projects/nope-{uuid.uuid4().hex}/tasks/echo", {"required_cpu": 2}),
        "project",
        404,
    )
    refused(*await app_api.get(f"/projects/{project}/tasks/nope/versions"), "task", 404)
    refused(*await app_api.get(f"/projects/{project}/tasks/nope"), "task", 404)
    task = await app_api.ok("GET", f"/projects/{project}/tasks/echo")
    assert task["version"] == 2 and task["command"] == "echo '{word}'", "nothing refused was applied"


# ---------------------------------------------------------------- exist_ok says what differs


async def test_exist_ok_names_each_setting_it_kept(app_api: Api, app_url: str) -> None:
    project = await new_project(app_api)
    base = {
        "name": "train",
        "project_id": project,
        "command": "python a.py --lr {lr}",
        "required_cpu": 1,
        "defaults": {"lr": 0.1},
    }
    await app_api.ok("POST", "/tasks/", base, expect=201)
    status, body = await app_api.post("/tasks/", base)
    assert status == 409 and body["error"]["details"]["field"] == "name", body

    same = await app_api.ok("POST", "/tasks/", base | {"exist_ok": True}, expect=200)
    assert same["existed"] is True and same["differs"] == {} and same["version"] == 1
    other = base | {"command": "python b.py --lr {lr}", "required_cpu": 2, "exist_ok": True}
    kept = await app_api.ok("POST", "/tasks/", other, expect=200)
    assert kept["differs"] == {
        "command": {"existing": "python a.py --lr {lr}", "asked": "python b.py --lr {lr}"},
        "required_cpu": {"existing": 1, "asked": 2},
    }
    assert kept["command"] == "python a.py --lr {lr}" and kept["version"] == 1, "the task is kept as it was"

    # The SDK warns, naming each difference; the CLI says it on stderr.
    srv = AsyncServer(app_url)
    try:
        sdk_project = await srv.get_project(project)
        with pytest.warns(TaskSettingsWarning) as caught:
            task = await sdk_project.create_task(
                "train", command="python b.py --lr {lr}", required_cpu=2, exist_ok=True
            )
        assert task["existed"] and task["version"] == 1
        message = str(caught[0].message)
        assert "task 'train' exists with other settings:" in message
        assert "command 'python a.py --lr {lr}' (asked 'python b.py --lr {lr}')" in message
        assert "required_cpu 1 (asked 2)" in message and "update_task" in message
        assert "defaults" not in message, "settings left at their default are not asked"
    finally:
        await srv.close()
    out = await asyncio.to_thread(
        cli,
        SimpleNamespace(url=app_url),
        "tasks", "add", "train", "--project", project, "--command", "python a.py --lr {lr}", "--cpus", "4",
        "--exist-ok",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "task exists train" in out.stdout
    assert "required_cpu 1 (asked 4)" in out.stderr and "whatsnext tasks update train" in out.stderr
    said = out.stderr.split("settings:")[1].split(";")[0]
    assert said.strip() == "required_cpu 1 (asked 4)", "settings left at their default are not asked"


# ---------------------------------------------------------------- SDK and CLI


async def test_sdk_and_cli_update_a_task_and_list_its_versions(app_api: Api, app_url: str) -> None:
    project = await new_project(app_api)
    await new_task(app_api, project, defaults={"word": "old", "seed": 1})
    server = SimpleNamespace(url=app_url)

    def sdk() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        srv = Server(app_url)
        try:
            p = srv.get_project(project)
            changed = p.update_task("echo", required_tags=("gpu",), timeout=3600)
            same = p.update_task("echo", timeout=3600.0)
            with pytest.raises(TypeError, match="no setting 'cpus'"):
                p.update_task("echo", cpus=2)
            return changed, same, p.task_versions("echo")
        finally:
            srv.close()

    changed, same, versions = await asyncio.to_thread(sdk)
    assert (changed["version"], changed["required_tags"], changed["timeout"]) == (2, ["gpu"], 3600)
    assert same["version"] == 2
    assert [v["version"] for v in versions] == [1, 2]

    out = await asyncio.to_thread(
        cli,
        server,
        "tasks", "update", "echo", "--project", project, "--command", printing("v3"),
        "--default", "word=newer", "--drop-default", "seed", "--cpus", "2", "--timeout", "none",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "updated task echo to version 3" in out.stdout
    assert "required_cpu 1 → 2" in out.stdout and "timeout 3600.0 → none" in out.stdout
    task = await app_api.ok("GET", f"/projects/{project}/tasks/echo")
    assert (task["command"], task["defaults"], task["required_cpu"], task["timeout"]) == (
        printing("v3"),
        {"word": "newer"},
        2,
        None,
    )
    assert task["required_tags"] == ["gpu"], "what was not given stays"

    again = await asyncio.to_thread(
        cli, server, "tasks", "update", "echo", "--project", project, "--cpus", "2"
    )
    assert again.returncode == 0 and "unchanged (version 3)" in again.stdout
    nothing = await asyncio.to_thread(cli, server, "tasks", "update", "echo", "--project", project)
    assert nothing.returncode != 0 and "nothing to change" in nothing.stderr
    bad = await asyncio.to_thread(
        cli, server, "tasks", "update", "echo", "--project", project, "--command", "x {y"
    )
    assert bad.returncode != 0 and "command" in bad.stderr

    listed = await asyncio.to_thread(cli, server, "tasks", "versions", "echo", "--project", project)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["VERSION", "CREATED", "BY", "CHANGED"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    assert "first" in lines[1] and "required_tags" in lines[2] and "command" in lines[3]
    shown = await asyncio.to_thread(cli, server, "tasks", "show", "echo", "--project", project)
    assert "version" in shown.stdout and "3" in shown.stdout.split("version")[1].split("\n")[0]
    ls = await asyncio.to_thread(cli, server, "tasks", "ls", "--project", project)
    assert ls.stdout.splitlines()[0].split()[:3] == ["ID", "NAME", "VERSION"]
    assert ls.stdout.splitlines()[1].split()[1:3] == ["echo", "3"]


# ---------------------------------------------------------------- strict parameters


async def test_strict_parameters_round_trips(app_api: Api, app_url: str) -> None:
    project = await new_project(app_api)
    assert (await app_api.ok("GET", f"/projects/{project}"))["strict_parameters"] is False
    on = await app_api.ok("PATCH", f"/projects/{project}", {"strict_parameters": True})
    assert on["strict_parameters"] is True and on["strict_tasks"] is False
    assert (await app_api.ok("GET", f"/projects/{project}"))["strict_parameters"] is True
    listed = {p["name"]: p for p in (await app_api.ok("GET", "/projects"))["projects"]}
    assert listed[project]["strict_parameters"] is True
    # Another change leaves it as it is.
    assert (await app_api.ok("PATCH", f"/projects/{project}", {"description": "d"}))["strict_parameters"]
    refused(*await app_api.patch(f"/projects/{project}", {"strict_parameters": "maybe"}), "strict_parameters")

    server = SimpleNamespace(url=app_url)
    off = await asyncio.to_thread(cli, server, "projects", "update", project, "--no-strict-parameters")
    assert off.returncode == 0 and off.stdout.endswith("strict parameters off\n"), off.stdout + off.stderr
    assert (await app_api.ok("GET", f"/projects/{project}"))["strict_parameters"] is False
    await asyncio.to_thread(cli, server, "projects", "update", project, "--strict-parameters")
    shown = await asyncio.to_thread(cli, server, "projects", "show", project)
    assert "strict parameters  yes" in shown.stdout
    ls = await asyncio.to_thread(cli, server, "projects", "ls")
    header, *rows = ls.stdout.splitlines()
    row = next(line for line in rows if line.split()[1] == project)
    assert row.split()[header.split().index("STRICT")] == "parameters"  # no quota: one "-"

    made = f"tv-{uuid.uuid4().hex[:8]}"
    added = await asyncio.to_thread(cli, server, "projects", "add", made, "--strict-parameters", "--json")
    assert added.returncode == 0, added.stderr
    assert (await app_api.ok("GET", f"/projects/{made}"))["strict_parameters"] is True

    def sdk() -> bool:
        srv = Server(app_url)
        try:
            return bool(srv.get_project(made).update(strict_parameters=False).strict_parameters)
        finally:
            srv.close()

    assert await asyncio.to_thread(sdk) is False
