"""The dashboard's pages, its form posts and its live-update stream.

Pages are rendered on the server and readable without JavaScript; with it, htmx swaps the
``#live`` part of a page when the stream (server-sent events, fed by one poller of the job
history per server, see ``live``) says something changed. Actions are plain forms: a first post
answers a confirmation page stating how many jobs the action touches, the confirmed post does it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
import orjson
from aiohttp import web
from multidict import MultiMapping

from ....models import STATUSES
from ..errors import ApiError
from ..http import path_id
from ..keys import settings_key, store_key
from ..limits import auth_check, auth_failed, auth_succeeded
from ..masking import mask_secrets, refuse_secret_filter, secret_matcher
from ..registry import RouteTable
from ..roles import PAGE, PAGE_OPEN, Principal, Rule
from ..store.dashboard import JobFilter
from ..tokens import MAX_TOKEN_LENGTH, hash_token, lookup
from . import dag, live
from .render import render
from .session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    LoginRequired,
    browser_csrf,
    check_csrf,
    csrf_token,
    end_session,
    send_cookies,
    session_principal,
    start_session,
    viewer,
)
from .why import explain

PREFIX = "/ui"
PAGE_SIZE = 50
KANBAN_CARDS = 8
GRAPH_LIMIT = 400
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cancel": ("Cancel", ("PENDING", "BLOCKED", "RUNNING")),
    "retry": ("Retry", ("FAILED", "CANCELLED", "BLOCKED")),
    "delete": ("Delete", ("PENDING", "COMPLETED", "FAILED", "CANCELLED", "BLOCKED")),
}
"""Each action, its label, and the statuses of the jobs it applies to."""
DONE = {"cancel": "cancelled", "retry": "retried", "delete": "deleted"}
MAX_BULK = 100_000

stop_key = web.AppKey("dashboard_stop", asyncio.Event)
routes = RouteTable()
"""The dashboard's routes, in the server's registry (each with its rule), left out of OpenAPI."""
Page = Callable[[web.Request, Principal], Awaitable[dict[str, Any]]]


# ---------------------------------------------------------------- helpers


def silent_seconds(request: web.Request) -> float:
    """A worker not heard from for this long counts as gone (twice the lease)."""
    return 2 * request.app[settings_key].lease_seconds


def visible_projects(who: Principal) -> list[int] | None:
    return None if who.projects is None else sorted(who.projects)


def covered(who: Principal, project_id: int) -> None:
    if not who.covers(project_id):
        raise ApiError(
            403, "forbidden", f"token {who.name!r} does not cover this project", {"field": "project"}
        )


def mask(value: Any, show: bool, patterns: tuple[str, ...]) -> Any:
    if show:
        return value
    return mask_secrets(value, secret_matcher(patterns))


def shows_secrets(request: web.Request, who: Principal) -> bool:
    """Secret parameters are shown only to a signed-in role that may see them."""
    return request.app[settings_key].auth and who.can("secrets")


def refuse_masked_filter(request: web.Request, who: Principal, where: JobFilter) -> None:
    """422 (field ``param``) for a parameter filter on a secret parameter, at any depth, by a signed-in
    role that sees it masked: the answer would tell a right guess from a wrong one."""
    settings = request.app[settings_key]
    if settings.auth and where.parameters and not who.can("secrets"):
        refuse_secret_filter(where.parameters, settings.secret_parameters, "param")


def _param_value(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def job_filter(query: MultiMapping[str]) -> JobFilter:
    """The board's filter from a query string or a form."""

    def text(name: str) -> str | None:
        value = str(query.get(name, "")).strip()
        return value or None

    status = text("status")
    if status is not None:
        status = status.upper()
        if status not in STATUSES:
            raise ApiError(
                422, "invalid", f"status must be one of {', '.join(STATUSES)}", {"field": "status"}
            )
    params: dict[str, Any] = {}
    for raw in query.getall("param", []):
        key, sep, value = str(raw).partition("=")
        if key.strip() and sep:
            params[key.strip()] = _param_value(value.strip())
        elif str(raw).strip():
            raise ApiError(422, "invalid", "a parameter filter reads name=value", {"field": "param"})
    return JobFilter(
        statuses=None if status is None else (status,),
        task=text("task"),
        group=text("group"),
        name_contains=text("name"),  # the board's name box: the name contains this text
        parameters=params or None,
        worker=text("worker"),
    )


def filter_fields(where: JobFilter) -> list[tuple[str, str]]:
    """The board's filter fields that are set, as (form field, value); parameters apart."""
    fields = (
        ("status", where.status),
        ("task", where.task),
        ("group", where.group),
        ("name", where.name_contains),
        ("worker", where.worker),
    )
    return [(name, value) for name, value in fields if value]


def filter_query(where: JobFilter, **extra: Any) -> str:
    pairs = filter_fields(where)
    for key, value in (where.parameters or {}).items():
        pairs.append(("param", f"{key}={value if isinstance(value, str) else orjson.dumps(value).decode()}"))
    pairs += [(k, str(v)) for k, v in extra.items() if v is not None]
    return urlencode(pairs)


def safe_next(value: str | None) -> str:
    """Where to go after a login or an action: a dashboard path on this server, nothing else."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX + "/"


def page(
    template: str, permission: str = "read"
) -> Callable[[Page], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """A dashboard page: who is looking (else the login form), their permission, the template."""

    def wrap(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def view(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                who = await viewer(request)
            except LoginRequired:
                raise web.HTTPSeeOther(f"{PREFIX}/login?{urlencode({'next': request.path_qs})}") from None
            if not who.can(permission):
                raise ApiError(403, "forbidden", f"the role {who.role} may not see this", {"field": "role"})
            context = await handler(request, who)
            if isinstance(context, web.StreamResponse):
                return context
            context |= common(request, who)
            response = render(template, context)
            response.headers["Cache-Control"] = "no-store"
            response.headers["Server-Timing"] = f"render;dur={1000 * (time.perf_counter() - started):.1f}"
            send_cookies(request, response)
            return response

        return view

    return wrap


def common(request: web.Request, who: Principal) -> dict[str, Any]:
    settings = request.app[settings_key]
    return {
        "who": who,
        "auth": settings.auth,
        "csrf": csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "can_manage": who.can("manage"),
        "here": request.path_qs,
        "prefix": PREFIX,
        "statuses": STATUSES,
        "notice": request.query.get("notice"),
    }


# ---------------------------------------------------------------- pages


@routes.route("GET", "/", "To the dashboard", tag="dashboard", rule=PAGE, published=False)
async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(PREFIX + "/")


@routes.route("GET", PREFIX + "/", "Overview page", tag="dashboard", rule=PAGE, published=False)
@page("overview.html")
async def overview(request: web.Request, who: Principal) -> dict[str, Any]:
    store = request.app[store_key].dashboard
    projects = await store.projects(projects=visible_projects(who))
    cluster = await store.cluster(projects=visible_projects(who), silent_seconds=silent_seconds(request))
    for p in projects:
        p["total"] = sum(p["counts"].values())
        p["finished"] = sum(p["counts"].get(s, 0) for s in ("COMPLETED", "FAILED", "CANCELLED"))
    return {"projects": projects, "cluster": cluster, "live_url": f"{PREFIX}/events", "title": "Overview"}


async def _project(request: web.Request, who: Principal) -> dict[str, Any]:
    project = await request.app[store_key].dashboard.project(project=request.match_info["project"])
    if project is None:
        raise ApiError(404, "not_found", "project not found", {"field": "project"})
    covered(who, project["id"])
    return project


@routes.route(
    "GET", PREFIX + "/projects/{project}", "A project's board", tag="dashboard", rule=PAGE, published=False
)
@page("board.html")
async def board(request: web.Request, who: Principal) -> dict[str, Any]:
    store = request.app[store_key].dashboard
    settings = request.app[settings_key]
    project = await _project(request, who)
    where = job_filter(request.query)
    refuse_masked_filter(request, who, where)
    before = request.query.get("before")
    before_id = int(before) if before and before.isdigit() and len(before) < 19 else None
    kanban: dict[str, list[dict[str, Any]]] = {s: [] for s in STATUSES}
    for row in await store.kanban(project_id=project["id"], per_status=KANBAN_CARDS):
        kanban[row["status"]].append(row)
    jobs = await store.jobs(project_id=project["id"], where=where, before=before_id, limit=PAGE_SIZE)
    if where == JobFilter():
        matching = {"counts": project["counts"], "total": sum(project["counts"].values())}
    else:
        matching = await store.count(project_id=project["id"], where=where)
    show = shows_secrets(request, who)
    for j in jobs:
        j["parameters"] = mask(j["parameters"], show, settings.secret_parameters)
    names = await store.names(project_id=project["id"])
    base = f"{PREFIX}/projects/{project['name']}"
    older = None
    if len(jobs) == PAGE_SIZE:
        older = f"{base}?{filter_query(where, before=jobs[-1]['id'])}"
    return {
        "project": project,
        "kanban": kanban,
        "jobs": jobs,
        "matching": matching,
        "where": where,
        "param_pairs": [
            f"{k}={v if isinstance(v, str) else orjson.dumps(v).decode()}"
            for k, v in (where.parameters or {}).items()
        ],
        "names": names,
        "older": older,
        "newest": f"{base}?{filter_query(where)}" if before_id else None,
        "filter_qs": filter_query(where),
        "filter_fields": filter_fields(where),
        "actions": ACTIONS,
        "live_url": f"{PREFIX}/events?project={project['id']}",
        "title": project["name"],
    }


@routes.route(
    "GET",
    PREFIX + "/projects/{project}/groups",
    "A project's groups",
    tag="dashboard",
    rule=PAGE,
    published=False,
)
@page("groups.html")
async def groups(request: web.Request, who: Principal) -> dict[str, Any]:
    project = await _project(request, who)
    rows = await request.app[store_key].groups.list(project=str(project["id"]), limit=500)
    for g in rows:
        g["percent"] = round(100 * g["finished"] / g["total"]) if g["total"] else 0
    return {
        "project": project,
        "groups": rows,
        "live_url": f"{PREFIX}/events?project={project['id']}",
        "title": f"{project['name']} · groups",
    }


@routes.route(
    "GET",
    PREFIX + "/projects/{project}/graph",
    "A project's graph",
    tag="dashboard",
    rule=PAGE,
    published=False,
)
@page("graph.html")
async def graph(request: web.Request, who: Principal) -> dict[str, Any]:
    project = await _project(request, who)
    group = request.query.get("group") or None
    nodes, edges = await request.app[store_key].dashboard.graph(
        project_id=project["id"], group=group, limit=GRAPH_LIMIT
    )
    pairs = [(e["source"], e["target"]) for e in edges]
    return {
        "project": project,
        "group": group,
        "svg": dag.svg(nodes, pairs, href=PREFIX + "/jobs/{id}"),
        "shown": len(nodes),
        "limit": GRAPH_LIMIT,
        "live_url": f"{PREFIX}/events?project={project['id']}",
        "title": f"{project['name']} · graph",
    }


@routes.route("GET", PREFIX + "/jobs/{job_id}", "A job", tag="dashboard", rule=PAGE, published=False)
@page("job.html")
async def job_detail(request: web.Request, who: Principal) -> dict[str, Any]:
    app_store = request.app[store_key]
    settings = request.app[settings_key]
    job_id = path_id(request, "job_id")
    job = await app_store.jobs.get(job_id=job_id)
    if job is None:
        raise ApiError(404, "not_found", f"job {job_id} not found", {"field": "job_id"})
    covered(who, job["project_id"])
    show = shows_secrets(request, who)
    job["parameters"] = mask(job["parameters"], show, settings.secret_parameters)
    events = await app_store.jobs.events(job_id=job_id)
    links = await app_store.jobs.dependencies(job_id=job_id)
    upstream = [x for x in links if x["direction"] == "upstream"]
    downstream = [x for x in links if x["direction"] == "downstream"]
    attempts = await app_store.dashboard.attempts(job_id=job_id)
    for a in attempts:
        current = a["attempt"] == job["attempt"]
        a["gpus"] = job["gpus"] if current else None
        a["exit_code"] = job["exit_code"] if current else None
        a["error"] = job["error"] if current and job["status"] in ("FAILED", "CANCELLED") else None
    logs = await app_store.dashboard.log_tail(job_id=job_id, limit=200)
    artifacts = await app_store.dashboard.artifacts(job_id=job_id)
    why = None
    if job["status"] == "PENDING":
        workers = await app_store.dashboard.why_workers(
            project_id=job["project_id"], silent_seconds=silent_seconds(request)
        )
        ahead = await app_store.dashboard.queue_ahead(job_id=job_id)
        why = explain(job, upstream, workers, ahead, datetime.now(UTC), settings.starvation_seconds)
    return {
        "job": job,
        "events": events,
        "upstream": upstream,
        "downstream": downstream,
        "attempts": attempts,
        "logs": logs,
        "artifacts": artifacts,
        "why": why,
        "actions": {k: v for k, v in ACTIONS.items() if job["status"] in v[1]},
        "project": {"name": job["project"], "id": job["project_id"]},
        "live_url": f"{PREFIX}/events?job={job_id}",
        "title": f"#{job_id} {job['name']}",
    }


@routes.route("GET", PREFIX + "/workers", "Workers", tag="dashboard", rule=PAGE, published=False)
@page("workers.html")
async def workers(request: web.Request, who: Principal) -> dict[str, Any]:
    rows = await request.app[store_key].dashboard.workers(
        projects=visible_projects(who), silent_seconds=silent_seconds(request)
    )
    return {
        "online": [w for w in rows if w["online"]],
        "offline": [w for w in rows if not w["online"]],
        "live_url": f"{PREFIX}/events",
        "title": "Workers",
    }


# ---------------------------------------------------------------- actions


async def _form(request: web.Request) -> MultiMapping[str]:
    form = await request.post()
    check_csrf(request, str(form.get(CSRF_FIELD, "")) or None)
    return form  # type: ignore[return-value]


@routes.route(
    "POST",
    PREFIX + "/projects/{project}/actions",
    "Cancel, retry or delete jobs (a form)",
    tag="dashboard",
    rule=Rule("manage", "dashboard"),
    published=False,
)
@page("confirm.html", permission="manage")
async def actions(request: web.Request, who: Principal) -> dict[str, Any]:
    """Cancel, retry or delete the selected jobs or all jobs matching the filter: the first post
    answers how many jobs that is, the confirmed one does it."""
    form = await _form(request)
    project = await _project(request, who)
    action, _, scope = str(form.get("do", "")).partition(":")
    if action not in ACTIONS:
        raise ApiError(422, "invalid", f"action must be one of {', '.join(ACTIONS)}", {"field": "action"})
    label, statuses = ACTIONS[action]
    where = job_filter(form) if scope == "filter" else JobFilter()
    refuse_masked_filter(request, who, where)
    ids: list[int] | None = None
    if scope != "filter":
        ids = [int(x) for x in form.getall("ids", []) if str(x).isdigit() and len(str(x)) < 19]
        if not ids:
            raise web.HTTPSeeOther(_back(form, "select jobs first"))
    store = request.app[store_key].dashboard
    targets = await store.job_ids(
        project_id=project["id"], where=where, statuses=list(statuses), ids=ids, limit=MAX_BULK
    )
    if form.get("confirm") != "yes":
        hidden = [(k, str(v)) for k, v in form.items() if k not in ("confirm", CSRF_FIELD)]
        return {
            "project": project,
            "action": action,
            "label": label,
            "count": len(targets),
            "applies_to": statuses,
            "scope": scope,
            "asked": len(ids) if ids is not None else None,
            "hidden": hidden,
            "back": safe_next(str(form.get("back", "")) or None),
            "title": f"{label} {len(targets)} jobs?",
        }
    done = await _apply(request, who, project, action, targets)
    raise web.HTTPSeeOther(_back(form, f"{DONE[action]} {done} of {len(targets)} jobs"))


def _back(form: MultiMapping[str], notice: str) -> str:
    back = safe_next(str(form.get("back", "")) or None)
    path, _, query = back.partition("?")
    pairs = [p for p in query.split("&") if p and not p.startswith("notice=")]
    pairs.append(urlencode({"notice": notice}))
    return f"{path}?{'&'.join(pairs)}"


async def _apply(
    request: web.Request, who: Principal, project: dict[str, Any], action: str, ids: list[int]
) -> int:
    jobs = request.app[store_key].jobs
    actor = f"{who.name} (dashboard)" if request.app[settings_key].auth else "dashboard"
    done = 0
    order = sorted(ids, reverse=action == "delete")  # delete downstream jobs before their upstream
    for job_id in order:
        try:
            if action == "cancel":
                await jobs.cancel(job_id=job_id, reason="cancelled from the dashboard", actor=actor)
                done += 1
            elif action == "retry":
                await jobs.retry(job_id=job_id, actor=actor)
                done += 1
            else:
                row = await jobs.delete(project=str(project["id"]), job_id=job_id)
                done += int(bool(row and row["deleted"]))
        except asyncpg.PostgresError:
            continue  # finished, retried or released meanwhile (through another job of the batch)
    return done


# ---------------------------------------------------------------- login


@routes.route("GET", PREFIX + "/login", "Sign in", tag="dashboard", rule=PAGE_OPEN, published=False)
async def login_form(request: web.Request) -> web.StreamResponse:
    if not request.app[settings_key].auth:
        raise web.HTTPFound(PREFIX + "/")
    await browser_csrf(request)
    return _login_page(request, request.query.get("next"), None, 200)


def _login_page(
    request: web.Request, next_path: str | None, error: str | None, status: int
) -> web.StreamResponse:
    """The login form (the request's CSRF value is made first: :func:`browser_csrf`)."""
    context = {
        "next": safe_next(next_path),
        "error": error,
        "csrf": csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "prefix": PREFIX,
        "title": "Sign in",
        "who": None,
        "auth": True,
    }
    response = render("login.html", context, status=status)
    response.headers["Cache-Control"] = "no-store"
    send_cookies(request, response)
    return response


@routes.route(
    "POST",
    PREFIX + "/login",
    "Sign in with a token (a form)",
    tag="dashboard",
    rule=PAGE_OPEN,
    published=False,
)
async def login(request: web.Request) -> web.StreamResponse:
    """Check the token and start a session (recorded in the database; the cookie holds its id)."""
    await browser_csrf(request)
    form = await _form(request)
    token = str(form.get("token", "")).strip()
    next_path = str(form.get("next", ""))
    if not token:
        return _login_page(request, next_path, "Paste a token to sign in.", 401)
    digest = hash_token(token)
    try:
        auth_check(request, digest)  # a limited address: only a token that worked from it is tried
        who = (await lookup(request.app, digest))[0] if len(token) <= MAX_TOKEN_LENGTH else None
        if who is None:
            auth_failed(request)
    except ApiError as limited:
        response = _login_page(request, next_path, limited.message, limited.status)
        response.headers.update(limited.headers or {})
        return response
    if who is None:
        return _login_page(request, next_path, "This token is not valid (unknown, expired or revoked).", 401)
    auth_succeeded(request, digest)
    response = web.HTTPSeeOther(safe_next(next_path or None))
    await start_session(request, response, who, token)
    raise response


@routes.route("POST", PREFIX + "/logout", "Sign out", tag="dashboard", rule=PAGE_OPEN, published=False)
async def logout(request: web.Request) -> web.StreamResponse:
    """End the session: its record is deleted, so its cookie works nowhere any more. A browser
    whose session already ended is just sent to the login form."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id and await session_principal(request, session_id) is not None:
        await viewer(request)  # the CSRF value of this session: another page cannot sign anyone out
        await _form(request)
    response = web.HTTPSeeOther(PREFIX + "/login")
    await end_session(request, response)
    raise response


# ---------------------------------------------------------------- live updates


@routes.route(
    "GET",
    PREFIX + "/events",
    "Live updates (server-sent events)",
    tag="dashboard",
    rule=PAGE,
    published=False,
)
async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``change`` (with the job ids) at most every 250 ms while the project
    or job watched (or, without either, anything visible) changes (fed by ``live``)."""
    return await live.events(request)
