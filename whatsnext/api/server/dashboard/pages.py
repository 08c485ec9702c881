"""The dashboard's pages and its live-update stream.

Pages are rendered on the server and readable without JavaScript; with it, htmx swaps the
``#live`` part of a page when the stream (server-sent events, fed by one poller of the job
history per server, see ``live``) says something changed. Actions are plain forms (``actions``),
signing in is ``login``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from ....models import STATUSES
from ..errors import found
from ..http import path_id
from ..keys import settings_key, store_key
from ..roles import PAGE, Principal
from ..store.dashboard import JobFilter
from . import dag, live
from .base import (
    ACTIONS,
    GRAPH_LIMIT,
    KANBAN_CARDS,
    PAGE_SIZE,
    PREFIX,
    covered,
    filter_fields,
    filter_query,
    job_filter,
    mask,
    page,
    project_of,
    refuse_masked_filter,
    shows_secrets,
    views,
    visible_projects,
)
from .pool import pool_rows
from .why import explain, unnamed

# ---------------------------------------------------------------- pages


@views.get("/", "To the dashboard", rule=PAGE)
async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(PREFIX + "/")


@views.get(PREFIX + "/", "Overview page", rule=PAGE)
@page("overview.html")
async def overview(request: web.Request, who: Principal) -> dict[str, Any]:
    store = request.app[store_key].dashboard
    projects = await store.projects(projects=visible_projects(who))
    cluster = await store.cluster(projects=visible_projects(who))
    completed, seconds = await store.completed_recently(projects=visible_projects(who))
    for p in projects:
        p["total"] = sum(p["counts"].values())
        p["finished"] = sum(p["counts"].get(s, 0) for s in ("COMPLETED", "FAILED", "CANCELLED"))
        p["completed_recently"] = completed.get(p["id"], 0)
    return {
        "projects": projects,
        "cluster": cluster,
        # None: the last hour; else the seconds the last RECENT_SAMPLE finished jobs took.
        "recent_seconds": None if seconds >= 3599.5 else seconds,
        "live_url": f"{PREFIX}/events",
        "title": "Overview",
    }


def _project_page(project: dict[str, Any], title: str, **context: Any) -> dict[str, Any]:
    """The context of a page about one project: ``context`` with the project, the page's title and
    the project's live updates."""
    return {
        "project": project,
        **context,
        "live_url": f"{PREFIX}/events?project={project['id']}",
        "title": title,
    }


@views.get(PREFIX + "/projects/{project}", "A project's board", rule=PAGE)
@page("board.html")
async def board(request: web.Request, who: Principal) -> dict[str, Any]:
    store = request.app[store_key].dashboard
    settings = request.app[settings_key]
    project = await project_of(request, who)
    where = job_filter(request.query)
    refuse_masked_filter(request, who, where)
    before = request.query.get("before")
    before_id = int(before) if before and before.isdigit() and len(before) < 19 else None
    kanban: dict[str, list[dict[str, Any]]] = {s: [] for s in STATUSES}
    for row in await store.kanban(project_id=project["id"], per_status=KANBAN_CARDS):
        kanban[row["status"]].append(row)
    jobs = await store.jobs(project_id=project["id"], where=where, before=before_id, limit=PAGE_SIZE)
    if where == JobFilter():
        matching = {"counts": project["counts"], "total": sum(project["counts"].values())}
    else:
        matching = await store.count(project_id=project["id"], where=where)
    show = shows_secrets(request, who)
    for j in jobs:
        j["parameters"] = mask(j["parameters"], show, settings.secret_parameters)
    names = await store.names(project_id=project["id"])
    base = f"{PREFIX}/projects/{project['name']}"
    older = None
    if len(jobs) == PAGE_SIZE:
        older = f"{base}?{filter_query(where, before=jobs[-1]['id'])}"
    return _project_page(
        project,
        project["name"],
        kanban=kanban,
        jobs=jobs,
        matching=matching,
        where=where,
        param_pairs=[
            f"{k}={v if isinstance(v, str) else orjson.dumps(v).decode()}"
            for k, v in (where.parameters or {}).items()
        ],
        names=names,
        older=older,
        newest=f"{base}?{filter_query(where)}" if before_id else None,
        filter_qs=filter_query(where),
        filter_fields=filter_fields(where),
        actions=ACTIONS,
    )


@views.get(PREFIX + "/projects/{project}/groups", "A project's groups", rule=PAGE)
@page("groups.html")
async def groups(request: web.Request, who: Principal) -> dict[str, Any]:
    project = await project_of(request, who)
    rows = await request.app[store_key].groups.list(project=str(project["id"]), limit=500)
    for g in rows:
        g["percent"] = round(100 * g["finished"] / g["total"]) if g["total"] else 0
    return _project_page(project, f"{project['name']} · groups", groups=rows)


@views.get(PREFIX + "/projects/{project}/graph", "A project's graph", rule=PAGE)
@page("graph.html")
async def graph(request: web.Request, who: Principal) -> dict[str, Any]:
    project = await project_of(request, who)
    group = request.query.get("group") or None
    nodes, edges = await request.app[store_key].dashboard.graph(
        project_id=project["id"], group=group, limit=GRAPH_LIMIT
    )
    pairs = [(e["source"], e["target"]) for e in edges]
    return _project_page(
        project,
        f"{project['name']} · graph",
        group=group,
        svg=dag.svg(nodes, pairs, href=PREFIX + "/jobs/{id}"),
        shown=len(nodes),
        limit=GRAPH_LIMIT,
    )


@views.get(PREFIX + "/jobs/{job_id}", "A job", rule=PAGE)
@page("job.html")
async def job_detail(request: web.Request, who: Principal) -> dict[str, Any]:
    app_store = request.app[store_key]
    settings = request.app[settings_key]
    job_id = path_id(request, "job_id")
    job = found(await app_store.jobs.get(job_id=job_id), "job", job_id, "job_id")
    covered(who, job["project_id"])
    show = shows_secrets(request, who)
    job["parameters"] = mask(job["parameters"], show, settings.secret_parameters)
    events = await app_store.jobs.events(job_id=job_id)
    links = await app_store.jobs.dependencies(job_id=job_id)
    upstream = [x for x in links if x["direction"] == "upstream"]
    downstream = [x for x in links if x["direction"] == "downstream"]
    attempts = await app_store.dashboard.attempts(job_id=job_id)
    for a in attempts:
        current = a["attempt"] == job["attempt"]
        a["gpus"] = job["gpus"] if current else None
        a["exit_code"] = job["exit_code"] if current else None
        a["error"] = job["error"] if current and job["status"] in ("FAILED", "CANCELLED") else None
    logs = await app_store.dashboard.log_tail(job_id=job_id, limit=200)
    artifacts = await app_store.dashboard.artifacts(job_id=job_id)
    why = None
    if job["status"] == "PENDING":
        workers = await app_store.dashboard.why_workers(project_id=job["project_id"])
        ahead = await app_store.dashboard.queue_ahead(job_id=job_id)
        pool = await app_store.dashboard.why_pool(job_id=job_id)
        allocations = await app_store.dashboard.why_alloc(job_id=job_id)
        why = explain(
            job,
            upstream,
            workers,
            ahead,
            datetime.now(UTC),
            settings.starvation_seconds,
            None if pool is None else unnamed(pool, who.covers),
            allocations,
        )
    return {
        "job": job,
        "events": events,
        "upstream": upstream,
        "downstream": downstream,
        "attempts": attempts,
        "logs": logs,
        "artifacts": artifacts,
        "why": why,
        "actions": {k: v for k, v in ACTIONS.items() if job["status"] in v[1]},
        "project": {"name": job["project"], "id": job["project_id"]},
        "live_url": f"{PREFIX}/events?job={job_id}",
        "title": f"#{job_id} {job['name']}",
    }


@views.get(PREFIX + "/workers", "Workers", rule=PAGE)
@page("workers.html")
async def workers(request: web.Request, who: Principal) -> dict[str, Any]:
    rows = await request.app[store_key].dashboard.workers(projects=visible_projects(who))
    return {
        "online": [w for w in rows if w["status"] == "ONLINE"],
        "lost": [w for w in rows if w["status"] == "LOST"],
        "offline": [w for w in rows if w["status"] == "OFFLINE"],
        "live_url": f"{PREFIX}/events",
        "title": "Workers",
    }


@views.get(PREFIX + "/pool", "The pool: each project's share, quotas and usage", rule=PAGE)
@page("pool.html")
async def pool_page(request: web.Request, who: Principal) -> dict[str, Any]:
    rows = await request.app[store_key].dashboard.pool_projects(projects=visible_projects(who))
    return {**pool_rows(rows), "live_url": f"{PREFIX}/events", "title": "Pool"}


# ---------------------------------------------------------------- live updates


@views.get(PREFIX + "/events", "Live updates (server-sent events)", rule=PAGE)
async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``change`` (with the job ids) at most every 250 ms while the project
    or job watched (or, without either, anything visible) changes (fed by ``live``)."""
    return await live.events(request)
