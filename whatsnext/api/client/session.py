"""The worker's session on the server: it registers, keeps its jobs' leases with heartbeats (which
bring back the jobs cancelled on the server), hands back what it does not hold, and deregisters."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from datetime import datetime

import structlog

from ...nudge import nudged_by_signal
from .backoff import Backoff
from .errors import RETRYABLE, NotFound, WhatsNextError
from .fence import LeaseGuard, fence_margin, held_attempts
from .http import Http, worker_path
from .resources import Capacity
from .target import Target

log = structlog.get_logger("whatsnext.worker")


class Session:
    """One worker's registration: ``worker_id`` and the server's lease terms once registered."""

    def __init__(
        self,
        http: Http,
        *,
        name: str,
        entity: str,
        target: Target,
        capacity: Capacity,
        tags: list[str],
        formatter: str,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.http = http
        self.name = name
        self.entity = entity
        self.target = target
        """The projects the worker serves (registered as ``project``, ``projects`` or ``all_projects``)."""
        self.capacity = capacity
        self.tags = tags
        self.formatter = formatter
        """The formatter's name, for the log."""
        self.stop = stop
        """Set when the worker stops: a registration that cannot reach the server gives up."""
        self.worker_id: int | None = None
        self.lease_seconds = 60.0
        self.heartbeat_interval = 20.0
        self.fence_margin = fence_margin(self.lease_seconds)
        """How long before a lease would run out an unconfirmed job is suspended (fenced leases)."""
        self.max_wait: float | None = None
        """The longest claim wait the server grants (from its register answer); asked for no longer."""
        self.deadline: datetime | None = None
        """When the worker's time ends (registered when it has one)."""

    async def register(self) -> None:
        backoff = Backoff()
        while True:
            try:
                reg = await self.http.post(
                    "/workers",
                    {
                        "name": self.name,
                        "entity": self.entity,
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        **self.target.register_fields(),
                        "cpu": self.capacity.total_cpu,
                        "accelerators": self.capacity.total_accelerators,
                        "tags": self.tags,
                        **self._deadline_field(),
                    },
                )
                break
            except RETRYABLE as exc:
                if self.stop is not None and self.stop.is_set():
                    raise
                delay = backoff.next()
                log.warning("server unreachable; retrying", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
        self.worker_id = int(reg["id"])
        self.lease_seconds = float(reg["lease_seconds"])
        self.heartbeat_interval = float(reg["heartbeat_interval"])
        self.max_wait = float(reg["max_wait"]) if reg.get("max_wait") else None
        self._read_fence(reg)
        log.info(
            "worker registered",
            worker_id=self.worker_id,
            **self.target.register_fields(),
            cpu=self.capacity.total_cpu,
            gpus=self.capacity.gpu_ids,
            formatter=self.formatter,
            **self._deadline_field(),
        )

    def _deadline_field(self) -> dict[str, str]:
        """The registration's ``deadline`` when the worker has one (else it registers as always)."""
        return {} if self.deadline is None else {"deadline": self.deadline.isoformat()}

    async def deregister(self) -> None:
        if self.worker_id is None:
            return
        try:
            await self.http.delete(worker_path(self.worker_id))
        except WhatsNextError as exc:
            log.warning("could not deregister (the server will expire our leases)", error=str(exc))

    def _read_fence(self, reg: dict[str, object]) -> None:
        """The fence margin the server announces at registration (else the default)."""
        announced = reg.get("fence_margin")
        self.fence_margin = fence_margin(
            self.lease_seconds, float(announced) if isinstance(announced, int | float) else None
        )

    async def heartbeats(
        self,
        held: Callable[[], list[int]],
        cancel: Callable[[list[int]], None],
        guard: LeaseGuard | None = None,
    ) -> None:
        """Every ``heartbeat_interval``, and at once on SIGUSR1 (:mod:`whatsnext.nudge`): say which
        jobs this worker holds (``held()``), which keeps their leases; ``cancel`` gets the ids of
        those cancelled on the server. ``guard`` learns which running attempts' leases each answer
        confirmed and which are no longer this worker's. A heartbeat that fails is tried again
        sooner (backoff, up to the interval)."""
        backoff = Backoff(cap=self.heartbeat_interval)
        delay = self.heartbeat_interval
        with nudged_by_signal() as nudge:
            while True:
                await nudge.sleep(delay)
                delay = self.heartbeat_interval
                sent = guard.running() if guard is not None else []
                sent_at = time.monotonic()
                try:
                    out = await self.http.post(
                        f"{worker_path(self.worker_id)}/heartbeat",
                        {"running": held()},
                        # an answer later than the fence could not keep any job running
                        timeout=max(self.lease_seconds - self.fence_margin, 1.0),
                    )
                except NotFound:
                    log.warning("the server forgot this worker; registering again")
                    with contextlib.suppress(WhatsNextError):
                        await self.register()
                    if guard is not None:
                        guard.set_terms(self.lease_seconds, self.fence_margin)
                    delay = 0.0
                    continue
                except RETRYABLE as exc:
                    delay = min(backoff.next(exc.retry_after), self.heartbeat_interval)
                    log.warning("heartbeat failed; retrying", error=str(exc), retry_in=round(delay, 2))
                    continue
                backoff.reset()
                if guard is not None:
                    guard.answered(sent_at, sent, held_attempts(out))
                    if guard.suspended():  # an answer sent before the outage: ask again now
                        delay = backoff.next()
                cancel(out["cancel"])

    async def reconcile(self, held: list[int]) -> None:
        """Hand back jobs the server gave us in an answer we did not read (no claim is in flight now)."""
        try:
            await self.http.post(f"{worker_path(self.worker_id)}/heartbeat", {"running": held, "grace": 0})
        except WhatsNextError as exc:
            log.warning("could not hand back unread claims (the next heartbeat will)", error=str(exc))
