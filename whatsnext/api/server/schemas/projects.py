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


class ProjectCreate(Strict):
    name: Name = Field(description="Unique project name (not all digits: a number addresses an id).")
    description: str = Field("", max_length=MAX_DESCRIPTION)
    strict_tasks: bool = Field(
        False, description="Refuse jobs for tasks the project does not have (instead of creating them)."
    )


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
    max_attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] = 1
    max_lost: MaxLost = DEFAULT_MAX_LOST
    max_preempted: MaxPreempted = Field(
        DEFAULT_MAX_PREEMPTED,
        description="Times a job may go back to the queue because it was preempted (no attempt used) "
        "before it fails with 'preempted N times'.",
    )
    retry_delay: Annotated[float, Field(ge=0, le=7 * 86400)] = 0.0
    timeout: Annotated[float, Field(gt=0, le=365 * 86400)] | None = None
    inputs: list[PathTemplate] = Field(
        default_factory=list, max_length=MAX_LIST, description="Paths or URIs its jobs read ({param} fields)."
    )
    outputs: list[PathTemplate] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="Paths or URIs its jobs write ({param} fields).",
    )
    concurrency_key: ConcurrencyKey | None = Field(
        None,
        description="Its jobs' concurrency key (given with concurrency_limit): at most concurrency_limit "
        "jobs with one key run at once in the project.",
    )
    concurrency_limit: ConcurrencyLimit | None = Field(
        None, description="How many jobs with concurrency_key may run at once (given with concurrency_key)."
    )

    @model_validator(mode="after")
    def _concurrency_pair(self) -> Self:
        check_concurrency_pair(self.concurrency_key, self.concurrency_limit)
        return self


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
    created_at: datetime


class TaskList(BaseModel):
    tasks: list[TaskOut]


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
