"""The hot path: claim (with long-poll) and reports."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from ..errors import check_attempt_outcome
from ..http import dumps_json, json_response, parse_body, path_id, records
from ..keys import hub_key, pool_key, settings_key
from ..notify import CLOSED, FINISHED
from ..schemas import (
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    ReportBatch,
    ReportBatchOut,
    ReportOut,
)
from ..sql import Q
from . import routes

EMPTY = b'{"jobs":[]}'


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _nothing(
    pool: asyncpg.Pool, key: str, project_id: int | None, idle: bool, args: tuple
) -> web.Response:
    """The answer when there is nothing to hand out (with what is pending and running, if asked)."""
    if not idle:
        return web.Response(body=EMPTY, content_type="application/json")
    async with pool.acquire() as conn:
        if project_id is None:
            project_id = (await conn.fetchrow(Q.project_resolve, key))["id"]
        row = await conn.fetchrow(Q.project_idle, project_id, args[5], args[6], args[7])
    return json_response({"jobs": [], "idle": dict(row)})


@routes.route(
    "POST",
    "/projects/{project}/claim",
    "Claim eligible jobs that fit the worker's free capacity; long-polls up to `wait` seconds",
    tag="workers",
    body=ClaimRequest,
    response=ClaimResponse,
)
async def claim(request: web.Request) -> web.Response:
    body = await parse_body(request, ClaimRequest)
    app = request.app
    pool, hub, settings = app[pool_key], app[hub_key], app[settings_key]
    key = request.match_info["project"]
    args = (
        key,
        body.worker_id,
        body.worker_name,
        body.free_cpu,
        body.free_accelerators,
        body.total_cpu if body.total_cpu is not None else body.free_cpu,
        body.total_accelerators if body.total_accelerators is not None else body.free_accelerators,
        body.tags,
        body.max_jobs,
        settings.lease_seconds,
        settings.starvation_seconds,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait, settings.max_wait)
    project_id: int | None = None
    hops = 0
    while True:
        if project_id is not None and _gone(request):
            # The worker gave up waiting: claiming now would hand jobs to nobody. A wake-up it
            # received goes to the next waiter.
            if hops > 0:
                hub.wake(project_id, 1, hops - 1)
            return web.Response(body=EMPTY, content_type="application/json")
        generation = hub.generation
        rows = await pool.fetch(Q.job_claim, *args)
        if rows:
            return json_response({"jobs": records(rows)})
        if hops > 0 and project_id is not None:
            hub.wake(project_id, 1, hops - 1)  # not for us: pass the wake-up on
        remaining = deadline - loop.time()
        if remaining <= 0 or hub.closing:
            return await _nothing(pool, key, project_id, body.idle_summary, args)
        info = await pool.fetchrow(Q.project_resolve, key)
        project_id = info["id"]
        timeout = remaining
        if info["next_available_in"] is not None:
            timeout = max(0.0, min(timeout, info["next_available_in"] + 0.005))
        if hub.generation != generation:
            hops = 0
            continue  # something changed while we looked: look again before sleeping
        if body.idle_summary:
            idle = await pool.fetchrow(Q.project_idle, project_id, args[5], args[6], args[7])
            if not idle["running"] and not idle["runnable"]:
                # Nothing runs and nothing this worker could take: waiting would change nothing.
                return json_response({"jobs": [], "idle": dict(idle)})
            if hub.generation != generation:
                continue
        woken = await hub.wait(project_id, timeout, idle=body.idle_summary)
        if woken == CLOSED:
            return await _nothing(pool, key, project_id, body.idle_summary, args)
        if woken == FINISHED:
            deadline = loop.time()  # claim once more, then tell the worker what is left
        hops = woken if woken is not None and woken > 0 else 0


async def _report(
    request: web.Request,
    outcome: str,
    attempt: int,
    exit_code: int | None,
    result: str | None,
    error: str | None,
    log: str | None,
    duration: float | None,
    requeue: bool,
) -> web.Response:
    job_id = path_id(request, "job_id")
    row = await request.app[pool_key].fetchrow(
        Q.job_report, job_id, attempt, outcome, exit_code, result, error, log, duration, requeue
    )
    check_attempt_outcome(row)
    return json_response({"id": job_id, "status": row["status"]})


@routes.route(
    "POST",
    "/jobs/{job_id}/complete",
    "Report an attempt's success",
    tag="workers",
    body=CompleteRequest,
    response=ReportOut,
    errors=(400, 404, 409, 422),
)
async def complete(request: web.Request) -> web.Response:
    b = await parse_body(request, CompleteRequest)
    return await _report(
        request,
        "COMPLETED",
        b.attempt,
        b.exit_code,
        None if b.result is None else dumps_json(b.result),
        None,
        b.log,
        b.duration,
        False,
    )


@routes.route(
    "POST",
    "/jobs/{job_id}/fail",
    "Report an attempt's failure (retried while attempts remain, else FAILED)",
    tag="workers",
    body=FailRequest,
    response=ReportOut,
    errors=(400, 404, 409, 422),
)
async def fail(request: web.Request) -> web.Response:
    b = await parse_body(request, FailRequest)
    return await _report(
        request,
        "CANCELLED" if b.cancelled else "FAILED",
        b.attempt,
        b.exit_code,
        None,
        b.error,
        b.log,
        b.duration,
        b.requeue,
    )


@routes.route(
    "POST",
    "/jobs/reports",
    "Report several attempts in one round trip",
    tag="workers",
    body=ReportBatch,
    response=ReportBatchOut,
    errors=(400, 422),
)
async def report_many(request: web.Request) -> web.Response:
    await parse_body(request, ReportBatch)  # validates; the database reads the same JSON
    rows = await request.app[pool_key].fetch(Q.job_report_many, (await request.read()).decode())
    return json_response({"results": records(rows)})
