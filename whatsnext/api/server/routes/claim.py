"""The hot path: claim (with long-poll) and reports."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import orjson
import pydantic
from aiohttp import web

from ....limits import MAX_REPORTS
from ....models import outcome_of
from ....wire import AttemptEnd, ClaimArgs, wn_claim_json
from ..config import Settings
from ..errors import bad_request, invalid, validation_details
from ..http import MAX_ID, actor, attempt_answer, client_gone, json_response, parse_body, path_id
from ..keys import hub_key, settings_key, store_key
from ..metrics import Metrics, metrics_key
from ..notify import CLOSED, FINISHED, Handed, Wakeup
from ..roles import Rule
from ..schemas import (
    ClaimRequest,
    ClaimResponse,
    CompleteRequest,
    FailRequest,
    Report,
    ReportBatch,
    ReportBatchOut,
    ReportOut,
    StartedRequest,
    suspicious,
)
from ..store import Store
from ..tokens import principal, worker_token
from .table import OWN_ATTEMPT, routes

workers = routes.section("workers")

EMPTY = b'{"jobs":[]}'
WAITING_FULL_RETRY = 5
"""Seconds a claim refused for lack of room to wait is asked to wait before it asks again."""


async def _nothing(
    store: Store, key: str, project_id: int | None, idle: bool, body: ClaimRequest
) -> web.Response:
    """The answer when there is nothing to hand out (with what is pending and running, if asked)."""
    if not idle:
        return web.Response(body=EMPTY, content_type="application/json")
    if project_id is None:
        project_id = (await store.projects.resolve(project=key))["id"]
    row = await _idle(store, project_id, body)
    return json_response({"jobs": [], "idle": row})


async def _idle(store: Store, project_id: int, body: ClaimRequest) -> dict[str, Any]:
    return await store.projects.idle(
        project_id=project_id,
        total_cpu=_total_cpu(body),
        total_accelerators=_total_accelerators(body),
        tags=body.tags,
        tasks=body.tasks,
        with_command=body.with_command,
    )


def claim_actor(request: web.Request) -> str | None:
    """Who a claim's RUNNING events name: under --auth the token that claimed (never a name the
    worker chose: that is the event's worker); without auth None, the worker's name."""
    who = principal(request)
    return None if who is None else who.name


def claim_args(body: ClaimRequest, settings: Settings, actor: str | None = None) -> ClaimArgs:
    """What the claim hands to ``wn_claim`` (by the claim's own field names): here, and for a
    submission that runs it on its behalf (``wn_enqueue``, through :func:`wn_claim_json`)."""
    return {
        "worker_id": body.worker_id,
        "worker_name": body.worker_name,
        "free_cpu": body.free_cpu,
        "free_accelerators": body.free_accelerators,
        "total_cpu": _total_cpu(body),
        "total_accelerators": _total_accelerators(body),
        "tags": body.tags,
        "max_jobs": body.max_jobs,
        "lease_seconds": settings.lease_seconds,
        "starvation_seconds": settings.starvation_seconds,
        "tasks": body.tasks,
        "with_command": body.with_command,
        "actor": actor,
    }


def _total_cpu(body: ClaimRequest) -> int:
    return body.total_cpu if body.total_cpu is not None else body.free_cpu


def _total_accelerators(body: ClaimRequest) -> int:
    return body.total_accelerators if body.total_accelerators is not None else body.free_accelerators


@workers.post(
    "/projects/{project}/claim",
    "Claim eligible jobs that fit the worker's free capacity; long-polls up to `wait` seconds",
    rule=Rule("work", "claim", unmasked=True),
    body=ClaimRequest,
    response=ClaimResponse,
)
async def claim(request: web.Request) -> web.Response:
    body = await parse_body(request, ClaimRequest)
    app = request.app
    store, hub, settings = app[store_key], app[hub_key], app[settings_key]
    key = request.match_info["project"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait, settings.max_wait)
    project_id: int | None = None
    tags = frozenset(body.tags)
    args = claim_args(body, settings, claim_actor(request))
    woken: Wakeup = None
    while True:
        if woken is not None and client_gone(request):
            # The worker gave up waiting: claiming now would hand jobs to nobody. The wake-up it
            # received goes to the next waiter that fits.
            hub.hand_on(woken)
            return web.Response(body=EMPTY, content_type="application/json")
        generation = hub.generation
        rows = await store.jobs.claim(project=key, args=args)
        if rows:
            await app[metrics_key].jobs_claimed(request, key, rows, settings.lease_seconds)
            return json_response({"jobs": rows})
        # Found nothing although woken: another claim (here or on another server) was faster.
        # The wake-up is not passed on: each server woke its own fitting waiter for that job.
        woken = None
        remaining = deadline - loop.time()
        if remaining <= 0 or hub.closing:
            return await _nothing(store, key, project_id, body.idle_summary, body)
        info = await store.projects.resolve(project=key)
        project_id = info["id"]
        timeout = remaining
        if info["next_available_in"] is not None:
            timeout = max(0.0, min(timeout, info["next_available_in"] + 0.005))
        if hub.generation != generation:
            woken = None
            continue  # something changed while we looked: look again before sleeping
        if body.idle_summary:
            idle = await _idle(store, project_id, body)
            if not idle["running"] and not idle["runnable"]:
                # Nothing runs and nothing this worker could take: waiting would change nothing.
                return json_response({"jobs": [], "idle": idle})
            if hub.generation != generation:
                continue
        if hub.waiting() >= settings.max_waiting_claims:
            # As many claims wait here as this server takes: the worker comes back later.
            body_out = {"jobs": [], "retry_after": WAITING_FULL_RETRY}
            return web.Response(
                body=orjson.dumps(body_out),
                content_type="application/json",
                headers={"Retry-After": str(WAITING_FULL_RETRY)},
            )
        Metrics.claim_waits(request)
        woken = await hub.wait(
            project_id,
            timeout,
            cpu=body.free_cpu,
            gpus=body.free_accelerators,
            tags=tags,
            idle=body.idle_summary,
            key=key,
            claim=partial(wn_claim_json, project_id, args),
            gone=partial(client_gone, request),
        )
        if isinstance(woken, Handed):
            # A submission on this server ran this claim in its own transaction.
            if client_gone(request):
                await store.jobs.release_unread(woken.rows)
                return web.Response(body=EMPTY, content_type="application/json")
            await app[metrics_key].jobs_claimed(request, key, woken.rows, settings.lease_seconds)
            return json_response({"jobs": woken.rows})
        if woken is CLOSED:
            return await _nothing(store, key, project_id, body.idle_summary, body)
        if woken is None and timeout >= remaining:
            # The whole wait passed without a wake-up for a job this claim could take: looking
            # again would find nothing (a missed notification wakes every waiter at reconnect).
            return await _nothing(store, key, project_id, body.idle_summary, body)
        if woken is FINISHED:
            deadline = loop.time()  # claim once more, then tell the worker what is left


async def _end_one(request: web.Request, change: AttemptEnd) -> web.Response:
    job_id = path_id(request, "job_id")
    change["id"] = job_id
    rows = await request.app[store_key].jobs.end_attempts([change], actor=actor(request))
    request.app[metrics_key].attempts_ended([change], rows)
    return attempt_answer(job_id, rows[0])


@workers.post(
    "/jobs/{job_id}/complete",
    "Report an attempt's success (reporting it again answers the recorded status)",
    body=CompleteRequest,
    response=ReportOut,
    **OWN_ATTEMPT,
)
async def complete(request: web.Request) -> web.Response:
    b = await parse_body(request, CompleteRequest)
    return await _end_one(
        request,
        {
            "attempt": b.attempt,
            "outcome": "COMPLETED",
            "exit_code": b.exit_code,
            "result": b.result,
            "log": b.log,
            "duration": b.duration,
        },
    )


@workers.post(
    "/jobs/{job_id}/fail",
    "Report an attempt's failure (retried while attempts remain, else FAILED)",
    body=FailRequest,
    response=ReportOut,
    **OWN_ATTEMPT,
)
async def fail(request: web.Request) -> web.Response:
    b = await parse_body(request, FailRequest)
    return await _end_one(
        request,
        {
            "attempt": b.attempt,
            "outcome": outcome_of("CANCELLED" if b.cancelled else "FAILED", b.requeue),
            "exit_code": b.exit_code,
            "error": b.error,
            "log": b.log,
            "duration": b.duration,
            "retryable": b.retryable,
        },
    )


def _change(report: Report) -> AttemptEnd:
    return {
        "id": report.id,
        "attempt": report.attempt,
        "outcome": outcome_of(report.status, report.requeue),
        "exit_code": report.exit_code,
        "result": report.result,
        "error": report.error,
        "log": report.log,
        "duration": report.duration,
        "retryable": report.retryable,
    }


@workers.post(
    "/jobs/reports",
    "Report several attempts in one round trip; each entry gets its own answer",
    rule=Rule("work", "reports"),
    body=ReportBatch,
    response=ReportBatchOut,
    errors=(400, 422),
)
async def report_many(request: web.Request) -> web.Response:
    """Entries are validated one by one: an invalid entry is answered 422 in its place and never
    holds back the others."""
    raw = await request.read()
    try:
        # The common case, a batch without a bad entry, is validated in one pass.
        reports = ReportBatch.model_validate_json(raw, context={"plain": not suspicious(raw)}).root
    except pydantic.ValidationError:
        pass
    else:
        changes = [_change(r) for r in reports]
        return await _apply_reports(request, changes, list(range(len(changes))), [None] * len(changes))
    try:
        entries = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("the body is not valid JSON", "body") from None
    if not isinstance(entries, list) or not entries:
        raise invalid("the body must be a non-empty JSON array of reports", "body")
    if len(entries) > MAX_REPORTS:
        raise invalid(f"at most {MAX_REPORTS} reports per batch, got {len(entries)}", "body")
    results: list[dict[str, Any] | None] = [None] * len(entries)
    changes = []
    positions: list[int] = []
    for i, entry in enumerate(entries):
        try:
            report = Report.model_validate(entry)
        except pydantic.ValidationError as exc:
            first = validation_details(exc, (i,))[0]
            job_id = entry.get("id") if isinstance(entry, dict) else None
            results[i] = {
                "id": job_id if isinstance(job_id, int) and 0 < job_id <= MAX_ID else None,
                "code": 422,
                "status": None,
                "message": f"{first['field']}: {first['message']}",
            }
            continue
        changes.append(_change(report))
        positions.append(i)
    return await _apply_reports(request, changes, positions, results)


async def _apply_reports(
    request: web.Request,
    changes: list[AttemptEnd],
    positions: list[int],
    results: list[dict[str, Any] | None],
) -> web.Response:
    """Apply valid reports (``changes``, at ``positions`` of the batch) and answer every entry (a
    worker token's reports on jobs its workers do not hold: 403, decided in the same statement)."""
    if changes:
        rows = await request.app[store_key].jobs.end_attempts(
            changes, actor=actor(request), token=worker_token(request)
        )
        request.app[metrics_key].attempts_ended(changes, rows)
        for row in rows:
            results[positions[row["ord"] - 1]] = {
                "id": row["id"],
                "code": row["code"],
                "status": row["status"],
                "message": row["message"],
            }
    return json_response({"results": results})


@workers.post(
    "/jobs/{job_id}/started",
    "Say how an attempt started: its handle outside the worker (a SLURM job, a RUN:AI workload) "
    "and its GPU ids",
    body=StartedRequest,
    response=ReportOut,
    **OWN_ATTEMPT,
)
async def started(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    b = await parse_body(request, StartedRequest)
    row = await request.app[store_key].jobs.started(
        job_id=job_id, attempt=b.attempt, external_id=b.external_id, gpus=b.gpus
    )
    return attempt_answer(job_id, row)
