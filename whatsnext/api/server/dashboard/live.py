"""The dashboard's live updates: one poller per server process feeds every open page.

While at least one ``/ui/events`` stream is open, one task per application reads the job history
(``events_since``) every ``BATCH_SECONDS`` and hands what changed to every stream; each stream keeps
the jobs of the project or job it watches that its viewer may see, and sends them as one ``change``
event (at most every ``BATCH_SECONDS``). With no stream open, nothing reads the database. The
format of a stream::

    event: hello
    data: {}

    event: change
    data: {"jobs": [12, 13]}

    : keep-alive

Each stream holds one of its client's stream slots (``limits.stream_slot``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from ..errors import ApiError
from ..http import client_gone
from ..keys import store_key
from ..limits import stream_slot
from ..roles import Principal
from .session import LoginRequired, viewer

log = structlog.get_logger("whatsnext.server")

BATCH_SECONDS = 0.25
"""How often the poller reads the job history (once for all streams)."""
KEEPALIVE_SECONDS = 15.0
"""A stream with nothing to say sends a comment after this long, so that proxies see traffic."""
PAGE = 1000
"""History entries one read takes at most (a full page is followed by another read at once)."""
MAX_IDS = 200
"""Job ids one ``change`` event carries at most."""
MAX_PENDING = 1000
"""Job ids a stream collects at most between two writes (a slow reader loses the rest)."""
HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class Watcher:
    """One open stream: what it watches, who looks, and the changed jobs not yet sent."""

    __slots__ = ("gone", "is_gone", "job_id", "pending", "project_id", "wake", "who")

    def __init__(
        self,
        who: Principal,
        project_id: int | None,
        job_id: int | None,
        is_gone: Callable[[], bool] = lambda: False,
    ) -> None:
        self.who = who
        self.project_id = project_id
        self.job_id = job_id
        self.is_gone = is_gone
        self.gone = False
        self.pending: set[int] = set()
        self.wake = asyncio.Event()

    def offer(self, by_project: dict[int, set[int]]) -> None:
        """Keep, of the changed jobs (by project), those this stream watches and may see."""
        if self.project_id is not None:
            jobs = by_project.get(self.project_id)
            projects = [] if jobs is None else [(self.project_id, jobs)]
        else:
            projects = list(by_project.items())
        before = len(self.pending)
        for project_id, jobs in projects:
            if len(self.pending) >= MAX_PENDING or not self.who.covers(project_id):
                continue
            if self.job_id is not None:
                if self.job_id in jobs:
                    self.pending.add(self.job_id)
            else:
                self.pending |= jobs
        if len(self.pending) != before:
            self.wake.set()

    def take(self) -> list[int]:
        """The changed jobs to send now (the smallest ids, at most ``MAX_IDS``), forgotten here."""
        ids = sorted(self.pending)[:MAX_IDS]
        self.pending.clear()
        return ids


class LiveFeed:
    """The poller of one application and the streams it feeds."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.watchers: set[Watcher] = set()
        self.closing = False
        self.polls = 0
        """Reads of the job history made (for tests and curious operators)."""
        self.pollers = 0
        """Poller tasks started (one at a time, while streams are open)."""
        self._after = self._after_job = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()

    def _store(self) -> Any:
        return self.app[store_key].dashboard

    async def join(self, watcher: Watcher) -> None:
        """Feed ``watcher`` from now on: changes made after this returns reach it."""
        async with self._lock:
            if self._task is None or self._task.done():
                self._after, self._after_job = await self._store().events_head()
                self._task = asyncio.create_task(self._run(), name="dashboard live updates")
                self.pollers += 1
            self.watchers.add(watcher)

    def leave(self, watcher: Watcher) -> None:
        """Stop feeding ``watcher`` (the poller ends after its last stream leaves)."""
        self.watchers.discard(watcher)

    async def close(self) -> None:
        """End every stream and the poller (the server stops)."""
        self.closing = True
        self._stop.set()
        for watcher in self.watchers:
            watcher.wake.set()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        full = failing = False
        while self.watchers and not self.closing:
            if not full:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), BATCH_SECONDS)
            if not self.watchers or self.closing:
                return  # nothing checks in between: a stream that joins now finds this task done
            try:
                rows = await self._store().events_since(
                    after=self._after, after_job=self._after_job, limit=PAGE
                )
            except Exception as exc:  # the database is away: streams stay open, the next read retries
                if not failing:
                    log.warning("live updates cannot read the job history", error=str(exc))
                failing, full = True, False
                continue
            if failing:
                log.info("live updates read the job history again")
            failing = False
            self.polls += 1
            full = len(rows) >= PAGE
            self._fan_out(rows)

    def _fan_out(self, rows: list[Any]) -> None:
        by_project: dict[int, set[int]] = {}
        for r in rows:
            if r["kind"] == "event":
                self._after = max(self._after, r["id"])
            else:
                self._after_job = max(self._after_job, r["id"])
            by_project.setdefault(r["project_id"], set()).add(r["job_id"])
        for watcher in list(self.watchers):
            if watcher.is_gone():
                watcher.gone = True  # the reader went away: its stream ends and frees its slot
                watcher.wake.set()
            elif by_project:
                watcher.offer(by_project)


live_key = web.AppKey("dashboard_live", LiveFeed)


def install_live(app: web.Application) -> None:
    """The application's live feed, closed when the server stops."""
    app[live_key] = LiveFeed(app)

    async def close(app: web.Application) -> None:
        await app[live_key].close()

    app.on_shutdown.append(close)


def _id(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isascii() and raw.isdigit() and len(raw) < 19 else None


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``change`` (with the job ids) at most every 250 ms while the project
    or job watched (or, without either, anything visible) changes."""
    try:
        who = await viewer(request)
    except LoginRequired:
        raise ApiError(401, "unauthorized", "sign in first", {"field": "session"}) from None
    if not who.can("read"):
        raise ApiError(403, "forbidden", f"the role {who.role} may not see this", {"field": "role"})
    feed = request.app[live_key]
    watcher = Watcher(
        who, _id(request.query.get("project")), _id(request.query.get("job")), lambda: client_gone(request)
    )
    with stream_slot(request):
        response = web.StreamResponse(headers=HEADERS)
        await response.prepare(request)
        await feed.join(watcher)
        try:
            await _stream(response, feed, watcher)
        except ConnectionError:
            pass  # the reader went away
        finally:
            feed.leave(watcher)
    return response


async def _stream(response: web.StreamResponse, feed: LiveFeed, watcher: Watcher) -> None:
    await response.write(b"event: hello\ndata: {}\n\n")
    loop = asyncio.get_running_loop()
    since_write = loop.time()
    while not feed.closing and not watcher.gone:
        wait = since_write + KEEPALIVE_SECONDS - loop.time()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.wake.wait(), wait)
        watcher.wake.clear()
        if feed.closing or watcher.gone:
            break
        if watcher.pending:
            await response.write(b"event: change\ndata: " + orjson.dumps({"jobs": watcher.take()}) + b"\n\n")
            since_write = loop.time()
        elif loop.time() - since_write >= KEEPALIVE_SECONDS:
            await response.write(b": keep-alive\n\n")
            since_write = loop.time()
