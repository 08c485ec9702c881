"""Notifications: one LISTEN connection per server process, waking in-process long-poll waiters
per project, and the hand-off of a submission's jobs to a claim waiting here.

Three parts, one module each: :mod:`.listener` (the LISTEN connection: reconnect with backoff,
wake everyone once, other channels for subscribers), :mod:`.waiters` (the waiting claims per
project and which of them an event fits by CPU, GPU and tags) and :mod:`.handoff` (a submission
running a waiting claim's ``wn_claim`` in its own transaction). :mod:`.events` holds what they
pass around. :class:`NotifyHub` puts them together for the app.
"""

from __future__ import annotations

import asyncio

import structlog
from typing_extensions import Unpack

from .events import CHANNEL, CLOSED, FINISHED, LOOK, Handed, JobsEvent, Wakeup
from .handoff import HandOff
from .listener import Listener
from .waiters import Waiter, Waiters, WaitFor

log = structlog.get_logger("whatsnext.notify")

__all__ = [
    "CHANNEL",
    "CLOSED",
    "FINISHED",
    "LOOK",
    "Handed",
    "JobsEvent",
    "NotifyHub",
    "Waiter",
    "Wakeup",
]


class NotifyHub:
    """The listener, the waiting claims and the hand-off of one server process."""

    def __init__(self, dsn: str) -> None:
        self.waiters = Waiters()
        self.handoff = HandOff(self.waiters)
        self.listener = Listener(dsn, self._on_jobs, self._on_restored)
        # The hot path calls these directly (no indirection per claim or submission).
        self.wake = self.waiters.wake
        self.wake_idle = self.waiters.wake_idle
        self.wake_all = self.waiters.wake_all
        self.waiting = self.waiters.waiting
        self.pass_on = self.waiters.pass_on
        self.hand_on = self.waiters.hand_on
        self.offer = self.handoff.offer
        self.take_back = self.handoff.take_back
        self.subscribe = self.listener.subscribe

    @property
    def closing(self) -> bool:
        return self.waiters.closing

    @property
    def generation(self) -> int:
        """Incremented on every notification: a claim compares it before and after looking."""
        return self.waiters.generation

    @property
    def reconnects(self) -> int:
        return self.listener.reconnects

    @property
    def connected(self) -> asyncio.Event:
        return self.listener.connected

    @property
    def listening(self) -> bool:
        return self.listener.listening

    async def start(self) -> None:
        await self.listener.start()

    async def close(self) -> None:
        self.waiters.closing = True
        self.waiters.wake_all(CLOSED)
        await self.listener.close()

    def _on_jobs(self, payload: str) -> None:
        self.waiters.generation += 1
        event = JobsEvent.parse(payload)
        if event is None:
            log.warning("ignoring malformed notification", payload=payload)
        elif event.finished:
            self.waiters.wake_idle(event.project_id)
        else:
            self.waiters.wake(event)

    def _on_restored(self) -> None:
        self.waiters.generation += 1
        self.waiters.wake_all(LOOK)

    async def wait(
        self,
        projects: int | tuple[int, ...] | None,
        timeout: float,
        *,
        keys: dict[str, int] | None = None,
        **claim_of: Unpack[WaitFor],
    ) -> Wakeup:
        """Wait for a wake-up for a job this claim could take (``cpu``/``gpus`` free, ``tags``) in
        ``projects`` (a project's id, several, or None: every project): the event, CLOSED at
        shutdown, FINISHED (with ``idle``) when a job of one of them finished, LOOK after a
        reconnect, None on timeout. With ``claim`` (what gives its ``wn_claim`` arguments), a
        submission on this server may run the claim in its own transaction: then :class:`Handed`
        with the jobs it took. ``keys``: the projects' names as the claim gave them, with their ids."""
        for key, project_id in (keys or {}).items():
            self.handoff.remember(key, project_id)
        return await self.waiters.wait(projects, timeout, **claim_of)
