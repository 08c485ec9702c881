"""The LISTEN connection of one server process.

It hears ``whatsnext_jobs`` (handed to ``on_jobs``) and, once something subscribes to them, other
channels (``whatsnext_logs``; :meth:`Listener.subscribe`): subscribers get each payload. After the
connection drops it reconnects with backoff, calls ``on_restored`` (the hub wakes every waiter
once) and gives every subscriber an empty payload (notifications may have been missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from .events import CHANNEL

log = structlog.get_logger("whatsnext.notify")


class Listener:
    def __init__(self, dsn: str, on_jobs: Callable[[str], None], on_restored: Callable[[], None]) -> None:
        self._dsn = dsn
        self._on_jobs = on_jobs
        self._on_restored = on_restored
        self._conn: asyncpg.Connection | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._subscribers: dict[str, list[Callable[[str], None]]] = {}
        self._listen_lock = asyncio.Lock()
        self.closing = False
        self.reconnects = 0
        self.connected = asyncio.Event()

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

    def _on_notify(self, conn: asyncpg.Connection, pid: int, channel: str, payload: str) -> None:
        self._on_jobs(payload)

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
            self._on_restored()
            for channel in list(self._subscribers):
                self._dispatch(None, 0, channel, "")
            return

    async def close(self) -> None:
        self.closing = True
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
