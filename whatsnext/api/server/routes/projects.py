from __future__ import annotations

from aiohttp import web

from ..errors import ApiError
from ..http import json_response, parse_body, query_choice
from ..keys import store_key
from ..roles import READ_LIST, READ_PROJECT, Rule
from ..schemas import Deleted, ProjectCreate, ProjectList, ProjectOut, ProjectUpdate
from ..schemas.projects import POOL_FIELDS, QUOTA_FIELDS
from ..tokens import project_filter
from .table import routes

projects = routes.section("projects")


@projects.post(
    "/projects",
    "Create a project",
    rule=Rule("projects"),
    body=ProjectCreate,
    response=ProjectOut,
    status=201,
    errors=(400, 409, 422),
)
async def create_project(request: web.Request) -> web.Response:
    body = await parse_body(request, ProjectCreate)
    row = await request.app[store_key].projects.create(
        name=body.name,
        description=body.description,
        strict_tasks=body.strict_tasks,
        strict_parameters=body.strict_parameters,
    )
    return json_response(row, 201)


@projects.get(
    "/projects",
    "List projects",
    rule=READ_LIST,
    response=ProjectList,
    query={"status": "ACTIVE or ARCHIVED"},
    errors=(422,),
)
async def list_projects(request: web.Request) -> web.Response:
    status = query_choice(request, "status", ("ACTIVE", "ARCHIVED"))
    rows = await request.app[store_key].projects.list(status=status, projects=project_filter(request))
    return json_response({"projects": rows})


@projects.get(
    "/projects/{project}",
    "Show a project (by id or name) with job counts",
    rule=READ_PROJECT,
    response=ProjectOut,
)
async def get_project(request: web.Request) -> web.Response:
    row = await request.app[store_key].projects.get(project=request.match_info["project"])
    return json_response(row)


UPDATABLE = ", ".join(ProjectUpdate.model_fields)


@projects.patch(
    "/projects/{project}",
    "Rename, describe, archive or re-activate a project; set what it refuses (strict_tasks, "
    "strict_parameters), its share of the pool and its quotas",
    rule=Rule("projects", "project", global_fields=frozenset(POOL_FIELDS)),
    body=ProjectUpdate,
    response=ProjectOut,
    errors=(400, 404, 409, 422),
)
async def update_project(request: web.Request) -> web.Response:
    body = await parse_body(request, ProjectUpdate)
    if not body.model_fields_set:
        raise ApiError(422, "invalid", f"nothing to change: give one of {UPDATABLE}", {"field": "body"})
    row = await request.app[store_key].projects.update(
        project=request.match_info["project"],
        name=body.name,
        description=body.description,
        status=body.status,
        strict_tasks=body.strict_tasks,
        strict_parameters=body.strict_parameters,
        share=body.share,
        max_gpus=body.max_gpus,
        max_cpus=body.max_cpus,
        max_running=body.max_running,
        quotas=[f for f in QUOTA_FIELDS if f in body.model_fields_set],
    )
    return json_response(row)


@projects.delete(
    "/projects/{project}",
    "Delete a project with all its tasks and jobs",
    rule=Rule("projects", "project"),
    response=Deleted,
)
async def delete_project(request: web.Request) -> web.Response:
    await request.app[store_key].projects.delete(project=request.match_info["project"])
    return json_response({"deleted": 1})
