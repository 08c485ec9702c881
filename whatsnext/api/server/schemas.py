"""Request and response models of the REST API (pydantic v2); the OpenAPI document is built from them."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel

INT32 = 2**31 - 1


_BAD_NAME = re.compile(r"[\x00-\x1f/]")


def _check_name(value: str) -> str:
    if value.isdigit():
        raise ValueError("a name cannot be all digits (a number addresses an id)")
    if value != value.strip():
        raise ValueError("a name cannot start or end with whitespace")
    if _BAD_NAME.search(value):
        raise ValueError("a name cannot contain '/' or control characters")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_check_name)]
JobName = Annotated[str, Field(min_length=1, max_length=500)]
Tag = Annotated[str, Field(min_length=1, max_length=100)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]
PathTemplate = Annotated[str, Field(min_length=1, max_length=4096)]
"""A path or URI a job reads or writes, with {parameter} fields the worker fills in."""
ProjectStatus = Literal["ACTIVE", "ARCHIVED"]
JobStatus = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "BLOCKED"]
DependsOn = (
    list[Annotated[int, Field(ge=1)] | Annotated[str, Field(min_length=1, max_length=500)]] | dict[str, Any]
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- health


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: str
    lease_seconds: float | None = None
    waiting_claims: int = Field(0, description="Long-polling claims this server process holds now.")
    listen_reconnects: int = Field(0, description="Times the LISTEN connection was re-established.")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class Error(BaseModel):
    error: ErrorBody


# ---------------------------------------------------------------- projects


class ProjectCreate(Strict):
    name: Name = Field(description="Unique project name (not all digits: a number addresses an id).")
    description: str = Field("", max_length=10_000)


class ProjectUpdate(Strict):
    name: Name | None = None
    description: str | None = Field(None, max_length=10_000)
    status: ProjectStatus | None = None


class ProjectOut(BaseModel):
    id: int
    name: str
    description: str
    status: ProjectStatus
    created_at: datetime
    updated_at: datetime
    jobs: dict[str, int] | None = Field(None, description="Job counts by status (single-project reads).")


class ProjectList(BaseModel):
    projects: list[ProjectOut]


class Deleted(BaseModel):
    deleted: int


# ---------------------------------------------------------------- tasks


class TaskCreate(Strict):
    name: Name
    project_id: int | Name = Field(description="The project's id or name.")
    required_cpu: Count = 1
    required_accelerators: Count = 0
    required_tags: list[Tag] = Field(default_factory=list)
    command: str | None = Field(None, max_length=10_000, description="Optional command template.")
    defaults: dict[str, Any] = Field(default_factory=dict)
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 1
    retry_delay: Annotated[float, Field(ge=0, le=7 * 86400)] = 0.0
    timeout: Annotated[float, Field(gt=0, le=365 * 86400)] | None = None
    inputs: list[PathTemplate] = Field(
        default_factory=list, max_length=1000, description="Paths or URIs its jobs read ({param} fields)."
    )
    outputs: list[PathTemplate] = Field(
        default_factory=list, max_length=1000, description="Paths or URIs its jobs write ({param} fields)."
    )


class TaskOut(BaseModel):
    id: int
    project_id: int
    name: str
    required_cpu: int
    required_accelerators: int
    required_tags: list[str]
    command: str | None
    defaults: dict[str, Any]
    max_attempts: int
    retry_delay: float
    timeout: float | None
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    created_at: datetime


class TaskList(BaseModel):
    tasks: list[TaskOut]


# ---------------------------------------------------------------- jobs


class JobCreate(Strict):
    name: JobName
    task: Name
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: Annotated[int, Field(ge=-INT32, le=INT32)] = 0
    depends: DependsOn | None = Field(
        None,
        description="Jobs that must complete first: a list of job ids (or, inside a batch, names of "
        "other jobs of the batch), or a mapping {job_id: job_name}.",
    )
    required_cpu: Count | None = Field(None, description="Overrides the task's value.")
    required_accelerators: Count | None = None
    required_tags: list[Tag] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=1000)] | None = None
    retry_delay: Annotated[float, Field(ge=0, le=7 * 86400)] | None = None
    timeout: Annotated[float, Field(gt=0, le=365 * 86400)] | None = None
    inputs: list[PathTemplate] | None = Field(None, max_length=1000, description="Overrides the task's.")
    outputs: list[PathTemplate] | None = Field(None, max_length=1000, description="Overrides the task's.")


class JobBatch(RootModel[list[JobCreate]]):
    root: Annotated[list[JobCreate], Field(min_length=1, max_length=10_000)]


class BatchCreated(BaseModel):
    ids: list[int]
    count: int


class JobOut(BaseModel):
    id: int
    project_id: int
    project: str
    name: str
    task: str
    parameters: dict[str, Any]
    priority: int
    status: JobStatus
    unmet_deps: int
    required_cpu: int
    required_accelerators: int
    required_tags: list[str]
    attempt: int
    max_attempts: int
    retry_delay: float
    timeout: float | None
    worker_id: int | None
    worker_name: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    created_at: datetime
    available_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    error: str | None
    result: Any
    log_tail: str | None
    duration: float | None
    blocked_by: int | None
    depends: list[int]
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)


class JobSummary(BaseModel):
    id: int
    name: str
    task: str
    parameters: dict[str, Any]
    priority: int
    status: JobStatus
    unmet_deps: int
    attempt: int
    required_cpu: int
    required_accelerators: int
    worker_name: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    error: str | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_before: int | None = Field(None, description="Pass as ?before= to get the next page.")


class QueueEntry(BaseModel):
    id: int
    name: str
    task: str
    parameters: dict[str, Any]
    priority: int
    status: JobStatus
    unmet_deps: int
    attempt: int
    required_cpu: int
    required_accelerators: int
    created_at: datetime
    available_at: datetime
    eligible: bool


class QueueList(BaseModel):
    jobs: list[QueueEntry]


class JobEvent(BaseModel):
    status: JobStatus
    attempt: int
    worker_id: int | None
    reason: str | None
    at: datetime


class JobHistory(BaseModel):
    events: list[JobEvent]


class DependencyRef(BaseModel):
    id: int
    name: str
    status: JobStatus


class JobDependencies(BaseModel):
    upstream: list[DependencyRef]
    downstream: list[DependencyRef]


class GraphNode(BaseModel):
    id: int
    name: str
    task: str
    status: JobStatus
    priority: int


class GraphEdge(BaseModel):
    source: int = Field(description="The job that must complete first.")
    target: int = Field(description="The job that waits for it.")


class Graph(BaseModel):
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class CancelOut(BaseModel):
    id: int
    status: JobStatus = Field(description="CANCELLED, or RUNNING when the worker will stop it.")


class RetryOut(BaseModel):
    id: int
    requeued: int = Field(
        description="How many jobs went back to PENDING (the retried ones and those released)."
    )


# ---------------------------------------------------------------- claim and reports


class ClaimRequest(Strict):
    worker_name: str = Field("anonymous", min_length=1, max_length=200)
    worker_id: int | None = Field(
        None, ge=1, description="Registered worker id (heartbeats then keep the lease)."
    )
    free_cpu: Count = 1
    free_accelerators: Count = 0
    total_cpu: Count | None = Field(None, description="The worker's whole capacity (defaults to free_cpu).")
    total_accelerators: Count | None = None
    tags: list[Tag] = Field(default_factory=list)
    max_jobs: Annotated[int, Field(ge=1, le=1000)] = 1
    wait: Annotated[float, Field(ge=0, le=600)] = 0
    idle_summary: bool = Field(
        False,
        description="With no job to hand out, say what is pending and running, and answer as soon as a "
        "job of the project finishes (the worker's capacity or the project's state changed).",
    )


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
    lease_expires_at: datetime
    inputs: list[str] = Field(default_factory=list, description="Templates of what the job reads.")
    outputs: list[str] = Field(default_factory=list, description="Templates of what the job writes.")


class IdleSummary(BaseModel):
    pending: int
    running: int
    delayed: int = Field(description="Pending jobs waiting out a retry delay.")
    runnable: bool = Field(description="Some pending job with its dependencies met fits this worker.")


class ClaimResponse(BaseModel):
    jobs: list[ClaimedJob]
    idle: IdleSummary | None = None


class CompleteRequest(Strict):
    attempt: Annotated[int, Field(ge=1)]
    exit_code: Annotated[int, Field(ge=-INT32, le=INT32)] | None = 0
    result: Any = None
    log: str | None = Field(None, max_length=1_000_000, description="Tail of the job's output.")
    duration: Annotated[float, Field(ge=0)] | None = None


class FailRequest(Strict):
    attempt: Annotated[int, Field(ge=1)]
    exit_code: Annotated[int, Field(ge=-INT32, le=INT32)] | None = None
    error: str | None = Field(None, max_length=100_000)
    log: str | None = Field(None, max_length=1_000_000)
    duration: Annotated[float, Field(ge=0)] | None = None
    cancelled: bool = Field(False, description="The job was stopped because it was cancelled.")
    requeue: bool = Field(False, description="Put the job back without using an attempt (preempted).")


class ReportOut(BaseModel):
    id: int
    status: JobStatus


class Report(Strict):
    id: Annotated[int, Field(ge=1)]
    attempt: Annotated[int, Field(ge=1)]
    status: Literal["COMPLETED", "FAILED", "CANCELLED"]
    exit_code: Annotated[int, Field(ge=-INT32, le=INT32)] | None = None
    result: Any = None
    error: str | None = Field(None, max_length=100_000)
    log: str | None = Field(None, max_length=1_000_000)
    duration: Annotated[float, Field(ge=0)] | None = None
    requeue: bool = False


class ReportBatch(RootModel[list[Report]]):
    root: Annotated[list[Report], Field(min_length=1, max_length=10_000)]


class ReportResult(BaseModel):
    id: int
    code: int = Field(description="200 applied, 404 unknown job, 409 stale attempt (nothing changed).")
    status: JobStatus | None
    message: str | None


class ReportBatchOut(BaseModel):
    results: list[ReportResult]


# ---------------------------------------------------------------- workers


class WorkerRegister(Strict):
    name: str = Field(min_length=1, max_length=200)
    entity: str = Field("", max_length=200)
    host: str = Field("", max_length=500)
    pid: Annotated[int, Field(ge=0, le=INT32)] | None = None
    project: int | str | None = Field(None, description="The project it works for (id or name).")
    cpu: Count = 0
    accelerators: Count = 0
    tags: list[Tag] = Field(default_factory=list)


class WorkerOut(BaseModel):
    id: int
    project_id: int | None
    name: str
    entity: str
    host: str
    pid: int | None
    cpu: int
    accelerators: int
    tags: list[str]
    status: Literal["ONLINE", "OFFLINE"]
    registered_at: datetime
    last_seen: datetime
    running: list[int] = Field(default_factory=list)
    used_cpu: int = 0
    used_accelerators: int = 0


class WorkerRegistered(WorkerOut):
    lease_seconds: float
    heartbeat_interval: float


class WorkerList(BaseModel):
    workers: list[WorkerOut]


class Heartbeat(Strict):
    running: list[Annotated[int, Field(ge=1)]] | None = Field(
        None,
        description="Ids of the jobs the worker runs now; jobs it was handed but does not run are requeued.",
    )
    grace: Annotated[float, Field(ge=0, le=3600)] | None = Field(
        None,
        description="Requeue only jobs handed out longer ago than this (default a third of the lease); "
        "0 when the worker knows no claim of its is in flight.",
    )


class HeartbeatOut(BaseModel):
    cancel: list[int] = Field(description="Ids of this worker's jobs to stop now.")
    lease_seconds: float


class Deregistered(BaseModel):
    released: int = Field(description="Running jobs handed back to the queue.")
