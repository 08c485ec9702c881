"""Wake-ups keyed by an id, on a channel of their own: a notification whose payload is an id (a
job's, a worker's) wakes the requests of this server process that wait for that id.

SQL sends ``NOTIFY <channel>, '<id>'`` in the transaction that made something new for that id;
each server hears it on its LISTEN connection (:meth:`NotifyHub.subscribe`) and sets the events
registered for the id here. An empty payload (after a reconnect: notifications may have been
missed) wakes every waiter. A hub that cannot subscribe leaves the waiters to poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncpg
import structlog

if TYPE_CHECKING:
    from . import NotifyHub

log = structlog.get_logger("whatsnext.notify")


class KeyedWakeups:
    """Fans one channel's notifications (payload: an id) out to the events waiting for that id."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.events: dict[int, set[asyncio.Event]] = {}
        self.listening = False
        self._lock = asyncio.Lock()

    async def ensure_listening(self, hub: NotifyHub) -> None:
        if self.listening:
            return
        subscribe = getattr(hub, "subscribe", None)
        if subscribe is None:
            return  # an older hub: the waiters poll instead
        async with self._lock:
            if not self.listening:
                await subscribe(self.channel, self.notify)
                self.listening = True

    def notify(self, payload: str) -> None:
        """A notification: wake the id's waiters (an empty payload, after a reconnect: all)."""
        if not payload:
            for events in self.events.values():
                for event in events:
                    event.set()
            return
        try:
            key = int(payload)
        except ValueError:
            log.warning("ignoring malformed notification", channel=self.channel, payload=payload)
            return
        for event in self.events.get(key, ()):
            event.set()


_by_hub: weakref.WeakKeyDictionary[NotifyHub, dict[str, KeyedWakeups]] = weakref.WeakKeyDictionary()


def wakeups_of(hub: NotifyHub, channel: str) -> KeyedWakeups | None:
    """The wake-ups of ``channel`` on this hub, once a request waited on it."""
    return _by_hub.get(hub, {}).get(channel)


@contextlib.asynccontextmanager
async def keyed_wakeup(
    hub: NotifyHub, channel: str, key: int, *, polling: str
) -> AsyncIterator[tuple[KeyedWakeups, asyncio.Event]]:
    """An event set by the notifications of ``channel`` for ``key`` while the block runs (with the
    channel's wake-ups, to tell whether they listen); ``polling`` is what the log says when the
    server cannot listen."""
    channels = _by_hub.setdefault(hub, {})
    wakeups = channels.get(channel)
    if wakeups is None:
        wakeups = channels[channel] = KeyedWakeups(channel)
    try:
        await wakeups.ensure_listening(hub)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning(f"cannot listen on {channel}; {polling}", error=str(exc))
    event = asyncio.Event()
    wakeups.events.setdefault(key, set()).add(event)
    try:
        yield wakeups, event
    finally:
        events = wakeups.events.get(key)
        if events is not None:
            events.discard(event)
            if not events:
                del wakeups.events[key]
