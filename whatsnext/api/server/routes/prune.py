"""Retention by hand: ``POST /prune`` deletes finished jobs older than a duration, in batches
(admin: it deletes history every project shares)."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from ....durations import FORMS, parse_duration
from ....limits import MAX_TIME_LEFT
from ..http import json_response, parse_body
from ..keys import store_key
from ..retention import KINDS, REQUEST_BUDGET, format_position, parse_position, prune
from ..roles import Rule
from ..schemas import Strict
from ..schemas.base import ProjectKey
from .table import routes

retention = routes.section("retention")

PRUNE = Rule("projects")
"""Deleting history is the admin's, like deleting a project (a token of some projects, or any
other role, is refused 403)."""


def _seconds(value: Any) -> Any:
    """A duration as people write it (``7d``, ``12h``) becomes seconds; a number stays one."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise PydanticCustomError("duration", "{reason}", {"reason": str(exc)}) from None
    return value


def _position(value: str) -> str:
    try:
        parse_position(value)
    except ValueError as exc:
        raise PydanticCustomError("position", "{reason}", {"reason": str(exc)}) from None
    return value


OlderThan = Annotated[
    float,
    BeforeValidator(_seconds),
    Field(gt=0, le=MAX_TIME_LEFT),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIME_LEFT},
                {"type": "string", "minLength": 1, "maxLength": 100, "examples": ["7d", "12h", "1h30m"]},
            ],
            "description": f"Seconds, or a duration: {FORMS}.",
        }
    ),
]


class PruneRequest(Strict):
    older_than: OlderThan = Field(
        description="Delete jobs that finished longer ago than this (and, for every project, "
        "worker rows not heard from for this long): seconds, or a duration such as 7d."
    )
    project: ProjectKey | None = Field(
        None,
        description="Only this project's jobs and groups (a name or an id); leave it out for every "
        "project, worker rows, expired dashboard sessions and ended allocations included.",
    )
    dry_run: bool = Field(False, description="Count what would be deleted now, delete nothing.")
    after: Annotated[str, AfterValidator(_position), Field(min_length=1, max_length=100)] | None = Field(
        None,
        description="The `next` of the answer before: go on from where it stopped (a dry run needs it "
        "to count on; a prune may leave it out and starts again from the oldest job).",
    )


class PruneCounts(BaseModel):
    jobs: int
    events: int = Field(description="History rows of those jobs.")
    logs: int = Field(description="Output lines of those jobs.")
    artifacts: int = Field(description="Artifact records of those jobs, checkpoints included.")
    dependencies: int = Field(description="Dependency rows naming those jobs, either way.")
    workers: int = Field(description="Worker rows not heard from since then that no job refers to.")
    sessions: int = Field(description="Expired dashboard sessions.")
    groups: int = Field(description="Groups those jobs left empty.")
    allocations: int = Field(
        description="Allocations (workers started on SLURM or RUN:AI) that ended before then."
    )


class PruneOut(BaseModel):
    older_than: float = Field(description="Seconds.")
    project: str | None
    dry_run: bool
    counts: PruneCounts = Field(description="What was deleted (in a dry run: what would be).")
    batches: int = Field(description="Batches (transactions) this request ran.")
    done: bool = Field(
        description="Nothing older is left but what a rule keeps; false: the request ran out of its "
        "time (a few seconds) or another server is pruning: call again to go on."
    )
    busy: bool = Field(description="Another server held the batch lock when this request stopped.")
    next: str | None = Field(
        description="Where this request stopped, when not done: give it as `after` to the next request."
    )


@retention.post(
    "/prune",
    "Delete finished jobs older than a duration with their history, output and artifact records, "
    "in batches (admin); jobs an unfinished job depends on, and groups with unfinished members, stay",
    rule=PRUNE,
    body=PruneRequest,
    response=PruneOut,
    errors=(400, 404, 422),
)
async def prune_route(request: web.Request) -> web.Response:
    b = await parse_body(request, PruneRequest)
    project = None if b.project is None else str(b.project)
    pruned = await prune(
        request.app[store_key],
        older_than=b.older_than,
        project=project,
        dry_run=b.dry_run,
        after=None if b.after is None else parse_position(b.after),
        budget=REQUEST_BUDGET,
        wait_busy=True,
    )
    return json_response(
        {
            "older_than": b.older_than,
            "project": project,
            "dry_run": b.dry_run,
            "counts": {kind: pruned.counts[kind] for kind in KINDS},
            "batches": pruned.batches,
            "done": pruned.done,
            "busy": pruned.busy,
            "next": None if pruned.done or pruned.after is None else format_position(pruned.after),
        }
    )
