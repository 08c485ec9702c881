"""A project's schedules page: each schedule with its timing, its next run, its last run and job,
and why its last tick made no job."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..keys import settings_key, store_key
from ..roles import PAGE, Principal
from .base import PREFIX, mask, page, project_of, shows_secrets, views


@views.get(PREFIX + "/projects/{project}/schedules", "A project's schedules", rule=PAGE)
@page("schedules.html")
async def schedules_page(request: web.Request, who: Principal) -> dict[str, Any]:
    project = await project_of(request, who)
    rows = await request.app[store_key].schedules.list(project=str(project["id"]))
    show, patterns = shows_secrets(request, who), request.app[settings_key].secret_parameters
    for s in rows:
        s["parameters"] = mask(s["job"].get("parameters") or {}, show, patterns)
    return {
        "project": project,
        "schedules": rows,
        "live_url": f"{PREFIX}/events?project={project['id']}",
        "title": f"{project['name']} · schedules",
    }
