"""Models of registered workers and their heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
)

from ....limits import MAX_LIST, MAX_NAME
from ....models import WorkerStatus
from .base import INT32, Count, Id, ProjectKey, Strict, Tag

# ---------------------------------------------------------------- workers


class WorkerRegister(Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    entity: str = Field("", max_length=MAX_NAME)
    host: str = Field("", max_length=500)
    pid: Annotated[int, Field(ge=0, le=INT32)] | None = None
    project: ProjectKey | None = Field(None, description="The project it works for (id or name).")
    projects: list[ProjectKey] | None = Field(
        None, min_length=1, max_length=MAX_LIST, description="The projects it works for (ids or names)."
    )
    all_projects: bool = Field(False, description="It works for every project its token may work on.")
    cpu: Count = 0
    accelerators: Count = 0
    tags: list[Tag] = Field(default_factory=list)
    deadline: datetime | None = Field(
        None,
        description="When the worker's time ends (its --deadline, or its SLURM allocation's end; an ISO "
        "time, with a zone or in UTC): it claims only jobs whose timeout fits in what is left. Null: no end.",
    )


class WorkerOut(BaseModel):
    id: int
    project_id: int | None
    project_ids: list[int] | None = Field(None, description="The projects of a worker that serves several.")
    all_projects: bool = False
    name: str
    entity: str
    host: str
    pid: int | None
    cpu: int
    accelerators: int
    tags: list[str]
    status: WorkerStatus = Field(
        description="ONLINE; LOST when its last heartbeat is older than its lease (crashed, killed, "
        "cut off: not during the recovery grace after an outage of the queue; ONLINE again at its "
        "next heartbeat); OFFLINE once it left."
    )
    registered_at: datetime
    last_seen: datetime = Field(description="Its last heartbeat (or registration, or leaving).")
    lease_seconds: float = Field(
        description="The lease it was granted: LOST once its last heartbeat is older than this."
    )
    deadline: datetime | None = Field(None, description="When the worker's time ends (null: no end).")
    running: list[int] = Field(default_factory=list)
    used_cpu: int = 0
    used_accelerators: int = 0


class WorkerRegistered(WorkerOut):
    lease_seconds: float
    heartbeat_interval: float
    fence_margin: float = Field(
        description="Seconds before a lease runs out that a worker which could not renew it suspends "
        "the attempt's processes (resumed when a heartbeat confirms the lease, killed when it is lost)."
    )
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


class Lease(BaseModel):
    id: int
    attempt: int


class HeartbeatOut(BaseModel):
    cancel: list[int] = Field(
        description="Ids of this worker's jobs to stop now: cancelled, or requeued by an operator "
        "(GET /workers/{worker_id}/events tells which)."
    )
    lease_seconds: float
    leases: list[Lease] = Field(
        description="The running attempts this worker holds, whose leases the heartbeat extended: "
        "an attempt it runs that is not listed is no longer its own (stop it, report nothing)."
    )


class WorkerStop(BaseModel):
    id: int
    attempt: int = Field(description="The running attempt to stop (a report about it carries it).")
    stop: Literal["cancel", "requeue"] = Field(
        description="cancel: the job was cancelled; requeue: an operator handed it back to the queue "
        "(its attempt ends PREEMPTED whatever the report says, unless COMPLETED)."
    )


class WorkerEvents(BaseModel):
    cancel: list[int] = Field(description="Ids of the jobs among ``jobs`` that were cancelled.")
    requeue: list[int] = Field(description="Ids of the jobs among ``jobs`` that an operator requeued.")
    jobs: list[WorkerStop] = Field(
        description="The worker's running attempts it is asked to stop and that ``seen`` did not list "
        "(empty when the wait ended without any)."
    )


class Deregistered(BaseModel):
    released: int = Field(description="Running jobs handed back to the queue.")
