"""The allocator's decisions, without I/O: which demand fits a queue's workers, how many
allocations to submit for it, which allocations not yet started to cancel, how fast submissions
may go and how long to wait after one failed.

A queue's worker offers ``cpus_per_worker`` CPUs (1 when not set: what SLURM gives a task by
default), ``gpus_per_worker`` GPUs (0 when not set) and the tags of its ``worker_args``
(``--tags a,b``). A demand shape fits when its jobs' CPUs, GPUs and tags fit one worker and their
``timeout`` fits the queue's ``time_limit`` less :data:`START_MARGIN` (a worker claims a job only
when its timeout fits in the time it has left, less its grace and its claim's wait).
"""

from __future__ import annotations

import math
import shlex
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

START_MARGIN = 60.0
"""Seconds of an allocation's time limit a job's timeout may not use: the worker's start, its
grace (10 s by default) and its claim's wait (up to 30 s)."""
FIRST_BACKOFF = 30.0
"""Seconds to wait after a first failed submission before the next; each failure doubles it."""
MAX_BACKOFF = 600.0
"""The longest wait between failed submissions (with the first at 30 s: 5 tries in 5 minutes at most)."""
STARTING = 60.0
"""Seconds after an allocation started during which its workers count as on their way (they are
starting: not registered yet, they claim nothing), not as busy."""
ACTIVE = ("QUEUED", "RUNNING")
"""Allocation states that hold workers (waiting or running)."""


# ---------------------------------------------------------------- a queue's workers


@dataclass(frozen=True)
class QueueSpec:
    """What the allocator needs to know of a queue (from the server's answer)."""

    name: str
    backend: str
    projects: tuple[str, ...]
    time_limit: float
    max_workers: int
    workers_per_alloc: int = 1
    idle_timeout: float = 300.0
    max_submits_per_minute: int = 4
    worker_args: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    paused: bool = False

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> QueueSpec:
        return cls(
            name=str(data["name"]),
            backend=str(data["backend"]),
            projects=tuple(str(p) for p in data.get("projects") or ()),
            time_limit=float(data["time_limit"]),
            max_workers=int(data["max_workers"]),
            workers_per_alloc=int(data.get("workers_per_alloc") or 1),
            idle_timeout=float(data.get("idle_timeout") or 300.0),
            max_submits_per_minute=int(data.get("max_submits_per_minute") or 4),
            worker_args=str(data.get("worker_args") or ""),
            options=dict(data.get("options") or {}),
            paused=bool(data.get("paused")),
        )

    @property
    def cpus(self) -> int:
        """CPUs of one worker."""
        return int(self.options.get("cpus_per_worker") or 1)

    @property
    def gpus(self) -> int:
        """GPUs of one worker."""
        return int(self.options.get("gpus_per_worker") or 0)

    @property
    def tags(self) -> frozenset[str]:
        """The tags of one worker (``--tags`` in ``worker_args``)."""
        return frozenset(worker_tags(self.worker_args))


def worker_tags(worker_args: str) -> list[str]:
    """The tags ``--tags a,b`` (or ``--tags=a,b``; the last one given) of a worker command line."""
    try:
        words = shlex.split(worker_args)
    except ValueError:
        return []
    tags: list[str] = []
    for i, word in enumerate(words):
        if word == "--tags" and i + 1 < len(words):
            tags = [t for t in words[i + 1].split(",") if t]
        elif word.startswith("--tags="):
            tags = [t for t in word.split("=", 1)[1].split(",") if t]
    return tags


# ---------------------------------------------------------------- demand


@dataclass(frozen=True)
class Shape:
    """Pending jobs of one project that need the same CPUs, GPUs, tags and time (``GET /demand``)."""

    project: str
    cpu: int
    gpus: int
    tags: tuple[str, ...]
    timeout: float | None
    pending: int
    unserved: int

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Shape:
        timeout = data.get("timeout")
        return cls(
            project=str(data["project"]),
            cpu=int(data.get("cpu") or 0),
            gpus=int(data.get("gpus") or 0),
            tags=tuple(sorted(data.get("tags") or ())),
            timeout=None if timeout is None else float(timeout),
            pending=int(data.get("pending") or 0),
            unserved=int(data.get("unserved") or 0),
        )

    def describe(self) -> str:
        parts = [f"{self.cpu} CPU", f"{self.gpus} GPU"]
        if self.tags:
            parts.append("tags " + ",".join(self.tags))
        parts.append("no timeout" if self.timeout is None else f"timeout {self.timeout:g} s")
        return f"{self.project} ({', '.join(parts)})"

    def record(self, queue: QueueSpec, jobs: int) -> dict[str, Any]:
        """The ``shape`` of an allocation submitted for ``jobs`` jobs of this shape: what its
        workers offer (CPUs, GPUs, tags: any job within them may run there, which is how the
        server tells a pending job an allocation was requested for it), the demand's project and
        timeout, and how many jobs it was for."""
        return {
            "project": self.project,
            "cpu": queue.cpus,
            "gpus": queue.gpus,
            "tags": sorted(queue.tags),
            "timeout": self.timeout,
            "jobs": jobs,
        }


def misfit(shape: Shape, queue: QueueSpec) -> str | None:
    """Why the queue's workers cannot run jobs of ``shape`` (None: they can)."""
    if shape.timeout is not None and shape.timeout > queue.time_limit - START_MARGIN:
        return (
            f"their timeout ({shape.timeout:g} s) does not fit the queue's time limit "
            f"({queue.time_limit:g} s, less {START_MARGIN:g} s for the worker's start)"
        )
    if shape.gpus > queue.gpus:
        return f"they need {shape.gpus} GPUs, a worker of the queue has {queue.gpus} (gpus_per_worker)"
    if shape.cpu > queue.cpus:
        return f"they need {shape.cpu} CPUs, a worker of the queue has {queue.cpus} (cpus_per_worker)"
    missing = sorted(set(shape.tags) - queue.tags)
    if missing:
        return f"they need tags {', '.join(missing)}, the queue's workers have {', '.join(sorted(queue.tags)) or 'none'}"
    return None


def jobs_per_worker(shape: Shape, queue: QueueSpec) -> int:
    """How many jobs of ``shape`` one worker of the queue runs at once (at least 1)."""
    fits = [queue.cpus // shape.cpu if shape.cpu > 0 else math.inf]
    if shape.gpus > 0:
        fits.append(queue.gpus // shape.gpus)
    best = min(fits)
    return max(1, int(best) if best != math.inf else 1_000_000)


# ---------------------------------------------------------------- the plan


@dataclass
class Submission:
    """One allocation to submit: its workers and the demand it is for."""

    workers: int
    shape: Shape
    jobs: int


@dataclass
class Plan:
    """What one pass does for a queue, and why."""

    submit: list[Submission]
    cancel: list[dict[str, Any]]
    """QUEUED allocations to cancel (newest first)."""
    unfit: list[tuple[Shape, str]]
    """Pending jobs no worker of the queue could run, and why."""
    wanted: int
    """Workers the pending fitting jobs need."""
    queued: int
    """Workers in allocations waiting to start."""
    running: int
    """Workers in running allocations."""
    room: int
    """Workers the queue may still add (max_workers less queued and running)."""
    pending: int
    """Fitting pending jobs."""
    unserved: int
    """Fitting pending jobs no live worker could take."""

    def why(self) -> str:
        """The counts behind the plan, for the log and ``--dry-run``."""
        return (
            f"pending {self.pending} (unserved {self.unserved}) fitting jobs want {self.wanted} "
            f"worker(s); queued {self.queued}, running {self.running}, room for {self.room}"
        )

    def unfit_message(self) -> str | None:
        """One line naming the jobs no allocation is submitted for, and why (None: there are none)."""
        if not self.unfit:
            return None
        return "; ".join(
            f"{shape.pending} pending job(s) of {shape.describe()} get no allocation: {reason}"
            for shape, reason in self.unfit
        )


def workers_in(allocations: Iterable[Mapping[str, Any]], state: str) -> int:
    return sum(int(a.get("workers") or 1) for a in allocations if a.get("state") == state)


def starting(allocation: Mapping[str, Any], now: float) -> bool:
    """Whether a running allocation started less than :data:`STARTING` seconds before ``now``."""
    started = allocation.get("started_at")
    if allocation.get("state") != "RUNNING" or not started:
        return False
    try:
        return now - datetime.fromisoformat(str(started)).timestamp() < STARTING
    except ValueError:
        return False


def plan(
    queue: QueueSpec,
    shapes: Sequence[Shape],
    allocations: Sequence[Mapping[str, Any]],
    now: float | None = None,
) -> Plan:
    """How many allocations to submit for the queue's demand and which to cancel.

    The fitting jobs still pending want workers: a job pending at a pass is one no live worker has
    room for now (a worker with room claims it at once), whether no live worker could ever take it
    (``unserved``: those come first) or all that could are busy. Workers queued at the scheduler
    count against that want (a pass never submits twice for the same jobs); running workers are
    busy with what runs, except in the first :data:`STARTING` seconds of their allocation (given
    ``now``), when they count as on their way. Workers queued plus running never exceed
    ``max_workers``. When no fitting job is pending any more, the allocations that have not
    started are cancelled (those running end by their idle timeout).
    """
    fitting: list[Shape] = []
    unfit: list[tuple[Shape, str]] = []
    for shape in shapes:
        if shape.pending <= 0:
            continue
        reason = misfit(shape, queue)
        if reason is None:
            fitting.append(shape)
        else:
            unfit.append((shape, reason))
    queued = workers_in(allocations, "QUEUED")
    running = workers_in(allocations, "RUNNING")
    room = max(0, queue.max_workers - queued - running)
    ordered = sorted(fitting, key=lambda s: (-s.unserved, -s.pending))
    needs = [(shape, math.ceil(shape.pending / jobs_per_worker(shape, queue))) for shape in ordered]
    wanted = sum(n for _, n in needs)
    pending = sum(s.pending for s in fitting)
    submit: list[Submission] = []
    on_the_way = sum(int(a.get("workers") or 1) for a in allocations if now is not None and starting(a, now))
    covered = queued + on_the_way  # workers on their way serve the first needs
    per_alloc = max(1, queue.workers_per_alloc)
    for shape, need in needs:
        left = need - min(covered, need)
        covered -= min(covered, need)
        jobs_left = min(shape.pending, left * jobs_per_worker(shape, queue))
        while left > 0 and room >= per_alloc:
            jobs = min(jobs_left, per_alloc * jobs_per_worker(shape, queue))
            submit.append(Submission(workers=per_alloc, shape=shape, jobs=jobs))
            jobs_left -= jobs
            left -= per_alloc
            room -= per_alloc
    cancel: list[dict[str, Any]] = []
    if pending == 0:
        waiting = [dict(a) for a in allocations if a.get("state") == "QUEUED"]
        cancel = sorted(waiting, key=lambda a: int(a.get("id") or 0), reverse=True)
    return Plan(
        submit=submit,
        cancel=cancel,
        unfit=unfit,
        wanted=wanted,
        queued=queued,
        running=running,
        room=max(0, queue.max_workers - queued - running),
        pending=pending,
        unserved=sum(s.unserved for s in fitting),
    )


# ---------------------------------------------------------------- pace


def backoff_delay(failures: int, first: float = FIRST_BACKOFF, cap: float = MAX_BACKOFF) -> float:
    """Seconds to wait after ``failures`` failed submissions in a row (0 after none): ``first``,
    doubling with each failure, at most ``cap``."""
    if failures <= 0:
        return 0.0
    return min(cap, first * 2 ** min(failures - 1, 60))


class SubmitGate:
    """When a queue may submit: at most ``per_minute`` submissions in any minute, and after a
    failed one, not before its backoff (:func:`backoff_delay`) has passed."""

    def __init__(
        self,
        per_minute: int,
        *,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        clock: Callable[[], float],
    ) -> None:
        self.per_minute = max(1, per_minute)
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.clock = clock
        self.times: deque[float] = deque()
        """When the submissions of the last minute were made."""
        self.failures = 0
        """Failed submissions in a row."""
        self.retry_at = 0.0
        """No submission before this time (after a failure)."""

    def _forget_old(self, now: float) -> None:
        while self.times and self.times[0] <= now - 60.0:
            self.times.popleft()

    def allowed(self) -> tuple[int, str | None]:
        """How many submissions may be made now, and why not more (None: no bound but the plan's)."""
        now = self.clock()
        if now < self.retry_at:
            return (
                0,
                f"backing off after {self.failures} failed submission(s): next try in {self.retry_at - now:.0f} s",
            )
        self._forget_old(now)
        left = self.per_minute - len(self.times)
        if left <= 0:
            return 0, f"{self.per_minute} submission(s) in the last minute (max_submits_per_minute)"
        if self.failures:
            return 1, "one try after a failed submission"
        return left, None

    def submitted(self, ok: bool) -> float:
        """Count a submission; returns the backoff it starts (0 after a success)."""
        now = self.clock()
        self.times.append(now)
        if ok:
            self.failures = 0
            self.retry_at = 0.0
            return 0.0
        self.failures += 1
        delay = backoff_delay(self.failures, self.first_backoff, self.max_backoff)
        self.retry_at = now + delay
        return delay

    def seed(self, recent: Iterable[tuple[float, bool]]) -> None:
        """Start from the submissions a previous loop made (``(when, ok)``, any order, times on
        this gate's clock): its submissions of the last minute count, and its failures in a row
        keep their backoff, so a loop that restarts does not submit faster."""
        for when, ok in sorted(recent):
            self.times.append(when)
            if ok:
                self.failures, self.retry_at = 0, 0.0
            else:
                self.failures += 1
                self.retry_at = when + backoff_delay(self.failures, self.first_backoff, self.max_backoff)
        self._forget_old(self.clock())


__all__ = [
    "ACTIVE",
    "FIRST_BACKOFF",
    "MAX_BACKOFF",
    "STARTING",
    "START_MARGIN",
    "Plan",
    "QueueSpec",
    "Shape",
    "Submission",
    "SubmitGate",
    "backoff_delay",
    "jobs_per_worker",
    "misfit",
    "plan",
    "worker_tags",
]
