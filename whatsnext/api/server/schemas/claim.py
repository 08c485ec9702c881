"""Models of the hot path: the claim request, the claimed job and the reports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    RootModel,
)

from ....limits import (
    MAX_CLAIM_JOBS,
    MAX_CLAIM_WAIT,
    MAX_ERROR,
    MAX_LIST,
    MAX_LOG_TAIL,
    MAX_NAME,
    MAX_REPORTS,
    MAX_RESULT_BYTES,
    MAX_TIME_LEFT,
    MAX_URI,
)
from ....models import DEFAULT_MAX_LOST, JobStatus, ReportStatus
from ....wire import CLAIM_REQUEST_FIELDS, CLAIMED_JOB_FIELDS, REPORT_FIELDS, bounded_result
from .base import INT32, Attempt, Count, Id, Int32, Name, Printed, Produced, ProjectKey, Strict, Tag

# ---------------------------------------------------------------- claim and reports


def _checkpoint() -> Any:
    """The ``checkpoint`` of a report: a path or URI, bounded like every artifact's."""
    return Field(
        None,
        min_length=1,
        max_length=MAX_URI,
        description="The path or URI of the latest checkpoint the attempt wrote: kept as the job's "
        "checkpoint (null keeps the one it has), recorded as an artifact of the attempt, handed to "
        "the next attempt (a file:// URI is kept as its path).",
    )


Result = Annotated[
    Produced,
    AfterValidator(bounded_result),
    Field(
        description="The attempt's result, any JSON value (an object is usual): stored as far as "
        "PostgreSQL can hold it, and when larger than "
        f"{MAX_RESULT_BYTES} bytes of JSON, stored as "
        '`{"$oversized": {"bytes": N, "limit": L}}` instead (marked, never refused).'
    ),
]
"""A report's ``result``: made storable, then bounded (``whatsnext.wire.bounded_result``)."""


class ClaimRequest(Strict):
    worker_name: str = Field("anonymous", min_length=1, max_length=MAX_NAME)
    worker_id: Id | None = Field(None, description="Registered worker id (heartbeats then keep the lease).")
    free_cpu: Count = 1
    free_accelerators: Count = 0
    total_cpu: Count | None = Field(None, description="The worker's whole capacity (defaults to free_cpu).")
    total_accelerators: Count | None = None
    tags: list[Tag] = Field(default_factory=list)
    max_jobs: Annotated[int, Field(ge=1, le=MAX_CLAIM_JOBS)] = 1
    wait: Annotated[float, Field(ge=0, le=MAX_CLAIM_WAIT)] = 0
    idle_summary: bool = Field(
        False,
        description="With no job to hand out, say what is pending and running, and answer as soon as a "
        "job of the project finishes (the worker's capacity or the project's state changed).",
    )
    tasks: list[Name] | None = Field(
        None, max_length=MAX_LIST, description="Only jobs of these tasks (default: any task)."
    )
    with_command: bool = Field(
        False, description="Only jobs whose task has a command template (a worker that runs the task's)."
    )
    projects: list[ProjectKey] | None = Field(
        None,
        min_length=1,
        max_length=MAX_LIST,
        description="`POST /claim` only: the projects (names or ids) to claim from, shared between "
        "them by fair share.",
    )
    all_projects: bool = Field(
        False,
        description="`POST /claim` only: claim from every project the token may work on (without "
        "--auth, every project), looked up at each claim.",
    )
    time_left: Annotated[float, Field(ge=0, le=MAX_TIME_LEFT)] | None = Field(
        None,
        description="Seconds until the worker's time ends (its deadline, less its grace): only jobs "
        "whose timeout fits are handed out; a job without a timeout fits any worker. Null: no end.",
    )


class UpstreamArtifact(BaseModel):
    uri: str
    direction: str = Field(description="`in` or `out`.")
    kind: str = Field(description="`declared` (an input or output of the job) or `checkpoint`.")


class UpstreamJob(BaseModel):
    id: int
    name: str
    task: str
    status: JobStatus = Field(description="Its status when the dependent job was claimed.")
    result: Any = Field(None, description="Its result (null when it reported none).")
    artifacts: list[UpstreamArtifact] = Field(default_factory=list)


class ClaimedJob(BaseModel):
    id: int
    name: str
    task: str
    parameters: dict[str, Any]
    priority: int
    attempt: int = Field(description="The fencing token: send it back with the report.")
    required_cpu: int
    required_accelerators: int
    timeout: float | None
    max_attempts: int
    max_lost: int = DEFAULT_MAX_LOST
    lease_expires_at: datetime
    inputs: list[str] = Field(default_factory=list, description="Templates of what the job reads.")
    outputs: list[str] = Field(default_factory=list, description="Templates of what the job writes.")
    eligible_at: datetime | None = None
    previous_external_ids: list[str] = Field(
        default_factory=list,
        description="Handles of earlier attempts whose worker vanished (slurm:ID, runai:NAME): cancel "
        "them before running the job again.",
    )
    command: str | None = Field(None, description="The task's command template, if it has one.")
    defaults: dict[str, Any] = Field(default_factory=dict, description="The task's default parameters.")
    shell: bool = Field(False, description="The task's command is a /bin/sh command line.")
    project: str = Field(description="The job's project (a worker may serve several).")
    checkpoint: str | None = Field(
        None, description="The latest checkpoint an attempt of this job named (a path or URI), if any."
    )
    resume: bool = Field(
        False,
        description="The previous attempt was preempted or lost: this one should resume from `checkpoint`.",
    )
    upstream: list[UpstreamJob] | None = Field(
        None,
        description="For a job with dependencies, what each job it depends on left (in id order): "
        "its worker writes this list to `upstream.json` (`WHATSNEXT_UPSTREAM`) and fills "
        "`{upstream.NAME...}` in the command. Null for a job without dependencies.",
    )


class IdleSummary(BaseModel):
    pending: int
    running: int
    delayed: int = Field(description="Pending jobs waiting out a retry delay.")
    runnable: bool = Field(description="Some pending job with its dependencies met fits this worker.")
    unfit: dict[str, Any] | None = Field(
        None,
        description="The first pending job with its dependencies met that this worker cannot take: "
        "id, task, cpu, gpus, tags, task_taken (its task is among those the worker takes), has_command.",
    )


class ClaimResponse(BaseModel):
    jobs: list[ClaimedJob]
    idle: IdleSummary | None = None
    retry_after: int | None = Field(
        None,
        description="Set when the server already holds as many waiting claims as it takes "
        "(--max-waiting-claims): ask again after this many seconds.",
    )
    waited: float | None = Field(
        None,
        description="With jobs: at most how long after the request arrived their leases began (the "
        "claim's own wait). A worker counts each lease from when it sent the claim plus this, so an "
        "answer that comes late (a paused server, a slow network) does not stretch it.",
    )


class CompleteRequest(Strict):
    attempt: Attempt
    exit_code: Int32 | None = 0
    result: Result = None
    log: Printed | None = Field(None, max_length=MAX_LOG_TAIL, description="Tail of the job's output.")
    duration: Annotated[float, Field(ge=0)] | None = None
    checkpoint: str | None = _checkpoint()


class FailRequest(Strict):
    attempt: Attempt
    exit_code: Int32 | None = None
    error: Printed | None = Field(None, max_length=MAX_ERROR)
    log: Printed | None = Field(None, max_length=MAX_LOG_TAIL)
    duration: Annotated[float, Field(ge=0)] | None = None
    cancelled: bool = Field(False, description="The job was stopped because it was cancelled.")
    requeue: bool = Field(False, description="Put the job back without using an attempt (preempted).")
    retryable: bool = Field(
        True, description="False when retrying cannot help (bad template, missing script): FAILED at once."
    )
    checkpoint: str | None = _checkpoint()


class ReportOut(BaseModel):
    id: int
    status: JobStatus


class StartedRequest(Strict):
    attempt: Attempt
    external_id: str | None = Field(
        None, max_length=1000, description="The attempt's handle outside the worker (slurm:ID, runai:NAME)."
    )
    gpus: list[Annotated[int, Field(ge=0, le=INT32)]] | None = Field(
        None, max_length=1024, description="GPU ids the worker gave the attempt."
    )


class Report(Strict):
    id: Id
    attempt: Attempt
    status: ReportStatus
    exit_code: Int32 | None = None
    result: Result = None
    error: Printed | None = Field(None, max_length=MAX_ERROR)
    log: Printed | None = Field(None, max_length=MAX_LOG_TAIL)
    duration: Annotated[float, Field(ge=0)] | None = None
    requeue: bool = False
    retryable: bool = True
    checkpoint: str | None = _checkpoint()


class ReportBatch(RootModel[list[Report]]):
    root: Annotated[list[Report], Field(min_length=1, max_length=MAX_REPORTS)]


class ReportResult(BaseModel):
    id: int | None = Field(description="The entry's job id (null for an entry without a valid one).")
    code: int = Field(
        description="200 applied (or already recorded: the same outcome reported again), 404 unknown "
        "job, 409 stale attempt or a different outcome for an ended attempt, 422 invalid entry "
        "(nothing changed for 404, 409 and 422)."
    )
    status: JobStatus | None
    message: str | None


class ReportBatchOut(BaseModel):
    results: list[ReportResult]


def _holds(model: type[BaseModel], fields: tuple[str, ...]) -> None:
    """A model of a wire shape has exactly the shape's fields, in its order (``whatsnext.wire``)."""
    if tuple(model.model_fields) != fields:
        raise TypeError(f"{model.__name__} has fields {tuple(model.model_fields)}, the wire shape {fields}")


_holds(ClaimRequest, CLAIM_REQUEST_FIELDS)
_holds(ClaimedJob, CLAIMED_JOB_FIELDS)
_holds(Report, REPORT_FIELDS)
