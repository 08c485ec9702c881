"""The end of attempts: a worker's reports (one or a batch) and an attempt's start."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
from aiohttp import web

from ....limits import MAX_REPORTS
from ....models import outcome_of
from ....wire import AttemptEnd
from ..errors import bad_request, invalid, validation_details
from ..http import MAX_ID, actor, attempt_answer, json_response, parse_body, path_id
from ..keys import store_key
from ..metrics import metrics_key
from ..roles import Rule
from ..schemas import (
    CompleteRequest,
    FailRequest,
    Report,
    ReportBatch,
    ReportBatchOut,
    ReportOut,
    StartedRequest,
    suspicious,
)
from ..tokens import worker_token
from .artifacts import canonical_uri
from .table import OWN_ATTEMPT, routes

workers = routes.section("workers")


def _checkpoint(path: str | None) -> str | None:
    """A reported checkpoint as the job keeps it and its artifact records it (a ``file://`` URI as
    its path, like every artifact)."""
    return None if path is None else canonical_uri(path)


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
            "checkpoint": _checkpoint(b.checkpoint),
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
            "checkpoint": _checkpoint(b.checkpoint),
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
        "checkpoint": _checkpoint(report.checkpoint),
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
