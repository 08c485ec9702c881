"""Tokens, roles and projects under --auth; the browser-safety checks that are always on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ROOT, Api, ServerProcess
from helpers import cli, spawn_worker

from whatsnext.api.server.routes import routes

ADMIN = "bootstrap-admin-" + uuid.uuid4().hex
LAB = "https://lab.example.org"
KINDS = ("none", "bad", "expired", "revoked", "viewer", "submitter", "worker_b", "operator", "admin")

READ_ANY = {"viewer", "submitter", "worker_b", "operator", "admin"}
READ_A = {"viewer", "submitter", "operator", "admin"}
SUBMIT_A = {"submitter", "operator", "admin"}
MANAGE_A = {"operator", "admin"}
ADMIN_ONLY = {"admin"}
EVERYONE = set(KINDS)

EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/health"): EVERYONE,
    ("GET", "/openapi.json"): READ_ANY,
    ("GET", "/metrics"): READ_ANY,
    ("POST", "/projects"): ADMIN_ONLY,
    ("GET", "/projects"): READ_ANY,
    ("GET", "/projects/{project}"): READ_A,
    ("PATCH", "/projects/{project}"): ADMIN_ONLY,
    ("DELETE", "/projects/{project}"): ADMIN_ONLY,
    ("POST", "/tasks/"): MANAGE_A,
    ("POST", "/tasks"): MANAGE_A,
    ("GET", "/projects/{project}/tasks"): READ_A,
    ("GET", "/projects/{project}/tasks/{task}"): READ_A,
    ("PATCH", "/projects/{project}/tasks/{task}"): MANAGE_A,
    ("GET", "/projects/{project}/tasks/{task}/versions"): READ_A,
    ("POST", "/projects/{project}/jobs"): SUBMIT_A,
    ("POST", "/projects/{project}/jobs/batch"): SUBMIT_A,
    ("GET", "/projects/{project}/jobs"): READ_A,
    ("GET", "/projects/{project}/jobs/counts"): READ_A,
    ("GET", "/projects/{project}/queue"): READ_A,
    ("DELETE", "/projects/{project}/queue"): MANAGE_A,
    ("DELETE", "/projects/{project}/jobs/{job_id}"): MANAGE_A,
    ("GET", "/projects/{project}/graph"): READ_A,
    ("GET", "/projects/{project}/groups"): READ_A,
    ("GET", "/projects/{project}/groups/{group}"): READ_A,
    ("POST", "/projects/{project}/groups/{group}/cancel"): MANAGE_A,
    ("POST", "/projects/{project}/groups/{group}/retry"): MANAGE_A,
    ("POST", "/projects/{project}/schedules"): MANAGE_A,
    ("GET", "/projects/{project}/schedules"): READ_A,
    ("GET", "/projects/{project}/schedules/{schedule}"): READ_A,
    ("PATCH", "/projects/{project}/schedules/{schedule}"): MANAGE_A,
    ("DELETE", "/projects/{project}/schedules/{schedule}"): MANAGE_A,
    ("GET", "/jobs/{job_id}"): READ_A,
    ("GET", "/jobs/{job_id}/events"): READ_A,
    ("GET", "/jobs/{job_id}/dependencies"): READ_A,
    ("POST", "/jobs/{job_id}/cancel"): MANAGE_A,
    ("POST", "/jobs/{job_id}/retry"): MANAGE_A,
    ("POST", "/jobs/{job_id}/requeue"): MANAGE_A,
    ("POST", "/workers"): ADMIN_ONLY,
    ("GET", "/workers"): READ_ANY,
    ("GET", "/workers/{worker_id}"): READ_ANY,
    ("POST", "/workers/{worker_id}/heartbeat"): ADMIN_ONLY,
    ("GET", "/workers/{worker_id}/events"): ADMIN_ONLY,
    ("DELETE", "/workers/{worker_id}"): ADMIN_ONLY,
    ("POST", "/projects/{project}/claim"): ADMIN_ONLY,
    ("POST", "/claim"): ADMIN_ONLY,
    ("POST", "/jobs/{job_id}/started"): ADMIN_ONLY,
    ("POST", "/jobs/{job_id}/complete"): ADMIN_ONLY,
    ("POST", "/jobs/{job_id}/fail"): ADMIN_ONLY,
    ("POST", "/jobs/reports"): ADMIN_ONLY,
    ("POST", "/jobs/{job_id}/logs"): ADMIN_ONLY,
    ("POST", "/jobs/logs"): ADMIN_ONLY,
    ("GET", "/jobs/{job_id}/logs"): READ_A,
    ("POST", "/jobs/{job_id}/artifacts"): ADMIN_ONLY,
    ("GET", "/jobs/{job_id}/artifacts"): READ_A,
    ("GET", "/projects/{project}/artifacts"): READ_A,
    ("POST", "/tokens"): ADMIN_ONLY,
    ("GET", "/tokens"): ADMIN_ONLY,
    ("DELETE", "/tokens/{token_id}"): ADMIN_ONLY,
    ("POST", "/prune"): ADMIN_ONLY,
    ("GET", "/projects/{project}/demand"): READ_A,
    ("GET", "/demand"): READ_ANY,
    ("POST", "/alloc/queues"): MANAGE_A,
    ("GET", "/alloc/queues"): READ_ANY,
    ("GET", "/alloc/queues/{name}"): READ_A,
    ("PATCH", "/alloc/queues/{name}"): MANAGE_A,
    ("DELETE", "/alloc/queues/{name}"): MANAGE_A,
    ("POST", "/alloc/queues/{name}/lease"): MANAGE_A,
    ("DELETE", "/alloc/queues/{name}/lease"): MANAGE_A,
    ("POST", "/alloc/queues/{name}/allocations"): MANAGE_A,
    ("GET", "/alloc/queues/{name}/allocations"): READ_A,
    ("PATCH", "/allocations/{alloc_id}"): MANAGE_A,
}
"""Which token kinds each route lets through: the policy, written down apart from the server's."""


class Client:
    """Requests with one token (or none) against one server: (status, JSON body)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session, self.base, self.token = session, base, token

    async def call(
        self, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        h = dict(headers or {})
        if self.token is not None:
            h["Authorization"] = f"Bearer {self.token}"
        async with self.session.request(method, self.base + path, json=json, headers=h) as resp:
            body = await resp.json(content_type=None) if resp.content_type == "application/json" else None
            return resp.status, body

    async def ok(self, method: str, path: str, json: Any = None) -> Any:
        status, body = await self.call(method, path, json)
        assert status in (200, 201), f"{method} {path} -> {status}: {body}"
        return body


@pytest.fixture(scope="module")
async def auth_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerProcess]:
    token_file = tmp_path_factory.mktemp("auth") / "admin-token"
    token_file.write_text(ADMIN + "\n")
    srv = await ServerProcess(
        database_url,
        "--auth",
        "--admin-token-file",
        str(token_file),
        "--cors-origin",
        LAB,
        "--auth-failures-per-minute",
        "0",  # these tests present many bad tokens on purpose (test_limits tests the limit)
    ).start()
    yield srv
    await srv.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class World:
    """Project A (with a task, jobs, a worker of A's worker token holding a running job), project B,
    and one token of each kind the matrix tries."""

    def __init__(self, srv: ServerProcess, session: aiohttp.ClientSession) -> None:
        self.srv, self.session = srv, session
        self.root = Client(session, srv.url, ADMIN)
        self.tokens: dict[str, str | None] = {"none": None, "bad": "wnt_" + "x" * 43}

    def as_(self, kind: str) -> Client:
        return Client(self.session, self.srv.url, self.tokens[kind])

    async def token(self, role: str, projects: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"name": f"{role}-{uuid.uuid4().hex[:8]}", "role": role, **extra}
        if projects is not None:
            body["projects"] = projects
        return await self.root.ok("POST", "/tokens", body)

    async def job(self, parameters: dict[str, Any] | None = None) -> int:
        body = {"name": "j", "task": "t", "parameters": parameters or {}}
        return (await self.root.ok("POST", f"/projects/{self.a}/jobs", body))["id"]

    async def worker(self, client: Client | None = None) -> int:
        body = {"name": "w", "project": self.a, "cpu": 4}
        return (await (client or self.worker_a).ok("POST", "/workers", body))["id"]

    async def setup(self) -> World:
        self.a = f"a-{uuid.uuid4().hex[:8]}"
        self.b = f"b-{uuid.uuid4().hex[:8]}"
        self.a_id = (await self.root.ok("POST", "/projects", {"name": self.a}))["id"]
        await self.root.ok("POST", "/projects", {"name": self.b})
        await self.root.ok("POST", "/tasks/", {"name": "t", "project_id": self.a_id})
        for kind, role, projects in (
            ("viewer", "viewer", None),
            ("submitter", "submitter", [self.a]),
            ("worker_b", "worker", [self.b]),
            ("operator", "operator", [self.a_id]),
            ("admin", "admin", None),
        ):
            self.tokens[kind] = (await self.token(role, projects))["token"]
        expired = await self.token("viewer", expires_in=0.001)
        self.tokens["expired"] = expired["token"]
        revoked = await self.token("viewer")
        await self.root.ok("DELETE", f"/tokens/{revoked['id']}")
        self.tokens["revoked"] = revoked["token"]
        made = await self.token("worker", [self.a])
        self.worker_a = Client(self.session, self.srv.url, made["token"])
        self.worker_a_name = made["name"]
        self.job_id = await self.job()
        self.worker_id = await self.worker()
        self.running = await self.job()
        claimed = await self.worker_a.ok(
            "POST", f"/projects/{self.a}/claim", {"worker_id": self.worker_id, "max_jobs": 10, "free_cpu": 4}
        )
        assert self.running in [j["id"] for j in claimed["jobs"]]
        self.queue = await self.alloc_queue()
        allocation = {"name": "wn-1", "time_limit": 60}
        made = await self.root.ok("POST", f"/alloc/queues/{self.queue}/allocations", allocation)
        self.allocation = made["id"]
        return self

    async def alloc_queue(self) -> str:
        """A new allocation queue serving project A; its name."""
        body = {"name": f"q-{uuid.uuid4().hex[:8]}", "backend": "slurm", "projects": [self.a]}
        made = await self.root.ok("POST", "/alloc/queues", {**body, "time_limit": 60, "max_workers": 1})
        return str(made["name"])


Example = Callable[[World], Awaitable[tuple[str, Any]]]


async def _fresh_project(w: World) -> tuple[str, Any]:
    name = f"gone-{uuid.uuid4().hex[:8]}"
    await w.root.ok("POST", "/projects", {"name": name})
    return f"/projects/{name}", None


async def _fresh_token(w: World) -> tuple[str, Any]:
    return f"/tokens/{(await w.token('viewer'))['id']}", None


async def _fresh_worker(w: World) -> tuple[str, Any]:
    return f"/workers/{await w.worker()}", None


async def _fresh_queue(w: World) -> tuple[str, Any]:
    return f"/alloc/queues/{await w.alloc_queue()}", None


async def _fresh_job(w: World) -> tuple[str, Any]:
    return f"/projects/{w.a}/jobs/{await w.job()}", None


def _fixed(path: str, body: Any = None) -> Example:
    async def build(w: World) -> tuple[str, Any]:
        return path.format(
            a=w.a, job=w.job_id, run=w.running, worker=w.worker_id, a_id=w.a_id, q=w.queue, alloc=w.allocation
        ), body

    return build


def _with(path: str, make: Callable[[World], Any]) -> Example:
    async def build(w: World) -> tuple[str, Any]:
        return path.format(a=w.a, job=w.job_id, run=w.running, worker=w.worker_id, q=w.queue), make(w)

    return build


EXAMPLES: dict[tuple[str, str], Example] = {
    ("GET", "/health"): _fixed("/health"),
    ("GET", "/openapi.json"): _fixed("/openapi.json"),
    ("GET", "/metrics"): _fixed("/metrics"),
    ("POST", "/projects"): _with("/projects", lambda w: {"name": f"new-{uuid.uuid4().hex[:8]}"}),
    ("GET", "/projects"): _fixed("/projects"),
    ("GET", "/projects/{project}"): _fixed("/projects/{a}"),
    ("PATCH", "/projects/{project}"): _fixed("/projects/{a}", {"description": "edited"}),
    ("DELETE", "/projects/{project}"): _fresh_project,
    ("POST", "/tasks/"): _with(
        "/tasks/", lambda w: {"name": f"t-{uuid.uuid4().hex[:6]}", "project_id": w.a_id}
    ),
    ("POST", "/tasks"): _with("/tasks", lambda w: {"name": f"t-{uuid.uuid4().hex[:6]}", "project_id": w.a}),
    ("GET", "/projects/{project}/tasks"): _fixed("/projects/{a}/tasks"),
    ("GET", "/projects/{project}/tasks/{task}"): _fixed("/projects/{a}/tasks/t"),
    ("PATCH", "/projects/{project}/tasks/{task}"): _fixed("/projects/{a}/tasks/t", {"max_attempts": 2}),
    ("GET", "/projects/{project}/tasks/{task}/versions"): _fixed("/projects/{a}/tasks/t/versions"),
    ("POST", "/projects/{project}/jobs"): _fixed("/projects/{a}/jobs", {"name": "n", "task": "t"}),
    ("POST", "/projects/{project}/jobs/batch"): _fixed(
        "/projects/{a}/jobs/batch", [{"name": "n", "task": "t"}]
    ),
    ("GET", "/projects/{project}/jobs"): _fixed("/projects/{a}/jobs"),
    ("GET", "/projects/{project}/jobs/counts"): _fixed("/projects/{a}/jobs/counts"),
    ("GET", "/projects/{project}/queue"): _fixed("/projects/{a}/queue"),
    ("DELETE", "/projects/{project}/queue"): _fixed("/projects/{a}/queue"),
    ("DELETE", "/projects/{project}/jobs/{job_id}"): _fresh_job,
    ("GET", "/projects/{project}/graph"): _fixed("/projects/{a}/graph"),
    ("GET", "/projects/{project}/groups"): _fixed("/projects/{a}/groups"),
    ("GET", "/projects/{project}/groups/{group}"): _fixed("/projects/{a}/groups/g"),
    ("POST", "/projects/{project}/groups/{group}/cancel"): _fixed("/projects/{a}/groups/g/cancel"),
    ("POST", "/projects/{project}/groups/{group}/retry"): _fixed("/projects/{a}/groups/g/retry"),
    ("POST", "/projects/{project}/schedules"): _with(
        "/projects/{a}/schedules",
        lambda w: {"name": f"s-{uuid.uuid4().hex[:8]}", "every": 3600, "job": {"task": "t"}},
    ),
    ("GET", "/projects/{project}/schedules"): _fixed("/projects/{a}/schedules"),
    ("GET", "/projects/{project}/schedules/{schedule}"): _fixed("/projects/{a}/schedules/s"),
    ("PATCH", "/projects/{project}/schedules/{schedule}"): _fixed(
        "/projects/{a}/schedules/s", {"paused": True}
    ),
    ("DELETE", "/projects/{project}/schedules/{schedule}"): _fixed("/projects/{a}/schedules/s"),
    ("GET", "/jobs/{job_id}"): _fixed("/jobs/{job}"),
    ("GET", "/jobs/{job_id}/events"): _fixed("/jobs/{job}/events"),
    ("GET", "/jobs/{job_id}/dependencies"): _fixed("/jobs/{job}/dependencies"),
    ("POST", "/jobs/{job_id}/cancel"): _fixed("/jobs/{job}/cancel"),
    ("POST", "/jobs/{job_id}/retry"): _fixed("/jobs/{job}/retry"),
    ("POST", "/jobs/{job_id}/requeue"): _fixed("/jobs/{run}/requeue"),
    ("POST", "/workers"): _with("/workers", lambda w: {"name": "w", "project": w.a}),
    ("GET", "/workers"): _fixed("/workers"),
    ("GET", "/workers/{worker_id}"): _fixed("/workers/{worker}"),
    ("POST", "/workers/{worker_id}/heartbeat"): _fixed("/workers/{worker}/heartbeat", {}),
    ("GET", "/workers/{worker_id}/events"): _fixed("/workers/{worker}/events?wait=0"),
    ("DELETE", "/workers/{worker_id}"): _fresh_worker,
    ("POST", "/projects/{project}/claim"): _with(
        "/projects/{a}/claim", lambda w: {"worker_id": w.worker_id, "wait": 0}
    ),
    ("POST", "/claim"): _with("/claim", lambda w: {"worker_id": w.worker_id, "projects": [w.a], "wait": 0}),
    ("POST", "/jobs/{job_id}/started"): _fixed("/jobs/{run}/started", {"attempt": 1}),
    ("POST", "/jobs/{job_id}/complete"): _fixed("/jobs/{run}/complete", {"attempt": 1}),
    ("POST", "/jobs/{job_id}/fail"): _fixed("/jobs/{run}/fail", {"attempt": 1}),
    ("POST", "/jobs/reports"): _with(
        "/jobs/reports", lambda w: [{"id": w.running, "attempt": 1, "status": "COMPLETED"}]
    ),
    ("POST", "/jobs/{job_id}/logs"): _fixed("/jobs/{run}/logs", {"attempt": 1, "lines": ["x"]}),
    ("POST", "/jobs/logs"): _with("/jobs/logs", lambda w: [{"id": w.running, "attempt": 1, "lines": ["x"]}]),
    ("GET", "/jobs/{job_id}/logs"): _fixed("/jobs/{job}/logs"),
    ("POST", "/jobs/{job_id}/artifacts"): _fixed(
        "/jobs/{run}/artifacts", [{"direction": "out", "uri": "/tmp/x", "missing": True}]
    ),
    ("GET", "/jobs/{job_id}/artifacts"): _fixed("/jobs/{job}/artifacts"),
    ("GET", "/projects/{project}/artifacts"): _fixed("/projects/{a}/artifacts"),
    ("POST", "/tokens"): _with("/tokens", lambda w: {"name": f"n-{uuid.uuid4().hex[:8]}", "role": "viewer"}),
    ("GET", "/tokens"): _fixed("/tokens"),
    ("DELETE", "/tokens/{token_id}"): _fresh_token,
    ("POST", "/prune"): _fixed("/prune", {"older_than": "3650d", "dry_run": True}),
    ("GET", "/projects/{project}/demand"): _fixed("/projects/{a}/demand"),
    ("GET", "/demand"): _fixed("/demand"),
    ("POST", "/alloc/queues"): _with(
        "/alloc/queues",
        lambda w: {
            "name": f"q-{uuid.uuid4().hex[:8]}",
            "backend": "slurm",
            "projects": [w.a],
            "time_limit": 60,
            "max_workers": 1,
        },
    ),
    ("GET", "/alloc/queues"): _fixed("/alloc/queues"),
    ("GET", "/alloc/queues/{name}"): _fixed("/alloc/queues/{q}"),
    ("PATCH", "/alloc/queues/{name}"): _fixed("/alloc/queues/{q}", {"paused": False}),
    ("DELETE", "/alloc/queues/{name}"): _fresh_queue,
    ("POST", "/alloc/queues/{name}/lease"): _fixed("/alloc/queues/{q}/lease", {"holder": "matrix:1"}),
    ("DELETE", "/alloc/queues/{name}/lease"): _fixed("/alloc/queues/{q}/lease?holder=matrix:1"),
    ("POST", "/alloc/queues/{name}/allocations"): _fixed(
        "/alloc/queues/{q}/allocations", {"name": "wn-2", "time_limit": 60}
    ),
    ("GET", "/alloc/queues/{name}/allocations"): _fixed("/alloc/queues/{q}/allocations"),
    ("PATCH", "/allocations/{alloc_id}"): _fixed("/allocations/{alloc}", {"reason": "Priority"}),
}
"""A request that reaches each route's handler when the token allows it."""


def _refusal(path: str, status: int, body: Any) -> int:
    """The status that decides: a batch of reports answers each entry in its place."""
    if path == "/jobs/reports" and status == 200:
        return int(body["results"][0]["code"])
    return status


async def test_every_route_against_every_kind_of_token(
    auth_server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    w = await World(auth_server, session).setup()
    served = [(spec.method, spec.path) for spec, _ in routes.specs]
    missing = sorted(set(served) - EXPECTED.keys()) + sorted(set(served) - EXAMPLES.keys())
    assert not missing, f"routes without an expected policy or example request in this test: {missing}"
    failures = []
    for method, path in served:
        for kind in KINDS:
            url, body = await EXAMPLES[(method, path)](w)
            status, answer = await w.as_(kind).call(method, url, body)
            seen = _refusal(url, status, answer)
            if kind in EXPECTED[(method, path)]:
                ok = seen not in (401, 403) and status < 500
            elif kind in ("none", "bad", "expired", "revoked"):
                ok = status == 401 and answer["error"]["details"]["field"] == "Authorization"
            else:
                ok = seen == 403
            if not ok:
                failures.append(f"{kind:>9} {method} {url} -> {status} {answer}")
    assert not failures, "\n".join(failures)


async def test_health_without_a_token_shows_only_what_a_worker_needs(
    auth_server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    status, body = await Client(session, auth_server.url, None).call("GET", "/health")
    assert status == 200
    assert set(body) == {"status", "version", "schema_level", "max_wait"}
    status, body = await Client(session, auth_server.url, ADMIN).call("GET", "/health")
    assert status == 200 and "database" in body and "waiting_claims" in body


async def test_lists_show_only_the_projects_of_the_token(
    auth_server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    w = await World(auth_server, session).setup()
    names = {p["name"] for p in (await w.as_("submitter").ok("GET", "/projects"))["projects"]}
    assert names == {w.a}
    assert {p["name"] for p in (await w.as_("worker_b").ok("GET", "/projects"))["projects"]} == {w.b}
    workers = (await w.as_("worker_b").ok("GET", "/workers"))["workers"]
    assert workers == []
    assert w.worker_id in [x["id"] for x in (await w.as_("operator").ok("GET", "/workers"))["workers"]]


async def test_worker_tokens_touch_only_their_own_workers(
    auth_server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    w = await World(auth_server, session).setup()
    other = Client(session, auth_server.url, (await w.token("worker", [w.a]))["token"])
    mine = await w.worker(other)
    for method, path, body in (
        ("POST", f"/workers/{w.worker_id}/heartbeat", {}),
        ("DELETE", f"/workers/{w.worker_id}", None),
        ("POST", f"/projects/{w.a}/claim", {"worker_id": w.worker_id}),
        ("POST", f"/projects/{w.a}/claim", {}),
        ("POST", f"/jobs/{w.running}/complete", {"attempt": 1}),
        ("POST", f"/jobs/{w.running}/fail", {"attempt": 1}),
        ("POST", f"/jobs/{w.running}/logs", {"attempt": 1, "lines": ["forged"]}),
        ("POST", "/jobs/logs", [{"id": w.running, "attempt": 1, "lines": ["forged"]}]),
        ("POST", f"/jobs/{w.running}/artifacts", []),
    ):
        status, answer = await other.call(method, path, body)
        assert status == 403, f"{method} {path} -> {status} {answer}"
    status, answer = await other.call(
        "POST", "/jobs/reports", [{"id": w.running, "attempt": 1, "status": "FAILED"}]
    )
    assert status == 200 and answer["results"][0]["code"] == 403
    assert (await other.ok("POST", f"/workers/{mine}/heartbeat", {}))["cancel"] == []
    job = await w.root.ok("GET", f"/jobs/{w.running}")
    assert job["status"] == "RUNNING" and job["worker_id"] == w.worker_id
    # the token that registered the worker reports for it; the history names the token
    out = await w.worker_a.ok(
        "POST", "/jobs/reports", [{"id": w.running, "attempt": 1, "status": "COMPLETED"}]
    )
    assert out["results"][0]["code"] == 200
    events = (await w.root.ok("GET", f"/jobs/{w.running}/events"))["events"]
    completed = [e for e in events if e["status"] == "COMPLETED"]
    assert [e["actor"] for e in completed] == [w.worker_a_name], events


async def test_secret_parameters_are_masked_for_viewers_only(
    auth_server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    w = await World(auth_server, session).setup()
    params = {"api_key": "s3cr3t", "DB_PASSWORD": "hunter2", "lr": 0.1}
    job_id = await w.job(params)
    seen = (await w.as_("viewer").ok("GET", f"/jobs/{job_id}"))["parameters"]
    assert seen == {"api_key": "***", "DB_PASSWORD": "***", "lr": 0.1}
    listed = (await w.as_("viewer").ok("GET", f"/projects/{w.a}/jobs"))["jobs"]
    assert all(j["parameters"].get("api_key") in (None, "***") for j in listed)
    assert (await w.as_("submitter").ok("GET", f"/jobs/{job_id}"))["parameters"] == params
    await w.root.ok("POST", f"/jobs/{w.running}/complete", {"attempt": 1})
    claimed = await w.worker_a.ok(
        "POST", f"/projects/{w.a}/claim", {"worker_id": w.worker_id, "max_jobs": 100, "free_cpu": 100}
    )
    by_id = {j["id"]: j for j in claimed["jobs"]}
    assert by_id[job_id]["parameters"] == params


async def test_tokens_lifecycle(auth_server: ServerProcess, session: aiohttp.ClientSession) -> None:
    w = World(auth_server, session)
    root = w.root
    name = f"ci-{uuid.uuid4().hex[:8]}"
    created = await root.ok("POST", "/tokens", {"name": name, "role": "viewer"})
    assert created["token"].startswith("wnt_") and len(created["token"]) > 40
    listed = {t["id"]: t for t in (await root.ok("GET", "/tokens"))["tokens"]}
    assert "token" not in listed[created["id"]] and listed[created["id"]]["created_by"] == "admin"
    status, body = await root.call("POST", "/tokens", {"name": name, "role": "viewer"})
    assert status == 409, body
    status, body = await root.call(
        "POST", "/tokens", {"name": "x", "role": "viewer", "projects": ["nope-" + name]}
    )
    assert status == 422 and body["error"]["details"]["field"] == "projects"
    status, body = await root.call("POST", "/tokens", {"name": "x", "role": "admin", "projects": [1]})
    assert status == 422 and body["error"]["details"]["field"] == "projects"
    status, body = await root.call("POST", "/tokens", {"name": "x", "role": "root"})
    assert status == 422
    viewer = Client(session, auth_server.url, created["token"])
    await viewer.ok("GET", "/projects")
    used = {t["id"]: t for t in (await root.ok("GET", "/tokens"))["tokens"]}[created["id"]]
    assert used["last_used_at"] is not None
    await root.ok("DELETE", f"/tokens/{created['id']}")
    status, body = await viewer.call("GET", "/projects")
    assert status == 401 and "revoked" in body["error"]["message"]
    status, _ = await root.call("DELETE", "/tokens/999999999")
    assert status == 404
    status, body = await Client(session, auth_server.url, None).call("GET", "/projects")
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_browser_safety(
    auth_server: ServerProcess, server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    for srv, token in ((auth_server, ADMIN), (server, None)):
        c = Client(session, srv.url, token)
        async with session.post(
            srv.url + "/projects",
            data=b'{"name": "csrf"}',
            headers={"Content-Type": "text/plain", **({"Authorization": f"Bearer {token}"} if token else {})},
        ) as resp:
            assert resp.status == 415
        status, body = await c.call("POST", "/projects", {"name": "csrf"}, {"Origin": "https://evil.example"})
        assert status == 403 and body["error"]["details"]["field"] == "Origin"
        status, body = await c.call("GET", "/projects", headers={"Host": "evil.example"})
        assert status == 403 and body["error"]["details"]["field"] == "Host"
        status, body = await c.call("GET", "/health", headers={"Host": "rebound.example:8000"})
        assert status == 403
        own = f"http://127.0.0.1:{srv.port}"
        status, _ = await c.call("GET", "/projects", headers={"Origin": own})
        assert status == 200
        # a body-less POST needs no Content-Type
        async with session.post(srv.url + "/jobs/999999999/retry", headers=c_headers(token)) as resp:
            assert resp.status == 404
    preflight = {
        "Origin": LAB,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with session.options(auth_server.url + "/projects", headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == LAB
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
    async with session.options(
        server.url + "/projects", headers={**preflight, "Origin": "https://evil.example"}
    ) as resp:
        assert resp.status == 403
    async with session.get(
        auth_server.url + "/projects", headers={"Origin": LAB, **c_headers(ADMIN)}
    ) as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == LAB


def c_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def test_sdk_cli_and_worker_with_tokens(
    auth_server: ServerProcess,
    session: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from whatsnext.api.client import AsyncServer, Job
    from whatsnext.api.client.errors import WhatsNextError

    w = World(auth_server, session)
    project = f"e2e-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("WHATSNEXT_TOKEN", ADMIN)
    made = cli(auth_server, "tokens", "create", "sub", "--role", "submitter", "--json")
    assert made.returncode == 0, made.stderr
    await w.root.ok("POST", "/projects", {"name": project})
    sub = cli(
        auth_server,
        "tokens",
        "create",
        f"sub-{project}",
        "--role",
        "submitter",
        "--project",
        project,
        "--json",
    )
    assert sub.returncode == 0, sub.stderr
    submitter = json.loads(sub.stdout)["token"]
    worker = json.loads(
        cli(
            auth_server,
            "tokens",
            "create",
            f"wrk-{project}",
            "--role",
            "worker",
            "--project",
            project,
            "--json",
        ).stdout
    )["token"]
    listed = cli(auth_server, "tokens", "ls")
    assert f"sub-{project}" in listed.stdout and submitter not in listed.stdout

    out = tmp_path / "out"
    out.mkdir()
    async with AsyncServer(auth_server.url, token=submitter) as sdk:
        p = await sdk.get_project(project)
        job = Job(name="sdk-job", task="echo", parameters={"out": str(out)})
        await p.append_queue(job)
        assert job.id is not None
    async with AsyncServer(auth_server.url, token=worker) as sdk:
        with pytest.raises(WhatsNextError) as refused:
            await (await sdk.get_project(project)).append_queue(Job(name="x", task="echo", parameters={}))
        assert refused.value.status == 403

    monkeypatch.setenv("WHATSNEXT_TOKEN", submitter)
    added = cli(
        auth_server, "jobs", "add", "echo", "--project", project, "--name", "cli-job", "--param", f"out={out}"
    )
    assert added.returncode == 0, added.stderr
    monkeypatch.delenv("WHATSNEXT_TOKEN")
    anonymous = cli(auth_server, "projects", "ls")
    assert anonymous.returncode != 0 and "token" in anonymous.stderr

    monkeypatch.setenv("WHATSNEXT_TOKEN", worker)
    proc = spawn_worker(auth_server.url, project, tmp_path / "worker.log", "--cpus", "2")
    try:
        assert await asyncio_wait(proc, 60) == 0, (tmp_path / "worker.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    jobs = (await w.root.ok("GET", f"/projects/{project}/jobs"))["jobs"]
    assert sorted(j["status"] for j in jobs) == ["COMPLETED", "COMPLETED"], jobs
    events = (await w.root.ok("GET", f"/jobs/{jobs[0]['id']}/events"))["events"]
    actors = " ".join(e["actor"] or "" for e in events)
    assert f"sub-{project}" in actors and f"wrk-{project}" in actors, events
    tokens = {t["name"]: t for t in (await w.root.ok("GET", "/tokens"))["tokens"]}
    monkeypatch.setenv("WHATSNEXT_TOKEN", ADMIN)
    revoked = cli(auth_server, "tokens", "revoke", str(tokens[f"sub-{project}"]["id"]))
    assert revoked.returncode == 0, revoked.stderr
    monkeypatch.setenv("WHATSNEXT_TOKEN", submitter)
    again = cli(auth_server, "jobs", "ls", "--project", project)
    assert again.returncode != 0 and "revoked" in again.stderr


async def asyncio_wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


async def test_quickstart_on_loopback_needs_no_token(api: Api) -> None:
    name = f"q-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": name})
    job = await api.ok(
        "POST", f"/projects/{name}/jobs", {"name": "j", "task": "t", "parameters": {"api_key": "k"}}
    )
    assert job["parameters"] == {"api_key": "k"}
    assert (await api.ok("GET", "/health"))["database"].startswith("PostgreSQL")


def test_a_server_on_the_network_needs_auth_and_its_names() -> None:
    env = {**os.environ, "WHATSNEXT_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    for extra, needle in (
        ((), "--auth"),
        (("--auth",), "--allowed-host"),
        (("--insecure-no-auth",), "--allowed-host"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "whatsnext", "server", "--host", "0.0.0.0", *extra],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )
        assert run.returncode == 2 and needle in run.stderr, run.stderr
