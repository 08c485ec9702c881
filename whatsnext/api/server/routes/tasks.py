from __future__ import annotations

from typing import Any

from aiohttp import web

from ....template import TemplateError, check_template, placeholders
from ..errors import invalid
from ..http import json_response, parse_body
from ..keys import store_key
from ..roles import READ_PROJECT, Rule
from ..schemas import TaskCreate, TaskList, TaskOut
from .table import routes

tasks = routes.section("tasks")


CREATE_TASK: dict[str, Any] = {
    "rule": Rule("manage", "body_project"),
    "body": TaskCreate,
    "response": TaskOut,
    "status": 201,
    "errors": (400, 404, 409, 422),
}
"""``POST /tasks/`` and its alias ``POST /tasks``."""


@tasks.post("/tasks", "Create a task (same as POST /tasks/)", published=False, **CREATE_TASK)
@tasks.post("/tasks/", "Create a task: resource needs, retries and timeout of its jobs", **CREATE_TASK)
async def create_task(request: web.Request) -> web.Response:
    b = await parse_body(request, TaskCreate)
    needs: list[str] | None = None
    if b.command is not None:
        try:
            check_template(b.command, shell=b.shell)
        except TemplateError as exc:
            raise invalid(f"command: {exc}", "command") from None
        needs = placeholders(b.command)  # what each job must give (wn_enqueue checks it)
    row = await request.app[store_key].tasks.create(
        project=str(b.project_id),
        name=b.name,
        required_cpu=b.required_cpu,
        required_accelerators=b.required_accelerators,
        required_tags=b.required_tags,
        command=b.command,
        placeholders=needs,
        shell=b.shell,
        defaults=b.defaults,
        max_attempts=b.max_attempts,
        max_lost=b.max_lost,
        max_preempted=b.max_preempted,
        retry_delay=b.retry_delay,
        timeout=b.timeout,
        inputs=b.inputs,
        outputs=b.outputs,
        concurrency_key=b.concurrency_key,
        concurrency_limit=b.concurrency_limit,
    )
    return json_response(row, 201)


@tasks.get("/projects/{project}/tasks", "List a project's tasks", rule=READ_PROJECT, response=TaskList)
async def list_tasks(request: web.Request) -> web.Response:
    rows = await request.app[store_key].tasks.list(project=request.match_info["project"])
    return json_response({"tasks": rows})
