from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ....models import STATUSES
from ..batch import Entry
from ..errors import ApiError, found, invalid, not_found
from ..http import actor, json_response, parse_body, path_id, query_flag, query_int
from ..keys import hub_key, settings_key, store_key
from ..masking import refuse_secret_filter
from ..metrics import metrics_key
from ..roles import MANAGE_JOB, MANAGE_PROJECT, READ_JOB, READ_PROJECT, SUBMIT_PROJECT
from ..schemas import (
    BatchCreated,
    CancelOut,
    Deleted,
    Graph,
    JobBatch,
    JobCounts,
    JobCreate,
    JobDependencies,
    JobHistory,
    JobList,
    JobOut,
    QueueList,
    RequeueOut,
    RetryOut,
)
from ..store.base import Row
from ..store.filter import JobFilter
from ..store.jobs import JobStore
from ..submit import Queued, enqueue, read_jobs
from ..tokens import principal
from .table import routes

jobs_routes = routes.section("jobs")

FILTER_QUERY = {
    "status": "filter by status; several separated by commas (failed,cancelled)",
    "task": "filter by task name",
    "group": "filter by group name or id",
    "name": "filter by job name: a pattern where * matches anything (lr-0.1-*)",
    "where": 'filter by parameters: a JSON object the job\'s parameters contain ({"lr": 0.1})',
}
"""The query parameters that select jobs (GET /projects/{p}/jobs and its counts)."""


@jobs_routes.post(
    "/projects/{project}/jobs",
    "Queue a job (201), or find the job its unique_key belongs to (200, existing: true)",
    rule=SUBMIT_PROJECT,
    body=JobCreate,
    response=JobOut,
    status=201,
    also={200: "The project had a job with this unique_key (and the same fields): that job, existing: true"},
    errors=(400, 404, 409, 422),
)
async def create_job(request: web.Request) -> web.Response:
    queued, _ = await _submit(request, batch=False)
    existing = queued.existing[0]
    body = {
        **(queued.job or {}),
        "created_tasks": queued.created_tasks,
        "existing": existing,
        "warnings": queued.warnings,
    }
    return json_response(body, 200 if existing else 201)


@jobs_routes.post(
    "/projects/{project}/jobs/batch",
    "Queue many jobs in one transaction (entries may depend on each other by name); an entry whose "
    "unique_key the project has is that job",
    rule=SUBMIT_PROJECT,
    body=JobBatch,
    response=BatchCreated,
    status=201,
    also={200: "Every entry's unique_key belonged to a job the project had: nothing was created"},
    errors=(400, 404, 409, 422),
)
async def create_jobs(request: web.Request) -> web.Response:
    queued, group = await _submit(request, batch=True)
    return json_response(
        {
            "ids": queued.ids,
            "count": len(queued.ids),
            "existing": queued.existing,
            "created_tasks": queued.created_tasks,
            "group": group,
            "group_id": queued.group_ids.get(group) if group else None,
            "warnings": queued.warnings,
        },
        201 if queued.created else 200,
    )


async def _submit(request: web.Request, *, batch: bool) -> tuple[Queued, str | None]:
    """Queue the request's jobs (one, or a batch with its group name) and count them as submitted."""
    entries, group = await _jobs_of(request, batch=batch)
    app = request.app
    queued = await enqueue(
        app[store_key],
        app[hub_key],
        request.match_info["project"],
        entries,
        group,
        actor=actor(request),
        single=not batch,
    )
    app[metrics_key].jobs_submitted(queued.project, queued.created)
    return queued, group


async def _jobs_of(request: web.Request, *, batch: bool) -> tuple[list[Entry], str | None]:
    """The submitted jobs of a request (one job, or a batch: a list, or ``{group, jobs}``) and the
    batch's group name: the fast path of :func:`read_jobs`, else the models."""
    raw = await request.read()
    entries = read_jobs(raw, batch=batch, max_parameters_bytes=request.app[settings_key].max_parameters_bytes)
    if entries is not None:
        return entries, None
    if batch:
        jobs, group = (await parse_body(request, JobBatch)).jobs_and_group()
    else:
        jobs, group = [await parse_body(request, JobCreate)], None
    return [job.model_dump(exclude_unset=True) for job in jobs], group


@jobs_routes.get(
    "/projects/{project}/jobs",
    "List a project's jobs, newest first",
    rule=READ_PROJECT,
    response=JobList,
    query={
        **FILTER_QUERY,
        "limit": "page size (default 100, at most 1000)",
        "before": "only jobs with a smaller id (next page)",
        "full": "1 (default): with parameters and results; 0: without them (null), for small pages",
    },
    errors=(404, 422),
)
async def list_jobs(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 1000)
    before = query_int(request, "before", None, 1)
    rows = await request.app[store_key].jobs.list(
        project=request.match_info["project"],
        where=_filter(request),
        before=before,
        limit=limit,
        full=query_flag(request, "full", default=True),
    )
    next_before = rows[-1]["id"] if len(rows) == limit else None
    return json_response({"jobs": rows, "next_before": next_before})


@jobs_routes.get(
    "/projects/{project}/jobs/counts",
    "How many of a project's jobs match the filters of the job list, by status and in all",
    rule=READ_PROJECT,
    response=JobCounts,
    query=FILTER_QUERY,
    errors=(404, 422),
)
async def count_jobs(request: web.Request) -> web.Response:
    row = await request.app[store_key].jobs.counts(
        project=request.match_info["project"], where=_filter(request)
    )
    return json_response(row)


def _filter(request: web.Request) -> JobFilter:
    """The job filter of a list or count request (its query's ``FILTER_QUERY`` parameters)."""
    return JobFilter(
        statuses=_statuses(request.query.get("status") or ""),
        task=request.query.get("task") or None,
        group=request.query.get("group") or None,
        name=request.query.get("name") or None,
        parameters=_where(request),
    )


def _statuses(raw: str) -> tuple[str, ...] | None:
    wanted = [s.strip().upper() for s in raw.split(",") if s.strip()]
    for status in wanted:
        if status not in STATUSES:
            raise invalid(f"status must be among {', '.join(STATUSES)}, got {status!r}", "status")
    return tuple(wanted) or None


def _where(request: web.Request) -> dict[str, Any] | None:
    """The ``where`` filter on parameters; 422 when it tests a secret parameter (at any depth) and
    the token's role sees secrets masked."""
    raw = request.query.get("where") or ""
    if not raw:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise invalid('where must be a JSON object, e.g. {"lr": 0.1}', "where")
    who = principal(request)
    if who is not None and not who.can("secrets"):
        refuse_secret_filter(value, request.app[settings_key].secret_parameters, "where")
    return value


async def _of_job(request: web.Request, read: Callable[..., Awaitable[list[Row]]]) -> list[Row]:
    """What ``read`` (a method of the job store) finds of the job in the path; none, and no such
    job either: 404."""
    job_id = path_id(request, "job_id")
    jobs = request.app[store_key].jobs
    rows = await read(jobs, job_id=job_id)
    if not rows and await jobs.get(job_id=job_id) is None:
        raise not_found("job", job_id, "job_id")
    return rows


@jobs_routes.get("/jobs/{job_id}", "Show a job", rule=READ_JOB, response=JobOut)
async def get_job(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    row = await request.app[store_key].jobs.get(job_id=job_id)
    return json_response(found(row, "job", job_id, "job_id"))


@jobs_routes.get(
    "/jobs/{job_id}/events", "A job's history: every status change", rule=READ_JOB, response=JobHistory
)
async def job_events(request: web.Request) -> web.Response:
    rows = await _of_job(request, JobStore.events)
    return json_response({"events": rows})


@jobs_routes.delete(
    "/projects/{project}/jobs/{job_id}",
    "Remove a job that is not running and that no unfinished job depends on",
    rule=MANAGE_PROJECT,
    response=Deleted,
    errors=(404, 409, 422),
)
async def delete_job(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    row = await request.app[store_key].jobs.delete(project=request.match_info["project"], job_id=job_id)
    row = found(row, "job", job_id, "job_id")
    if row["status"] == "RUNNING":
        raise ApiError(409, "conflict", f"job {job_id} is running: cancel it instead", {"field": "job_id"})
    if row["has_dependents"]:
        raise ApiError(
            409, "conflict", f"unfinished jobs depend on job {job_id}: cancel it instead", {"field": "job_id"}
        )
    return json_response({"deleted": row["deleted"]})


@jobs_routes.get(
    "/projects/{project}/queue",
    "Pending jobs in the order they will be handed out",
    rule=READ_PROJECT,
    response=QueueList,
    query={"limit": "at most this many (default 100)", "offset": "skip this many"},
)
async def get_queue(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 10_000)
    offset = query_int(request, "offset", 0, 0)
    rows = await request.app[store_key].jobs.queue(
        project=request.match_info["project"], limit=limit, offset=offset
    )
    return json_response({"jobs": rows})


@jobs_routes.delete(
    "/projects/{project}/queue",
    "Cancel every pending job of a project",
    rule=MANAGE_PROJECT,
    response=Deleted,
)
async def clear_queue(request: web.Request) -> web.Response:
    n = await request.app[store_key].jobs.clear_queue(
        project=request.match_info["project"], actor=actor(request)
    )
    return json_response({"deleted": n})


@jobs_routes.post(
    "/jobs/{job_id}/cancel",
    "Cancel a job: pending at once, running through its worker (events stream, else heartbeat)",
    rule=MANAGE_JOB,
    response=CancelOut,
    errors=(404, 409, 422),
)
async def cancel_job(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    status = await request.app[store_key].jobs.cancel(job_id=job_id, reason="cancelled", actor=actor(request))
    return json_response({"id": job_id, "status": status})


@jobs_routes.post(
    "/jobs/{job_id}/requeue",
    "Hand a running job back to the queue: its worker stops it at once, and it goes back to "
    "PENDING without using an attempt (409 unless RUNNING)",
    rule=MANAGE_JOB,
    response=RequeueOut,
    errors=(404, 409, 422),
)
async def requeue_job(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    status = await request.app[store_key].jobs.requeue(job_id=job_id, actor=actor(request))
    return json_response({"id": job_id, "status": status})


@jobs_routes.post(
    "/jobs/{job_id}/retry",
    "Put a FAILED/CANCELLED job (or the failed jobs upstream of a BLOCKED one) back in the queue",
    rule=MANAGE_JOB,
    response=RetryOut,
    errors=(404, 409, 422),
)
async def retry_job(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    n = await request.app[store_key].jobs.retry(job_id=job_id, actor=actor(request))
    return json_response({"id": job_id, "requeued": n})


@jobs_routes.get(
    "/jobs/{job_id}/dependencies",
    "A job's upstream and downstream jobs",
    rule=READ_JOB,
    response=JobDependencies,
)
async def job_dependencies(request: web.Request) -> web.Response:
    rows = await _of_job(request, JobStore.dependencies)
    out: dict[str, list[dict]] = {"upstream": [], "downstream": []}
    for r in rows:
        out[r["direction"]].append({"id": r["id"], "name": r["name"], "status": r["status"], "on": r["on"]})
    return json_response(out)


@jobs_routes.get(
    "/projects/{project}/graph",
    "The project's jobs and dependency edges (a DAG)",
    rule=READ_PROJECT,
    response=Graph,
    query={"limit": "at most this many nodes and edges (default 10000)"},
)
async def project_graph(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 10_000, 1, 1_000_000)
    nodes, edges = await request.app[store_key].jobs.graph(project=request.match_info["project"], limit=limit)
    return json_response({"nodes": nodes, "edges": edges})
