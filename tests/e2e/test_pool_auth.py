"""Claims and registrations of several projects under ``--auth``: a token is held to its own
projects, whether it names them or asks for all of them."""

from __future__ import annotations

import uuid

import aiohttp
from conftest import ServerProcess
from test_auth import Client, World, auth_server, session  # noqa: F401  (fixtures)


async def _setup(w: World) -> tuple[Client, int]:
    """Jobs queued in A and in B, and a worker of A's worker token registered for all its projects."""
    await w.root.ok("POST", f"/projects/{w.b}/jobs", {"name": "b-job", "task": "t"})
    await w.job()
    worker = await w.worker_a.ok(
        "POST", "/workers", {"name": f"pool-{uuid.uuid4().hex[:6]}", "all_projects": True}
    )
    assert worker["all_projects"] is True and worker["project_id"] is None
    return w.worker_a, worker["id"]


async def test_all_projects_takes_only_the_tokens_projects(
    auth_server: ServerProcess,  # noqa: F811
    session: aiohttp.ClientSession,  # noqa: F811
) -> None:
    w = await World(auth_server, session).setup()
    client, worker_id = await _setup(w)
    body = {"worker_id": worker_id, "all_projects": True, "max_jobs": 100, "free_cpu": 100}
    claimed = await client.ok("POST", "/claim", body)
    assert claimed["jobs"] and {j["project"] for j in claimed["jobs"]} == {w.a}
    queue = (await w.root.ok("GET", f"/projects/{w.b}/jobs"))["jobs"]
    assert [j["status"] for j in queue] == ["PENDING"], "B's job stays queued"


async def test_naming_a_project_the_token_does_not_cover_is_refused(
    auth_server: ServerProcess,  # noqa: F811
    session: aiohttp.ClientSession,  # noqa: F811
) -> None:
    w = await World(auth_server, session).setup()
    client, worker_id = await _setup(w)
    for projects in ([w.a, w.b], [w.b], ["no-such-project"]):
        status, answer = await client.call("POST", "/claim", {"worker_id": worker_id, "projects": projects})
        assert status == 403 and answer["error"]["details"]["field"] == "projects", answer
    status, answer = await client.call("POST", "/claim", {"projects": [w.a]})
    assert status == 403 and answer["error"]["details"]["field"] == "worker_id", (
        "a worker token names its worker"
    )
    status, answer = await client.call("POST", "/workers", {"name": "x", "projects": [w.a, w.b]})
    assert status == 403 and answer["error"]["details"]["field"] == "projects"
    queue = (await w.root.ok("GET", f"/projects/{w.b}/jobs"))["jobs"]
    assert [j["status"] for j in queue] == ["PENDING"]


async def test_a_token_of_every_project_claims_from_all_of_them(
    auth_server: ServerProcess,  # noqa: F811
    session: aiohttp.ClientSession,  # noqa: F811
) -> None:
    w = await World(auth_server, session).setup()
    task = f"only-{uuid.uuid4().hex[:6]}"
    for project in (w.a, w.b):
        await w.root.ok("POST", f"/projects/{project}/jobs", {"name": "j", "task": task})
    admin = w.as_("admin")
    body = {"worker_name": "w", "all_projects": True, "tasks": [task], "max_jobs": 10, "free_cpu": 10}
    claimed = await admin.ok("POST", "/claim", body)
    assert sorted(j["project"] for j in claimed["jobs"]) == sorted([w.a, w.b])
