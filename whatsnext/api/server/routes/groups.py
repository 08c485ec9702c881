"""Groups: sweeps and named batches, with their progress, cancelled and retried as one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import found
from ..http import actor, json_response, parse_body, query_int
from ..keys import store_key
from ..roles import MANAGE_PROJECT, READ_PROJECT
from ..schemas import GroupAction, GroupList, GroupOut, GroupRetried, GroupRetry
from ..store.base import Row
from ..store.groups import GroupStore
from .table import routes

groups = routes.section("groups")


async def _group(request: web.Request) -> Row:
    key = request.match_info["group"]
    row = await request.app[store_key].groups.get(project=request.match_info["project"], group=key)
    return found(row, "group", key, "group")


async def _group_action(request: web.Request, act: Callable[..., Awaitable[int]]) -> web.Response:
    """Apply ``act`` (a method of the group store) to the group in the path; answer how many jobs
    it changed."""
    group = await _group(request)
    n = await act(request.app[store_key].groups, group_id=group["id"], actor=actor(request))
    return json_response({"id": group["id"], "name": group["name"], "count": n})


@groups.get(
    "/projects/{project}/groups",
    "List a project's groups (sweeps, named batches), newest first, with job counts by status",
    rule=READ_PROJECT,
    response=GroupList,
    query={"limit": "at most this many (default 100)"},
)
async def list_groups(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 10_000)
    rows = await request.app[store_key].groups.list(project=request.match_info["project"], limit=limit)
    return json_response({"groups": rows})


@groups.get(
    "/projects/{project}/groups/{group}",
    "Show a group (by name or id) and its progress",
    rule=READ_PROJECT,
    response=GroupOut,
)
async def get_group(request: web.Request) -> web.Response:
    return json_response(await _group(request))


@groups.post(
    "/projects/{project}/groups/{group}/cancel",
    "Cancel a group's unfinished jobs (running ones are stopped by their workers)",
    rule=MANAGE_PROJECT,
    response=GroupAction,
)
async def cancel_group(request: web.Request) -> web.Response:
    return await _group_action(request, GroupStore.cancel)


@groups.post(
    "/projects/{project}/groups/{group}/retry",
    "Put a group's failed, lost or cancelled jobs back in the queue (those of the kinds the body "
    "chooses; no body: all of them), with what they blocked; `downstream` also reruns the "
    "dependants that already ran over their results",
    rule=MANAGE_PROJECT,
    body=GroupRetry,
    response=GroupRetried,
)
async def retry_group(request: web.Request) -> web.Response:
    body = await parse_body(request, GroupRetry) if request.body_exists else GroupRetry()
    group = await _group(request)
    every = not (body.failed or body.cancelled or body.lost)
    out = await request.app[store_key].groups.retry(
        group_id=group["id"],
        actor=actor(request),
        failed=every or body.failed,
        cancelled=every or body.cancelled,
        lost=every or body.lost,
        downstream=body.downstream,
    )
    return json_response(
        {
            "id": group["id"],
            "name": group["name"],
            "count": len(out["ids"]),
            "ids": out["ids"],
            "downstream": out["downstream"],
        }
    )
