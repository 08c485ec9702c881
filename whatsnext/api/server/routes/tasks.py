from __future__ import annotations

from aiohttp import web

from ..http import dumps_json, json_response, parse_body, record, records
from ..keys import pool_key
from ..schemas import TaskCreate, TaskList, TaskOut
from ..sql import Q
from . import routes


@routes.route(
    "POST",
    "/tasks",
    "Create a task (same as POST /tasks/)",
    tag="tasks",
    body=TaskCreate,
    response=TaskOut,
    status=201,
    errors=(400, 404, 409, 422),
)
@routes.route(
    "POST",
    "/tasks/",
    "Create a task: resource needs, retries and timeout of its jobs",
    tag="tasks",
    body=TaskCreate,
    response=TaskOut,
    status=201,
    errors=(400, 404, 409, 422),
)
async def create_task(request: web.Request) -> web.Response:
    b = await parse_body(request, TaskCreate)
    row = await request.app[pool_key].fetchrow(
        Q.task_create,
        str(b.project_id),
        b.name,
        b.required_cpu,
        b.required_accelerators,
        b.required_tags,
        b.command,
        dumps_json(b.defaults),
        b.max_attempts,
        b.retry_delay,
        b.timeout,
        b.inputs,
        b.outputs,
    )
    return json_response(record(row), 201)


@routes.route("GET", "/projects/{project}/tasks", "List a project's tasks", tag="tasks", response=TaskList)
async def list_tasks(request: web.Request) -> web.Response:
    rows = await request.app[pool_key].fetch(Q.task_list, request.match_info["project"])
    return json_response({"tasks": records(rows)})
