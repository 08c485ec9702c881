"""Hostile and oversized input gets a 4xx JSON error that names the field, never a 5xx: NUL in any
text field, integers beyond their columns, non-ASCII digits in path ids, bodies that are not JSON
or too large, unknown methods, and a database that goes away."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
from conftest import Api, create_database, drop_database, wait_until
from helpers import running_job

from whatsnext.api.server.app import raise_open_file_limit

NUL = "\x00"
I32 = 2**31  # one past the largest integer column value
I64 = 2**63  # one past the largest bigint (every id)


def assert_error(status: int, body: Any, codes: tuple[int, ...], field: str | None) -> None:
    assert status in codes, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message", "details"} <= set(err) and err["message"], err
    if field is not None:
        named = json.dumps(err["details"]) + err["message"]
        assert field in named, f"{field!r} not named in {err}"


@dataclass
class World:
    """What a case needs to exist: a project with a task, a running job (with its attempt), a worker."""

    project: str
    project_id: int
    job: int
    attempt: int
    worker: int

    def fill(self, path: str) -> str:
        return path.format(p=self.project, job=self.job, worker=self.worker)


@pytest.fixture
async def world(api: Api, project: dict[str, Any]) -> World:
    await api.ok("POST", "/tasks/", {"name": "t", "project_id": project["name"]})
    job = await running_job(api, project)
    worker = await api.ok("POST", "/workers", {"name": "w", "project": project["name"]})
    return World(project["name"], project["id"], job["id"], job["attempt"], worker["id"])


Body = Callable[[World], Any]


def uniq() -> str:
    return f"x{uuid.uuid4().hex[:8]}"


PER_ENTRY = frozenset({"/jobs/reports"})
"""Batches that may answer 200 with a 4xx per entry instead of refusing the whole request."""

# (method, path, body, field named in the error)
TEXT_FIELDS: list[tuple[str, str, Body, str]] = [
    ("POST", "/projects", lambda w: {"name": "a" + NUL}, "name"),
    ("POST", "/projects", lambda w: {"name": uniq(), "description": NUL}, "description"),
    ("PATCH", "/projects/{p}", lambda w: {"name": "b" + NUL}, "name"),
    ("PATCH", "/projects/{p}", lambda w: {"description": "d" + NUL}, "description"),
    ("POST", "/tasks/", lambda w: {"name": "t" + NUL, "project_id": w.project}, "name"),
    ("POST", "/tasks/", lambda w: {"name": uniq(), "project_id": w.project + NUL}, "project_id"),
    ("POST", "/tasks/", lambda w: {"name": uniq(), "project_id": w.project, "command": NUL}, "command"),
    (
        "POST",
        "/tasks/",
        lambda w: {"name": uniq(), "project_id": w.project, "required_tags": [NUL]},
        "required_tags",
    ),
    (
        "POST",
        "/tasks/",
        lambda w: {"name": uniq(), "project_id": w.project, "defaults": {"k": NUL}},
        "defaults",
    ),
    (
        "POST",
        "/tasks/",
        lambda w: {"name": uniq(), "project_id": w.project, "inputs": ["/a" + NUL]},
        "inputs",
    ),
    (
        "POST",
        "/tasks/",
        lambda w: {"name": uniq(), "project_id": w.project, "outputs": ["/b" + NUL]},
        "outputs",
    ),
    ("POST", "/projects/{p}/jobs", lambda w: {"name": "j" + NUL, "task": "t"}, "name"),
    ("POST", "/projects/{p}/jobs", lambda w: {"name": "j", "task": "t" + NUL}, "task"),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "parameters": {"k": NUL}},
        "parameters",
    ),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "parameters": {NUL: 1}},
        "parameters",
    ),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "parameters": {"a": [{"b": NUL}]}},
        "parameters",
    ),
    ("POST", "/projects/{p}/jobs", lambda w: {"name": "j", "task": "t", "depends": ["x" + NUL]}, "depends"),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "depends": {"1" + NUL: "x"}},
        "depends",
    ),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "required_tags": [NUL]},
        "required_tags",
    ),
    ("POST", "/projects/{p}/jobs", lambda w: {"name": "j", "task": "t", "inputs": [NUL]}, "inputs"),
    ("POST", "/projects/{p}/jobs", lambda w: {"name": "j", "task": "t", "outputs": [NUL]}, "outputs"),
    (
        "POST",
        "/projects/{p}/jobs/batch",
        lambda w: [{"name": "a", "task": "t"}, {"name": NUL, "task": "t"}],
        "1.name",
    ),
    (
        "POST",
        "/projects/{p}/jobs/batch",
        lambda w: [{"name": "a", "task": "t", "parameters": {"k": NUL}}],
        "0.parameters",
    ),
    ("POST", "/projects/{p}/claim", lambda w: {"worker_name": "w" + NUL}, "worker_name"),
    ("POST", "/projects/{p}/claim", lambda w: {"tags": ["g" + NUL]}, "tags"),
    ("POST", "/workers", lambda w: {"name": "w" + NUL}, "name"),
    ("POST", "/workers", lambda w: {"name": "w", "entity": NUL}, "entity"),
    ("POST", "/workers", lambda w: {"name": "w", "host": NUL}, "host"),
    ("POST", "/workers", lambda w: {"name": "w", "project": w.project + NUL}, "project"),
    ("POST", "/workers", lambda w: {"name": "w", "tags": [NUL]}, "tags"),
    ("POST", "/jobs/{job}/artifacts", lambda w: [{"direction": "out", "uri": "/o" + NUL}], "0.uri"),
    ("GET", "/projects/{p}/jobs?task=%00", lambda w: None, "task"),
    ("GET", "/projects/{p}/artifacts?uri=/a%00", lambda w: None, "uri"),
    ("GET", "/workers?project=%00", lambda w: None, "project"),
    ("GET", "/projects/a%00b", lambda w: None, "project"),
    ("GET", "/projects/a%00b/tasks", lambda w: None, "project"),
    ("DELETE", "/projects/a%00b/queue", lambda w: None, "project"),
]

INTEGERS: list[tuple[str, str, Body, str]] = [
    ("POST", "/projects/{p}/jobs", lambda w: {"name": "j", "task": "t", "priority": I32}, "priority"),
    ("POST", "/projects/{p}/jobs", lambda w: {"name": "j", "task": "t", "priority": -I32 - 1}, "priority"),
    ("POST", "/projects/{p}/jobs", lambda w: {"name": "j", "task": "t", "required_cpu": I32}, "required_cpu"),
    ("POST", "/projects/{p}/jobs", lambda w: {"name": "j", "task": "t", "max_attempts": I32}, "max_attempts"),
    ("POST", "/projects/{p}/jobs", lambda w: {"name": "j", "task": "t", "depends": [I64]}, "depends"),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "parameters": {"n": 2**64}},
        "parameters",
    ),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "parameters": {"n": [I64]}},
        "parameters",
    ),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "parameters": {"n": -I64 - 1}},
        "parameters",
    ),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "parameters": {"n": 10**40}},
        "parameters",
    ),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "parameters": {"n": float("nan")}},
        "parameters",
    ),
    (
        "POST",
        "/projects/{p}/jobs",
        lambda w: {"name": "j", "task": "t", "parameters": {"n": float("inf")}},
        "parameters",
    ),
    (
        "POST",
        "/projects/{p}/jobs/batch",
        lambda w: [{"name": "j", "task": "t", "parameters": {"n": 2**64}}],
        "0.parameters",
    ),
    (
        "POST",
        "/tasks/",
        lambda w: {"name": uniq(), "project_id": w.project, "required_cpu": I32},
        "required_cpu",
    ),
    ("POST", "/tasks/", lambda w: {"name": uniq(), "project_id": I64}, "project_id"),
    (
        "POST",
        "/tasks/",
        lambda w: {"name": uniq(), "project_id": w.project, "defaults": {"n": 2**64}},
        "defaults",
    ),
    ("POST", "/jobs/{job}/complete", lambda w: {"attempt": I32}, "attempt"),
    ("POST", "/jobs/{job}/complete", lambda w: {"attempt": w.attempt, "exit_code": I32}, "exit_code"),
    ("POST", "/jobs/{job}/complete", lambda w: {"attempt": w.attempt, "duration": float("inf")}, "duration"),
    ("POST", "/jobs/{job}/fail", lambda w: {"attempt": I32}, "attempt"),
    ("POST", "/jobs/{job}/fail", lambda w: {"attempt": w.attempt, "exit_code": -I32 - 1}, "exit_code"),
    ("POST", "/jobs/reports", lambda w: [{"id": I64, "attempt": 1, "status": "FAILED"}], "0.id"),
    ("POST", "/jobs/reports", lambda w: [{"id": w.job, "attempt": I32, "status": "FAILED"}], "0.attempt"),
    ("POST", "/jobs/{job}/logs", lambda w: {"attempt": I32, "lines": ["x"]}, "attempt"),
    ("POST", "/jobs/logs", lambda w: [{"id": I64, "attempt": 1, "lines": ["x"]}], "0.id"),
    ("POST", "/jobs/{job}/artifacts?attempt=2147483648", lambda w: [], "attempt"),
    ("POST", "/jobs/{job}/artifacts", lambda w: [{"direction": "out", "uri": "/o", "size": I64}], "0.size"),
    ("POST", "/projects/{p}/claim", lambda w: {"worker_id": I64}, "worker_id"),
    ("POST", "/projects/{p}/claim", lambda w: {"max_jobs": I32}, "max_jobs"),
    ("POST", "/projects/{p}/claim", lambda w: {"free_cpu": I32}, "free_cpu"),
    ("POST", "/workers", lambda w: {"name": "w", "pid": I32}, "pid"),
    ("POST", "/workers", lambda w: {"name": "w", "cpu": I32}, "cpu"),
    ("POST", "/workers", lambda w: {"name": "w", "project": I64}, "project"),
    ("POST", "/workers/{worker}/heartbeat", lambda w: {"running": [I64]}, "running"),
    ("GET", "/projects/{p}/jobs?limit=9223372036854775808", lambda w: None, "limit"),
    ("GET", "/projects/{p}/jobs?before=99999999999999999999999", lambda w: None, "before"),
    ("GET", "/projects/{p}/jobs?limit=%D9%A1%D9%A2", lambda w: None, "limit"),  # Arabic-Indic 12
    ("GET", "/projects/{p}/jobs?limit=%C2%B2", lambda w: None, "limit"),  # superscript 2
    ("GET", "/projects/{p}/jobs?limit=1_0", lambda w: None, "limit"),
    ("GET", "/projects/{p}/queue?offset=-1", lambda w: None, "offset"),
    ("GET", "/jobs/{job}/logs?after=9223372036854775808", lambda w: None, "after"),
    ("GET", "/jobs/{job}/logs?tail=%20%201", lambda w: None, "tail"),
    ("GET", "/projects/{p}/artifacts?before=9223372036854775808", lambda w: None, "before"),
    ("GET", "/projects/{p}/graph?limit=-5", lambda w: None, "limit"),
]

PATH_IDS: list[tuple[str, str]] = [
    ("GET", "/jobs/%C2%B2"),  # superscript 2: str.isdigit() is true, int() refuses it
    ("GET", "/jobs/%D9%A3"),  # Arabic-Indic 3: int() would take it
    ("GET", "/jobs/%EF%BC%91"),  # fullwidth 1
    ("GET", "/jobs/0"),
    ("GET", "/jobs/-1"),
    ("GET", "/jobs/1e3"),
    ("GET", "/jobs/9223372036854775808"),
    ("GET", "/jobs/99999999999999999999999999999999"),
    ("GET", "/jobs/%C2%B2/logs"),
    ("GET", "/jobs/%C2%B2/events"),
    ("GET", "/jobs/%C2%B2/artifacts"),
    ("GET", "/jobs/%C2%B2/dependencies"),
    ("POST", "/jobs/%C2%B2/cancel"),
    ("POST", "/jobs/%C2%B2/retry"),
    ("DELETE", "/projects/{p}/jobs/%C2%B2"),
    ("POST", "/workers/%C2%B2/heartbeat"),
    ("DELETE", "/workers/%C2%B2"),
    ("DELETE", "/workers/9223372036854775808"),
    ("GET", "/projects/%C2%B2"),  # a project is a name or an id: an unknown name
    ("GET", "/projects/9223372036854775808"),
]


async def call(api: Api, method: str, path: str, body: Any) -> tuple[int, Any]:
    url = aiohttp.client.URL(api.base + path, encoded=True)
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs = {"data": body, "headers": {"Content-Type": "application/json"}}
    elif body is not None:
        # json.dumps writes NaN/Infinity as such; the server must refuse them, not choke.
        kwargs = {"data": json.dumps(body), "headers": {"Content-Type": "application/json"}}
    async with api.session.request(method, url, **kwargs) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


@pytest.mark.parametrize(("method", "path", "body", "field"), TEXT_FIELDS + INTEGERS)
async def test_bad_values_are_refused_naming_the_field(
    api: Api, world: World, method: str, path: str, body: Body, field: str
) -> None:
    status, out = await call(api, method, world.fill(path), body(world))
    if status == 200 and path in PER_ENTRY:
        # A batch answers each entry on its own: the bad one is refused, naming its field.
        [entry] = out["results"]
        assert entry["code"] == 422 and field in entry["message"], out
        return
    assert_error(status, out, (422,), field)


@pytest.mark.parametrize(("method", "path"), PATH_IDS)
async def test_path_ids_take_ascii_digits_only(api: Api, world: World, method: str, path: str) -> None:
    status, out = await call(api, method, world.fill(path), None)
    assert_error(status, out, (404, 422), None)


async def test_output_text_is_stored_with_nul_replaced(api: Api, project: dict[str, Any]) -> None:
    """What a job printed or produced is stored, not refused: NUL becomes U+FFFD."""
    job = await running_job(api, project)
    status, out = await call(
        api,
        "POST",
        f"/jobs/{job['id']}/complete",
        {"attempt": job["attempt"], "log": "a\x00b", "result": {"k\x00": ["v\x00", 2**70, float("nan")]}},
    )
    assert status == 200 and out["status"] == "COMPLETED", out
    stored = await api.ok("GET", f"/jobs/{job['id']}")
    assert stored["result"] == {"k\ufffd": ["v\ufffd", float(2**70), None]}

    failed = await running_job(api, project, "f")
    body = {"attempt": failed["attempt"], "error": "boom\x00", "log": "x\x00"}
    status, out = await call(api, "POST", f"/jobs/{failed['id']}/fail", body)
    assert status == 200 and out["status"] == "FAILED", out
    assert "\x00" not in (await api.ok("GET", f"/jobs/{failed['id']}"))["error"]


async def test_parameters_have_a_size_limit(server_factory: Any, http: aiohttp.ClientSession) -> None:
    api = Api((await server_factory("--max-parameters-bytes", "1000")).url, http)
    p = (await api.ok("POST", "/projects", {"name": uniq()}))["name"]
    await api.ok("POST", f"/projects/{p}/jobs", {"name": "fits", "task": "t", "parameters": {"x": "a" * 900}})
    status, out = await api.post(
        f"/projects/{p}/jobs", {"name": "big", "task": "t", "parameters": {"x": "a" * 1000}}
    )
    assert_error(status, out, (422,), "parameters")
    assert out["error"]["details"][0]["type"] == "too_large"
    batch = [{"name": "a", "task": "t"}, {"name": "b", "task": "t", "parameters": {"x": "a" * 2000}}]
    status, out = await api.post(f"/projects/{p}/jobs/batch", batch)
    assert_error(status, out, (422,), "1.parameters")
    status, out = await api.post("/tasks/", {"name": "t2", "project_id": p, "defaults": {"x": "a" * 2000}})
    assert_error(status, out, (422,), "defaults")


async def test_default_parameters_limit_is_one_mebibyte(api: Api, project: dict[str, Any]) -> None:
    p = project["name"]
    status, out = await api.post(
        f"/projects/{p}/jobs", {"name": "big", "task": "t", "parameters": {"x": "a" * 2**20}}
    )
    assert_error(status, out, (422,), "parameters")


async def test_a_body_over_the_limit_is_a_json_413(server_factory: Any, http: aiohttp.ClientSession) -> None:
    api = Api((await server_factory("--max-body-bytes", "10000")).url, http)
    status, out = await api.post("/projects", {"name": uniq(), "description": "d" * 9000})
    assert status == 201, out
    status, out = await api.post("/projects", {"name": uniq(), "description": "d" * 20000})
    assert_error(status, out, (413,), "body")
    assert out["error"]["details"]["limit"] == 10000


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream", None]
)
async def test_a_body_must_be_json(api: Api, http: aiohttp.ClientSession, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    data = json.dumps({"name": uniq()}).encode()
    async with http.post(
        api.base + "/projects", data=data, headers=headers, skip_auto_headers=["Content-Type"]
    ) as r:
        out = await r.json()
        assert_error(r.status, out, (415,), "Content-Type")


async def test_json_with_a_charset_and_bodyless_posts_are_accepted(
    api: Api, http: aiohttp.ClientSession, project: dict[str, Any]
) -> None:
    data = json.dumps({"name": uniq()}).encode()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    async with http.post(api.base + "/projects", data=data, headers=headers) as r:
        assert r.status == 201, await r.text()
    job = await api.ok("POST", f"/projects/{project['name']}/jobs", {"name": "j", "task": "t"})
    for action, expect in (("cancel", 200), ("retry", 200)):
        async with http.post(
            f"{api.base}/jobs/{job['id']}/{action}", skip_auto_headers=["Content-Type"]
        ) as r:
            assert "Content-Type" not in r.request_info.headers
            assert r.status == expect, await r.text()
    status, out = await call(api, "POST", "/projects", b"{not json")
    assert_error(status, out, (400,), "body")


@pytest.mark.parametrize("method", ["TRACE", "PUT", "PATCH", "PURGE"])
async def test_unknown_methods_get_405_with_allow(api: Api, http: aiohttp.ClientSession, method: str) -> None:
    async with http.request(method, api.base + "/projects") as r:
        assert r.status == 405
        assert set(r.headers["Allow"].split(",")) == {"GET", "POST"}
        assert_error(r.status, await r.json(), (405,), "method")


# ---------------------------------------------------------------- the database goes away


@pytest.fixture
async def own_database(pg_root_url: str) -> AsyncIterator[str]:
    url = await create_database(pg_root_url, "wn_down")
    yield url
    await drop_database(pg_root_url, url)


async def test_database_unavailable_is_503_with_retry_after(
    pg_root_url: str, own_database: str, server_factory: Any, http: aiohttp.ClientSession
) -> None:
    """PostgreSQL ends every session (as at a shutdown) and refuses new ones: requests get 503
    with Retry-After, never 500; once it is back, the same requests succeed."""
    srv = await server_factory(database=own_database)
    api = Api(srv.url, http)
    await api.ok("POST", "/projects", {"name": "up"})
    name = urlsplit(own_database).path.lstrip("/")
    root = await asyncpg.connect(pg_root_url)
    try:
        await root.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await root.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        for method, path, body in (
            ("GET", "/projects", None),
            ("POST", "/projects", {"name": "down"}),
            ("GET", "/projects/up/jobs", None),
            ("GET", "/jobs/1", None),
        ):
            async with http.request(method, srv.url + path, json=body) as r:
                assert r.status == 503, await r.text()
                assert int(r.headers["Retry-After"]) > 0
                assert_error(r.status, await r.json(), (503,), None)
    finally:
        await root.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await root.close()

    async def recovered() -> bool:
        status, _ = await api.get("/projects")
        return status == 200

    await wait_until(recovered, timeout=30, what="the server to serve again")
    assert '"unhandled error"' not in srv.log()


# ---------------------------------------------------------------- open files


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE on Windows")
def test_the_open_file_soft_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
    try:
        limits = raise_open_file_limit()
        now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert limits == (now, hard)
        assert now == hard if hard != resource.RLIM_INFINITY else now >= 10240
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE on Windows")
async def test_the_server_runs_with_its_open_file_limit_raised(server: Any) -> None:
    import resource

    [started] = [json.loads(line) for line in server.log().splitlines() if '"open files"' in line]
    if started["hard_limit"] != resource.RLIM_INFINITY:
        assert started["soft_limit"] == started["hard_limit"]
