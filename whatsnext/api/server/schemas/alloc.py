"""Models of automatic allocation: the demand for workers, allocation queues, the lease of a queue's
loop and the allocations it submits. Durations are seconds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from ....limits import MAX_COUNT, MAX_DESCRIPTION, MAX_ERROR, MAX_LIST, MAX_NAME, MAX_REASON, MAX_TIME_LEFT
from .base import INT32, Count, Name, ProjectKey, Strict, _bounded_json

Backend = Literal["slurm", "runai"]
AllocState = Literal["QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED"]
ALLOC_STATES: tuple[str, ...] = ("QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED")
ENDED: frozenset[str] = frozenset({"FINISHED", "FAILED", "CANCELLED"})

Seconds = Annotated[float, Field(gt=0, le=MAX_TIME_LEFT)]
"""A duration in seconds, above 0 (at most ten years)."""
Workers = Annotated[int, Field(ge=1, le=MAX_COUNT)]
PerMinute = Annotated[int, Field(ge=1, le=INT32)]
Arg = Annotated[str, Field(max_length=MAX_REASON)]
"""One argument handed to the scheduler's command (an sbatch or runai option)."""
Option = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]

# ---------------------------------------------------------------- demand


class DemandShape(BaseModel):
    project: str
    cpu: int = Field(description="CPUs each job of the shape needs.")
    gpus: int = Field(description="GPUs each job of the shape needs.")
    tags: list[str] = Field(description="Tags each job of the shape needs (sorted).")
    timeout: float | None = Field(description="The jobs' timeout in seconds (null: none).")
    pending: int = Field(description="Eligible pending jobs of this shape.")
    unserved: int = Field(
        description="Of those, how many no live worker could take (no ONLINE worker serving the project, "
        "heard from recently, whose CPUs, GPUs and tags in all fit and whose time left, if it has an end, "
        "is at least the timeout): 0 or all of them."
    )


class Demand(BaseModel):
    shapes: list[DemandShape]
    pending: int = Field(description="Eligible pending jobs, all shapes together.")
    unserved: int = Field(description="Of those, how many no live worker could take.")


# ---------------------------------------------------------------- queues


class AllocQueueOptions(Strict):
    """Backend options of a queue (all optional)."""

    partition: Option | None = Field(None, description="SLURM partition (sbatch --partition).")
    account: Option | None = Field(None, description="SLURM account (sbatch --account).")
    gpus_per_worker: Count | None = Field(None, description="GPUs of each worker of an allocation.")
    cpus_per_worker: Count | None = Field(None, description="CPUs of each worker of an allocation.")
    sbatch_args: list[Arg] | None = Field(None, max_length=MAX_LIST, description="More sbatch options.")
    setup: Annotated[str, Field(max_length=MAX_DESCRIPTION)] | None = Field(
        None, description="Shell lines run before the worker starts (module load ...)."
    )
    runai_project: Option | None = Field(None, description="RUN:AI project (runai submit --project).")
    image: Annotated[str, Field(min_length=1, max_length=MAX_REASON)] | None = Field(
        None, description="Container image of a RUN:AI workload."
    )
    runai_args: list[Arg] | None = Field(None, max_length=MAX_LIST, description="More runai submit options.")


def _within_max(per_alloc: int | None, max_workers: int | None) -> None:
    if per_alloc is not None and max_workers is not None and per_alloc > max_workers:
        raise PydanticCustomError(
            "too_large",
            "workers_per_alloc ({per_alloc}) cannot exceed max_workers ({max_workers})",
            {"field": "workers_per_alloc", "per_alloc": per_alloc, "max_workers": max_workers},
        )


ProjectKeys = Annotated[list[ProjectKey], Field(min_length=1, max_length=MAX_LIST)]
WorkerArgs = Annotated[str, Field(max_length=MAX_DESCRIPTION)]


class AllocQueueCreate(Strict):
    name: Name
    backend: Backend
    projects: ProjectKeys = Field(description="The projects whose demand it serves (ids or names).")
    worker_args: WorkerArgs = Field("", description="Options added to each `whatsnext worker` it starts.")
    time_limit: Seconds = Field(description="Each allocation's time limit (s).")
    max_workers: Workers = Field(description="Workers queued plus running, at most.")
    workers_per_alloc: Workers = Field(1, description="Workers in one allocation.")
    idle_timeout: Seconds = Field(300.0, description="A worker with nothing to do exits after this (s).")
    max_submits_per_minute: PerMinute = Field(4, description="Submissions a minute, at most.")
    options: AllocQueueOptions = Field(default_factory=AllocQueueOptions, description="Backend options.")

    @model_validator(mode="after")
    def _per_alloc(self) -> Self:
        _within_max(self.workers_per_alloc, self.max_workers)
        return self


class AllocQueueUpdate(Strict):
    """Any field of a queue but its name and backend (absent: kept)."""

    projects: ProjectKeys | None = None
    worker_args: WorkerArgs | None = None
    time_limit: Seconds | None = None
    max_workers: Workers | None = None
    workers_per_alloc: Workers | None = None
    idle_timeout: Seconds | None = None
    max_submits_per_minute: PerMinute | None = None
    options: AllocQueueOptions | None = Field(None, description="Replaces the queue's backend options.")
    paused: bool | None = Field(None, description="A paused queue gets no new allocations.")
    last_error: Annotated[str, Field(max_length=MAX_ERROR)] | None = Field(
        None, description="What went wrong last (the loop reports it); null clears it."
    )

    @model_validator(mode="after")
    def _per_alloc(self) -> Self:
        _within_max(self.workers_per_alloc, self.max_workers)
        return self


class AllocationOut(BaseModel):
    id: int
    queue: str
    name: str
    external_id: str | None = Field(description="The scheduler's handle (SLURM job id, RUN:AI workload).")
    state: AllocState
    reason: str | None = Field(description="The scheduler's reason for the state (Priority, Resources ...).")
    workers: int
    time_limit: float
    shape: dict[str, Any] = Field(description="The demand it was submitted for.")
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime


class AllocQueueOut(BaseModel):
    id: int
    name: str
    backend: Backend
    projects: list[str] = Field(description="The names of the projects it serves.")
    project_ids: list[int]
    worker_args: str
    time_limit: float
    max_workers: int
    workers_per_alloc: int
    idle_timeout: float
    max_submits_per_minute: int
    options: dict[str, Any]
    paused: bool
    last_error: str | None
    last_error_at: datetime | None
    loop_holder: str | None = Field(description="Who runs the queue's loop now (host:pid).")
    loop_expires_at: datetime | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    allocations: dict[AllocState, int] = Field(description="Its allocations counted by state.")


class AllocQueueDetail(AllocQueueOut):
    recent: list[AllocationOut] = Field(description="Its latest allocations, newest first.")


class AllocQueueList(BaseModel):
    queues: list[AllocQueueOut]


# ---------------------------------------------------------------- the loop's lease


Holder = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class AllocLeaseRequest(Strict):
    holder: Holder = Field(description="Who takes the lease (host:pid).")
    seconds: Annotated[float, Field(gt=0, le=86400)] = Field(60.0, description="How long it lasts.")


class AllocLeaseOut(BaseModel):
    holder: str
    expires_at: datetime


class AllocLeaseReleased(BaseModel):
    released: int = Field(description="1 when the holder's lease was given up, 0 when it held none.")


# ---------------------------------------------------------------- allocations


def _check_shape(value: dict[str, Any], info: Any) -> dict[str, Any]:
    return _bounded_json(value, info)


class AllocationCreate(Strict):
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
    external_id: Annotated[str, Field(min_length=1, max_length=MAX_REASON)] | None = None
    workers: Workers = 1
    time_limit: Seconds
    shape: Annotated[dict[str, Any], AfterValidator(_check_shape)] = Field(default_factory=dict)
    state: AllocState = "QUEUED"
    reason: Annotated[str, Field(max_length=MAX_REASON)] | None = None


class AllocationUpdate(Strict):
    state: AllocState | None = None
    reason: Annotated[str, Field(max_length=MAX_REASON)] | None = Field(None, description="Null clears it.")
    external_id: Annotated[str, Field(min_length=1, max_length=MAX_REASON)] | None = None


class AllocationList(BaseModel):
    allocations: list[AllocationOut]
