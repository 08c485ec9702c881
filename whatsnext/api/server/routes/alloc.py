"""Automatic allocation: the demand for workers, allocation queues (where and how workers are
started for some projects' demand), the lease of the one loop that submits for a queue, and the
allocations it submitted. Durations are seconds."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ....limits import MAX_LIST
from ..errors import ApiError, found, invalid, not_found
from ..http import actor, json_response, parse_body, path_id, query_choice, query_int
from ..keys import store_key
from ..roles import READ_LIST, READ_PROJECT, Rule
from ..schemas import (
    AllocationCreate,
    AllocationList,
    AllocationOut,
    AllocationUpdate,
    AllocLeaseOut,
    AllocLeaseReleased,
    AllocLeaseRequest,
    AllocQueueCreate,
    AllocQueueDetail,
    AllocQueueList,
    AllocQueueOut,
    AllocQueueUpdate,
    Deleted,
    Demand,
)
from ..schemas.alloc import ALLOC_STATES, ENDED
from ..sharing import resolve_pool
from ..store.alloc import RECENT
from ..tokens import principal, project_filter
from .table import routes

demand = routes.section("demand")
alloc = routes.section("alloc")

READ_QUEUE = Rule("read", "alloc_queue")
MANAGE_QUEUE = Rule("manage", "alloc_queue")
MANAGE_QUEUE_BODY = Rule("manage", "alloc_projects")
MANAGE_ALLOCATION = Rule("manage", "allocation")
MAX_ALLOCATIONS = 10_000
"""Allocations one listing answers at most."""


# ---------------------------------------------------------------- demand


async def _demand(request: web.Request, projects: list[int] | None) -> web.Response:
    shapes = await request.app[store_key].alloc.demand(projects=projects)
    return json_response(
        {
            "shapes": shapes,
            "pending": sum(s["pending"] for s in shapes),
            "unserved": sum(s["unserved"] for s in shapes),
        }
    )


@demand.get(
    "/projects/{project}/demand",
    "Demand for workers: the project's eligible pending jobs by shape (CPUs, GPUs, tags, timeout), "
    "with how many no live worker could take",
    rule=READ_PROJECT,
    response=Demand,
    errors=(404,),
)
async def project_demand(request: web.Request) -> web.Response:
    key = request.match_info["project"]
    known = await request.app[store_key].sharing.projects(keys=[key])
    if key not in known:
        raise not_found("project", repr(key), "project")
    return await _demand(request, [known[key][0]])


@demand.get(
    "/demand",
    "Demand for workers of several projects: their eligible pending jobs by shape, with how many "
    "no live worker could take",
    rule=READ_LIST,
    response=Demand,
    query={
        "project": "a project (name or id; repeat for several; default: every project the token may read)"
    },
    errors=(403, 404, 422),
)
async def several_demand(request: web.Request) -> web.Response:
    keys = request.query.getall("project", [])
    if len(keys) > MAX_LIST:
        raise invalid(f"project: at most {MAX_LIST} projects", "project")
    covered = project_filter(request)
    if not keys:
        return await _demand(request, covered)
    known = await request.app[store_key].sharing.projects(keys=keys)
    who = principal(request)
    for key in keys:
        if covered is not None and (key not in known or known[key][0] not in covered):
            name = "" if who is None else f"token {who.name!r} "
            raise ApiError(403, "forbidden", f"{name}does not cover project {key!r}", {"field": "project"})
        if key not in known:
            raise not_found("project", repr(key), "project")
    return await _demand(request, sorted({known[k][0] for k in keys}))


# ---------------------------------------------------------------- queues


async def _queue(request: web.Request, name: str) -> dict[str, Any]:
    return found(await request.app[store_key].alloc.queue(name=name), "allocation queue", repr(name), "name")


@alloc.post(
    "/alloc/queues",
    "Create an allocation queue: where and how workers are started for its projects' demand",
    rule=MANAGE_QUEUE_BODY,
    body=AllocQueueCreate,
    response=AllocQueueOut,
    status=201,
    errors=(403, 404, 409, 422),
)
async def create_queue(request: web.Request) -> web.Response:
    b = await parse_body(request, AllocQueueCreate)
    pool = await resolve_pool(request, b.projects, False, principal(request))
    assert pool.ids is not None
    made = await request.app[store_key].alloc.create(
        name=b.name,
        backend=b.backend,
        project_ids=_ordered(b.projects, pool.keys),
        worker_args=b.worker_args,
        time_limit=b.time_limit,
        max_workers=b.max_workers,
        workers_per_alloc=b.workers_per_alloc,
        idle_timeout=b.idle_timeout,
        max_submits_per_minute=b.max_submits_per_minute,
        options=b.options.model_dump(exclude_none=True),
        created_by=actor(request),
    )
    if made is None:
        raise ApiError(409, "conflict", f"allocation queue {b.name!r} exists", {"field": "name"})
    return json_response(await _queue(request, b.name), 201)


def _ordered(projects: list[Any], keys: dict[str, int]) -> list[int]:
    """The ids of ``projects`` in the order given, each once."""
    return list(dict.fromkeys(keys[str(p)] for p in projects))


@alloc.get(
    "/alloc/queues",
    "Allocation queues, with their allocations counted by state and their last error",
    rule=READ_LIST,
    response=AllocQueueList,
    errors=(),
)
async def list_queues(request: web.Request) -> web.Response:
    rows = await request.app[store_key].alloc.queues(projects=project_filter(request))
    return json_response({"queues": rows})


@alloc.get(
    "/alloc/queues/{name}",
    "Show an allocation queue with its latest allocations",
    rule=READ_QUEUE,
    response=AllocQueueDetail,
    errors=(403, 404),
)
async def show_queue(request: web.Request) -> web.Response:
    queue = await _queue(request, request.match_info["name"])
    recent = await request.app[store_key].alloc.allocations(queue_id=queue["id"], limit=RECENT)
    return json_response({**queue, "recent": recent})


UPDATABLE = ", ".join(AllocQueueUpdate.model_fields)


@alloc.patch(
    "/alloc/queues/{name}",
    "Change an allocation queue (any field but its name and backend), pause or resume it, or "
    "report or clear its last error",
    rule=MANAGE_QUEUE_BODY,
    body=AllocQueueUpdate,
    response=AllocQueueOut,
    errors=(403, 404, 422),
)
async def update_queue(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    b = await parse_body(request, AllocQueueUpdate)
    given = b.model_fields_set
    if not given:
        raise invalid(f"nothing to change: give one of {UPDATABLE}", "body")
    store = request.app[store_key].alloc
    queue = await _queue(request, name)
    per_alloc = b.workers_per_alloc or queue["workers_per_alloc"]
    most = b.max_workers or queue["max_workers"]
    if per_alloc > most:
        field = "workers_per_alloc" if "workers_per_alloc" in given else "max_workers"
        raise invalid(f"workers_per_alloc ({per_alloc}) cannot exceed max_workers ({most})", field)
    project_ids = None
    if b.projects is not None:
        pool = await resolve_pool(request, b.projects, False, principal(request))
        project_ids = _ordered(b.projects, pool.keys)
    changed = await store.update(
        name=name,
        project_ids=project_ids,
        worker_args=b.worker_args,
        time_limit=b.time_limit,
        max_workers=b.max_workers,
        workers_per_alloc=b.workers_per_alloc,
        idle_timeout=b.idle_timeout,
        max_submits_per_minute=b.max_submits_per_minute,
        options=None if b.options is None else b.options.model_dump(exclude_none=True),
        paused=b.paused,
        set_error="last_error" in given,
        last_error=b.last_error,
    )
    if changed is None:
        raise not_found("allocation queue", repr(name), "name")
    return json_response(await _queue(request, name))


@alloc.delete(
    "/alloc/queues/{name}",
    "Delete an allocation queue and its allocations (its loop cancels what it still has)",
    rule=MANAGE_QUEUE,
    response=Deleted,
    errors=(403, 404),
)
async def delete_queue(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not await request.app[store_key].alloc.delete(name=name):
        raise not_found("allocation queue", repr(name), "name")
    return json_response({"deleted": 1})


# ---------------------------------------------------------------- the loop's lease


@alloc.post(
    "/alloc/queues/{name}/lease",
    "Take or renew the lease of the queue's loop (one loop submits for a queue at a time): granted "
    "when free, expired or already the holder's; 409 naming the holder otherwise",
    rule=MANAGE_QUEUE,
    body=AllocLeaseRequest,
    response=AllocLeaseOut,
    errors=(403, 404, 409, 422),
)
async def take_lease(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    b = await parse_body(request, AllocLeaseRequest)
    store = request.app[store_key].alloc
    row = await store.take_lease(name=name, holder=b.holder, seconds=b.seconds)
    if row is not None:
        return json_response(row)
    current = found(await store.lease(name=name), "allocation queue", repr(name), "name")
    expires = current["expires_at"]
    raise ApiError(
        409,
        "conflict",
        f"the loop of allocation queue {name!r} is held by {current['holder']!r} until {expires.isoformat()}",
        {"field": "holder", "holder": current["holder"], "expires_at": expires.isoformat()},
    )


@alloc.delete(
    "/alloc/queues/{name}/lease",
    "Give up the lease of the queue's loop (only its holder's)",
    rule=MANAGE_QUEUE,
    response=AllocLeaseReleased,
    query={"holder": "who holds it (host:pid), as it took it"},
    errors=(403, 404, 422),
)
async def release_lease(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    holder = request.query.get("holder")
    if not holder:
        raise invalid("holder is required: who holds the lease (host:pid)", "holder")
    store = request.app[store_key].alloc
    released = await store.release_lease(name=name, holder=holder)
    if not released:
        found(await store.lease(name=name), "allocation queue", repr(name), "name")
    return json_response({"released": released})


# ---------------------------------------------------------------- allocations


@alloc.post(
    "/alloc/queues/{name}/allocations",
    "Record an allocation submitted for the queue",
    rule=MANAGE_QUEUE,
    body=AllocationCreate,
    response=AllocationOut,
    status=201,
    errors=(403, 404, 409, 422),
)
async def create_allocation(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    b = await parse_body(request, AllocationCreate)
    store = request.app[store_key].alloc
    queue = await _queue(request, name)
    made = await store.create_allocation(
        queue_id=queue["id"],
        name=b.name,
        external_id=b.external_id,
        state=b.state,
        reason=b.reason,
        workers=b.workers,
        time_limit=b.time_limit,
        shape=b.shape,
    )
    return json_response(await store.allocation(id=made), 201)


@alloc.get(
    "/alloc/queues/{name}/allocations",
    "The queue's allocations, newest first",
    rule=READ_QUEUE,
    response=AllocationList,
    query={
        "state": "only those in this state (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)",
        "limit": f"at most this many (default {MAX_LIST}, at most {MAX_ALLOCATIONS})",
    },
    errors=(403, 404, 422),
)
async def list_allocations(request: web.Request) -> web.Response:
    state = query_choice(request, "state", ALLOC_STATES)
    limit = query_int(request, "limit", MAX_LIST, 1, MAX_ALLOCATIONS)
    queue = await _queue(request, request.match_info["name"])
    rows = await request.app[store_key].alloc.allocations(queue_id=queue["id"], state=state, limit=limit)
    return json_response({"allocations": rows})


@alloc.patch(
    "/allocations/{alloc_id}",
    "Change an allocation's state (RUNNING sets when it started, FINISHED, FAILED or CANCELLED "
    "when it ended), its scheduler reason or its external id",
    rule=MANAGE_ALLOCATION,
    body=AllocationUpdate,
    response=AllocationOut,
    errors=(403, 404, 409, 422),
)
async def update_allocation(request: web.Request) -> web.Response:
    alloc_id = path_id(request, "alloc_id")
    b = await parse_body(request, AllocationUpdate)
    if not b.model_fields_set:
        raise invalid("nothing to change: give state, reason or external_id", "body")
    store = request.app[store_key].alloc
    row = await store.update_allocation(
        id=alloc_id,
        state=b.state,
        set_reason="reason" in b.model_fields_set,
        reason=b.reason,
        external_id=b.external_id,
    )
    if row is None:
        raise not_found("allocation", alloc_id, "alloc_id")
    if row["refused"]:
        assert row["state"] in ENDED
        raise ApiError(
            409,
            "conflict",
            f"allocation {alloc_id} has ended ({row['state']}): its state stays",
            {"field": "state", "state": row["state"]},
        )
    return json_response(await store.allocation(id=alloc_id))
