"""Schedules: a job submitted at each tick of a cron expression or every N seconds."""

from __future__ import annotations

from aiohttp import web

from .. import schedules
from ..errors import found
from ..http import actor, json_response, parse_body
from ..keys import store_key
from ..roles import MANAGE_PROJECT, READ_PROJECT
from ..schemas.schedules import ScheduleCreate, ScheduleList, ScheduleOut, ScheduleUpdate
from .table import routes

section = routes.section("schedules")


@section.post(
    "/projects/{project}/schedules",
    "Make a schedule: a job submitted at each tick of a cron expression (in a time zone) or every N seconds",
    rule=MANAGE_PROJECT,
    body=ScheduleCreate,
    response=ScheduleOut,
    status=201,
    errors=(400, 404, 409, 422),
)
async def create_schedule(request: web.Request) -> web.Response:
    body = await parse_body(request, ScheduleCreate)
    row = await schedules.create(request.app[store_key], request.match_info["project"], body, actor(request))
    return json_response(row, status=201)


@section.get(
    "/projects/{project}/schedules",
    "List a project's schedules with their next tick and their last job's status",
    rule=READ_PROJECT,
    response=ScheduleList,
)
async def list_schedules(request: web.Request) -> web.Response:
    rows = await request.app[store_key].schedules.list(project=request.match_info["project"])
    return json_response({"schedules": rows})


@section.get(
    "/projects/{project}/schedules/{schedule}",
    "Show a schedule (by name or id)",
    rule=READ_PROJECT,
    response=ScheduleOut,
)
async def get_schedule(request: web.Request) -> web.Response:
    key = request.match_info["schedule"]
    row = await request.app[store_key].schedules.get(project=request.match_info["project"], schedule=key)
    return json_response(found(row, "schedule", key, "schedule"))


@section.patch(
    "/projects/{project}/schedules/{schedule}",
    "Change a schedule: pause or resume it, give it a new cron expression, period, time zone or job",
    rule=MANAGE_PROJECT,
    body=ScheduleUpdate,
    response=ScheduleOut,
    errors=(400, 404, 409, 422),
)
async def update_schedule(request: web.Request) -> web.Response:
    body = await parse_body(request, ScheduleUpdate)
    row = await schedules.update(
        request.app[store_key],
        request.match_info["project"],
        request.match_info["schedule"],
        body,
        actor(request),
    )
    return json_response(row)


@section.delete(
    "/projects/{project}/schedules/{schedule}",
    "Remove a schedule (the jobs it made stay); answers the schedule as it was",
    rule=MANAGE_PROJECT,
    response=ScheduleOut,
)
async def delete_schedule(request: web.Request) -> web.Response:
    row = await schedules.delete(
        request.app[store_key], request.match_info["project"], request.match_info["schedule"]
    )
    return json_response(row)
