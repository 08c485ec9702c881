"""What the dashboard's pages, forms and stream share: the route table, the page decorator
(who is looking, their permission, the template), the board's filter from a query or a form,
secret masking and the project a page is about."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from multidict import MultiMapping

from ....models import STATUSES
from ..errors import ApiError
from ..keys import settings_key, store_key
from ..masking import mask_secrets, refuse_secret_filter, secret_matcher
from ..registry import RouteTable
from ..roles import Principal
from ..store.dashboard import JobFilter
from .render import render
from .session import (
    CSRF_FIELD,
    LoginRequired,
    check_csrf,
    csrf_token,
    send_cookies,
    viewer,
)

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
views = routes.section("dashboard", published=False)
"""Where each page declares its route (``@views.get(PREFIX + "/workers", "Workers", rule=PAGE)``)."""
Page = Callable[[web.Request, Principal], Awaitable[dict[str, Any]]]


# ---------------------------------------------------------------- helpers


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


async def project_of(request: web.Request, who: Principal) -> dict[str, Any]:
    project = await request.app[store_key].dashboard.project(project=request.match_info["project"])
    if project is None:
        raise ApiError(404, "not_found", "project not found", {"field": "project"})
    covered(who, project["id"])
    return project


async def read_form(request: web.Request) -> MultiMapping[str]:
    form = await request.post()
    check_csrf(request, str(form.get(CSRF_FIELD, "")) or None)
    return form  # type: ignore[return-value]
