from __future__ import annotations

from aiohttp import web

from ..batch import normalise
from ..errors import ApiError, not_found
from ..http import dumps_json, json_response, parse_body, path_id, query_choice, query_int, record, records
from ..keys import pool_key
from ..schemas import (
    BatchCreated,
    CancelOut,
    Deleted,
    Graph,
    JobBatch,
    JobCreate,
    JobDependencies,
    JobHistory,
    JobList,
    JobOut,
    QueueList,
    RetryOut,
)
from ..sql import Q
from . import routes

STATUSES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "BLOCKED")


@routes.route(
    "POST",
    "/projects/{project}/jobs",
    "Queue a job",
    tag="jobs",
    body=JobCreate,
    response=JobOut,
    status=201,
    errors=(400, 404, 409, 422),
)
async def create_job(request: web.Request) -> web.Response:
    job = await parse_body(request, JobCreate)
    batch = dumps_json(normalise([job]))
    async with request.app[pool_key].acquire() as conn:
        ids = await conn.fetchval(Q.job_enqueue, request.match_info["project"], batch)
        row = await conn.fetchrow(Q.job_get, ids[0])
    return json_response(record(row), 201)


@routes.route(
    "POST",
    "/projects/{project}/jobs/batch",
    "Queue many jobs in one transaction (entries may depend on each other by name)",
    tag="jobs",
    body=JobBatch,
    response=BatchCreated,
    status=201,
    errors=(400, 404, 409, 422),
)
async def create_jobs(request: web.Request) -> web.Response:
    jobs = (await parse_body(request, JobBatch)).root
    if any(job.depends for job in jobs):
        payload = dumps_json(normalise(jobs))
    else:
        # Validated, and already in the shape the database reads: no need to build it again.
        payload = (await request.read()).decode()
    ids = await request.app[pool_key].fetchval(Q.job_enqueue, request.match_info["project"], payload)
    return json_response({"ids": ids, "count": len(ids)}, 201)


@routes.route(
    "GET",
    "/projects/{project}/jobs",
    "List a project's jobs, newest first",
    tag="jobs",
    response=JobList,
    query={
        "status": "filter by status",
        "task": "filter by task name",
        "limit": "page size (default 100, at most 1000)",
        "before": "only jobs with a smaller id (next page)",
    },
)
async def list_jobs(request: web.Request) -> web.Response:
    status = query_choice(request, "status", STATUSES)
    limit = query_int(request, "limit", 100, 1, 1000)
    before = query_int(request, "before", None, 1)
    rows = await request.app[pool_key].fetch(
        Q.job_list, request.match_info["project"], status, request.query.get("task") or None, before, limit
    )
    next_before = rows[-1]["id"] if len(rows) == limit else None
    return json_response({"jobs": records(rows), "next_before": next_before})


@routes.route("GET", "/jobs/{job_id}", "Show a job", tag="jobs", response=JobOut)
async def get_job(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    row = await request.app[pool_key].fetchrow(Q.job_get, job_id)
    if row is None:
        raise not_found("job", job_id, "job_id")
    return json_response(record(row))


@routes.route(
    "GET", "/jobs/{job_id}/events", "A job's history: every status change", tag="jobs", response=JobHistory
)
async def job_events(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    async with request.app[pool_key].acquire() as conn:
        rows = await conn.fetch(Q.job_events, job_id)
        if not rows and await conn.fetchrow(Q.job_get, job_id) is None:
            raise not_found("job", job_id, "job_id")
    return json_response({"events": records(rows)})


@routes.route(
    "DELETE",
    "/projects/{project}/jobs/{job_id}",
    "Remove a job that is not running and that no unfinished job depends on",
    tag="jobs",
    response=Deleted,
    errors=(404, 409, 422),
)
async def delete_job(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    row = await request.app[pool_key].fetchrow(Q.job_delete, request.match_info["project"], job_id)
    if row is None:
        raise not_found("job", job_id, "job_id")
    if row["status"] == "RUNNING":
        raise ApiError(409, "conflict", f"job {job_id} is running: cancel it instead", {"field": "job_id"})
    if row["has_dependents"]:
        raise ApiError(
            409, "conflict", f"unfinished jobs depend on job {job_id}: cancel it instead", {"field": "job_id"}
        )
    return json_response({"deleted": row["deleted"]})


@routes.route(
    "GET",
    "/projects/{project}/queue",
    "Pending jobs in the order they will be handed out",
    tag="jobs",
    response=QueueList,
    query={"limit": "at most this many (default 100)", "offset": "skip this many"},
)
async def get_queue(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 10_000)
    offset = query_int(request, "offset", 0, 0)
    rows = await request.app[pool_key].fetch(Q.queue_list, request.match_info["project"], limit, offset)
    return json_response({"jobs": records(rows)})


@routes.route(
    "DELETE",
    "/projects/{project}/queue",
    "Cancel every pending job of a project",
    tag="jobs",
    response=Deleted,
)
async def clear_queue(request: web.Request) -> web.Response:
    n = await request.app[pool_key].fetchval(Q.queue_clear, request.match_info["project"])
    return json_response({"deleted": n})


@routes.route(
    "POST",
    "/jobs/{job_id}/cancel",
    "Cancel a job: pending at once, running through its worker's next heartbeat",
    tag="jobs",
    response=CancelOut,
    errors=(404, 409, 422),
)
async def cancel_job(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    status = await request.app[pool_key].fetchval(Q.job_cancel, job_id, "cancelled")
    return json_response({"id": job_id, "status": status})


@routes.route(
    "POST",
    "/jobs/{job_id}/retry",
    "Put a FAILED/CANCELLED job (or the failed jobs upstream of a BLOCKED one) back in the queue",
    tag="jobs",
    response=RetryOut,
    errors=(404, 409, 422),
)
async def retry_job(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    n = await request.app[pool_key].fetchval(Q.job_retry, job_id)
    return json_response({"id": job_id, "requeued": n})


@routes.route(
    "GET",
    "/jobs/{job_id}/dependencies",
    "A job's upstream and downstream jobs",
    tag="jobs",
    response=JobDependencies,
)
async def job_dependencies(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    async with request.app[pool_key].acquire() as conn:
        if await conn.fetchrow(Q.job_get, job_id) is None:
            raise not_found("job", job_id, "job_id")
        rows = await conn.fetch(Q.job_dependencies, job_id)
    out: dict[str, list[dict]] = {"upstream": [], "downstream": []}
    for r in rows:
        out[r["direction"]].append({"id": r["id"], "name": r["name"], "status": r["status"]})
    return json_response(out)


@routes.route(
    "GET",
    "/projects/{project}/graph",
    "The project's jobs and dependency edges (a DAG)",
    tag="jobs",
    response=Graph,
    query={"limit": "at most this many nodes and edges (default 10000)"},
)
async def project_graph(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 10_000, 1, 1_000_000)
    async with request.app[pool_key].acquire() as conn:
        nodes = await conn.fetch(Q.project_graph_nodes, request.match_info["project"], limit)
        edges = await conn.fetch(Q.project_graph_edges, request.match_info["project"], limit)
    return json_response({"nodes": records(nodes), "edges": records(edges)})
