"""The dashboard's actions: cancel, retry or delete the ticked jobs or every job matching the
board's filter. A first post answers a confirmation page stating how many jobs the action
touches, the confirmed post does it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import asyncpg
from aiohttp import web
from multidict import MultiMapping

from ..errors import ApiError
from ..keys import settings_key, store_key
from ..roles import Principal, Rule
from ..store.dashboard import JobFilter
from .base import (
    ACTIONS,
    DONE,
    MAX_BULK,
    PREFIX,
    job_filter,
    page,
    project_of,
    read_form,
    refuse_masked_filter,
    safe_next,
    views,
)
from .session import (
    CSRF_FIELD,
)

# ---------------------------------------------------------------- actions


@views.post(
    PREFIX + "/projects/{project}/actions",
    "Cancel, retry or delete jobs (a form)",
    rule=Rule("manage", "dashboard"),
)
@page("confirm.html", permission="manage")
async def actions(request: web.Request, who: Principal) -> dict[str, Any]:
    """Cancel, retry or delete the selected jobs or all jobs matching the filter: the first post
    answers how many jobs that is, the confirmed one does it."""
    form = await read_form(request)
    project = await project_of(request, who)
    action, _, scope = str(form.get("do", "")).partition(":")
    if action not in ACTIONS:
        raise ApiError(422, "invalid", f"action must be one of {', '.join(ACTIONS)}", {"field": "action"})
    label, statuses = ACTIONS[action]
    where = job_filter(form) if scope == "filter" else JobFilter()
    refuse_masked_filter(request, who, where)
    ids: list[int] | None = None
    if scope != "filter":
        ids = [int(x) for x in form.getall("ids", []) if str(x).isdigit() and len(str(x)) < 19]
        if not ids:
            raise web.HTTPSeeOther(_back(form, "select jobs first"))
    store = request.app[store_key].dashboard
    targets = await store.job_ids(
        project_id=project["id"], where=where, statuses=list(statuses), ids=ids, limit=MAX_BULK
    )
    if form.get("confirm") != "yes":
        hidden = [(k, str(v)) for k, v in form.items() if k not in ("confirm", CSRF_FIELD)]
        return {
            "project": project,
            "action": action,
            "label": label,
            "count": len(targets),
            "applies_to": statuses,
            "scope": scope,
            "asked": len(ids) if ids is not None else None,
            "hidden": hidden,
            "back": safe_next(str(form.get("back", "")) or None),
            "title": f"{label} {len(targets)} jobs?",
        }
    done = await _apply(request, who, project, action, targets)
    raise web.HTTPSeeOther(_back(form, f"{DONE[action]} {done} of {len(targets)} jobs"))


def _back(form: MultiMapping[str], notice: str) -> str:
    back = safe_next(str(form.get("back", "")) or None)
    path, _, query = back.partition("?")
    pairs = [p for p in query.split("&") if p and not p.startswith("notice=")]
    pairs.append(urlencode({"notice": notice}))
    return f"{path}?{'&'.join(pairs)}"


async def _apply(
    request: web.Request, who: Principal, project: dict[str, Any], action: str, ids: list[int]
) -> int:
    jobs = request.app[store_key].jobs
    actor = f"{who.name} (dashboard)" if request.app[settings_key].auth else "dashboard"
    done = 0
    order = sorted(ids, reverse=action == "delete")  # delete downstream jobs before their upstream
    for job_id in order:
        try:
            if action == "cancel":
                await jobs.cancel(job_id=job_id, reason="cancelled from the dashboard", actor=actor)
                done += 1
            elif action == "retry":
                await jobs.retry(job_id=job_id, actor=actor)
                done += 1
            else:
                row = await jobs.delete(project=str(project["id"]), job_id=job_id)
                done += int(bool(row and row["deleted"]))
        except asyncpg.PostgresError:
            continue  # finished, retried or released meanwhile (through another job of the batch)
    return done
