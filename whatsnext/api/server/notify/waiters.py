"""The waiting claims of one server process, per project, and how an event wakes them.

A waiting claim registers what it could take (its free CPUs and GPUs, its tags) under each project
it claims from (a claim of every project under :data:`ANY`). An event wakes up to ``count``
waiters of the project that could take such a job, first come first served, and none when no
waiter could: a job nobody fits costs no claim. Every server process hears every
event, so with S servers a job costs at most S claims. A woken claim that finds nothing (another
server's waiter was faster) does not pass the wake-up on; only a waiter whose worker went away
hands its wake-up to the next waiter that fits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from typing_extensions import TypedDict, Unpack

from .events import CLOSED, FINISHED, LOOK, Handed, JobsEvent, Wakeup

ANY = 0
"""The queue of claims that take jobs of every project (project ids start at 1)."""


class WaitFor(TypedDict, total=False):
    """What a waiting claim could take and how it is answered (every key may be left out)."""

    cpu: int
    """Free CPUs (default 0)."""
    gpus: int
    """Free GPUs (default 0)."""
    tags: frozenset[str]
    idle: bool
    """Also wake when a job of the project finishes."""
    claim: Callable[[], dict[str, Any]] | None
    """Gives the claim's ``wn_claim`` arguments, for a submission to run it on its behalf."""
    gone: Callable[[], bool] | None
    """Whether the claim's client went away."""


@dataclass(eq=False, slots=True)
class Waiter:
    """A waiting claim: what it could take, and the future its wake-up resolves. ``claim``, when
    set, gives the claim's ``wn_claim`` arguments for a submission to run on its behalf (its
    ``project_id`` among them; made only then: a thousand claims may wait) and ``gone`` tells
    whether its client went away."""

    future: asyncio.Future[Wakeup]
    cpu: int
    gpus: int
    tags: frozenset[str]
    idle: bool = False
    projects: tuple[int, ...] = (ANY,)
    """The queues it waits in: its projects' ids, or :data:`ANY`."""
    claim: Callable[[], dict[str, Any]] | None = None
    gone: Callable[[], bool] | None = None
    offered: int = -1
    """The hub's generation when a submission took this waiter to run its claim; -1: not. An
    offered waiter stays in its queues but is neither woken nor offered again."""
    expired: bool = False
    """Its wait ran out while a submission ran its claim: the submission answers it."""

    def hand(self, handed: Handed) -> bool:
        """Give the waiter the jobs its claim took; False when its request is gone."""
        if self.future.done():
            return False
        self.future.set_result(handed)
        return True


class Waiters:
    """The waiting claims by project, with the state every claim compares: ``generation``
    (incremented on every notification) and ``closing`` (the server stops)."""

    def __init__(self) -> None:
        self.queues: dict[int, list[Waiter]] = {}
        """Waiting claims by project id, oldest first."""
        self._waiting = 0
        """Claims waiting in ``wait`` now (all projects): asked before every wait, kept as a count."""
        self.closing = False
        self.generation = 0
        """Incremented on every notification: a claim compares it before and after looking."""

    def wake(self, event: JobsEvent) -> int:
        """Wake up to ``event.count`` waiters of its project that could take such a job: those
        waiting for the project, then those waiting for every project."""
        woken = self._wake(event.project_id, event, 0)
        if woken < event.count and event.project_id != ANY:
            woken = self._wake(ANY, event, woken)
        return woken

    def _wake(self, key: int, event: JobsEvent, woken: int) -> int:
        waiters = self.queues.get(key)
        if not waiters:
            return woken
        keep: list[Waiter] = []
        for waiter in waiters:
            if waiter.future.done():
                continue
            if (
                woken < event.count
                and waiter.offered < 0
                and event.fits(waiter.cpu, waiter.gpus, waiter.tags)
            ):
                waiter.future.set_result(event)
                woken += 1
            else:
                keep.append(waiter)
        if keep:
            self.queues[key] = keep
        else:
            self.queues.pop(key, None)
        return woken

    def wake_idle(self, project_id: int) -> int:
        """Wake the waiters that asked to hear when a job of the project finishes."""
        woken = 0
        for key in (project_id, ANY):
            for waiter in self.queues.get(key, ()):
                if waiter.idle and not waiter.future.done():
                    waiter.future.set_result(FINISHED)
                    woken += 1
        return woken

    def wake_all(self, value: JobsEvent = LOOK) -> None:
        """Wake every waiter (a waiter offered to a submission hears it from :meth:`take_back`)."""
        waiters, self.queues = self.queues, {}
        for queue in waiters.values():
            for waiter in queue:
                if not waiter.future.done() and waiter.offered < 0:
                    waiter.future.set_result(value)

    def waiting(self, project_id: int | None = None) -> int:
        if project_id is not None:
            return len(self.queues.get(project_id, ()))
        return self._waiting

    async def wait(
        self, projects: int | tuple[int, ...] | None, timeout: float, **claim_of: Unpack[WaitFor]
    ) -> Wakeup:
        """Wait for a wake-up for a job this claim could take (see :meth:`NotifyHub.wait`):
        ``projects`` is a project's id, several, or None for every project."""
        cpu, gpus = claim_of.get("cpu", 0), claim_of.get("gpus", 0)
        tags, idle = claim_of.get("tags", frozenset()), claim_of.get("idle", False)
        claim, gone = claim_of.get("claim"), claim_of.get("gone")
        if self.closing:
            return CLOSED
        keys = (ANY,) if projects is None else (projects,) if isinstance(projects, int) else projects
        waiter = Waiter(asyncio.get_running_loop().create_future(), cpu, gpus, tags, idle, keys, claim, gone)
        for key in keys:
            self.queues.setdefault(key, []).append(waiter)
        self._waiting += 1
        try:
            done, _ = await asyncio.wait((waiter.future,), timeout=timeout)
            if not done:
                if waiter.offered < 0:
                    return None
                # A submission is running this claim: it answers (with jobs, or None).
                waiter.expired = True
                return await waiter.future
            return waiter.future.result()
        except asyncio.CancelledError:
            # The request went away; a wake-up it had already received goes to the next waiter.
            self.pass_on(waiter.future)
            raise
        finally:
            self._waiting -= 1
            if not waiter.future.done():
                waiter.future.cancel()
            for key in keys:
                queue = self.queues.get(key)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                    if not queue:
                        self.queues.pop(key, None)

    def pass_on(self, future: asyncio.Future[Wakeup]) -> None:
        """A woken claim whose worker went away: its wake-up goes to the next waiter that fits."""
        if future.done() and not future.cancelled():
            self.hand_on(future.result())

    def hand_on(self, event: Wakeup) -> None:
        """As :meth:`pass_on`, for an event already taken out of its future."""
        if isinstance(event, JobsEvent) and event.count > 0 and event.project_id > 0:
            self.wake(event.again())
