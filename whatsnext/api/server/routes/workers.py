from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp import web

from ....limits import MAX_LIST
from ....models import WORKER_STATUSES, WorkerStatus
from ....wire import fence_margin
from ..errors import invalid, not_found
from ..http import client_gone, json_response, parse_body, path_id, query_choice, query_number
from ..keys import hub_key, settings_key, store_key
from ..notify.workers import worker_wakeup
from ..roles import READ_LIST, WORK_OWN_WORKER, Rule
from ..schemas import (
    Deregistered,
    Heartbeat,
    HeartbeatOut,
    WorkerEvents,
    WorkerList,
    WorkerOut,
    WorkerRegister,
    WorkerRegistered,
)
from ..sharing import resolve_pool
from ..tokens import principal, project_filter, token_id
from .table import routes

workers = routes.section("workers")


@workers.post(
    "/workers",
    "Register a worker: its capacity and tags",
    rule=Rule("work", "register"),
    body=WorkerRegister,
    response=WorkerRegistered,
    status=201,
)
async def register(request: web.Request) -> web.Response:
    b = await parse_body(request, WorkerRegister)
    project_ids = None
    if b.projects is not None or b.all_projects:
        if b.project is not None:
            raise invalid("give project, projects or all_projects, not several", "project")
        pool = await resolve_pool(request, b.projects, b.all_projects, principal(request))
        project_ids = None if pool.ids is None else list(pool.ids)
    row = await request.app[store_key].workers.register(
        project=None if b.project is None else str(b.project),
        project_ids=project_ids,
        all_projects=b.all_projects,
        name=b.name,
        entity=b.entity,
        host=b.host,
        pid=b.pid,
        cpu=b.cpu,
        accelerators=b.accelerators,
        tags=b.tags,
        token_id=token_id(request),
        deadline=b.deadline,
        lease_seconds=request.app[settings_key].lease_seconds,
    )
    lease = request.app[settings_key].lease_seconds
    return json_response(
        {
            **row,
            "running": [],
            "used_cpu": 0,
            "used_accelerators": 0,
            "lease_seconds": lease,
            "heartbeat_interval": lease / 3,
            "fence_margin": fence_margin(lease),
            "max_wait": request.app[settings_key].max_wait,
        },
        201,
    )


@workers.post(
    "/workers/{worker_id}/heartbeat",
    "Extend the leases of the worker's running jobs; answers the ids to cancel",
    rule=WORK_OWN_WORKER,
    body=Heartbeat,
    response=HeartbeatOut,
    errors=(404, 422),
)
async def heartbeat(request: web.Request) -> web.Response:
    worker_id = path_id(request, "worker_id")
    body = await parse_body(request, Heartbeat) if request.body_exists else Heartbeat()
    lease = request.app[settings_key].lease_seconds
    grace = body.grace if body.grace is not None else max(lease / 3, 1.0)
    cancel, leases = await request.app[store_key].workers.heartbeat(
        worker_id=worker_id, lease_seconds=lease, running=body.running, grace=grace
    )
    return json_response({"cancel": cancel, "lease_seconds": lease, "leases": leases})


@workers.get(
    "/workers/{worker_id}/events",
    "Long-poll for the worker's running jobs to stop (cancelled, or requeued by an operator); "
    "answers as soon as there is one that `seen` does not list",
    rule=WORK_OWN_WORKER,
    response=WorkerEvents,
    query={
        "wait": "seconds to wait for one (default 0: answer now; at most the server's max wait)",
        "seen": "the stops already known, as JOB:ATTEMPT pairs separated by commas (48:2,51:1): "
        "they do not end the wait",
    },
    errors=(404, 422),
)
async def worker_events(request: web.Request) -> web.Response:
    worker_id = path_id(request, "worker_id")
    seen = _seen(request.query.get("seen") or "")
    app = request.app
    store, hub, settings = app[store_key], app[hub_key], app[settings_key]
    wait = query_number(request, "wait", 0.0, 0, 3600)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, settings.max_wait)
    async with worker_wakeup(hub, worker_id) as wakeup:
        while True:
            wakeup.before_look()
            stops = await store.workers.stops(worker_id=worker_id)
            if stops is None:
                raise not_found("worker", worker_id, "worker_id")
            news = [s for s in stops if (s["id"], s["attempt"]) not in seen]
            if news or not await wakeup.wait(deadline, lambda: hub.closing or client_gone(request)):
                return json_response(_events(news))


def _seen(raw: str) -> set[tuple[int, int]]:
    """The ``seen`` query parameter: JOB:ATTEMPT pairs separated by commas."""
    pairs: set[tuple[int, int]] = set()
    for item in raw.split(","):
        if not item.strip():
            continue
        job, sep, attempt = item.strip().partition(":")
        if not (sep and job.isascii() and job.isdigit() and attempt.isascii() and attempt.isdigit()):
            raise invalid(
                f"seen must be JOB:ATTEMPT pairs separated by commas (48:2,51:1), got {item!r}", "seen"
            )
        if len(job) > 19 or len(attempt) > 10:
            raise invalid(f"seen: {item!r} is out of range", "seen")
        pairs.add((int(job), int(attempt)))
        if len(pairs) > MAX_LIST:
            raise invalid(f"seen lists at most {MAX_LIST} pairs", "seen")
    return pairs


def _events(stops: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cancel": [s["id"] for s in stops if s["stop"] == "cancel"],
        "requeue": [s["id"] for s in stops if s["stop"] == "requeue"],
        "jobs": stops,
    }


@workers.delete(
    "/workers/{worker_id}",
    "Deregister a worker that stops; jobs it still holds go back to the queue (as lost: no attempt used)",
    rule=WORK_OWN_WORKER,
    response=Deregistered,
    errors=(404, 422),
)
async def deregister(request: web.Request) -> web.Response:
    worker_id = path_id(request, "worker_id")
    n = await request.app[store_key].workers.deregister(worker_id=worker_id)
    return json_response({"released": n})


@workers.get(
    "/workers",
    "Workers: capacity, what each holds now, when last seen, status (ONLINE, LOST, OFFLINE)",
    rule=READ_LIST,
    response=WorkerList,
    query={
        "project": "only this project's (id or name)",
        "status": "ONLINE, LOST (last heartbeat older than its lease) or OFFLINE (any case)",
    },
)
async def list_workers(request: web.Request) -> web.Response:
    status = cast(WorkerStatus | None, query_choice(request, "status", WORKER_STATUSES))
    rows = await request.app[store_key].workers.list(
        project=request.query.get("project") or None, status=status, projects=project_filter(request)
    )
    return json_response({"workers": rows})


@workers.get(
    "/workers/{worker_id}",
    "One worker, as GET /workers shows it",
    rule=READ_LIST,
    response=WorkerOut,
    errors=(404, 422),
)
async def get_worker(request: web.Request) -> web.Response:
    worker_id = path_id(request, "worker_id")
    row = await request.app[store_key].workers.get(worker_id=worker_id, projects=project_filter(request))
    if row is None:
        raise not_found("worker", worker_id, "worker_id")
    return json_response(row)
