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
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from .keyed import KeyedWakeups, keyed_wakeup

if TYPE_CHECKING:
    from . import NotifyHub

WORKERS_CHANNEL = "whatsnext_workers"
SLICE = 0.5
"""Seconds a stream waits at most between checks that its client is still there and the server
is not stopping."""
POLL = 1.0
"""Seconds between looks of a stream when the server cannot listen for notifications."""


class WorkerWakeup:
    """What one stream of one worker waits on."""

    def __init__(self, wakeups: KeyedWakeups, event: asyncio.Event) -> None:
        self._wakeups = wakeups
        self.event = event

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
    async with keyed_wakeup(hub, WORKERS_CHANNEL, worker_id, polling="streams poll") as (wakeups, event):
        yield WorkerWakeup(wakeups, event)
