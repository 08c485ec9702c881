"""Models of jobs: submissions (one job, a batch, the fast entry check) and the job views."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Required, Self, get_args

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    TypeAdapter,
    model_validator,
)
from pydantic import Tag as UnionTag
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from ....limits import MAX_ATTEMPTS, MAX_BATCH, MAX_DELAY, MAX_LIST
from ....models import DEFAULT_MAX_LOST, DEFAULT_MAX_PREEMPTED, DependencyCondition, JobStatus
from .base import (
    ConcurrencyKey,
    ConcurrencyLimit,
    Count,
    DependsOn,
    Int32,
    JobName,
    MaxLost,
    MaxPreempted,
    Name,
    PathTemplate,
    Strict,
    Tag,
    UniqueKey,
    _bounded_json,
    _name_problem,
    check_concurrency_pair,
)

# ---------------------------------------------------------------- jobs


class JobCreate(Strict):
    name: JobName
    task: Name
    parameters: Annotated[dict[str, Any], AfterValidator(_bounded_json)] = Field(
        default_factory=dict,
        description="The job's parameters: at most the server's max_parameters_bytes of JSON (default 1 MiB).",
    )
    priority: Int32 = 0
    depends: DependsOn | None = Field(
        None,
        description="What the job waits for: a list of job ids, names of other jobs of the batch, or "
        'items {"id": 12, "on": "finished"}, {"name": "train", "on": "success"}, {"group": "hp1", '
        '"on": "finished"} (a group: every job it has when this job is submitted); "on" is success '
        "(the default: it must complete), finished (any final state) or failure (it failed or was "
        "cancelled). Also the mapping {job_id: job_name} (each must complete).",
    )
    required_cpu: Count | None = Field(None, description="Overrides the task's value.")
    required_accelerators: Count | None = None
    required_tags: list[Tag] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] | None = Field(
        None, description="Failures of its own the job may have before it is FAILED (the task's by default)."
    )
    max_lost: MaxLost | None = Field(
        None,
        description="Times the job may go back to the queue because its worker vanished (lease expired, "
        "worker stopped) before it fails with 'worker lost'; lost runs use no attempt (the task's by default, 3).",
    )
    retry_delay: Annotated[float, Field(ge=0, le=7 * 86400)] | None = None
    timeout: Annotated[float, Field(gt=0, le=365 * 86400)] | None = None
    inputs: list[PathTemplate] | None = Field(None, max_length=MAX_LIST, description="Overrides the task's.")
    outputs: list[PathTemplate] | None = Field(None, max_length=MAX_LIST, description="Overrides the task's.")
    group: Name | None = Field(
        None, description="A group (a sweep, a named batch) to follow, cancel and retry the job with."
    )
    concurrency_key: ConcurrencyKey | None = Field(
        None,
        description="At most concurrency_limit jobs with this key run at once in the project (given with "
        "concurrency_limit; neither: the task's pair).",
    )
    concurrency_limit: ConcurrencyLimit | None = Field(
        None, description="How many jobs with concurrency_key may run at once (given with concurrency_key)."
    )
    max_preempted: MaxPreempted | None = Field(
        None,
        description="Times the job may go back to the queue because it was preempted (no attempt used) "
        "before it fails with 'preempted N times' (the task's by default, 10).",
    )
    unique_key: UniqueKey | None = Field(
        None,
        description="The job's key in its project (1 to 400 characters): submitting a job whose key a job "
        "already has returns that job (200, existing: true) instead of creating one; the same key with "
        "other fields is a 409 naming them.",
    )
    not_before: AwareDatetime | None = Field(
        None,
        description="Do not start the job before this time (ISO 8601 with an offset, e.g. "
        "2026-12-07T02:00:00+01:00); not with delay.",
    )
    delay: Annotated[float, Field(ge=0, le=MAX_DELAY)] | None = Field(
        None, description="Do not start the job before this many seconds from now; not with not_before."
    )

    @model_validator(mode="after")
    def _concurrency_pair(self) -> Self:
        check_concurrency_pair(self.concurrency_key, self.concurrency_limit)
        check_start(self.not_before, self.delay)
        return self


JobEntries = Annotated[list[JobCreate], Field(min_length=1, max_length=MAX_BATCH)]


class NamedBatch(Strict):
    group: Name = Field(description="The group every job of the batch joins (created on first use).")
    jobs: JobEntries


# The shape a body has decides which of the two it is validated as, so that a mistake in a named
# batch is named (``jobs.0.stpes``) instead of hidden behind "not a list". The tags hold "[", as a
# union member's name does in an error's location, so that errors.validation_details leaves them
# out of the field it names.
_LIST, _NAMED = "[list]", "[named]"


def _batch_shape(value: Any) -> str | None:
    """Which shape of batch a body is: a list of jobs, or ``{group, jobs}`` (an object); None for
    anything else (refused as neither)."""
    if isinstance(value, (list, tuple)):
        return _LIST
    if isinstance(value, (dict, NamedBatch)):
        return _NAMED
    return None


class JobBatch(RootModel[JobEntries | NamedBatch]):
    root: Annotated[
        Annotated[JobEntries, UnionTag(_LIST)] | Annotated[NamedBatch, UnionTag(_NAMED)],
        Discriminator(
            _batch_shape,
            custom_error_type="batch_shape",
            custom_error_message="a batch is a list of jobs, or an object {group, jobs}",
        ),
    ] = Field(description="A list of jobs, or {group, jobs} to put them all in a named group.")

    def jobs_and_group(self) -> tuple[list[JobCreate], str | None]:
        if isinstance(self.root, NamedBatch):
            return self.root.jobs, self.root.group
        return self.root, None


def _entry_of(model: type[BaseModel]) -> Any:
    """A TypedDict with the fields of ``model``, each with the model's own type, bounds and
    validators, required where the model requires it (what else was left out stays out: no
    defaults), unknown fields refused."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = Required[kind] if info.is_required() else kind
    entry = TypedDict(f"{model.__name__}Entry", fields, total=False)  # type: ignore[operator]
    entry.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    return entry


def _entry_pair(entry: dict[str, Any]) -> dict[str, Any]:
    """:class:`JobCreate`'s checks of the concurrency pair and of the start, on an entry."""
    check_concurrency_pair(entry.get("concurrency_key"), entry.get("concurrency_limit"))
    check_start(entry.get("not_before"), entry.get("delay"))
    return entry


def check_start(not_before: datetime | None, delay: float | None) -> None:
    """Refuse a job that gives both a start time and a delay."""
    if not_before is not None and delay is not None:
        raise PydanticCustomError("start", "give not_before or delay, not both", {"field": "delay"})


JobEntry = _entry_of(JobCreate)
"""A submitted job as the dict of the fields it gave, validated as :class:`JobCreate` validates
them without building a model (twice as fast for a batch of jobs). For a body that holds nothing
unstorable (see :func:`suspicious`); the others go through :class:`JobCreate` and its walk."""
_CheckedEntry = Annotated[JobEntry, AfterValidator(_entry_pair)]  # type: ignore[valid-type]
JOB_ENTRY: TypeAdapter[dict[str, Any]] = TypeAdapter(_CheckedEntry)
JOB_ENTRIES: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(
    Annotated[list[_CheckedEntry], Field(min_length=1, max_length=MAX_BATCH)]
)


def _bounds(field: str) -> tuple[int, int]:
    """The (min, max) a field of :class:`JobCreate` allows: its length for a string, its value
    for an integer."""
    low, high = -(2**63), 2**63
    for m in JobCreate.model_fields[field].metadata:
        low = getattr(m, "min_length", getattr(m, "ge", low))
        high = getattr(m, "max_length", getattr(m, "le", high))
    return low, high


_PLAIN_FIELDS = frozenset({"name", "task", "parameters", "priority", "unique_key"})
_NAME_LEN, _TASK_LEN, _PRIORITY = _bounds("name"), _bounds("task"), _bounds("priority")


def _length(kind: Any) -> tuple[int, int]:
    """The (min, max) length a string type (``Annotated[str, Field(...)]``) allows."""
    low, high = 0, 2**63
    for info in get_args(kind)[1:]:
        for m in getattr(info, "metadata", ()):
            low = getattr(m, "min_length", low)
            high = getattr(m, "max_length", high)
    return low, high


_KEY_MIN, _KEY_MAX = _length(UniqueKey)


def plain_entries(raw: bytes) -> list[dict[str, Any]] | None:
    """The jobs of a batch body in the shape the SDK sends for plain jobs (name, task, parameters,
    priority, a unique key, nothing else), checked against :class:`JobCreate`'s own bounds and name rule without
    pydantic (three times faster); None for anything else, which :data:`JOB_ENTRIES` or the
    model then judges. For a body that :func:`suspicious` passes and that is no larger than the
    parameters limit (so that no job's parameters can exceed it)."""
    try:
        jobs = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(jobs) is not list or not 1 <= len(jobs) <= MAX_BATCH:
        return None
    name_min, name_max = _NAME_LEN
    task_min, task_max = _TASK_LEN
    low, high = _PRIORITY
    tasks: set[str] = set()
    for job in jobs:
        if type(job) is not dict or not _PLAIN_FIELDS.issuperset(job):
            return None
        name, task = job.get("name"), job.get("task")
        if type(name) is not str or not name_min <= len(name) <= name_max:
            return None
        if type(task) is not str or not task_min <= len(task) <= task_max:
            return None
        tasks.add(task)
        if "parameters" in job and type(job["parameters"]) is not dict:
            return None
        if "priority" in job and (type(job["priority"]) is not int or not low <= job["priority"] <= high):
            return None
        if "unique_key" in job and (
            type(job["unique_key"]) is not str or not _KEY_MIN <= len(job["unique_key"]) <= _KEY_MAX
        ):
            return None
    if any(_name_problem(t) is not None for t in tasks):
        return None
    return jobs


class CreatedTask(BaseModel):
    name: str
    required_cpu: int
    required_accelerators: int
    did_you_mean: str | None = Field(None, description="An existing task with a similar name.")


class SubmitWarning(BaseModel):
    index: int | None = Field(None, description="In a batch: the entry it is about (0-based).")
    field: str = Field(description="What it is about, named as errors name fields (0.parameters.stpes).")
    message: str


class BatchCreated(BaseModel):
    ids: list[int] = Field(
        description="One per entry, in batch order: the new job's, or the existing job's for an entry whose "
        "unique_key the project had already."
    )
    count: int = Field(description="How many entries (ids).")
    existing: list[bool] = Field(
        default_factory=list,
        description="One per entry, beside ids: true where the entry's unique_key belonged to a job the "
        "project had already (that job's id is in ids, nothing was created for it).",
    )
    created_tasks: list[CreatedTask] = Field(
        default_factory=list, description="Tasks this submission created (the project had none by that name)."
    )
    group: str | None = None
    group_id: int | None = None
    warnings: list[SubmitWarning] = Field(
        default_factory=list,
        description="What was accepted but looks wrong: a parameter no placeholder of the task's command uses.",
    )


class DependencyOut(BaseModel):
    id: int
    on: DependencyCondition = Field(
        description="success: the upstream must complete; finished: any final state; failure: it must "
        "fail or be cancelled."
    )


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
    attempt: int = Field(description="Hand-outs so far: the current attempt's fencing token.")
    attempts_used: int = Field(
        0,
        description="Attempts that counted against max_attempts (the running one included); lost and "
        "preempted attempts never count.",
    )
    max_attempts: int
    max_lost: int = DEFAULT_MAX_LOST
    lost: int = Field(0, description="Times the job went back to the queue because its worker vanished.")
    max_preempted: int = DEFAULT_MAX_PREEMPTED
    preempted: int = Field(0, description="Times the job went back to the queue because it was preempted.")
    retry_delay: float
    timeout: float | None
    worker_id: int | None
    worker_name: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    created_at: datetime
    available_at: datetime
    eligible_at: datetime | None = Field(None, description="When the job last became eligible to run.")
    external_id: str | None = Field(None, description="The attempt's handle outside its worker (slurm:ID).")
    gpus: list[int] | None = Field(None, description="GPU ids its worker gave the current attempt.")
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
    group: str | None = Field(None, description="The group the job belongs to.")
    group_id: int | None = None
    concurrency_key: str | None = Field(
        None, description="At most concurrency_limit jobs with this key run at once in the project."
    )
    concurrency_limit: int | None = None
    checkpoint: str | None = Field(
        None, description="The latest checkpoint an attempt named (path or URI), for its next attempt."
    )
    unique_key: str | None = Field(None, description="The job's key in its project, if it was given one.")
    task_version: int = Field(
        1, description="The version of its task the job was submitted with (it runs that one)."
    )
    depends_on: list[DependencyOut] = Field(
        default_factory=list, description="Each job this one waits for, with the condition that meets it."
    )
    created_tasks: list[CreatedTask] = Field(
        default_factory=list,
        description="On submission: the task it created (the project had none by that name).",
    )
    existing: bool = Field(
        False,
        description="On submission: true when its unique_key belonged to a job the project had already: "
        "this is that job, nothing was created (the answer is 200, not 201).",
    )
    warnings: list[SubmitWarning] = Field(
        default_factory=list,
        description="On submission: what was accepted but looks wrong (a parameter no placeholder of the "
        "task's command uses).",
    )


class JobSummary(BaseModel):
    id: int
    name: str
    task: str
    parameters: dict[str, Any] | None = Field(description="null when listed with ?full=0")
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
    group: str | None = None
    result: Any = None
    duration: float | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_before: int | None = Field(None, description="Pass as ?before= to get the next page.")


class JobCounts(BaseModel):
    counts: dict[str, int] = Field(description="How many of the matching jobs are in each status.")
    total: int = Field(description="How many jobs match.")


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
    worker: str | None = Field(
        None, description="The registered worker (worker_id) that took part, by name; not the actor."
    )
    reason: str | None
    actor: str | None = Field(
        None,
        description="Who made the change: under --auth the token's name (a worker's claims and reports "
        "included), else the client's name for itself, the worker's name, or the reaper.",
    )
    checkpoint: str | None = Field(None, description="The checkpoint the attempt named when it ended.")
    at: datetime


class JobHistory(BaseModel):
    events: list[JobEvent]


class DependencyRef(BaseModel):
    id: int
    name: str
    status: JobStatus
    on: DependencyCondition = Field(
        "success", description="The condition of the dependency between the two jobs."
    )


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
    on: DependencyCondition = Field(
        "success", description="When the dependency is met (success, finished, failure)."
    )


class Graph(BaseModel):
    nodes: list[GraphNode]
    edges: list[GraphEdge]


class CancelOut(BaseModel):
    id: int
    status: JobStatus = Field(description="CANCELLED, or RUNNING when the worker will stop it.")


class RequeueOut(BaseModel):
    id: int
    status: JobStatus = Field(
        description="RUNNING: its worker stops it, and it goes back to PENDING without using an attempt."
    )


class RetryOut(BaseModel):
    id: int
    requeued: int = Field(
        description="How many jobs went back to PENDING (the retried ones and those released)."
    )
