"""Every served route carries its rule, and the rule is decided on the body the route itself
parses: ids as strings or floats, padded bodies and oversized parameters never cross projects."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from typing import Any

import aiohttp
import pytest
from conftest import ROOT, ServerProcess
from test_auth import EXAMPLES, World, auth_server, session  # noqa: F401  (fixtures)

from whatsnext.api.server.app import create_app
from whatsnext.api.server.config import Settings
from whatsnext.api.server.registry import UnregisteredRoute, check_served, registry_key, served
from whatsnext.api.server.routes import routes

ID_KEYS = ("id", "worker_id", "project_id")


def test_every_served_route_has_a_rule() -> None:
    app = create_app(Settings(), "postgresql://unused")
    table = app[registry_key]
    assert served(app), "the application serves no route"
    missing = [key for key in served(app) if key not in table]
    assert not missing, f"served without a rule: {missing}"
    scopes = {table[key].rule.scope for key in served(app) if key[1].startswith("/ui")}
    assert scopes == {"dashboard"}, "the dashboard registers through the registry as pages"


def test_a_route_without_a_rule_cannot_be_served() -> None:
    app = create_app(Settings(), "postgresql://unused")

    async def planted(request: Any) -> Any:
        raise AssertionError("never called")

    app.router.add_get("/planted", planted)
    with pytest.raises(UnregisteredRoute, match="/planted"):
        check_served(app)
    with pytest.raises(TypeError, match="needs a Rule"):
        routes.route("GET", "/x", "x", tag="x", rule=None)  # type: ignore[arg-type]


def test_registry_and_roles_import_nothing_above_them() -> None:
    """The registry and the roles are leaves: auth, openapi and the routes read them, not the
    other way round (no import circle)."""
    code = (
        "import sys, whatsnext.api.server.registry, whatsnext.api.server.roles\n"
        "bad = [m for m in sys.modules if m.startswith('whatsnext.api.server.') and m.rsplit('.', 1)[1]"
        " in ('auth', 'openapi', 'routes', 'tokens', 'browser', 'app')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _ids_as(body: Any, kind: type) -> Any:
    """The body with every integer id (``id``, ``worker_id``, ``project_id``) as a string or float."""
    if isinstance(body, list):
        return [_ids_as(entry, kind) for entry in body]
    if isinstance(body, dict):
        return {
            k: kind(v)
            if k in ID_KEYS and isinstance(v, int) and not isinstance(v, bool)
            else _ids_as(v, kind)
            for k, v in body.items()
        }
    return body


def _oversized(body: Any) -> Any:
    """The body with its ``defaults``/``parameters`` past the parameter size limit (1 MiB as JSON)."""
    big = {"pad": [1e15] * 80_000}
    if isinstance(body, list):
        return [_oversized(entry) for entry in body]
    if isinstance(body, dict) and ("name" in body or "task" in body):
        return {**body, ("defaults" if "project_id" in body else "parameters"): big}
    return body


VARIANTS = {
    "as sent": lambda body: json.dumps(body).encode(),
    "string ids": lambda body: json.dumps(_ids_as(body, str)).encode(),
    "float ids": lambda body: json.dumps(_ids_as(body, float)).encode(),
    "padded": lambda body: json.dumps(body).encode() + b" " * 400_000,
    "oversized parameters": lambda body: json.dumps(_oversized(body)).encode(),
}


async def _send(w: World, token: str | None, method: str, url: str, raw: bytes) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    async with w.session.request(method, w.srv.url + url, data=raw, headers=headers) as resp:
        body = await resp.json(content_type=None) if resp.content_type == "application/json" else None
        return resp.status, body


def _applied(url: str, status: int, body: Any) -> bool:
    """Whether the request did something (a batch of reports or logs answers each entry)."""
    if status >= 300:
        return False
    if url == "/jobs/reports":
        return any(r["code"] == 200 for r in body["results"])
    return True


async def test_body_variants_of_every_route_never_reach_a_foreign_project(
    auth_server: ServerProcess,  # noqa: F811
    session: aiohttp.ClientSession,  # noqa: F811
) -> None:
    """Tokens of project B of every role that writes, against each route that takes a body, with
    the example request for project A sent as is and as its variants: none is applied."""
    w = await World(auth_server, session).setup()
    foreign = {role: (await w.token(role, [w.b]))["token"] for role in ("operator", "submitter", "worker")}
    with_body = [
        spec
        for spec, _ in routes.specs
        if spec.body is not None and spec.rule.scope not in ("global", "list")
    ]
    assert len(with_body) >= 15
    failures = []
    for spec in with_body:
        for role, token in foreign.items():
            for variant, encode in VARIANTS.items():
                url, body = await EXAMPLES[(spec.method, spec.path)](w)
                status, answer = await _send(w, token, spec.method, url, encode(copy.deepcopy(body)))
                if _applied(url, status, answer) or status >= 500:
                    failures.append(f"{role:>9} {variant:<20} {spec.method} {url} -> {status} {answer}")
    assert not failures, "\n".join(failures)


async def test_an_oversized_task_body_is_judged_as_the_route_reads_it(
    auth_server: ServerProcess,  # noqa: F811
    session: aiohttp.ClientSession,  # noqa: F811
) -> None:
    """The operator of project A posts a task for project B with 400 KB of defaults: refused (before,
    the permission check failed to parse it and skipped the project check, and the route took it)."""
    w = await World(auth_server, session).setup()
    b_id = (await w.root.ok("GET", f"/projects/{w.b}"))["id"]
    head = json.dumps({"name": "planted", "project_id": b_id, "command": "echo pwned"})[:-1]
    raw = (head + ', "defaults": {"x": [' + ",".join(["1e15"] * 80_000) + "]}}").encode()
    assert 400_000 < len(raw) < 1024**2
    status, answer = await _send(w, w.tokens["operator"], "POST", "/tasks/", raw)
    assert status in (403, 422), answer
    tasks = (await w.root.ok("GET", f"/projects/{w.b}/tasks"))["tasks"]
    assert "planted" not in [t["name"] for t in tasks]
    small = json.dumps({"name": "planted", "project_id": b_id, "command": "echo pwned"}).encode()
    status, answer = await _send(w, w.tokens["operator"], "POST", "/tasks/", small)
    assert status == 403 and answer["error"]["details"]["field"] == "project"


@pytest.mark.parametrize("job_id", ["{run}", 1.0], ids=["string id", "float id"])
async def test_log_batches_take_only_integer_ids(
    auth_server: ServerProcess,  # noqa: F811
    session: aiohttp.ClientSession,  # noqa: F811
    job_id: Any,
) -> None:
    """A worker token of project B appends to A's running job naming it "123" or 123.0: 422 naming
    the entry's field, nothing appended, nothing about the job revealed."""
    w = await World(auth_server, session).setup()
    sent = str(w.running) if job_id == "{run}" else float(w.running)
    raw = json.dumps([{"id": sent, "attempt": 1, "lines": ["planted"]}]).encode()
    status, answer = await _send(w, w.tokens["worker_b"], "POST", "/jobs/logs", raw)
    assert status == 422, answer
    assert answer["error"]["details"][0]["field"] == "0.id"
    assert "RUNNING" not in json.dumps(answer)
    # A's own worker token, with an integer id: appended.
    own = [{"id": w.running, "attempt": 1, "lines": ["mine"]}]
    assert (await w.worker_a.ok("POST", "/jobs/logs", own))["results"][0]["code"] == 200
    lines = [x["line"] for x in (await w.root.ok("GET", f"/jobs/{w.running}/logs"))["lines"]]
    assert lines == ["mine"]


async def test_ids_in_bodies_are_json_integers(
    auth_server: ServerProcess,  # noqa: F811
    session: aiohttp.ClientSession,  # noqa: F811
) -> None:
    """One validator for ids everywhere: a string or float id is a 422 naming the field."""
    w = await World(auth_server, session).setup()
    cases = [
        ("POST", f"/projects/{w.a}/claim", {"worker_id": str(w.worker_id)}, "worker_id"),
        ("POST", f"/projects/{w.a}/claim", {"worker_id": float(w.worker_id)}, "worker_id"),
        ("POST", f"/workers/{w.worker_id}/heartbeat", {"running": [str(w.running)]}, "running.0"),
        ("POST", f"/workers/{w.worker_id}/heartbeat", {"running": [float(w.running)]}, "running.0"),
    ]
    for method, url, body, field in cases:
        status, answer = await _send(w, None, method, url, json.dumps(body).encode())
        assert status == 401, "a token first"
        status, answer = await _send(w, w.tokens["admin"], method, url, json.dumps(body).encode())
        assert status == 422, (url, body, answer)
        assert answer["error"]["details"][0]["field"] == field, answer
    reports = [{"id": str(w.running), "attempt": 1, "status": "COMPLETED"}]
    answer = await w.as_("admin").ok("POST", "/jobs/reports", reports)
    assert answer["results"][0]["code"] == 422 and answer["results"][0]["id"] is None
    assert (await w.root.ok("GET", f"/jobs/{w.running}"))["status"] == "RUNNING"


async def test_depends_keeps_its_documented_forms(
    auth_server: ServerProcess,  # noqa: F811
    session: aiohttp.ClientSession,  # noqa: F811
) -> None:
    """The seed's ``{job_id: name}`` mapping and names inside a batch still work."""
    w = await World(auth_server, session).setup()
    first = await w.job()
    body = {"name": "after", "task": "t", "depends": {str(first): "j"}}
    made = await w.root.ok("POST", f"/projects/{w.a}/jobs", body)
    assert made["depends"] == [first]
    batch = [{"name": f"x-{uuid.uuid4().hex[:4]}", "task": "t"}]
    batch.append({"name": "y", "task": "t", "depends": [batch[0]["name"]]})
    assert (await w.root.ok("POST", f"/projects/{w.a}/jobs/batch", batch))["count"] == 2
