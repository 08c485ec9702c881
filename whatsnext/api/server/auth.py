"""The auth middleware: with ``--auth``, every request but ``/health`` needs a token; the rule of
the route it reached (declared with the route, see ``registry``) decides what the token may do.

The order is fixed: identify the token (401) before the body is read; check the role's permission
and what the path names (403); let the route parse its body, then decide what the body names on
that same parsed body (:func:`check_body`, called by ``http.parse_body``): one parse, the one the
handler uses. Answers are masked for roles that may not see secret parameters."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
import structlog
from aiohttp import web

from .errors import ApiError, Handler
from .http import BODY_GUARD, PRINCIPAL_KEY, path_id
from .keys import settings_key, store_key, worker_tokens_key
from .masking import masked
from .registry import UnregisteredRoute, spec_for
from .roles import Principal, Rule
from .sharing import resolve_pool
from .tokens import authenticate, worker_token

log = structlog.get_logger("whatsnext.server")

HEALTH_PUBLIC = ("status", "version", "schema_level", "max_wait")
MAX_WORKER_TOKENS = 100_000
"""Workers whose token the server remembers (then it forgets them all and looks them up again)."""


def forbidden(message: str, field: str) -> ApiError:
    return ApiError(403, "forbidden", message, {"field": field})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With ``--auth``: identify the token, check the route's rule, mask secret parameters for
    roles that may not see them."""
    settings = request.app[settings_key]
    if not settings.auth:
        return await handler(request)
    try:
        spec = spec_for(request)
    except UnregisteredRoute as exc:
        log.error("a served route has no rule", error=str(exc))
        raise forbidden("this route has no rule: nobody may call it", "path") from None
    rule = None if spec is None else spec.rule
    if rule is not None and rule.scope == "dashboard":
        return await handler(request)  # a session cookie or a token, checked by the page itself
    if rule is not None and rule.scope == "public":
        try:
            request[PRINCIPAL_KEY] = await authenticate(request)
        except ApiError as exc:
            if exc.status == 429:
                raise  # a bad token past the limit: no answer that tells a good token from a bad one
            return _public_health(await handler(request))
        return await handler(request)
    who = await authenticate(request)
    request[PRINCIPAL_KEY] = who
    if rule is None:
        return await handler(request)  # no such route: the router answers 404 or 405
    if rule.permission is not None and not who.can(rule.permission):
        raise forbidden(f"the role {who.role} of token {who.name!r} may not {request.method} this", "role")
    await _check_path(request, who, rule)
    decided: list[bool] = []
    if rule.on_body and _restricted(who, rule):
        request[BODY_GUARD] = partial(check_body, request, who, rule, decided)
    response = await handler(request)
    if BODY_GUARD in request and not decided and response.status < 400:
        # A route whose rule reads the body answered without parsing it through parse_body.
        log.error("a route answered without its body rule being decided", path=request.path)
    if not who.can("secrets") and not rule.unmasked:
        return masked(response, settings.secret_parameters)
    return response


def _restricted(who: Principal, rule: Rule) -> bool:
    """Whether the body can matter: a token of some projects, or a worker token on its workers."""
    if rule.scope in ("claim", "logs"):
        return who.worker_token is not None
    if rule.scope == "pool":
        return who.worker_token is not None or who.projects is not None
    return who.projects is not None


def _public_health(response: web.StreamResponse) -> web.StreamResponse:
    if not isinstance(response, web.Response) or response.body is None:
        return response
    data = orjson.loads(response.body)  # type: ignore[arg-type]
    slim = {k: data[k] for k in HEALTH_PUBLIC if k in data}
    return web.Response(body=orjson.dumps(slim), status=response.status, content_type="application/json")


async def _project_covered(request: web.Request, who: Principal, key: str) -> None:
    if who.projects is None:
        return
    pid = await request.app[store_key].tokens.project_id(project=key)
    if pid is None or pid not in who.projects:
        raise forbidden(f"token {who.name!r} does not cover project {key!r}", "project")


async def _check_path(request: web.Request, who: Principal, rule: Rule) -> None:
    """What the path names: its project, its job, its worker."""
    tokens = request.app[store_key].tokens
    worker = who.worker_token is not None
    if rule.scope in ("project", "claim"):
        await _project_covered(request, who, request.match_info["project"])
    elif rule.scope == "job" and (who.projects is not None or (rule.own and worker)):
        job_id = path_id(request, "job_id")
        pid = await tokens.job_project(job_id=job_id)
        if pid is None:
            raise ApiError(404, "not_found", f"job {job_id} not found", {"field": "job_id"})
        if not who.covers(pid):
            raise forbidden(f"token {who.name!r} does not cover the project of job {job_id}", "project")
        if rule.own and worker and await tokens.foreign_jobs(token_id=who.id, job_ids=[job_id]):
            raise forbidden(
                f"job {job_id} is not held by a worker registered with token {who.name!r}", "job_id"
            )
    elif rule.scope == "worker" and worker:
        await _own_worker(request, who, path_id(request, "worker_id"))
    elif rule.scope in ("alloc_queue", "alloc_projects") and who.projects is not None:
        name = request.match_info.get("name")
        if name is not None:
            ids = await request.app[store_key].alloc.queue_projects(name=name)
            if ids is None:
                raise ApiError(404, "not_found", f"allocation queue {name!r} not found", {"field": "name"})
            _queue_covered(who, ids, f"allocation queue {name!r}")
    elif rule.scope == "allocation" and who.projects is not None:
        alloc_id = path_id(request, "alloc_id")
        row = await request.app[store_key].alloc.allocation_queue(id=alloc_id)
        if row is None:
            raise ApiError(404, "not_found", f"allocation {alloc_id} not found", {"field": "alloc_id"})
        _queue_covered(who, row["project_ids"], f"the allocation queue of allocation {alloc_id}")


def _queue_covered(who: Principal, project_ids: list[int], what: str) -> None:
    if who.projects is not None and not set(project_ids) <= who.projects:
        raise forbidden(f"token {who.name!r} does not cover every project {what} serves", "projects")


async def check_body(
    request: web.Request, who: Principal, rule: Rule, decided: list[bool], body: Any
) -> None:
    """What the body names, on the body the route parsed: the project of a task, the project a
    worker registers for, the worker a claim is for, the jobs of a log batch; and fields that only a
    token of every project may set (:attr:`Rule.global_fields`)."""
    given = sorted(rule.global_fields & body.model_fields_set) if rule.global_fields else []
    if given and who.projects is not None:
        raise forbidden(
            f"{given[0]} is set only with a token that covers every project; token {who.name!r} "
            "covers some projects only",
            given[0],
        )
    if rule.scope in ("claim", "pool"):
        if rule.scope == "pool":
            await resolve_pool(request, body.projects, body.all_projects, who)
        if who.worker_token is not None:
            if body.worker_id is None:
                raise forbidden(
                    "a worker token claims for a worker it registered: give worker_id", "worker_id"
                )
            await _own_worker(request, who, body.worker_id)
    elif rule.scope == "body_project":
        await _project_covered(request, who, str(body.project_id))
    elif rule.scope == "register":
        if body.projects is not None or body.all_projects:
            await resolve_pool(request, body.projects, body.all_projects, who)
        elif body.project is None:
            raise forbidden(
                f"token {who.name!r} covers some projects only: register the worker for one", "project"
            )
        else:
            await _project_covered(request, who, str(body.project))
    elif rule.scope == "alloc_projects":
        if body.projects is not None:
            await resolve_pool(request, body.projects, False, who)
    elif rule.scope == "logs":
        foreign = await refused_jobs(request, [entry.id for entry in body.root])
        if foreign:
            raise forbidden(
                f"jobs {sorted(foreign)} are not held by a worker registered with token {who.name!r}", "id"
            )
    decided.append(True)


async def refused_jobs(request: web.Request, job_ids: list[int]) -> set[int]:
    """Of these jobs, those a worker token may not report on: no worker of its own holds them."""
    token_id = worker_token(request)
    if token_id is None or not job_ids:
        return set()
    return await request.app[store_key].tokens.foreign_jobs(token_id=token_id, job_ids=job_ids)


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
