"""The one definition of a job's statuses, outcomes and submitted fields, shared by the server, the
SDK and the CLI (the database's own lists are checked against these by the tests)."""

from __future__ import annotations

from typing import Final, Literal, get_args

JobStatus = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "BLOCKED"]
"""PENDING → RUNNING → COMPLETED | FAILED | CANCELLED; BLOCKED while a dependency failed or was
cancelled. A PENDING job with unmet dependencies is never handed out."""
STATUSES: Final[tuple[JobStatus, ...]] = get_args(JobStatus)
TERMINAL: Final[frozenset[str]] = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
"""Statuses a job stays in until someone retries it."""
FINISHED: Final[frozenset[str]] = TERMINAL | {"BLOCKED"}
"""Statuses a job stays in until someone acts: waiting for a job (or following its log) ends there."""

DependencyCondition = Literal["success", "finished", "failure"]
"""When a dependency is met: ``success`` when its upstream COMPLETED (the default), ``finished``
when it reached a state it does not leave by itself (COMPLETED, FAILED, CANCELLED, BLOCKED),
``failure`` when it FAILED or was CANCELLED. A dependency that can no longer be met (``success``:
the upstream FAILED, was CANCELLED or is BLOCKED; ``failure``: it COMPLETED or is BLOCKED) blocks
the job that waits for it."""
CONDITIONS: Final[tuple[DependencyCondition, ...]] = get_args(DependencyCondition)

ReportStatus = Literal["COMPLETED", "FAILED", "CANCELLED"]
"""What a worker reports about an attempt it ran."""

Outcome = Literal["COMPLETED", "FAILED", "CANCELLED", "PREEMPTED", "LOST"]
"""How an attempt ended, as the state machine (``wn_end_attempts``) takes it: a worker's report
(COMPLETED, FAILED, CANCELLED, or PREEMPTED when it hands a job back), or LOST when its worker
vanished (lease expired, deregistered, claim never received)."""


WorkerStatus = Literal["ONLINE", "LOST", "OFFLINE"]
"""A worker's status, as the server derives it (``wn_worker_status``): ONLINE, LOST when its last
heartbeat is older than its lease (crashed, killed, cut off; not during the recovery grace after
an outage of the queue), OFFLINE once it left. A LOST worker that heartbeats again is ONLINE."""
WORKER_STATUSES: Final[tuple[WorkerStatus, ...]] = get_args(WorkerStatus)


def outcome_of(status: ReportStatus, requeue: bool = False) -> Outcome:
    """The state machine's outcome for a worker's report."""
    if requeue and status == "FAILED":
        return "PREEMPTED"
    return status


_JOB_NEEDS_AND_RETRIES: Final[tuple[str, ...]] = (
    "required_cpu",
    "required_accelerators",
    "required_tags",
    "max_attempts",
    "max_lost",
    "retry_delay",
    "timeout",
)
"""What a job needs of a worker and how it is retried, in the order the lists below give them."""

_JOB_CONCURRENCY: Final[tuple[str, ...]] = ("concurrency_key", "concurrency_limit")
"""At most ``concurrency_limit`` jobs with one ``concurrency_key`` run at once in a project; a job
gives both or neither (then it takes its task's pair)."""

_JOB_PREEMPTION: Final[tuple[str, ...]] = ("max_preempted",)
"""How often the job may be handed back (preempted, its worker stopped) without using an attempt
before it fails with "preempted N times"."""

JOB_SUBMIT_FIELDS: Final[tuple[str, ...]] = (
    "name",
    "task",
    "parameters",
    "priority",
    "depends",
    *_JOB_NEEDS_AND_RETRIES,
    "inputs",
    "outputs",
    "group",
    *_JOB_CONCURRENCY,
    *_JOB_PREEMPTION,
    "unique_key",
    "not_before",
    "delay",
)
"""What a user may say about a job when submitting it (REST body, SDK ``Job``, CLI ``jobs add``).
Every field but name, task and depends is stored as given or, when left out, taken from the task."""

JOB_ENTRY_FIELDS: Final[tuple[str, ...]] = (
    "name",
    "task",
    "parameters",
    "priority",
    *_JOB_NEEDS_AND_RETRIES,
    "dep_ids",
    "dep_idx",
    "inputs",
    "outputs",
    "group_id",
    *_JOB_CONCURRENCY,
    *_JOB_PREEMPTION,
    "dep_ids_on",
    "dep_idx_on",
    "dep_groups",
    "dep_groups_on",
    "unique_key",
    "not_before",
    "delay",
)
"""The attributes of the database type ``wn_job_entry`` that ``wn_enqueue`` reads, in order."""

Role = Literal["admin", "operator", "submitter", "worker", "viewer"]
"""A token's role: a bundle of permissions (see docs/security.md)."""
ROLES: Final[tuple[Role, ...]] = get_args(Role)

DEFAULT_MAX_ATTEMPTS: Final = 1
DEFAULT_MAX_LOST: Final = 3
"""How often a job may go back to the queue because its worker vanished before it fails."""
DEFAULT_MAX_PREEMPTED: Final = 10
"""How often a job may go back to the queue because it was preempted (or its worker stopped it to
hand it back) before it fails: ``max_preempted`` N allows N requeues, the next preemption fails it."""
