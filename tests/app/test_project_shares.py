"""A project's share of the pool and its quotas: set and removed through the API, the SDK and the
CLI, shown in every project view, refused (422) when malformed and (403) to a token that does not
cover every project."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import asyncpg
import pytest
from conftest import Api
from helpers import Result, cli

from whatsnext.api.client import AsyncServer
from whatsnext.api.client.project import KEEP
from whatsnext.api.server.tokens import hash_token, new_token

ADMIN = "shares-admin-" + uuid.uuid4().hex
NO_QUOTAS = {"max_gpus": None, "max_cpus": None, "max_running": None}
SET = {"share": 2.5, "max_gpus": 8, "max_cpus": 64, "max_running": 10}


def pool(project: dict[str, Any]) -> dict[str, Any]:
    """What a project view says of its share and quotas."""
    return {k: project[k] for k in ("share", "max_gpus", "max_cpus", "max_running")}


async def new_project(api: Api) -> str:
    name = f"share-{uuid.uuid4().hex[:10]}"
    created = await api.ok("POST", "/projects", {"name": name})
    assert pool(created) == {"share": 1.0, **NO_QUOTAS}
    return name


async def listed(api: Api, name: str) -> dict[str, Any]:
    projects = (await api.ok("GET", "/projects"))["projects"]
    return next(p for p in projects if p["name"] == name)


# ---------------------------------------------------------------- the API


async def test_share_and_quotas_are_set_shown_and_removed(app_api: Api) -> None:
    name = await new_project(app_api)
    answer = await app_api.ok("PATCH", f"/projects/{name}", SET)
    assert pool(answer) == SET
    assert pool(await app_api.ok("GET", f"/projects/{name}")) == SET
    assert pool(await listed(app_api, name)) == SET

    removed = await app_api.ok("PATCH", f"/projects/{name}", {"max_gpus": None})
    assert pool(removed) == {**SET, "max_gpus": None}, "null removes that quota only"
    kept = await app_api.ok("PATCH", f"/projects/{name}", {"description": "other fields keep them"})
    assert pool(kept) == {**SET, "max_gpus": None}
    assert kept["description"] == "other fields keep them"

    zero = await app_api.ok("PATCH", f"/projects/{name}", {"max_running": 0, "share": 1})
    assert (zero["max_running"], zero["share"]) == (0, 1.0), "0 is a quota (nothing runs), not none"
    cleared = await app_api.ok("PATCH", f"/projects/{name}", dict(NO_QUOTAS))
    assert pool(cleared) == {"share": 1.0, **NO_QUOTAS}
    assert pool(await app_api.ok("GET", f"/projects/{name}")) == {"share": 1.0, **NO_QUOTAS}


BAD = [
    ({"share": 0}, "share"),
    ({"share": -1}, "share"),
    ({"share": None}, "share"),
    ({"share": "2"}, "share"),
    ({"share": True}, "share"),
    ({"share": 1e7}, "share"),
    ({"max_gpus": -1}, "max_gpus"),
    ({"max_gpus": 1.5}, "max_gpus"),
    ({"max_gpus": "8"}, "max_gpus"),
    ({"max_cpus": True}, "max_cpus"),
    ({"max_cpus": 2**31}, "max_cpus"),
    ({"max_running": -3}, "max_running"),
    ({"max_running": [1]}, "max_running"),
    ({"description": "fine", "max_running": "ten"}, "max_running"),
    ({"max_memory": 4}, "max_memory"),
]


@pytest.mark.parametrize(("body", "field"), BAD, ids=[f"{b}" for b, _ in BAD])
async def test_a_bad_value_is_422_naming_the_field(app_api: Api, body: dict[str, Any], field: str) -> None:
    name = await new_project(app_api)
    status, out = await app_api.patch(f"/projects/{name}", body)
    assert status == 422, out
    assert out["error"]["details"][0]["field"] == field
    assert out["error"]["message"].startswith(f"{field}: ")
    project = await app_api.ok("GET", f"/projects/{name}")
    assert pool(project) == {"share": 1.0, **NO_QUOTAS} and project["description"] == ""


async def test_a_null_share_says_why(app_api: Api) -> None:
    name = await new_project(app_api)
    status, out = await app_api.patch(f"/projects/{name}", {"share": None})
    assert status == 422
    assert out["error"]["message"].startswith("share: every project has a share")


async def test_nothing_to_change_names_every_field(app_api: Api) -> None:
    name = await new_project(app_api)
    status, out = await app_api.patch(f"/projects/{name}", {})
    assert status == 422 and out["error"]["details"]["field"] == "body"
    for field in ("name", "description", "status", "strict_tasks", "share", "max_gpus", "max_cpus"):
        assert field in out["error"]["message"]
    assert "max_running" in out["error"]["message"]


async def test_the_openapi_document_describes_them(app_api: Api) -> None:
    doc = await app_api.ok("GET", "/openapi.json")
    schemas = doc["components"]["schemas"]
    update = schemas["ProjectUpdate"]["properties"]
    assert update["share"]["type"] == "number" and update["share"]["exclusiveMinimum"] == 0
    assert {"type": "null"} in update["max_gpus"]["anyOf"]
    assert "covers every project" in update["max_running"]["description"]
    assert {"share", "max_gpus", "max_cpus", "max_running"} <= set(schemas["ProjectOut"]["properties"])


# ---------------------------------------------------------------- the SDK


async def test_the_sdk_updates_share_and_quotas(app_url: str, app_api: Api) -> None:
    name = await new_project(app_api)
    async with AsyncServer(app_url) as server:
        project = await server.get_project(name)
        await project.update(share=3, max_gpus=4, max_cpus=16, max_running=2)
        assert (project.share, project.max_gpus, project.max_cpus, project.max_running) == (3.0, 4, 16, 2)
        await project.update(max_cpus=None, max_running=KEEP)
        assert (project.share, project.max_gpus, project.max_cpus, project.max_running) == (3.0, 4, None, 2)
        again = await server.get_project(name)
        assert (again.share, again.max_gpus, again.max_cpus, again.max_running) == (3.0, 4, None, 2)
        with pytest.raises(ValueError, match="nothing to change"):
            await project.update()


async def test_the_sync_sdk_updates_share_and_quotas(app_url: str, app_api: Api) -> None:
    from whatsnext.api.client import Server

    name = await new_project(app_api)

    def update() -> tuple[Any, ...]:
        server = Server(app_url)
        try:
            project = server.get_project(name).update(share=0.5, max_running=1)
            project.update(max_running=None)
            return project.share, project.max_running
        finally:
            server.close()

    # The application runs on this test's event loop: the blocking SDK waits in a thread.
    assert await asyncio.to_thread(update) == (0.5, None)


# ---------------------------------------------------------------- the CLI


async def run(url: str, *args: str, token: str | None = None) -> Result:
    """``whatsnext ARGS`` against the application on this loop (the command waits in a thread)."""
    return await asyncio.to_thread(cli, SimpleNamespace(url=url), *args, env={"WHATSNEXT_TOKEN": token})


async def test_the_cli_sets_shows_and_removes_share_and_quotas(app_url: str, app_api: Api) -> None:
    name = await new_project(app_api)
    args = ("--share", "2", "--max-gpus", "8", "--max-cpus", "64", "--max-running", "10")
    r = await run(app_url, "projects", "update", name, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"updated project {name}: share 2, quota 8 GPU, 64 CPU, 10 running"

    r = await run(app_url, "projects", "show", name)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(None, 1) for line in r.stdout.splitlines() if line.strip())
    assert (lines["share"], lines["quota"]) == ("2", "8 GPU, 64 CPU, 10 running")

    r = await run(app_url, "projects", "ls")
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split()[:5] == ["ID", "NAME", "STATUS", "SHARE", "QUOTA"]
    row = next(line for line in rows if f" {name} " in line)
    assert "  2  " in row and "8 GPU, 64 CPU, 10 running" in row

    r = await run(
        app_url, "projects", "update", name, "--max-gpus", "none", "--max-running", "NONE", "--json"
    )
    assert r.returncode == 0, r.stderr
    assert '"max_gpus": null' in r.stdout and '"max_running": null' in r.stdout
    assert pool(await app_api.ok("GET", f"/projects/{name}")) == {
        "share": 2.0,
        "max_gpus": None,
        "max_cpus": 64,
        "max_running": None,
    }
    r = await run(app_url, "projects", "update", name, "--max-cpus", "none")
    assert r.stdout.strip() == f"updated project {name}: share 2, quota -"
    r = await run(app_url, "projects", "ls")
    row = next(line for line in r.stdout.splitlines() if f" {name} " in line)
    assert row.split()[3:5] == ["2", "-"]


async def test_the_cli_refuses_bad_values_before_asking(app_url: str, app_api: Api) -> None:
    name = await new_project(app_api)
    for args, said in (
        (("--max-gpus", "-1"), "--max-gpus: expected 0 or more"),
        (("--max-cpus", "lots"), "--max-cpus: expected a whole number or 'none'"),
        (("--share", "0"), "--share: expected a number above 0"),
        (("--share", "none"), "--share: expected a number above 0"),
    ):
        r = await run(app_url, "projects", "update", name, *args)
        assert r.returncode == 2 and said in r.stderr, (args, r)
    r = await run(app_url, "projects", "update", name)
    assert r.returncode == 2 and "nothing to change: give --share, --max-gpus" in r.stderr
    r = await run(app_url, "projects", "update", name, "--share", "1e9")
    assert r.returncode == 1 and "share" in r.stderr, r
    assert pool(await app_api.ok("GET", f"/projects/{name}")) == {"share": 1.0, **NO_QUOTAS}


def test_the_cli_help_shows_an_example() -> None:
    r = cli(None, "projects", "update", "--help")
    assert r.returncode == 0
    assert "whatsnext projects update demo --share 2 --max-gpus 8" in r.stdout
    assert "--max-gpus none" in r.stdout


# ---------------------------------------------------------------- who may set them


class Tokened:
    """Requests with one token against the application with --auth: (status, JSON body)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session, self.base, self.token = session, base, token

    async def call(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.request(method, self.base + path, json=json, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, json: Any = None) -> Any:
        status, body = await self.call(method, path, json)
        assert status in (200, 201), f"{method} {path} -> {status}: {body}"
        return body


@pytest.fixture(scope="module")
async def auth_url(database_url: str) -> AsyncIterator[str]:
    """The application with --auth in this process, on the migrated test database."""
    from aiohttp.test_utils import TestServer

    from whatsnext.api.server import schema
    from whatsnext.api.server.app import create_app
    from whatsnext.api.server.config import Settings

    await asyncio.to_thread(schema.upgrade, database_url)
    settings = Settings(database_url=database_url, auth=True, admin_token=ADMIN)
    server = TestServer(create_app(settings, database_url), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def project_admin(database_url: str, project_id: int) -> str:
    """An admin token that covers one project. ``POST /tokens`` makes none (an admin token covers
    every project), so it is written into the table, as an older or hand-made one would be."""
    token = new_token()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO tokens (name, role, projects, hash) VALUES ($1, 'admin', $2, $3)",
            f"own-admin-{uuid.uuid4().hex[:8]}",
            [project_id],
            hash_token(token),
        )
    finally:
        await conn.close()
    return token


async def test_only_a_token_of_every_project_sets_share_and_quotas(
    auth_url: str, database_url: str, http: aiohttp.ClientSession
) -> None:
    root = Tokened(http, auth_url, ADMIN)
    name = f"share-{uuid.uuid4().hex[:10]}"
    project_id = (await root.ok("POST", "/projects", {"name": name}))["id"]

    async def token(role: str, projects: list[Any] | None) -> Tokened:
        body: dict[str, Any] = {"name": f"{role}-{uuid.uuid4().hex[:8]}", "role": role}
        if projects is not None:
            body["projects"] = projects
        return Tokened(http, auth_url, (await root.ok("POST", "/tokens", body))["token"])

    own_admin = Tokened(http, auth_url, await project_admin(database_url, project_id))
    for body, field in (
        ({"share": 50}, "share"),
        ({"description": "ours", "max_running": 100}, "max_running"),
        ({"max_gpus": None}, "max_gpus"),
        ({"max_cpus": 1, "share": 9}, "max_cpus"),
    ):
        status, out = await own_admin.call("PATCH", f"/projects/{name}", body)
        assert status == 403, out
        assert out["error"]["details"]["field"] == field
        assert out["error"]["message"].startswith(
            f"{field} is set only with a token that covers every project"
        )
    edited = await own_admin.ok("PATCH", f"/projects/{name}", {"description": "ours"})
    assert edited["description"] == "ours", "the project's own admin still edits the rest"

    operator = await token("operator", None)
    status, out = await operator.call("PATCH", f"/projects/{name}", {"share": 50})
    assert status == 403 and out["error"]["details"]["field"] == "role"
    assert "operator" in out["error"]["message"]
    assert pool(await root.ok("GET", f"/projects/{name}")) == {"share": 1.0, **NO_QUOTAS}

    admin = await token("admin", None)
    assert pool(await admin.ok("PATCH", f"/projects/{name}", SET)) == SET
    assert pool(await root.ok("PATCH", f"/projects/{name}", {"max_gpus": None})) == {**SET, "max_gpus": None}
    shown = await own_admin.ok("GET", f"/projects/{name}")
    assert pool(shown) == {**SET, "max_gpus": None}, "a token of the project sees its share and quotas"
    listed_ = (await own_admin.ok("GET", "/projects"))["projects"]
    assert [pool(p) for p in listed_] == [{**SET, "max_gpus": None}]

    r = await run(auth_url, "projects", "update", name, "--share", "7", token=own_admin.token)
    assert r.returncode == 1 and "share is set only with a token that covers every project" in r.stderr, r
    r = await run(auth_url, "projects", "update", name, "--share", "7", token=admin.token)
    assert r.returncode == 0 and "share 7" in r.stdout, r
