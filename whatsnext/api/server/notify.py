"""One LISTEN connection per server process, waking in-process long-poll waiters per project.

SQL functions announce jobs on ``whatsnext_jobs`` in the transaction that made them eligible,
through one SQL helper (``wn_notify_jobs``); :meth:`JobsEvent.parse` reads the payload: how many
jobs, the smallest CPU/GPU need among them and the tags all of them need (count 0: a job of the
project finished).

A submission on this server hands its jobs straight to a claim waiting here for the project
(:meth:`NotifyHub.offer`): the claim runs in the submission's transaction (``wn_enqueue``), and the
waiter gets the jobs it took (:class:`Handed`) without a notification or a claim of its own.

A waiting claim registers what it could take (its free CPUs and GPUs, its tags). An event wakes
up to ``count`` waiters of the project that could take such a job, first come first served, and
none when no waiter could: a job nobody fits costs no claim. Every server process hears every
event, so with S servers a job costs at most S claims. A woken claim that finds nothing (another
server's waiter was faster) does not pass the wake-up on; only a waiter whose worker went away
hands its wake-up to the next waiter that fits. After the LISTEN connection drops, the hub
reconnects with backoff and wakes every waiter once.

Other channels (``whatsnext_logs``) are listened to on the same connection once something
subscribes to them (:meth:`NotifyHub.subscribe`); subscribers get each payload, and an empty
payload after a reconnect (notifications may have been missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog

log = structlog.get_logger("whatsnext.notify")

CHANNEL = "whatsnext_jobs"


@dataclass(frozen=True, slots=True)
class JobsEvent:
    """A notification on ``whatsnext_jobs``."""

    project_id: int
    count: int
    """Jobs that became eligible; 0: a job of the project finished."""
    tag: str | None = None
    cpu: int = 0
    """CPUs the smallest of those jobs needs."""
    gpus: int = 0
    tags: frozenset[str] = frozenset()
    """Tags every one of those jobs needs."""

    @classmethod
    def parse(cls, payload: str) -> JobsEvent | None:
        try:
            data = orjson.loads(payload)
            return cls(
                project_id=int(data["p"]),
                count=int(data["n"]),
                tag=data.get("t"),
                cpu=int(data.get("c") or 0),
                gpus=int(data.get("g") or 0),
                tags=frozenset(data.get("tags") or ()),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    @property
    def finished(self) -> bool:
        return self.count == 0

    def fits(self, waiter: Waiter) -> bool:
        return self.cpu <= waiter.cpu and self.gpus <= waiter.gpus and self.tags <= waiter.tags

    def again(self) -> JobsEvent:
        """The same wake-up, for one more waiter (its first one went away)."""
        return JobsEvent(self.project_id, 1, self.tag, self.cpu, self.gpus, self.tags)


CLOSED = JobsEvent(0, -1, "closed")
"""Wake-up value at shutdown: answer now."""
FINISHED = JobsEvent(0, 0, "finished")
"""Wake-up value for idle watchers: a job of the project finished."""
LOOK = JobsEvent(0, 1, "look")
"""Wake-up value after a reconnect: notifications may have been missed, look again."""


@dataclass(frozen=True, slots=True)
class Handed:
    """Wake-up value of a claim that a submission on this server handed jobs, in its own
    transaction: the ``wn_claim`` rows (the claim is done)."""

    rows: list[dict[str, Any]]


Wakeup = JobsEvent | Handed | None


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
    project_id: int = 0
    claim: Callable[[], dict[str, Any]] | None = None
    gone: Callable[[], bool] | None = None
    offered: int = -1
    """The hub's generation when a submission took this waiter out to run its claim; -1: not."""
    expired: bool = False
    """Its wait ran out while a submission ran its claim: the submission answers it."""

    def hand(self, handed: Handed) -> bool:
        """Give the waiter the jobs its claim took; False when its request is gone."""
        if self.future.done():
            return False
        self.future.set_result(handed)
        return True


class NotifyHub:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[int, list[Waiter]] = {}
        self._project_ids: dict[str, int] = {}
        """Project names to ids, as waiting claims resolved them (for :meth:`offer`)."""
        self._waiting = 0
        """Claims waiting in ``wait`` now (all projects): asked before every wait, kept as a count."""
        self._reconnect_task: asyncio.Task[None] | None = None
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}
        self._listen_lock = asyncio.Lock()
        self.closing = False
        self.generation = 0
        """Incremented on every notification: a claim compares it before and after looking."""
        self.reconnects = 0
        self.connected = asyncio.Event()

    # ------------------------------------------------------------ connection

    async def start(self) -> None:
        await self._connect()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn, server_settings={"application_name": "whatsnext-listen"})
        await conn.add_listener(CHANNEL, self._on_notify)
        async with self._listen_lock:
            for channel in list(self._subscribers):
                await conn.add_listener(channel, self._dispatch)
            conn.add_termination_listener(self._on_terminated)
            self._conn = conn
        self.connected.set()
        log.debug("listening", channel=CHANNEL)

    def _on_terminated(self, conn: asyncpg.Connection) -> None:
        if self.closing or conn is not self._conn:
            return
        self._conn = None
        self.connected.clear()
        log.warning("LISTEN connection lost; reconnecting")
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        while not self.closing:
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN reconnect failed", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.reconnects += 1
            log.info("LISTEN connection restored; waking every waiter")
            self.generation += 1
            self.wake_all(LOOK)
            for channel in list(self._subscribers):
                self._dispatch(None, 0, channel, "")
            return

    async def close(self) -> None:
        self.closing = True
        self.wake_all(CLOSED)
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(OSError, asyncpg.InterfaceError, asyncpg.PostgresError):
                await conn.close(timeout=2)

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    # ------------------------------------------------------------ other channels

    async def subscribe(self, channel: str, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(payload)`` for each notification on ``channel`` (``""`` after a reconnect).

        The first subscription to a channel LISTENs to it. Returns a function that unsubscribes.
        """
        if channel == CHANNEL:
            raise ValueError(f"{CHANNEL} is the hub's own channel: use wait()")
        async with self._listen_lock:
            callbacks = self._subscribers.get(channel)
            if callbacks is None:
                if self._conn is not None:
                    await self._conn.add_listener(channel, self._dispatch)
                # (while reconnecting, the new connection listens to every subscribed channel)
                callbacks = self._subscribers[channel] = []
            callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                callbacks.remove(callback)

        return unsubscribe

    def _dispatch(self, conn: asyncpg.Connection | None, pid: int, channel: str, payload: str) -> None:
        for callback in list(self._subscribers.get(channel, ())):
            try:
                callback(payload)
            except Exception as exc:
                log.exception("notification subscriber failed", channel=channel, error=str(exc))

    # ------------------------------------------------------------ notifications

    def _on_notify(self, conn: asyncpg.Connection, pid: int, channel: str, payload: str) -> None:
        self.generation += 1
        event = JobsEvent.parse(payload)
        if event is None:
            log.warning("ignoring malformed notification", payload=payload)
        elif event.finished:
            self.wake_idle(event.project_id)
        else:
            self.wake(event)

    def wake(self, event: JobsEvent) -> int:
        """Wake up to ``event.count`` waiters of its project that could take such a job."""
        waiters = self._waiters.get(event.project_id)
        if not waiters:
            return 0
        woken = 0
        keep: list[Waiter] = []
        for waiter in waiters:
            if woken < event.count and not waiter.future.done() and event.fits(waiter):
                waiter.future.set_result(event)
                woken += 1
            elif not waiter.future.done():
                keep.append(waiter)
        if keep:
            self._waiters[event.project_id] = keep
        else:
            self._waiters.pop(event.project_id, None)
        return woken

    def wake_idle(self, project_id: int) -> int:
        """Wake the waiters that asked to hear when a job of the project finishes."""
        woken = 0
        for waiter in self._waiters.get(project_id, ()):
            if waiter.idle and not waiter.future.done():
                waiter.future.set_result(FINISHED)
                woken += 1
        return woken

    def wake_all(self, value: JobsEvent = LOOK) -> None:
        waiters, self._waiters = self._waiters, {}
        for queue in waiters.values():
            for waiter in queue:
                if not waiter.future.done():
                    waiter.future.set_result(value)

    def waiting(self, project_id: int | None = None) -> int:
        if project_id is not None:
            return len(self._waiters.get(project_id, ()))
        return self._waiting

    async def wait(
        self,
        project_id: int,
        timeout: float,
        *,
        cpu: int = 0,
        gpus: int = 0,
        tags: frozenset[str] = frozenset(),
        idle: bool = False,
        key: str | None = None,
        claim: Callable[[], dict[str, Any]] | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> Wakeup:
        """Wait for a wake-up for a job this claim could take (``cpu``/``gpus`` free, ``tags``):
        the event, CLOSED at shutdown, FINISHED (with ``idle``) when a job of the project
        finished, LOOK after a reconnect, None on timeout. With ``claim`` (what gives its
        ``wn_claim`` arguments), a submission on this server may run the claim in its own transaction: then
        :class:`Handed` with the jobs it took. ``key``: the project's name as the claim gave it."""
        if self.closing:
            return CLOSED
        if key is not None and key != str(project_id):
            self._project_ids[key] = project_id
        waiter = Waiter(
            asyncio.get_running_loop().create_future(), cpu, gpus, tags, idle, project_id, claim, gone
        )
        self._waiters.setdefault(project_id, []).append(waiter)
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
            queue = self._waiters.get(project_id)
            if queue is not None and waiter in queue:
                queue.remove(waiter)
                if not queue:
                    self._waiters.pop(project_id, None)

    def pass_on(self, future: asyncio.Future[Wakeup]) -> None:
        """A woken claim whose worker went away: its wake-up goes to the next waiter that fits."""
        if future.done() and not future.cancelled():
            self.hand_on(future.result())

    def hand_on(self, event: Wakeup) -> None:
        """As :meth:`pass_on`, for an event already taken out of its future."""
        if isinstance(event, JobsEvent) and event.count > 0 and event.project_id > 0:
            self.wake(event.again())

    # ------------------------------------------------------------ hand-off to a submission

    def offer(self, project: str) -> Waiter | None:
        """The first claim waiting for jobs of ``project`` (its name or id) whose arguments a
        submission may run, taken out of the queue until :meth:`take_back` (or its hand-off)."""
        project_id = (
            int(project) if project.isascii() and project.isdigit() else self._project_ids.get(project)
        )
        queue = self._waiters.get(project_id) if project_id is not None else None
        if not queue:
            return None
        for i, waiter in enumerate(queue):
            if waiter.claim is None or waiter.future.done() or (waiter.gone is not None and waiter.gone()):
                continue
            del queue[i]
            if not queue:
                self._waiters.pop(project_id, None)  # type: ignore[arg-type]
            waiter.offered = self.generation
            return waiter
        return None

    def take_back(self, waiter: Waiter) -> None:
        """A waiter offered to a submission whose claim took nothing: it waits again, first in
        line, or answers now when its wait ran out, the server closes, or a notification came
        meanwhile (it looks again)."""
        generation, waiter.offered = waiter.offered, -1
        if waiter.future.done():
            return
        if waiter.expired:
            waiter.future.set_result(None)
        elif self.closing:
            waiter.future.set_result(CLOSED)
        elif generation != self.generation:
            waiter.future.set_result(LOOK)
        else:
            self._waiters.setdefault(waiter.project_id, []).insert(0, waiter)
