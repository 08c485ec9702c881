"""Models of projects, tasks and groups."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
)

from ....limits import MAX_ATTEMPTS, MAX_DESCRIPTION, MAX_LIST
from ....models import DEFAULT_MAX_LOST
from .base import Count, MaxLost, Name, PathTemplate, ProjectStatus, Strict, Tag, _bounded_json

# ---------------------------------------------------------------- projects


class ProjectCreate(Strict):
    name: Name = Field(description="Unique project name (not all digits: a number addresses an id).")
    description: str = Field("", max_length=MAX_DESCRIPTION)
    strict_tasks: bool = Field(
        False, description="Refuse jobs for tasks the project does not have (instead of creating them)."
    )


class ProjectUpdate(Strict):
    name: Name | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
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
    max_attempts: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] = 1
    max_lost: MaxLost = DEFAULT_MAX_LOST
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
