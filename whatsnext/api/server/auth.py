"""Who may do what: tokens, roles, the per-route rules, and the checks that keep web pages out.

Tokens are random (``wnt_`` and 43 URL-safe characters, 256 bits), shown once and stored as their
SHA-256. A token has a role, a bundle of permissions, and may be restricted to some projects.
``--auth`` makes every route but ``/health`` require one; each route's rule (``RULES``) names the
permission it needs and how the request is scoped: by the project in its path, by the project of
the job in its path, by the worker in its path (a worker token acts only on the workers it
registered), or inside the SQL of a list.

Always on, with or without ``--auth``: the ``Host`` header must name the server (DNS rebinding),
a request from a web page (``Origin``) must come from the server's own origin or one listed with
``--cors-origin``, and listed origins get CORS preflight answers.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import orjson
import pydantic
from aiohttp import web

from .config import Settings, is_loopback
from .errors import ApiError, Handler
from .http import ACTOR_HEADER, PRINCIPAL_KEY, path_id
from .keys import settings_key, store_key, worker_tokens_key

TOKEN_PREFIX = "wnt_"
Permission = Literal["read", "submit", "manage", "work", "projects", "tokens", "secrets"]
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"read", "submit", "manage", "work", "projects", "tokens", "secrets"}),
    "operator": frozenset({"read", "submit", "manage", "secrets"}),
    "submitter": frozenset({"read", "submit", "secrets"}),
    "worker": frozenset({"read", "work"}),
    "viewer": frozenset({"read"}),
}
"""Each role's bundle. ``read``: look at projects, jobs, logs, workers; ``submit``: queue jobs;
``manage``: cancel, retry, delete jobs, clear queues, create tasks; ``work``: register, claim,
heartbeat, report, append logs and artifacts; ``projects``: create, edit, delete projects;
``tokens``: create, list, revoke tokens; ``secrets``: see secret parameters unmasked."""

MASK = "***"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

Scope = Literal[
    "public",
    "global",
    "list",
    "project",
    "job",
    "worker",
    "body_project",
    "register",
    "claim",
    "reports",
    "logs",
    "dashboard",
]


@dataclass(frozen=True)
class Rule:
    permission: Permission | None
    """What the route needs (None: nothing, ``/health``)."""
    scope: Scope = "global"
    """How a token restricted to some projects, or a worker token, is checked."""
    own: bool = False
    """A worker token may act only on jobs held by the workers it registered."""
    unmasked: bool = False
    """The answer carries secret parameters in full (a claim: the worker runs the job)."""


RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/health"): Rule(None, "public"),
    ("GET", "/openapi.json"): Rule("read"),
    ("GET", "/metrics"): Rule("read"),
    # projects
    ("POST", "/projects"): Rule("projects"),
    ("GET", "/projects"): Rule("read", "list"),
    ("GET", "/projects/{project}"): Rule("read", "project"),
    ("PATCH", "/projects/{project}"): Rule("projects", "project"),
    ("DELETE", "/projects/{project}"): Rule("projects", "project"),
    # tasks
    ("POST", "/tasks/"): Rule("manage", "body_project"),
    ("POST", "/tasks"): Rule("manage", "body_project"),
    ("GET", "/projects/{project}/tasks"): Rule("read", "project"),
    # jobs
    ("POST", "/projects/{project}/jobs"): Rule("submit", "project"),
    ("POST", "/projects/{project}/jobs/batch"): Rule("submit", "project"),
    ("GET", "/projects/{project}/jobs"): Rule("read", "project"),
    ("GET", "/projects/{project}/queue"): Rule("read", "project"),
    ("DELETE", "/projects/{project}/queue"): Rule("manage", "project"),
    ("DELETE", "/projects/{project}/jobs/{job_id}"): Rule("manage", "project"),
    ("GET", "/projects/{project}/graph"): Rule("read", "project"),
    ("GET", "/projects/{project}/groups"): Rule("read", "project"),
    ("GET", "/projects/{project}/groups/{group}"): Rule("read", "project"),
    ("POST", "/projects/{project}/groups/{group}/cancel"): Rule("manage", "project"),
    ("POST", "/projects/{project}/groups/{group}/retry"): Rule("manage", "project"),
    ("GET", "/jobs/{job_id}"): Rule("read", "job"),
    ("GET", "/jobs/{job_id}/events"): Rule("read", "job"),
    ("GET", "/jobs/{job_id}/dependencies"): Rule("read", "job"),
    ("POST", "/jobs/{job_id}/cancel"): Rule("manage", "job"),
    ("POST", "/jobs/{job_id}/retry"): Rule("manage", "job"),
    # the worker's side
    ("POST", "/workers"): Rule("work", "register"),
    ("GET", "/workers"): Rule("read", "list"),
    ("POST", "/workers/{worker_id}/heartbeat"): Rule("work", "worker"),
    ("DELETE", "/workers/{worker_id}"): Rule("work", "worker"),
    ("POST", "/projects/{project}/claim"): Rule("work", "claim", unmasked=True),
    ("POST", "/jobs/{job_id}/started"): Rule("work", "job", own=True),
    ("POST", "/jobs/{job_id}/complete"): Rule("work", "job", own=True),
    ("POST", "/jobs/{job_id}/fail"): Rule("work", "job", own=True),
    ("POST", "/jobs/reports"): Rule("work", "reports"),
    # logs and artifacts
    ("POST", "/jobs/{job_id}/logs"): Rule("work", "job", own=True),
    ("POST", "/jobs/logs"): Rule("work", "logs"),
    ("GET", "/jobs/{job_id}/logs"): Rule("read", "job"),
    ("POST", "/jobs/{job_id}/artifacts"): Rule("work", "job", own=True),
    ("GET", "/jobs/{job_id}/artifacts"): Rule("read", "job"),
    ("GET", "/projects/{project}/artifacts"): Rule("read", "project"),
    # tokens
    ("POST", "/tokens"): Rule("tokens"),
    ("GET", "/tokens"): Rule("tokens"),
    ("DELETE", "/tokens/{token_id}"): Rule("tokens"),
    # the web dashboard: its pages check the session cookie or token and the permission themselves
    ("GET", "/"): Rule("read", "dashboard"),
    ("GET", "/ui/"): Rule("read", "dashboard"),
    ("GET", "/ui/login"): Rule(None, "dashboard"),
    ("POST", "/ui/login"): Rule(None, "dashboard"),
    ("POST", "/ui/logout"): Rule(None, "dashboard"),
    ("GET", "/ui/static"): Rule(None, "dashboard"),
    ("GET", "/ui/events"): Rule("read", "dashboard"),
    ("GET", "/ui/workers"): Rule("read", "dashboard"),
    ("GET", "/ui/projects/{project}"): Rule("read", "dashboard"),
    ("GET", "/ui/projects/{project}/groups"): Rule("read", "dashboard"),
    ("GET", "/ui/projects/{project}/graph"): Rule("read", "dashboard"),
    ("POST", "/ui/projects/{project}/actions"): Rule("manage", "dashboard"),
    ("GET", "/ui/jobs/{job_id}"): Rule("read", "dashboard"),
}
"""The rule of every route. A served route missing here is for ``admin`` alone."""
ADMIN_ONLY = Rule("tokens")


@dataclass(frozen=True)
class Principal:
    """Who is behind a request: a token's id (None for the bootstrap admin token), name, role and
    the projects it covers (None: all)."""

    id: int | None
    name: str
    role: str
    projects: frozenset[int] | None

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    def covers(self, project_id: int | None) -> bool:
        return self.projects is None or (project_id is not None and project_id in self.projects)

    @property
    def worker_token(self) -> int | None:
        """The token's id when it is a stored worker token: it acts only on the jobs its own
        workers hold."""
        return self.id if self.role == "worker" else None


BOOTSTRAP_NAME = "admin"


def new_token() -> str:
    """A new random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@cache
def admin_digest(admin_token: str) -> bytes:
    """The admin token's hash, computed once (every authenticated request compares against it)."""
    return hash_token(admin_token)


def hash_token(token: str) -> bytes:
    """What is stored: SHA-256, fast enough for every request (the token is random, not a password)."""
    return hashlib.sha256(token.encode()).digest()


def principal(request: web.Request) -> Principal | None:
    """The token behind the request (None when auth is off)."""
    found = request.get(PRINCIPAL_KEY)
    return found if isinstance(found, Principal) else None


def token_id(request: web.Request) -> int | None:
    """The id of the token behind the request, to record on what it creates (a worker)."""
    p = principal(request)
    return None if p is None else p.id


def project_filter(request: web.Request) -> list[int] | None:
    """The projects a list may show (None: all), for the ``:projects`` parameter of list statements."""
    p = principal(request)
    return None if p is None or p.projects is None else sorted(p.projects)


def worker_token(request: web.Request) -> int | None:
    """The id of the request's token when it is a stored worker token (:attr:`Principal.worker_token`)."""
    p = principal(request)
    return None if p is None else p.worker_token


async def refused_jobs(request: web.Request, job_ids: list[int]) -> set[int]:
    """Of these jobs, those a worker token may not report on: no worker of its own holds them."""
    token_id = worker_token(request)
    if token_id is None or not job_ids:
        return set()
    return await request.app[store_key].tokens.foreign_jobs(token_id=token_id, job_ids=job_ids)


# ---------------------------------------------------------------- secrets


@cache
def secret_matcher(patterns: tuple[str, ...]) -> Any:
    """Whether a parameter name is secret (made once per pattern list: every masked answer asks)."""
    lowered = tuple(p.lower() for p in patterns)

    def is_secret(name: str) -> bool:
        low = name.lower()
        return any(fnmatch.fnmatchcase(low, p) for p in lowered)

    return is_secret


def mask_secrets(value: Any, is_secret: Any) -> Any:
    """``value`` with the values of secret keys (at any depth) replaced by ``***``."""
    if isinstance(value, dict):
        return {k: MASK if is_secret(str(k)) else mask_secrets(v, is_secret) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, is_secret) for v in value]
    return value


def _mask_answer(data: Any, is_secret: Any) -> Any:
    """Mask every ``parameters`` and ``defaults`` object found in an answer."""
    if isinstance(data, dict):
        return {
            k: mask_secrets(v, is_secret) if k in ("parameters", "defaults") else _mask_answer(v, is_secret)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_mask_answer(v, is_secret) for v in data]
    return data


# ---------------------------------------------------------------- hosts and origins


def split_host(value: str) -> tuple[str, str | None]:
    """``name:port`` (or ``[v6]:port``) as (lower-case name, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return name, port or None
    if value.count(":") == 1:
        name, _, port = value.partition(":")
        return name.rstrip("."), port or None
    return value.rstrip("."), None


def allowed_hosts(settings: Settings) -> list[str]:
    """The names the server answers to: those given, and the loopback names when bound to loopback
    (worked out once per settings: every request asks)."""
    key = (settings.host, tuple(settings.allowed_hosts))
    hosts = _ALLOWED_HOSTS.get(key)
    if hosts is None:
        hosts = list(settings.allowed_hosts)
        if is_loopback(settings.host):
            hosts += LOOPBACK_NAMES
        _ALLOWED_HOSTS[key] = hosts
    return hosts


_ALLOWED_HOSTS: dict[tuple[str, tuple[str, ...]], list[str]] = {}


def _host_ok(header: str, settings: Settings) -> bool:
    """``host_allowed`` for this server, remembered per ``Host`` value (clients send few)."""
    key = (header, settings.host, tuple(settings.allowed_hosts))
    ok = _HOST_OK.get(key)
    if ok is None:
        ok = host_allowed(header, allowed_hosts(settings))
        if len(_HOST_OK) < 1024:
            _HOST_OK[key] = ok
    return ok


_HOST_OK: dict[tuple[str, str, tuple[str, ...]], bool] = {}


def host_allowed(header: str, hosts: list[str]) -> bool:
    if "*" in hosts:
        return True
    name, port = split_host(header)
    for entry in hosts:
        allowed_name, allowed_port = split_host(entry)
        if name == allowed_name and (allowed_port is None or allowed_port == port):
            return True
    return False


def origin_allowed(origin: str, host_header: str, settings: Settings) -> bool:
    """The server's own origin (the host it was reached at, or one of its named hosts), or listed."""
    if origin in settings.cors_origins:
        return True
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        return False
    name, port = split_host(rest)
    if (name, port) == split_host(host_header) or name == split_host(host_header)[0]:
        return True
    named = [h for h in allowed_hosts(settings) if h != "*"]
    return host_allowed(rest, named)


CORS_HEADERS = "Authorization, Content-Type, " + ACTOR_HEADER


@web.middleware
async def browser_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests a web page could forge: a ``Host`` the server does not serve (DNS
    rebinding), an ``Origin`` that is neither the server's own nor listed; answer CORS preflights."""
    settings = request.app[settings_key]
    host = request.headers.get("Host", "")
    if not _host_ok(host, settings):
        raise ApiError(
            403,
            "forbidden_host",
            f"this server does not serve the host {host!r} (start it with --allowed-host {split_host(host)[0]})",
            {"field": "Host"},
        )
    origin = request.headers.get("Origin")
    if origin is not None:
        if not origin_allowed(origin, host, settings):
            raise ApiError(
                403,
                "forbidden_origin",
                f"requests from web pages at {origin} are refused (list it with --cors-origin)",
                {"field": "Origin"},
            )
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers=_cors_headers(origin, preflight=True))
    return await handler(request)


def _cors_headers(origin: str, preflight: bool = False) -> dict[str, str]:
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if preflight:
        headers |= {
            "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE",
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": "600",
        }
    return headers


async def cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Let the pages of a listed origin read the answers (streams included)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin in request.app[settings_key].cors_origins:
        for name, value in _cors_headers(origin).items():
            response.headers.setdefault(name, value)


# ---------------------------------------------------------------- tokens on requests


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"field": "Authorization"})


def forbidden(message: str, field: str) -> ApiError:
    return ApiError(403, "forbidden", message, {"field": field})


def _bearer(request: web.Request) -> str | None:
    raw = request.headers.get("Authorization")
    if raw is None:
        return None
    scheme, _, token = raw.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def authenticate(request: web.Request) -> Principal:
    """The token's principal; 401 when it is missing, unknown, expired or revoked."""
    token = _bearer(request)
    if token is None:
        raise unauthorized("this server requires a token: Authorization: Bearer <token> ($WHATSNEXT_TOKEN)")
    if len(token) > 200:
        raise unauthorized("the token is not valid")
    digest = hash_token(token)
    admin = request.app[settings_key].admin_token
    if admin and hmac.compare_digest(digest, admin_digest(admin)):
        return Principal(None, BOOTSTRAP_NAME, "admin", None)
    row = await request.app[store_key].tokens.authenticate(hash=digest)
    if row is None:
        raise unauthorized("the token is not valid")
    if row["revoked"]:
        raise unauthorized(f"the token {row['name']!r} was revoked")
    if row["expired"]:
        raise unauthorized(f"the token {row['name']!r} has expired")
    projects = None if row["projects"] is None else frozenset(row["projects"])
    return Principal(row["id"], row["name"], row["role"], projects)


def rule_for(request: web.Request) -> Rule | None:
    """The rule of the route the request reached (None: no route, the router answers 404/405)."""
    info = request.match_info
    if info.http_exception is not None:
        return None
    resource = info.route.resource
    if resource is None:
        return None
    return RULES.get((request.method, resource.canonical), ADMIN_ONLY)


HEALTH_PUBLIC = ("status", "version", "schema_level", "max_wait")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With ``--auth``: identify the token, check the route's permission and scope, mask secret
    parameters for roles that may not see them."""
    settings = request.app[settings_key]
    if not settings.auth:
        return await handler(request)
    rule = rule_for(request)
    if rule is not None and rule.scope == "dashboard":
        return await handler(request)  # a session cookie or a token, checked by the page itself
    if rule is not None and rule.scope == "public":
        try:
            request[PRINCIPAL_KEY] = await authenticate(request)
        except ApiError:
            response = await handler(request)
            return _public_health(response)
        return await handler(request)
    who = await authenticate(request)
    request[PRINCIPAL_KEY] = who
    if rule is None:
        return await handler(request)
    if rule.permission is not None and not who.can(rule.permission):
        raise forbidden(f"the role {who.role} of token {who.name!r} may not {request.method} this", "role")
    await _check_scope(request, who, rule)
    response = await handler(request)
    if not who.can("secrets") and not rule.unmasked:
        return _masked(response, settings.secret_parameters)
    return response


def _public_health(response: web.StreamResponse) -> web.StreamResponse:
    if not isinstance(response, web.Response) or response.body is None:
        return response
    data = orjson.loads(response.body)  # type: ignore[arg-type]
    slim = {k: data[k] for k in HEALTH_PUBLIC if k in data}
    return web.Response(body=orjson.dumps(slim), status=response.status, content_type="application/json")


def _masked(response: web.StreamResponse, patterns: tuple[str, ...]) -> web.StreamResponse:
    if (
        not isinstance(response, web.Response)
        or response.content_type != "application/json"
        or not isinstance(response.body, bytes)
        or (b'"parameters"' not in response.body and b'"defaults"' not in response.body)
    ):
        return response
    data = _mask_answer(orjson.loads(response.body), secret_matcher(patterns))
    response.body = orjson.dumps(data)
    return response


@cache
def _body_models() -> dict[tuple[str, str], type[pydantic.BaseModel]]:
    from .routes import routes  # the route modules import this one

    return {(spec.method, spec.path): spec.body for spec, _ in routes.specs if spec.body is not None}


async def _body(request: web.Request) -> Any:
    """The request body as the route will read it, or None when the route will refuse it anyway."""
    resource = request.match_info.route.resource
    model = None if resource is None else _body_models().get((request.method, resource.canonical))
    if model is None or not request.body_exists:
        return None
    raw = await request.read()
    context = {"max_parameters_bytes": request.app[settings_key].max_parameters_bytes}
    try:
        return model.model_validate_json(raw, context=context)
    except (pydantic.ValidationError, ValueError):
        return None


async def _project_covered(request: web.Request, who: Principal, key: str) -> None:
    if who.projects is None:
        return
    pid = await request.app[store_key].tokens.project_id(project=key)
    if pid is None or pid not in who.projects:
        raise forbidden(f"token {who.name!r} does not cover project {key!r}", "project")


async def _check_scope(request: web.Request, who: Principal, rule: Rule) -> None:
    tokens = request.app[store_key].tokens
    worker_token = who.worker_token is not None
    if rule.scope in ("project", "claim"):
        await _project_covered(request, who, request.match_info["project"])
    if rule.scope == "job" and (who.projects is not None or (rule.own and worker_token)):
        job_id = path_id(request, "job_id")
        pid = await tokens.job_project(job_id=job_id)
        if pid is None:
            raise ApiError(404, "not_found", f"job {job_id} not found", {"field": "job_id"})
        if not who.covers(pid):
            raise forbidden(f"token {who.name!r} does not cover the project of job {job_id}", "project")
        if rule.own and worker_token and await tokens.foreign_jobs(token_id=who.id, job_ids=[job_id]):
            raise forbidden(
                f"job {job_id} is not held by a worker registered with token {who.name!r}", "job_id"
            )
    elif rule.scope == "worker" and worker_token:
        await _own_worker(request, who, path_id(request, "worker_id"))
    elif rule.scope == "claim" and worker_token:
        body = await _body(request)
        if body is not None:
            if body.worker_id is None:
                raise forbidden(
                    "a worker token claims for a worker it registered: give worker_id", "worker_id"
                )
            await _own_worker(request, who, body.worker_id)
    elif rule.scope == "body_project" and who.projects is not None:
        body = await _body(request)
        if body is not None:
            await _project_covered(request, who, str(body.project_id))
    elif rule.scope == "register" and who.projects is not None:
        body = await _body(request)
        if body is not None:
            if body.project is None:
                raise forbidden(
                    f"token {who.name!r} covers some projects only: register the worker for one", "project"
                )
            await _project_covered(request, who, str(body.project))
    elif rule.scope == "logs" and worker_token:
        ids = _entry_ids(await request.read()) if request.body_exists else []
        foreign = await refused_jobs(request, ids)
        if foreign:
            raise forbidden(
                f"jobs {sorted(foreign)} are not held by a worker registered with token {who.name!r}", "id"
            )


MAX_WORKER_TOKENS = 100_000
"""Workers whose token the server remembers (then it forgets them all and looks them up again)."""


async def _own_worker(request: web.Request, who: Principal, worker_id: int) -> None:
    known = request.app[worker_tokens_key]
    if worker_id in known:
        token_id = known[worker_id]
    else:
        row = await request.app[store_key].tokens.worker(worker_id=worker_id)
        if row is None:
            raise forbidden(f"worker {worker_id} was not registered with token {who.name!r}", "worker_id")
        token_id = row["token_id"]
        if len(known) >= MAX_WORKER_TOKENS:
            known.clear()
        known[worker_id] = token_id  # a worker keeps its token: every claim of it asks
    if token_id != who.id:
        raise forbidden(f"worker {worker_id} was not registered with token {who.name!r}", "worker_id")


def _entry_ids(raw: bytes) -> list[int]:
    """The job ids of a JSON array of entries ({"id": ...}); what cannot be read, the route refuses."""
    try:
        entries = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(entries, list):
        return []
    return [
        e["id"]
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("id"), int) and 0 < e["id"] < 2**63
    ]


# ---------------------------------------------------------------- OpenAPI


def security(method: str, path: str) -> list[dict[str, list[str]]]:
    """The route's OpenAPI security requirement: a bearer token (optional for ``/health``; with
    ``--auth`` off, no route needs one)."""
    rule = RULES.get((method, path), ADMIN_ONLY)
    if rule.scope == "public":
        return [{}, {"bearer": []}]
    return [{"bearer": []}]


SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A WhatsNext token (`whatsnext tokens create`), required when the server runs with "
        "--auth; the role and projects of the token decide what it may do.",
    }
}
