"""The worker's control stream: cancels and operator requeues of its running jobs, at once.

A worker holds one long-poll open on ``GET /workers/{id}/events``: the server answers as soon as
one of the worker's running attempts is cancelled or requeued by an operator (woken through
``NOTIFY`` on whichever server holds the request), so the job's process gets its signal within a
second instead of at the next heartbeat. The attempts already acted on are sent back as ``seen``
so that they do not end the next wait. When the request fails it is opened again with backoff;
heartbeats still carry cancels, as the fallback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from .backoff import Backoff
from .errors import RETRYABLE, NotFound, WhatsNextError
from .fence import Attempt
from .http import Http, worker_path

log = structlog.get_logger("whatsnext.worker")

WAIT = 30.0
"""Seconds each long-poll asks to wait (the server grants at most its own ``max_wait``)."""
SLACK = 30.0
"""How much longer than its wait a long-poll may take before it is given up and opened again."""
EARLY_SECONDS = 120.0
"""How long a stop of an attempt not running here yet is kept for it."""
MAX_SEEN = 1000
"""At most this many acted-on attempts are sent back as ``seen`` (the server's list bound)."""


def seen_param(attempts: list[Attempt]) -> str | None:
    """``seen`` as the route reads it: ``JOB:ATTEMPT`` pairs separated by commas."""
    return ",".join(f"{job}:{attempt}" for job, attempt in attempts[:MAX_SEEN]) or None


class ControlStream:
    """Holds the worker's control stream open and hands each stop to ``stop(attempt, how)``
    (``how``: ``cancel`` or ``requeue``). ``running()`` lists the attempts still running."""

    def __init__(
        self,
        http: Http,
        *,
        worker_id: Callable[[], int | None],
        running: Callable[[], list[Attempt]],
        stop: Callable[[Attempt, str], None],
        wait: float = WAIT,
        retry_cap: float = 10.0,
    ) -> None:
        self.http = http
        self.worker_id = worker_id
        self.running = running
        self.stop = stop
        self.wait = wait
        self.retry_cap = retry_cap
        self.acted: set[Attempt] = set()
        """Stops received (sent back as ``seen`` while their attempt runs or is awaited)."""
        self.early: dict[Attempt, tuple[str, float]] = {}
        """Stops of attempts not running here yet (a claim answer still on its way): applied
        when they start, forgotten after ``EARLY_SECONDS``."""
        self.answers = 0
        """How many answers the stream got (for tests and diagnostics)."""

    def _apply_early(self, running: set[Attempt]) -> None:
        now = time.monotonic()
        for attempt, (how, since) in list(self.early.items()):
            if attempt in running:
                del self.early[attempt]
                self.stop(attempt, how)
            elif now - since > EARLY_SECONDS:
                del self.early[attempt]
        self.acted &= running | set(self.early)  # an attempt that ended is never listed again

    def started(self, attempt: Attempt) -> None:
        """An attempt starts here: a stop that came before it applies now."""
        early = self.early.pop(attempt, None)
        if early is not None:
            self.stop(attempt, early[0])

    def take(self, jobs: list[dict[str, Any]]) -> None:
        """Act on the stops of one answer (each once)."""
        running = set(self.running())
        for item in jobs:
            attempt = (int(item["id"]), int(item["attempt"]))
            if attempt in self.acted:
                continue
            self.acted.add(attempt)
            how = str(item.get("stop") or "cancel")
            if attempt in running:
                self.stop(attempt, how)
            else:
                self.early[attempt] = (how, time.monotonic())

    async def run(self) -> None:
        backoff = Backoff(cap=self.retry_cap)
        while True:
            self._apply_early(set(self.running()))
            try:
                out = await self.http.request(
                    "GET",
                    f"{worker_path(self.worker_id())}/events",
                    params={"wait": self.wait, "seen": seen_param(sorted(self.acted))},
                    timeout=self.wait + SLACK,
                )
            except NotFound as exc:
                if (exc.details or {}).get("field") != "worker_id":
                    log.info("the server has no control stream; cancels arrive with heartbeats")
                    return
                await self._pause(backoff, exc)  # re-registering (the heartbeat does it)
                continue
            except RETRYABLE as exc:
                await self._pause(backoff, exc)
                continue
            except WhatsNextError as exc:  # refused (a token without the right, a bad request)
                log.warning("control stream refused; trying again later", error=str(exc))
                await asyncio.sleep(self.retry_cap)
                continue
            backoff.reset()
            self.answers += 1
            self.take(list(out.get("jobs") or ()))

    async def _pause(self, backoff: Backoff, exc: WhatsNextError) -> None:
        delay = backoff.next(exc.retry_after)
        log.debug("control stream interrupted; opening it again", error=str(exc), retry_in=round(delay, 2))
        await asyncio.sleep(delay)
