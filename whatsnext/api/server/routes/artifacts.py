"""Artifacts: the files (or URIs) a job read and wrote, as its worker found them after the job.

A worker posts what it found for the job's declared inputs and outputs: size, sha256, modification
time, or that it was missing. Recording the same (direction, uri) again (a later attempt) refreshes
the row. ``GET /projects/{project}/artifacts?uri=`` answers which jobs produced a file.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from aiohttp import web

from ..errors import ApiError, found
from ..http import attempt_answer, json_response, parse_body, path_id, query_int
from ..keys import store_key
from ..roles import READ_JOB, READ_PROJECT
from ..schemas_logs import ArtifactBatch, ArtifactList, ArtifactMatches, ArtifactsRecorded
from .table import OWN_ATTEMPT, routes

artifacts_routes = routes.section("artifacts")

DIRECTIONS = {"in": "in", "out": "out", "any": None}


def canonical_uri(uri: str) -> str:
    """``file:///data/x.csv`` and ``/data/x.csv`` name the same file: artifacts store the path."""
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        if parts.netloc in ("", "localhost") and parts.path.startswith("/"):
            return unquote(parts.path)
    return uri


def _direction(request: web.Request, default: str | None) -> str | None:
    raw = request.query.get("direction")
    if raw is None or raw == "":
        return default
    if raw.lower() not in DIRECTIONS:
        raise ApiError(
            422, "invalid", f"direction must be one of in, out, any, got {raw!r}", {"field": "direction"}
        )
    return DIRECTIONS[raw.lower()]


@artifacts_routes.post(
    "/jobs/{job_id}/artifacts",
    "Record what a job read and wrote (size, sha256, modification time, or missing)",
    body=ArtifactBatch,
    response=ArtifactsRecorded,
    query={"attempt": "refuse (409) unless this is the job's current attempt"},
    **OWN_ATTEMPT,
)
async def record_artifacts(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    attempt = query_int(request, "attempt", None, 1, 2**31 - 1)
    items = (await parse_body(request, ArtifactBatch)).root
    payload = [{**a.model_dump(mode="json"), "uri": canonical_uri(a.uri)} for a in items]
    row = await request.app[store_key].artifacts.record(job_id=job_id, items=payload, attempt=attempt)
    return attempt_answer(job_id, row, "recorded")


@artifacts_routes.get(
    "/jobs/{job_id}/artifacts", "A job's recorded inputs and outputs", rule=READ_JOB, response=ArtifactList
)
async def job_artifacts(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    rows = await request.app[store_key].artifacts.of_job(job_id=job_id)
    return json_response({"artifacts": found(rows, "job", job_id, "job_id")})


@artifacts_routes.get(
    "/projects/{project}/artifacts",
    "Which jobs produced (or read) a file, newest first; without ?uri=, the latest artifacts",
    rule=READ_PROJECT,
    response=ArtifactMatches,
    query={
        "uri": "an absolute path or URI (file:// URIs match the plain path)",
        "direction": "out (default with ?uri=: the producers), in (the readers) or any",
        "limit": "at most this many (default 100, at most 1000)",
        "before": "without ?uri=: only artifacts with a smaller id (next page)",
    },
)
async def find_artifacts(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 1000)
    uri = request.query.get("uri") or None
    artifacts = request.app[store_key].artifacts
    project = request.match_info["project"]
    if uri is not None:
        direction = _direction(request, "out")
        rows = await artifacts.find(project=project, uri=canonical_uri(uri), direction=direction, limit=limit)
        return json_response({"artifacts": rows, "next_before": None})
    direction = _direction(request, None)
    before = query_int(request, "before", None, 1)
    rows = await artifacts.recent(project=project, direction=direction, before=before, limit=limit)
    next_before = rows[-1]["id"] if len(rows) == limit else None
    return json_response({"artifacts": rows, "next_before": next_before})
