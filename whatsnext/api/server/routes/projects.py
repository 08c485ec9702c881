from __future__ import annotations

from aiohttp import web

from ..auth import project_filter
from ..errors import ApiError
from ..http import json_response, parse_body, query_choice, record, records
from ..keys import pool_key
from ..schemas import Deleted, ProjectCreate, ProjectList, ProjectOut, ProjectUpdate
from ..sql import Q
from . import routes


@routes.route(
    "POST",
    "/projects",
    "Create a project",
    tag="projects",
    body=ProjectCreate,
    response=ProjectOut,
    status=201,
    errors=(400, 409, 422),
)
async def create_project(request: web.Request) -> web.Response:
    body = await parse_body(request, ProjectCreate)
    row = await request.app[pool_key].fetchrow(
        Q.project_create, body.name, body.description, body.strict_tasks
    )
    return json_response(record(row), 201)


@routes.route(
    "GET",
    "/projects",
    "List projects",
    tag="projects",
    response=ProjectList,
    query={"status": "ACTIVE or ARCHIVED"},
    errors=(422,),
)
async def list_projects(request: web.Request) -> web.Response:
    status = query_choice(request, "status", ("ACTIVE", "ARCHIVED"))
    rows = await request.app[pool_key].fetch(Q.project_list, status, project_filter(request))
    return json_response({"projects": records(rows)})


@routes.route(
    "GET",
    "/projects/{project}",
    "Show a project (by id or name) with job counts",
    tag="projects",
    response=ProjectOut,
)
async def get_project(request: web.Request) -> web.Response:
    row = await request.app[pool_key].fetchrow(Q.project_get, request.match_info["project"])
    return json_response(record(row))


@routes.route(
    "PATCH",
    "/projects/{project}",
    "Rename, describe, archive or re-activate a project",
    tag="projects",
    body=ProjectUpdate,
    response=ProjectOut,
    errors=(400, 404, 409, 422),
)
async def update_project(request: web.Request) -> web.Response:
    body = await parse_body(request, ProjectUpdate)
    if not body.model_fields_set:
        raise ApiError(
            422, "invalid", "nothing to change: give name, description or status", {"field": "body"}
        )
    row = await request.app[pool_key].fetchrow(
        Q.project_update,
        request.match_info["project"],
        body.name,
        body.description,
        body.status,
        body.strict_tasks,
    )
    return json_response(record(row))


@routes.route(
    "DELETE",
    "/projects/{project}",
    "Delete a project with all its tasks and jobs",
    tag="projects",
    response=Deleted,
)
async def delete_project(request: web.Request) -> web.Response:
    await request.app[pool_key].fetchval(Q.project_delete, request.match_info["project"])
    return json_response({"deleted": 1})
