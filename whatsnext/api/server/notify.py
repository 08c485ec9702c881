"""One LISTEN connection per server process, waking in-process long-poll waiters per project.

SQL functions send ``NOTIFY whatsnext_jobs, '<project_id>:<count>'`` in the transaction that made
``count`` jobs eligible. The hub wakes up to ``count`` waiters of that project (first come, first
served). A woken waiter that finds nothing to claim passes the wake-up on to the next one, at most
once around the queue, so a job that one worker cannot take still reaches one that can.
After the LISTEN connection drops, the hub reconnects with backoff and wakes every waiter once.

Other channels (``whatsnext_logs``) are listened to on the same connection once something
subscribes to them (:meth:`NotifyHub.subscribe`); subscribers get each payload, and an empty
payload after a reconnect (notifications may have been missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import asyncpg
import structlog

log = structlog.get_logger("whatsnext.notify")

CHANNEL = "whatsnext_jobs"
CLOSED = -1
FINISHED = -2
"""Wake-up value for idle watchers: a job of the project finished."""


class NotifyHub:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[int, deque[asyncio.Future[int]]] = {}
        self._idle: dict[int, set[asyncio.Future[int]]] = {}
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
            self.wake_all()
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
        project, _, rest = payload.partition(":")
        count = rest.split(":", 1)[0]  # '<project>:<count>[:<tag>]'
        try:
            project_id, n = int(project), int(count or 1)
        except ValueError:
            log.warning("ignoring malformed notification", payload=payload)
            return
        if n > 0:
            self.wake(project_id, n)
        else:
            self.wake_idle(project_id)

    def wake(self, project_id: int, n: int, hops: int | None = None) -> int:
        """Wake up to ``n`` waiters of a project; each may pass its wake-up on ``hops`` times."""
        queue = self._waiters.get(project_id)
        if not queue:
            return 0
        if hops is None:
            hops = len(queue)
        woken = 0
        while queue and woken < n:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(hops)
                woken += 1
        if not queue:
            self._waiters.pop(project_id, None)
        return woken

    def wake_idle(self, project_id: int) -> int:
        """Wake the waiters that asked to hear when a job of the project finishes."""
        watchers = self._idle.pop(project_id, None)
        woken = 0
        for fut in watchers or ():
            if not fut.done():
                fut.set_result(FINISHED)
                woken += 1
        return woken

    def wake_all(self, value: int = 0) -> None:
        waiters, self._waiters = self._waiters, {}
        self._idle = {}
        for queue in waiters.values():
            for fut in queue:
                if not fut.done():
                    fut.set_result(value)

    def waiting(self, project_id: int | None = None) -> int:
        if project_id is not None:
            return len(self._waiters.get(project_id, ()))
        return sum(len(q) for q in self._waiters.values())

    async def wait(self, project_id: int, timeout: float, idle: bool = False) -> int | None:
        """Wait for a wake-up: the hops it may be passed on, CLOSED at shutdown, None on timeout.

        With ``idle``, a job of the project finishing (count-0 notification) also wakes this waiter.
        """
        if self.closing:
            return CLOSED
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(project_id, deque()).append(fut)
        if idle:
            self._idle.setdefault(project_id, set()).add(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            # The request went away; a wake-up it had already received goes to the next waiter.
            if fut.done() and not fut.cancelled() and fut.result() > 0:
                self.wake(project_id, 1, fut.result() - 1)
            raise
        finally:
            if not fut.done():
                fut.cancel()
            queue = self._waiters.get(project_id)
            if queue is not None and fut in queue:
                queue.remove(fut)
                if not queue:
                    self._waiters.pop(project_id, None)
            if idle:
                watchers = self._idle.get(project_id)
                if watchers is not None:
                    watchers.discard(fut)
                    if not watchers:
                        self._idle.pop(project_id, None)
