"""The shapes of the hot path on the wire, declared once: the claim request a worker sends, the
claimed job the server answers with, and the report entry a worker sends when a job ends, with the
entry the state machine (``wn_end_attempts``) takes and the arguments of ``wn_claim``.

The worker builds its requests and reads claimed jobs with these; the server's validation models
(``whatsnext.api.server.schemas``) have exactly these fields, and the SQL functions' columns and
keys are held to them by the tests (``tests/sql/test_wire.py``).
"""

from __future__ import annotations

from typing import Any, Final, NotRequired, TypedDict

import orjson

from .limits import MAX_RESULT_BYTES
from .models import Outcome, ReportStatus


class ClaimRequest(TypedDict, total=False):
    """The body of ``POST /projects/{p}/claim``."""

    worker_name: str
    worker_id: int | None
    free_cpu: int
    free_accelerators: int
    total_cpu: int | None
    total_accelerators: int | None
    tags: list[str]
    max_jobs: int
    wait: float
    idle_summary: bool
    tasks: list[str] | None
    with_command: bool
    projects: list[str] | None
    all_projects: bool
    time_left: float | None


class UpstreamArtifact(TypedDict):
    """An artifact an upstream job recorded (``GET /jobs/{id}/artifacts`` has the rest)."""

    uri: str
    direction: str
    """``in`` or ``out``."""
    kind: str
    """``declared`` (an input or output the job declared) or ``checkpoint`` (a checkpoint it named)."""


class UpstreamJob(TypedDict):
    """What one upstream job left, as a claim hands it to a job that depends on it."""

    id: int
    name: str
    task: str
    status: str
    """Its status when the dependent job was claimed (COMPLETED, or under a ``finished`` or
    ``failure`` condition FAILED, CANCELLED or BLOCKED)."""
    result: Any
    """Its result (a JSON value; null when it reported none)."""
    artifacts: list[UpstreamArtifact]


class ClaimedJob(TypedDict):
    """One job of a claim's answer (a row of ``wn_claim``), as the worker reads it."""

    id: int
    name: str
    task: str
    parameters: dict[str, Any]
    priority: int
    attempt: int
    required_cpu: int
    required_accelerators: int
    timeout: float | None
    max_attempts: int
    max_lost: int
    lease_expires_at: str
    inputs: list[str] | None
    outputs: list[str] | None
    eligible_at: str | None
    previous_external_ids: list[str] | None
    command: str | None
    defaults: dict[str, Any] | None
    shell: bool
    project: str
    """The job's project (a worker may serve several)."""
    checkpoint: str | None
    """The latest checkpoint an attempt of this job named (a path or URI), if any."""
    resume: bool
    """The previous attempt ended PREEMPTED or LOST: this one should resume from ``checkpoint``."""
    upstream: list[UpstreamJob] | None
    """What the jobs this one depends on left, in id order; null for a job without dependencies."""


class ReportEntry(TypedDict):
    """One entry of ``POST /jobs/reports``: how an attempt ended, fenced by its attempt number."""

    id: int
    attempt: int
    status: ReportStatus
    exit_code: NotRequired[int | None]
    result: NotRequired[Any]
    error: NotRequired[str | None]
    log: NotRequired[str | None]
    duration: NotRequired[float | None]
    requeue: NotRequired[bool]
    retryable: NotRequired[bool]
    checkpoint: NotRequired[str | None]
    """The path or URI of the latest checkpoint the attempt wrote (null: none new)."""


class AttemptEnd(TypedDict, total=False):
    """One entry for the state machine (``wn_end_attempts``): a report with its outcome decided
    (``outcome_of(status, requeue)``), or the server's own ending of an attempt (LOST)."""

    id: int
    attempt: int
    outcome: Outcome
    exit_code: int | None
    result: Any
    error: str | None
    log: str | None
    duration: float | None
    retryable: bool
    checkpoint: str | None


class ClaimArgs(TypedDict):
    """What one claim hands to ``wn_claim`` besides the project: the claim request's capacity and
    filters (totals defaulted to the free capacity), the server's lease and starvation settings,
    and who the RUNNING events name."""

    worker_id: int | None
    worker_name: str
    free_cpu: int
    free_accelerators: int
    total_cpu: int
    total_accelerators: int
    tags: list[str]
    max_jobs: int
    lease_seconds: float
    starvation_seconds: float
    tasks: list[str] | None
    with_command: bool
    actor: str | None
    time_left: float | None


CLAIM_REQUEST_FIELDS: Final[tuple[str, ...]] = tuple(ClaimRequest.__annotations__)
CLAIMED_JOB_FIELDS: Final[tuple[str, ...]] = tuple(ClaimedJob.__annotations__)
"""In the order of ``wn_claim``'s result columns."""
REPORT_FIELDS: Final[tuple[str, ...]] = tuple(ReportEntry.__annotations__)
ATTEMPT_END_FIELDS: Final[tuple[str, ...]] = tuple(AttemptEnd.__annotations__)
"""The keys ``wn_end_attempts`` reads from each entry, in its record's order."""
CLAIM_ARG_FIELDS: Final[tuple[str, ...]] = tuple(ClaimArgs.__annotations__)

WN_CLAIM_PARAMETERS: Final[dict[str, str]] = {
    "worker_id": "worker_id",
    "worker_name": "worker_name",
    "free_cpu": "free_cpu",
    "free_acc": "free_accelerators",
    "total_cpu": "total_cpu",
    "total_acc": "total_accelerators",
    "tags": "tags",
    "max_jobs": "max_jobs",
    "lease": "lease_seconds",
    "starve": "starvation_seconds",
    "tasks": "tasks",
    "with_command": "with_command",
    "actor": "actor",
    "time_left": "time_left",
}
"""``wn_claim``'s parameters after the project (their names without ``p_``, in order, which are the
keys of the JSON object ``wn_enqueue_claim`` reads) and the claim argument each one takes."""


OVERSIZED: Final = "$oversized"
"""The key of the mark a result larger than ``MAX_RESULT_BYTES`` is stored as."""


def oversized(size: int, limit: int = MAX_RESULT_BYTES) -> dict[str, Any]:
    """The mark stored instead of a result of ``size`` bytes: ``{"$oversized": {"bytes", "limit"}}``."""
    return {OVERSIZED: {"bytes": size, "limit": limit}}


def bounded_result(value: Any, limit: int = MAX_RESULT_BYTES) -> Any:
    """A report's ``result`` as it is stored: ``value``, or :func:`oversized` when its JSON takes
    more than ``limit`` bytes (a result is marked, never refused: the report goes through). The
    worker applies it before it reports, the server to every report."""
    if value is None or isinstance(value, bool | int | float):
        return value
    try:
        size = len(orjson.dumps(value))
    except TypeError:
        return value  # not JSON as it is (an integer beyond 64 bits): the storable check handles it
    return value if size <= limit else oversized(size, limit)


FENCE_FRACTION: Final = 0.25
"""The fence margin a server announces, as a part of the lease."""
MIN_FENCE_MARGIN: Final = 1.0
"""The announced fence margin is at least this many seconds."""


def fence_margin(lease: float) -> float:
    """How long before its lease would run out a worker suspends an attempt whose lease it could
    not renew: a quarter of the lease, at least 1 s, never more than 90 % of it. The server
    announces it at registration (``fence_margin``); a worker of an older server computes it."""
    return min(max(lease * FENCE_FRACTION, MIN_FENCE_MARGIN), lease * 0.9)


def wn_claim_json(project_id: int, args: ClaimArgs) -> dict[str, Any]:
    """A waiting claim's ``wn_claim`` arguments as the JSON object ``wn_enqueue_claim`` reads: a
    submission runs the claim in its own transaction with them."""
    values: dict[str, Any] = dict(args)
    return {"project_id": project_id, **{param: values[name] for param, name in WN_CLAIM_PARAMETERS.items()}}


def wn_pool_claim_json(projects: tuple[int, ...] | None, args: ClaimArgs) -> dict[str, Any]:
    """As :func:`wn_claim_json`, for a claim of several projects (``projects``: their ids; None:
    every project), which a submission runs as ``wn_claim_pool``."""
    values: dict[str, Any] = dict(args)
    return {
        "pool": True,
        "projects": None if projects is None else list(projects),
        **{param: values[name] for param, name in WN_CLAIM_PARAMETERS.items()},
    }


__all__ = [
    "ATTEMPT_END_FIELDS",
    "CLAIMED_JOB_FIELDS",
    "CLAIM_ARG_FIELDS",
    "CLAIM_REQUEST_FIELDS",
    "OVERSIZED",
    "REPORT_FIELDS",
    "WN_CLAIM_PARAMETERS",
    "AttemptEnd",
    "ClaimArgs",
    "ClaimRequest",
    "ClaimedJob",
    "ReportEntry",
    "UpstreamArtifact",
    "UpstreamJob",
    "bounded_result",
    "fence_margin",
    "oversized",
    "wn_claim_json",
    "wn_pool_claim_json",
]
