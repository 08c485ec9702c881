"""Wake-ups of the workers' event streams (``GET /workers/{id}/events``).

SQL functions that ask a worker to stop a running attempt (``wn_cancel``, ``wn_requeue``) send
``NOTIFY whatsnext_workers, '<worker id>'`` in their own transaction. Each server process hears it
on its LISTEN connection (:meth:`NotifyHub.subscribe`) and wakes the streams it holds for that
worker, wherever the cancel was made. A stream holds no database connection while it waits; after
a reconnect (an empty payload: notifications may have been missed) every stream looks again. With
no subscription possible, streams look again every ``POLL`` seconds instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import asyncpg
import structlog

if TYPE_CHECKING:
    from . import NotifyHub

log = structlog.get_logger("whatsnext.notify")

WORKERS_CHANNEL = "whatsnext_workers"
SLICE = 0.5
"""Seconds a stream waits at most between checks that its client is still there and the server
is not stopping."""
POLL = 1.0
"""Seconds between looks of a stream when the server cannot listen for notifications."""


class WorkerWakeups:
    """Fans the ``whatsnext_workers`` notifications (payload: a worker's id) out to the streams
    waiting for that worker."""

    def __init__(self) -> None:
        self.events: dict[int, set[asyncio.Event]] = {}
        self.listening = False
        self._lock = asyncio.Lock()

    async def ensure_listening(self, hub: NotifyHub) -> None:
        if self.listening:
            return
        subscribe = getattr(hub, "subscribe", None)
        if subscribe is None:
            return
        async with self._lock:
            if not self.listening:
                await subscribe(WORKERS_CHANNEL, self.notify)
                self.listening = True

    def notify(self, payload: str) -> None:
        """A notification: wake that worker's streams (an empty payload, after a reconnect: all)."""
        if not payload:
            for events in self.events.values():
                for event in events:
                    event.set()
            return
        try:
            worker_id = int(payload)
        except ValueError:
            log.warning("ignoring malformed notification", channel=WORKERS_CHANNEL, payload=payload)
            return
        for event in self.events.get(worker_id, ()):
            event.set()


_wakeups: weakref.WeakKeyDictionary[NotifyHub, WorkerWakeups] = weakref.WeakKeyDictionary()


class WorkerWakeup:
    """What one stream of one worker waits on."""

    def __init__(self, wakeups: WorkerWakeups) -> None:
        self._wakeups = wakeups
        self.event = asyncio.Event()

    def before_look(self) -> None:
        """Forget earlier wake-ups: what they announced is about to be read."""
        self.event.clear()

    async def wait(self, deadline: float, stop: Callable[[], bool]) -> bool:
        """Wait for a wake-up until ``deadline`` (the event loop's clock); False when the deadline
        passed or ``stop()`` became true first. Without a subscription, True every ``POLL``
        seconds (look again)."""
        loop = asyncio.get_running_loop()
        polled = loop.time() + POLL
        while True:
            now = loop.time()
            if now >= deadline or stop():
                return False
            until = min(deadline, now + SLICE)
            if not self._wakeups.listening:
                if now >= polled:
                    return True
                until = min(until, polled)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), until - now)
                return True


@contextlib.asynccontextmanager
async def worker_wakeup(hub: NotifyHub, worker_id: int) -> AsyncIterator[WorkerWakeup]:
    """Wake-ups for one worker's stream, through the hub's subscription to ``whatsnext_workers``."""
    wakeups = _wakeups.get(hub)
    if wakeups is None:
        wakeups = _wakeups[hub] = WorkerWakeups()
    try:
        await wakeups.ensure_listening(hub)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("cannot listen for worker events; streams poll", error=str(exc))
    wakeup = WorkerWakeup(wakeups)
    wakeups.events.setdefault(worker_id, set()).add(wakeup.event)
    try:
        yield wakeup
    finally:
        events = wakeups.events.get(worker_id)
        if events is not None:
            events.discard(wakeup.event)
            if not events:
                del wakeups.events[worker_id]
