from __future__ import annotations

from aiohttp import web

from ..errors import invalid
from ..http import json_response, parse_body, path_id, query_choice
from ..keys import settings_key, store_key
from ..roles import READ_LIST, WORK_OWN_WORKER, Rule
from ..schemas import Deregistered, Heartbeat, HeartbeatOut, WorkerList, WorkerRegister, WorkerRegistered
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
    cancel = await request.app[store_key].workers.heartbeat(
        worker_id=worker_id, lease_seconds=lease, running=body.running, grace=grace
    )
    return json_response({"cancel": cancel, "lease_seconds": lease})


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
    "Workers: capacity, what each holds now, when last seen",
    rule=READ_LIST,
    response=WorkerList,
    query={"project": "only this project's (id or name)", "status": "ONLINE or OFFLINE"},
)
async def list_workers(request: web.Request) -> web.Response:
    status = query_choice(request, "status", ("ONLINE", "OFFLINE"))
    rows = await request.app[store_key].workers.list(
        project=request.query.get("project") or None, status=status, projects=project_filter(request)
    )
    return json_response({"workers": rows})
