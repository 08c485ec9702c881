"""Models of projects, tasks and groups."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    field_validator,
    model_validator,
)
from pydantic import Strict as StrictValue
from pydantic_core import PydanticCustomError

from ....limits import MAX_ATTEMPTS, MAX_DESCRIPTION, MAX_LIST, MAX_SHARE
from ....models import DEFAULT_MAX_LOST, DEFAULT_MAX_PREEMPTED
from .base import (
    INT32,
    ConcurrencyKey,
    ConcurrencyLimit,
    Count,
    MaxLost,
    MaxPreempted,
    Name,
    PathTemplate,
    ProjectStatus,
    Strict,
    Tag,
    _bounded_json,
    check_concurrency_pair,
)

# ---------------------------------------------------------------- projects

STRICT_PARAMETERS = (
    "Refuse a job with a parameter no placeholder of its task's command uses (a typo such as "
    "`stpes`) instead of accepting it with a warning."
)


class ProjectCreate(Strict):
    name: Name = Field(description="Unique project name (not all digits: a number addresses an id).")
    description: str = Field("", max_length=MAX_DESCRIPTION)
    strict_tasks: bool = Field(
        False, description="Refuse jobs for tasks the project does not have (instead of creating them)."
    )
    strict_parameters: bool = Field(False, description=STRICT_PARAMETERS)


Share = Annotated[float, StrictValue(), Field(gt=0, le=MAX_SHARE)]
"""A project's weight in the pool: a JSON number above 0, at most ``MAX_SHARE``."""
Quota = Annotated[int, StrictValue(), Field(ge=0, le=INT32)]
"""What a project's running jobs may hold at once: a JSON integer, 0 or more."""
QUOTA_FIELDS = ("max_gpus", "max_cpus", "max_running")
"""The quotas of a project; null removes one."""
POOL_FIELDS = ("share", *QUOTA_FIELDS)
"""What a project gets of the pool: set only with a token that covers every project (a token of
some projects could otherwise raise their own share)."""
_BY_ADMIN = " Set only with a token that covers every project (the `projects` permission)."


def _left_out(schema: dict[str, Any]) -> None:
    """A field that may be left out but not given as null: its schema shows no default."""
    schema.pop("default", None)


class ProjectUpdate(Strict):
    name: Name | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    status: ProjectStatus | None = None
    strict_tasks: bool | None = None
    strict_parameters: bool | None = Field(None, description=STRICT_PARAMETERS)
    share: Share = Field(  # left out: unchanged; null is refused (every project has a share)
        None,  # type: ignore[assignment]
        json_schema_extra=_left_out,
        description="The project's weight when claims choose between projects (fair share): every "
        "project starts at 1; one of share 2 gets about twice the pool of one of share 1 when both "
        "wait." + _BY_ADMIN,
    )
    max_gpus: Quota | None = Field(
        None,
        description="GPUs its running jobs may hold at once, on all workers; null: no quota." + _BY_ADMIN,
    )
    max_cpus: Quota | None = Field(
        None,
        description="CPUs its running jobs may hold at once, on all workers; null: no quota." + _BY_ADMIN,
    )
    max_running: Quota | None = Field(
        None, description="Jobs it may have running at once; null: no quota." + _BY_ADMIN
    )

    @field_validator("share", mode="before")
    @classmethod
    def _share_given(cls, value: object) -> object:
        if value is None:
            raise PydanticCustomError(
                "share_required", "every project has a share: give a number above 0 (1 is the default)"
            )
        return value


class ProjectOut(BaseModel):
    id: int
    name: str
    description: str
    status: ProjectStatus
    strict_tasks: bool = False
    strict_parameters: bool = Field(False, description=STRICT_PARAMETERS)
    share: float = Field(1.0, description="Its weight when claims choose between projects (fair share).")
    max_gpus: int | None = Field(None, description="GPUs its running jobs may hold at once; null: no quota.")
    max_cpus: int | None = Field(None, description="CPUs its running jobs may hold at once; null: no quota.")
    max_running: int | None = Field(None, description="Jobs it may have running at once; null: no quota.")
    created_at: datetime
    updated_at: datetime
    jobs: dict[str, int] | None = Field(None, description="Job counts by status (single-project reads).")


class ProjectList(BaseModel):
    projects: list[ProjectOut]


class Deleted(BaseModel):
    deleted: int


# ---------------------------------------------------------------- tasks

COMMAND = (
    "Command template its jobs run, e.g. `python train.py --lr {lr}` ({name} placeholders are filled "
    "from the job's parameters over the task's defaults)."
)
SHELL = "The command is a /bin/sh command line (values are quoted)."
DEFAULTS = "Default parameters of its jobs (bounded like `parameters`)."
MAX_PREEMPTED = (
    "Times a job may go back to the queue because it was preempted (no attempt used) before it fails "
    "with 'preempted N times'."
)
INPUTS = "Paths or URIs its jobs read ({param} fields)."
OUTPUTS = "Paths or URIs its jobs write ({param} fields)."
CONCURRENCY_KEY = (
    "Its jobs' concurrency key (given with concurrency_limit): at most concurrency_limit jobs with one "
    "key run at once in the project."
)
CONCURRENCY_LIMIT = "How many jobs with concurrency_key may run at once (given with concurrency_key)."
Command = Annotated[str, Field(max_length=10_000)]
Defaults = Annotated[dict[str, Any], AfterValidator(_bounded_json)]
Attempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)]
RetryDelay = Annotated[float, Field(ge=0, le=7 * 86400)]
Timeout = Annotated[float, Field(gt=0, le=365 * 86400)]


class TaskCreate(Strict):
    name: Name
    project_id: int | Name = Field(description="The project's id or name.")
    required_cpu: Count = 1
    required_accelerators: Count = 0
    required_tags: list[Tag] = Field(default_factory=list)
    command: Command | None = Field(None, description=COMMAND)
    shell: bool = Field(False, description=SHELL)
    defaults: Defaults = Field(default_factory=dict, description=DEFAULTS)
    max_attempts: Attempts = 1
    max_lost: MaxLost = DEFAULT_MAX_LOST
    max_preempted: MaxPreempted = Field(DEFAULT_MAX_PREEMPTED, description=MAX_PREEMPTED)
    retry_delay: RetryDelay = 0.0
    timeout: Timeout | None = None
    inputs: list[PathTemplate] = Field(default_factory=list, max_length=MAX_LIST, description=INPUTS)
    outputs: list[PathTemplate] = Field(default_factory=list, max_length=MAX_LIST, description=OUTPUTS)
    concurrency_key: ConcurrencyKey | None = Field(None, description=CONCURRENCY_KEY)
    concurrency_limit: ConcurrencyLimit | None = Field(None, description=CONCURRENCY_LIMIT)
    exist_ok: bool = Field(
        False,
        description="A task of that name may exist already: the answer is that task as it is (200, "
        "`existed`), and `differs` names each field given here that it has another value of (it is "
        "not changed: PATCH the task to change it).",
    )

    @model_validator(mode="after")
    def _concurrency_pair(self) -> Self:
        check_concurrency_pair(self.concurrency_key, self.concurrency_limit)
        return self


TASK_SETTINGS = tuple(f for f in TaskCreate.model_fields if f not in ("name", "project_id", "exist_ok"))
"""What a task is made of besides its name: what a create compares with an existing task and an
update may change."""


def _kept(what: str) -> Any:
    """A field an update may leave out (it stays as it is) but not give as null."""
    return Field(None, json_schema_extra=_left_out, description=f"{what} Left out: unchanged.")


class TaskUpdate(Strict):
    """What to change of a task, for the jobs submitted from now on (jobs already submitted keep
    the version they were submitted with). A field left out stays as it is."""

    required_cpu: Count = _kept("CPUs each job needs.")
    required_accelerators: Count = _kept("GPUs each job needs.")
    required_tags: list[Tag] = _kept("Tags a worker must have to take its jobs.")
    command: Command | None = Field(None, description=COMMAND + " Null: no template.")
    shell: bool = _kept(SHELL)
    defaults: Defaults = _kept(DEFAULTS + " Replaces them all.")
    max_attempts: Attempts = _kept("Failures of its own a job may have.")
    max_lost: MaxLost = _kept("Times a job may go back to the queue because its worker vanished.")
    max_preempted: MaxPreempted = _kept(MAX_PREEMPTED)
    retry_delay: RetryDelay = _kept("Seconds before a failed job is tried again.")
    timeout: Timeout | None = Field(None, description="Seconds an attempt may run; null: no timeout.")
    inputs: list[PathTemplate] = Field(
        None,  # type: ignore[assignment]
        max_length=MAX_LIST,
        json_schema_extra=_left_out,
        description=INPUTS + " Left out: unchanged.",
    )
    outputs: list[PathTemplate] = Field(
        None,  # type: ignore[assignment]
        max_length=MAX_LIST,
        json_schema_extra=_left_out,
        description=OUTPUTS + " Left out: unchanged.",
    )
    concurrency_key: ConcurrencyKey | None = Field(
        None, description=CONCURRENCY_KEY + " Null with a null limit: no pair."
    )
    concurrency_limit: ConcurrencyLimit | None = Field(None, description=CONCURRENCY_LIMIT)

    @model_validator(mode="after")
    def _concurrency_pair(self) -> Self:
        given = {"concurrency_key", "concurrency_limit"} & self.model_fields_set
        if len(given) == 1:
            (one,) = given
            other = "concurrency_limit" if one == "concurrency_key" else "concurrency_key"
            raise PydanticCustomError(
                "missing", "{given} needs {field} too (they change together)", {"field": other, "given": one}
            )
        if given:
            check_concurrency_pair(self.concurrency_key, self.concurrency_limit)
        return self


class TaskDifference(BaseModel):
    existing: Any = Field(description="The existing task's value (kept).")
    asked: Any = Field(description="The value the request gave.")


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
    max_preempted: int = DEFAULT_MAX_PREEMPTED
    retry_delay: float
    timeout: float | None
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    version: int = Field(
        1, description="Its current version: jobs submitted now get it; each change adds one."
    )
    created_at: datetime
    updated_at: datetime | None = Field(None, description="When it last changed (null: never).")
    existed: bool | None = Field(
        None, description="A create with exist_ok found the task already there (answered 200)."
    )
    differs: dict[str, TaskDifference] | None = Field(
        None,
        description="A create with exist_ok: each field given that the existing task has another "
        "value of (kept as it is).",
    )


class TaskList(BaseModel):
    tasks: list[TaskOut]


class TaskVersionOut(BaseModel):
    version: int
    command: str | None
    defaults: dict[str, Any]
    shell: bool
    settings: dict[str, Any] = Field(
        description="Its other settings at that version: resources, retries, timeout, inputs, "
        "outputs, concurrency pair."
    )
    actor: str | None = Field(None, description="Who made that version (null: not recorded).")
    created_at: datetime


class TaskVersionList(BaseModel):
    task: str
    version: int = Field(description="The task's current version.")
    versions: list[TaskVersionOut] = Field(description="Oldest first.")


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


class GroupRetry(Strict):
    """Which of a group's jobs go back in the queue: those of the kinds set true; none set true
    (or no body at all): every failed, lost and cancelled one."""

    failed: bool = Field(False, description="FAILED jobs whose last attempt was not lost.")
    cancelled: bool = Field(False, description="CANCELLED jobs.")
    lost: bool = Field(False, description="FAILED jobs whose last attempt was lost (worker gone).")
    downstream: bool = Field(
        False,
        description="Also rerun the jobs downstream of those (transitively, in any group) that "
        "already ran over their results: they wait for the new run.",
    )


class GroupRetried(GroupAction):
    ids: list[int] = Field(
        description="Every job put back in the queue: the chosen ones, the failed or cancelled jobs "
        "upstream of them, what they had blocked and the dependants rerun."
    )
    downstream: list[int] = Field(
        description="Those of them that already ran downstream and run again (with downstream)."
    )
