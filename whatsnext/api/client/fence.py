"""Fenced leases: a job runs only while its worker knows its lease is still its own.

The server leases each running attempt to its worker for ``lease_seconds`` and the worker renews
the leases with heartbeats. For each running attempt the worker keeps, on its monotonic clock,
when its lease was last *confirmed*: when the claim that handed it out was answered, then the
sending time of each heartbeat whose answer says the attempt is still this worker's. Its *fence*
is that time plus the lease minus a margin (``fence_margin``, announced by the server at
registration, else a quarter of the lease and at least 1 s).

Past its fence an attempt may have been given to another worker, so the worker suspends it
(SIGSTOP to the job's process group); a later heartbeat that confirms the lease resumes it
(SIGCONT); a heartbeat that says the attempt is no longer this worker's makes the worker kill it
and report nothing for it. A worker cannot tell an outage of the queue from its own partition:
either way no two attempts of a job run at once, and an outage costs a pause, not a re-run.

:class:`Fences` is the bookkeeping (no clock of its own, no I/O); :class:`LeaseGuard` applies it
on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from ...wire import fence_margin as wire_fence_margin

log = structlog.get_logger("whatsnext.worker")

Attempt = tuple[int, int]
"""A running attempt: (job id, attempt number)."""


def fence_margin(lease: float, announced: float | None = None) -> float:
    """How long before its lease would expire an unconfirmed attempt is suspended: the server's
    ``fence_margin`` when it announces one, else what a server announces (:func:`wire.fence_margin`);
    never the whole lease (a fence at or before the confirmation would suspend every job at once)."""
    margin = announced if announced is not None and announced > 0 else wire_fence_margin(lease)
    return min(margin, lease * 0.9)


def held_attempts(answer: dict[str, Any]) -> set[Attempt] | None:
    """The attempts a heartbeat's answer says are this worker's (their leases extended), or None
    when the server does not say (then a successful heartbeat confirms every lease)."""
    leases = answer.get("leases")
    if leases is None:
        return None
    return {(int(x["id"]), int(x["attempt"])) for x in leases}


@dataclass
class Plan:
    """What the worker must do now to keep its running attempts inside their leases."""

    suspend: list[Attempt]
    """Attempts past their fence that still run."""
    next_check: float | None
    """When the next running attempt reaches its fence (monotonic seconds; None: none will)."""


class Fences:
    """When each running attempt's lease was last confirmed, and which attempts are suspended."""

    def __init__(self, lease: float, margin: float) -> None:
        self.lease = lease
        self.margin = margin
        self.confirmed: dict[Attempt, float] = {}
        self.suspended: set[Attempt] = set()

    def set_terms(self, lease: float, margin: float) -> None:
        self.lease, self.margin = lease, margin

    def fence(self, attempt: Attempt) -> float:
        """The monotonic time past which ``attempt`` must not run unless confirmed again."""
        return self.confirmed[attempt] + self.lease - self.margin

    def add(self, attempt: Attempt, now: float) -> None:
        """A new attempt, leased when it was claimed (``now``: when the claim was answered)."""
        self.confirmed[attempt] = now

    def remove(self, attempt: Attempt) -> None:
        self.confirmed.pop(attempt, None)
        self.suspended.discard(attempt)

    def confirm(self, attempts: Iterable[Attempt], sent_at: float) -> None:
        """A heartbeat sent at ``sent_at`` renewed these leases (renewal after sending: the
        server's lease ends no sooner than ``sent_at + lease``)."""
        for attempt in attempts:
            if attempt in self.confirmed and sent_at > self.confirmed[attempt]:
                self.confirmed[attempt] = sent_at

    def plan(self, now: float) -> Plan:
        suspend = [a for a in self.confirmed if a not in self.suspended and self.fence(a) <= now]
        upcoming = [self.fence(a) for a in self.confirmed if a not in self.suspended and self.fence(a) > now]
        return Plan(suspend=sorted(suspend), next_check=min(upcoming) if upcoming else None)

    def resumable(self, now: float) -> list[Attempt]:
        """Suspended attempts whose lease is confirmed again (back inside their fence)."""
        return sorted(a for a in self.suspended if self.fence(a) > now)


@dataclass
class Answered:
    """What one heartbeat's answer means for the attempts it was sent for."""

    confirmed: list[Attempt]
    lost: list[Attempt]


def judge(sent: Iterable[Attempt], held: set[Attempt] | None, running: Iterable[Attempt]) -> Answered:
    """Sort the attempts a heartbeat was sent for (``sent``, still ``running``) into those whose
    lease it confirmed and those the server says are no longer this worker's."""
    now_running = set(running)
    confirmed: list[Attempt] = []
    lost: list[Attempt] = []
    for attempt in sorted(set(sent) & now_running):
        if held is None or attempt in held:
            confirmed.append(attempt)
        else:
            lost.append(attempt)
    return Answered(confirmed, lost)


class LeaseGuard:
    """Keeps a worker's running attempts inside their leases (see the module's docstring).

    ``suspend``, ``resume`` and ``lose`` act on one attempt's job (the runner's): suspend returns
    whether the job could be suspended (a job run elsewhere, or a function in the worker's own
    process, cannot: it runs on, as before).
    """

    def __init__(
        self,
        *,
        lease: float,
        margin: float,
        suspend: Callable[[Attempt], bool],
        resume: Callable[[Attempt], None],
        lose: Callable[[Attempt], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fences = Fences(lease, margin)
        self._suspend = suspend
        self._resume = resume
        self._lose = lose
        self.clock = clock
        self._changed = asyncio.Event()

    def set_terms(self, lease: float, margin: float) -> None:
        self.fences.set_terms(lease, margin)
        self._changed.set()

    def started(self, attempt: Attempt, leased_at: float | None = None) -> None:
        """``attempt`` starts; its lease began at ``leased_at`` on this clock (the claim's send time
        plus the wait the server reported: a late answer leaves less of the lease), else now."""
        now = self.clock()
        self.fences.add(attempt, now if leased_at is None else min(leased_at, now))
        self._changed.set()

    def ended(self, attempt: Attempt) -> None:
        self.fences.remove(attempt)

    def running(self) -> list[Attempt]:
        return sorted(self.fences.confirmed)

    def suspended(self) -> bool:
        """Whether some attempt waits for its lease to be confirmed."""
        return bool(self.fences.suspended)

    def answered(self, sent_at: float, sent: Iterable[Attempt], held: set[Attempt] | None) -> None:
        """A heartbeat sent at ``sent_at`` for the attempts ``sent`` was answered: confirm those
        the server still leases to this worker (resuming the suspended ones), lose the others."""
        verdict = judge(sent, held, self.fences.confirmed)
        self.fences.confirm(verdict.confirmed, sent_at)
        for attempt in verdict.lost:
            self.lost(attempt, "the server no longer leases it to this worker")
        for attempt in self.fences.resumable(self.clock()):
            self.fences.suspended.discard(attempt)
            log.info("lease confirmed again; resuming the job", job=attempt[0], attempt=attempt[1])
            self._resume(attempt)
        self._changed.set()

    def lost(self, attempt: Attempt, why: str) -> None:
        """The attempt is no longer this worker's: its job is killed and reports nothing."""
        if attempt not in self.fences.confirmed:
            return
        log.warning(
            "lease lost; killing the job, reporting nothing", job=attempt[0], attempt=attempt[1], why=why
        )
        self.fences.remove(attempt)
        self._lose(attempt)

    def check(self) -> float | None:
        """Suspend what is past its fence now; when to look again."""
        plan = self.fences.plan(self.clock())
        for attempt in plan.suspend:
            self.fences.suspended.add(attempt)
            if self._suspend(attempt):
                log.warning(
                    "lease not renewed in time; suspending the job until it is",
                    job=attempt[0],
                    attempt=attempt[1],
                )
        return plan.next_check

    async def run(self) -> None:
        """Suspend each attempt when it reaches its fence, for as long as the worker runs."""
        while True:
            self._changed.clear()
            at = self.check()
            timeout = None if at is None else max(at - self.clock(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
