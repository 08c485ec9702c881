"""Request and response models of the REST API (pydantic v2); the OpenAPI document is built from them."""

from __future__ import annotations

import math
import re
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal, Required, Self

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    TypeAdapter,
    ValidationInfo,
    model_validator,
)
from pydantic import Strict as StrictValue
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from ...models import DEFAULT_MAX_LOST, JobStatus, ReportStatus

INT32 = 2**31 - 1
"""The largest value of a PostgreSQL ``integer`` column (attempt, cpu, priority, exit code ...)."""
INT64 = 2**63 - 1
"""The largest value of a PostgreSQL ``bigint`` column (every id)."""
MAX_PARAMETERS_BYTES = 1024**2
"""Default bound on a job's ``parameters`` (and a task's ``defaults``) as JSON, in bytes."""
NUL = "\x00"


def _problem(value: Any) -> tuple[str, str, str] | None:
    """The first part of a value that PostgreSQL cannot store, as (error type, message, where):
    text with a NUL character, an integer outside ``bigint``, a number that is not finite."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return "nul_character", "text cannot contain the NUL character (\\u0000)", where
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -INT64 - 1 <= item <= INT64:
                return "int_out_of_range", "integers must lie between -2^63 and 2^63-1", where
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "finite_number", "numbers must be finite (no NaN or Infinity)", where
        elif isinstance(item, dict):
            for key, sub in reversed(item.items()):
                if isinstance(key, str) and NUL in key:
                    return "nul_character", "keys cannot contain the NUL character (\\u0000)", where
                stack.append((sub, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list | tuple):
            stack.extend(
                (sub, f"{where}.{i}" if where else str(i)) for i, sub in reversed(list(enumerate(item)))
            )
    return None


def printable(value: str) -> str:
    """Text a program printed: PostgreSQL cannot store NUL, so it becomes U+FFFD."""
    return value.replace(NUL, "\ufffd") if NUL in value else value


def storable(value: Any) -> Any:
    """A JSON value a program produced, made storable: NUL in text and keys becomes U+FFFD, a
    number that is not finite becomes null, an integer outside ``bigint`` becomes a float."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -INT64 - 1 <= value <= INT64 else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {printable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


Printed = Annotated[str, AfterValidator(printable)]
"""Output text (logs, error messages): stored with NUL replaced rather than refused."""
Produced = Annotated[Any, AfterValidator(storable)]
"""A JSON value a job produced (its result): stored as far as PostgreSQL can hold it."""
Id = Annotated[int, StrictValue(), Field(ge=1, le=INT64)]
"""A job, worker or token named by id in a body: a JSON integer, nothing that converts to one
("1" and 1.0 are refused naming the field), from 1 to 2^63-1."""
Attempt = Annotated[int, Field(ge=1, le=INT32)]
Int32 = Annotated[int, Field(ge=-INT32 - 1, le=INT32)]


_BAD_NAME = re.compile(r"[\x00-\x1f/]")


def _check_name(value: str) -> str:
    problem = _name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


@lru_cache(maxsize=4096)
def _name_problem(value: str) -> str | None:
    """What is wrong with a name, if anything (remembered: a batch names the same task 1,000 times)."""
    if value.isdigit():
        return "a name cannot be all digits (a number addresses an id)"
    if value != value.strip():
        return "a name cannot start or end with whitespace"
    if _BAD_NAME.search(value):
        return "a name cannot contain '/' or control characters"
    return None


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_check_name)]
JobName = Annotated[str, Field(min_length=1, max_length=500)]
Tag = Annotated[str, Field(min_length=1, max_length=100)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]
MaxLost = Annotated[int, Field(ge=0, le=1000)]
PathTemplate = Annotated[str, Field(min_length=1, max_length=4096)]
"""A path or URI a job reads or writes, with {parameter} fields the worker fills in."""
ProjectStatus = Literal["ACTIVE", "ARCHIVED"]
DependsOn = (
    list[Annotated[int, Field(ge=1, le=INT64)] | Annotated[str, Field(min_length=1, max_length=500)]]
    | dict[str, Any]
)


class Strict(BaseModel):
    """A request body: unknown fields are refused, and so is anything PostgreSQL cannot store (NUL
    in text, integers beyond ``bigint``, NaN/Infinity), naming the field. Output text of a job
    (``Printed``, ``Produced`` fields) has been made storable before this check."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable(self, info: ValidationInfo) -> Self:
        # One call per model, not one per field: this runs for every job of a batch.
        if info.context is not None and info.context.get("plain"):
            return self  # the raw body holds nothing that could be a problem (see suspicious())
        for name in type(self).model_fields:
            problem = _problem(getattr(self, name))
            if problem is not None:
                kind, message, where = problem
                field = f"{name}.{where}" if where else name
                raise PydanticCustomError(kind, "{field}: " + message, {"field": field})
        return self


_FOLD = bytes.maketrans(b"123456789E", b"000000000e")
"""Every digit as 0 and E as e: a run of 19 digits is then one substring, an exponent another."""


def suspicious(raw: bytes) -> bool:
    """Whether a raw JSON body contains what one of its values needs to be unstorable: a NUL
    (escaped or not), NaN or Infinity, an integer of 19 digits or more, or an exponent of three
    digits (1e400 is infinite). Bodies without any of these skip the walk over every field
    (``parse_body`` says so in the validation context). Substring searches only: a regular
    expression with these alternatives costs a millisecond per 100 kB."""
    if b"\\u0000" in raw or b"\x00" in raw or b"NaN" in raw or b"Infinity" in raw:
        return True
    folded = raw.translate(_FOLD)
    return b"0" * 19 in folded or b"e000" in folded or b"e+000" in folded or b"e-000" in folded


def _bounded_json(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """Refuse a JSON object larger than the server's ``max_parameters_bytes``."""
    limit = (info.context or {}).get("max_parameters_bytes", MAX_PARAMETERS_BYTES)
    if not value or limit is None:
        return value
    try:
        size = len(orjson.dumps(value))
    except TypeError:
        return value  # not encodable (an integer beyond 64 bits): the check on every field refuses it
    if size > limit:
        raise PydanticCustomError(
            "too_large", "at most {limit} bytes of JSON, got {size}", {"limit": limit, "size": size}
        )
    return value


# ---------------------------------------------------------------- health


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    schema_level: int | None = Field(
        None,
        description="The database schema level (the number of its newest migration) this server runs.",
    )
    database: str | None = Field(
        None, description="The database's version (left out for a request without a token under --auth)."
    )
    lease_seconds: float | None = None
    waiting_claims: int = Field(0, description="Long-polling claims this server process holds now.")
    listen_reconnects: int = Field(0, description="Times the LISTEN connection was re-established.")
    max_wait: float | None = Field(
        None, description="Longest wait (s) of one claim or log follow; clients never ask for more."
    )


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
    strict_tasks: bool = Field(
        False, description="Refuse jobs for tasks the project does not have (instead of creating them)."
    )


class ProjectUpdate(Strict):
    name: Name | None = None
    description: str | None = Field(None, max_length=10_000)
    status: ProjectStatus | None = None
    strict_tasks: bool | None = None


class ProjectOut(BaseModel):
    id: int
    name: str
    description: str
    status: ProjectStatus
    strict_tasks: bool = False
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
    command: str | None = Field(
        None,
        max_length=10_000,
        description="Command template its jobs run, e.g. `python train.py --lr {lr}` ({name} placeholders "
        "are filled from the job's parameters over the task's defaults).",
    )
    shell: bool = Field(False, description="The command is a /bin/sh command line (values are quoted).")
    defaults: Annotated[dict[str, Any], AfterValidator(_bounded_json)] = Field(
        default_factory=dict, description="Default parameters of its jobs (bounded like `parameters`)."
    )
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 1
    max_lost: MaxLost = DEFAULT_MAX_LOST
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
    shell: bool = False
    defaults: dict[str, Any]
    max_attempts: int
    max_lost: int = DEFAULT_MAX_LOST
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
    parameters: Annotated[dict[str, Any], AfterValidator(_bounded_json)] = Field(
        default_factory=dict,
        description="The job's parameters: at most the server's max_parameters_bytes of JSON (default 1 MiB).",
    )
    priority: Int32 = 0
    depends: DependsOn | None = Field(
        None,
        description="Jobs that must complete first: a list of job ids (or, inside a batch, names of "
        "other jobs of the batch), or a mapping {job_id: job_name}.",
    )
    required_cpu: Count | None = Field(None, description="Overrides the task's value.")
    required_accelerators: Count | None = None
    required_tags: list[Tag] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=1000)] | None = Field(
        None, description="Failures of its own the job may have before it is FAILED (the task's by default)."
    )
    max_lost: MaxLost | None = Field(
        None,
        description="Times the job may go back to the queue because its worker vanished (lease expired, "
        "worker stopped) before it fails with 'worker lost'; lost runs use no attempt (the task's by default, 3).",
    )
    retry_delay: Annotated[float, Field(ge=0, le=7 * 86400)] | None = None
    timeout: Annotated[float, Field(gt=0, le=365 * 86400)] | None = None
    inputs: list[PathTemplate] | None = Field(None, max_length=1000, description="Overrides the task's.")
    outputs: list[PathTemplate] | None = Field(None, max_length=1000, description="Overrides the task's.")
    group: Name | None = Field(
        None, description="A group (a sweep, a named batch) to follow, cancel and retry the job with."
    )


MAX_BATCH = 10_000
"""The most jobs one batch may hold."""
JobEntries = Annotated[list[JobCreate], Field(min_length=1, max_length=MAX_BATCH)]


class NamedBatch(Strict):
    group: Name = Field(description="The group every job of the batch joins (created on first use).")
    jobs: JobEntries


class JobBatch(RootModel[JobEntries | NamedBatch]):
    root: JobEntries | NamedBatch = Field(
        description="A list of jobs, or {group, jobs} to put them all in a named group."
    )

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


JobEntry = _entry_of(JobCreate)
"""A submitted job as the dict of the fields it gave, validated as :class:`JobCreate` validates
them without building a model (twice as fast for a batch of jobs). For a body that holds nothing
unstorable (see :func:`suspicious`); the others go through :class:`JobCreate` and its walk."""
JOB_ENTRY: TypeAdapter[dict[str, Any]] = TypeAdapter(JobEntry)
JOB_ENTRIES: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(
    Annotated[list[JobEntry], Field(min_length=1, max_length=MAX_BATCH)]  # type: ignore[valid-type]
)


def _bounds(field: str) -> tuple[int, int]:
    """The (min, max) a field of :class:`JobCreate` allows: its length for a string, its value
    for an integer."""
    low, high = -(2**63), 2**63
    for m in JobCreate.model_fields[field].metadata:
        low = getattr(m, "min_length", getattr(m, "ge", low))
        high = getattr(m, "max_length", getattr(m, "le", high))
    return low, high


_PLAIN_FIELDS = frozenset({"name", "task", "parameters", "priority"})
_NAME_LEN, _TASK_LEN, _PRIORITY = _bounds("name"), _bounds("task"), _bounds("priority")


def plain_entries(raw: bytes) -> list[dict[str, Any]] | None:
    """The jobs of a batch body in the shape the SDK sends for plain jobs (name, task, parameters,
    priority, nothing else), checked against :class:`JobCreate`'s own bounds and name rule without
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
    if any(_name_problem(t) is not None for t in tasks):
        return None
    return jobs


class CreatedTask(BaseModel):
    name: str
    required_cpu: int
    required_accelerators: int
    did_you_mean: str | None = Field(None, description="An existing task with a similar name.")


class BatchCreated(BaseModel):
    ids: list[int]
    count: int
    created_tasks: list[CreatedTask] = Field(
        default_factory=list, description="Tasks this submission created (the project had none by that name)."
    )
    group: str | None = None
    group_id: int | None = None


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
    max_attempts: int
    max_lost: int = DEFAULT_MAX_LOST
    lost: int = Field(0, description="Times the job went back to the queue because its worker vanished.")
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
    created_tasks: list[CreatedTask] = Field(
        default_factory=list,
        description="On submission: the task it created (the project had none by that name).",
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
    worker_id: Id | None = Field(None, description="Registered worker id (heartbeats then keep the lease).")
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
    tasks: list[Name] | None = Field(
        None, max_length=1000, description="Only jobs of these tasks (default: any task)."
    )
    with_command: bool = Field(
        False, description="Only jobs whose task has a command template (a worker that runs the task's)."
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


class CompleteRequest(Strict):
    attempt: Attempt
    exit_code: Int32 | None = 0
    result: Produced = None
    log: Printed | None = Field(None, max_length=1_000_000, description="Tail of the job's output.")
    duration: Annotated[float, Field(ge=0)] | None = None


class FailRequest(Strict):
    attempt: Attempt
    exit_code: Int32 | None = None
    error: Printed | None = Field(None, max_length=100_000)
    log: Printed | None = Field(None, max_length=1_000_000)
    duration: Annotated[float, Field(ge=0)] | None = None
    cancelled: bool = Field(False, description="The job was stopped because it was cancelled.")
    requeue: bool = Field(False, description="Put the job back without using an attempt (preempted).")
    retryable: bool = Field(
        True, description="False when retrying cannot help (bad template, missing script): FAILED at once."
    )


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
    result: Produced = None
    error: Printed | None = Field(None, max_length=100_000)
    log: Printed | None = Field(None, max_length=1_000_000)
    duration: Annotated[float, Field(ge=0)] | None = None
    requeue: bool = False
    retryable: bool = True


class ReportBatch(RootModel[list[Report]]):
    root: Annotated[list[Report], Field(min_length=1, max_length=10_000)]


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


# ---------------------------------------------------------------- workers


class WorkerRegister(Strict):
    name: str = Field(min_length=1, max_length=200)
    entity: str = Field("", max_length=200)
    host: str = Field("", max_length=500)
    pid: Annotated[int, Field(ge=0, le=INT32)] | None = None
    project: Id | Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description="The project it works for (id or name)."
    )
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
    max_wait: float | None = Field(None, description="Longest claim wait (s) the server grants.")


class WorkerList(BaseModel):
    workers: list[WorkerOut]


class Heartbeat(Strict):
    running: list[Id] | None = Field(
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


# ---------------------------------------------------------------- groups


class GroupOut(BaseModel):
    id: int
    project_id: int
    name: str
    created_at: datetime
    total: int = Field(description="Jobs in the group.")
    finished: int = Field(description="Jobs COMPLETED, FAILED or CANCELLED.")
    counts: dict[str, int] = Field(description="Job counts by status.")


class GroupList(BaseModel):
    groups: list[GroupOut]


class GroupAction(BaseModel):
    id: int
    name: str
    count: int = Field(description="Jobs cancelled (or asked to stop), or put back in the queue.")
