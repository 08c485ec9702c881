from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web

from ....template import TemplateError, check_template, placeholders
from ..errors import ApiError, found, invalid, not_found
from ..http import actor, json_response, parse_body
from ..keys import store_key
from ..roles import MANAGE_PROJECT, READ_PROJECT, Rule
from ..schemas import TaskCreate, TaskList, TaskOut
from ..schemas.projects import TASK_SETTINGS, TaskUpdate, TaskVersionList
from .table import routes

tasks = routes.section("tasks")


CREATE_TASK: dict[str, Any] = {
    "rule": Rule("manage", "body_project"),
    "body": TaskCreate,
    "response": TaskOut,
    "status": 201,
    "also": {200: "exist_ok and the task existed: that task as it is, existed: true, differs"},
    "errors": (400, 404, 409, 422),
}
"""``POST /tasks/`` and its alias ``POST /tasks``."""


def template_needs(command: str | None, shell: bool, field: str = "command") -> list[str] | None:
    """The parameter names ``command`` uses (what each job must give: wn_enqueue checks it); None
    without a command. A template that cannot run: 422 naming ``field``."""
    if command is None:
        return None
    try:
        check_template(command, shell=shell)
    except TemplateError as exc:
        raise invalid(f"{field}: {exc}", field) from None
    return placeholders(command)


def differences(asked: TaskCreate, existing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each setting the request gave that the existing task has another value of."""
    out = {}
    for field in TASK_SETTINGS:
        if field not in asked.model_fields_set:
            continue
        value = getattr(asked, field)
        if value != existing[field]:
            out[field] = {"existing": existing[field], "asked": value}
    return out


@tasks.post("/tasks", "Create a task (same as POST /tasks/)", published=False, **CREATE_TASK)
@tasks.post(
    "/tasks/",
    "Create a task: resource needs, retries and timeout of its jobs (with exist_ok, an existing one "
    "answers 200 and names what differs)",
    **CREATE_TASK,
)
async def create_task(request: web.Request) -> web.Response:
    b = await parse_body(request, TaskCreate)
    needs = template_needs(b.command, b.shell)
    store = request.app[store_key].tasks
    try:
        row = await store.create(
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
            actor=actor(request),
        )
    except asyncpg.UniqueViolationError:
        if not b.exist_ok:
            raise
        existing = found(await store.get(project=str(b.project_id), task=b.name), "task", b.name)
        return json_response({**existing, "existed": True, "differs": differences(b, existing)})
    return json_response(row, 201)


@tasks.get("/projects/{project}/tasks", "List a project's tasks", rule=READ_PROJECT, response=TaskList)
async def list_tasks(request: web.Request) -> web.Response:
    rows = await request.app[store_key].tasks.list(project=request.match_info["project"])
    return json_response({"tasks": rows})


@tasks.get(
    "/projects/{project}/tasks/{task}",
    "Show a task (by name or id) at its current version",
    rule=READ_PROJECT,
    response=TaskOut,
)
async def get_task(request: web.Request) -> web.Response:
    task = request.match_info["task"]
    row = await request.app[store_key].tasks.get(project=request.match_info["project"], task=task)
    return json_response(found(row, "task", task))


UPDATABLE = ", ".join(TaskUpdate.model_fields)


@tasks.patch(
    "/projects/{project}/tasks/{task}",
    "Change a task (by name or id) for the jobs submitted from now on: a new version; jobs already "
    "submitted keep the one they were submitted with",
    rule=MANAGE_PROJECT,
    body=TaskUpdate,
    response=TaskOut,
    errors=(400, 404, 409, 422),
)
async def update_task(request: web.Request) -> web.Response:
    b = await parse_body(request, TaskUpdate)
    given = b.model_fields_set
    if not given:
        raise ApiError(422, "invalid", f"nothing to change: give one of {UPDATABLE}", {"field": "body"})
    project, task = request.match_info["project"], request.match_info["task"]
    store = request.app[store_key].tasks
    changes = b.model_dump(mode="json", include=given)
    checked: int | None = None  # the version the template was checked against, if read
    if "command" in given or "shell" in given:
        command, shell = b.command, b.shell
        if not {"command", "shell"} <= given:  # the other half is the task's
            current = found(await store.get(project=project, task=task), "task", task)
            checked = current["version"]
            command = b.command if "command" in given else current["command"]
            shell = b.shell if "shell" in given else current["shell"]
        needs = template_needs(command, shell, "command" if "command" in given else "shell")
        if "command" in given:
            changes["placeholders"] = needs
    row = await store.update(
        project=project, task=task, changes=changes, actor=actor(request), version=checked
    )
    return json_response(row)


@tasks.get(
    "/projects/{project}/tasks/{task}/versions",
    "A task's versions, oldest first: what each ran (command, defaults, shell), its other settings "
    "and who made it",
    rule=READ_PROJECT,
    response=TaskVersionList,
)
async def list_task_versions(request: web.Request) -> web.Response:
    task = request.match_info["task"]
    rows = await request.app[store_key].tasks.versions(project=request.match_info["project"], task=task)
    if not rows:
        raise not_found("task", task)
    name = rows[0]["task"]
    versions = [{k: v for k, v in r.items() if k != "task"} for r in rows]
    return json_response({"task": name, "version": versions[-1]["version"], "versions": versions})
