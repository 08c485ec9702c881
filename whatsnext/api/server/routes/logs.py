"""Live logs: workers append a running job's output lines; anyone reads them by page or follows them.

Each job keeps its newest ``Settings.log_keep_lines`` lines (``$WHATSNEXT_LOG_KEEP_LINES``, default
10,000); older ones are deleted and counted, and readers see how many (``dropped``). Every line has
a number within its job (``seq``), so a jump in ``seq`` tells a reader exactly how many lines it
missed.

``GET /jobs/{job_id}/logs?follow=1`` streams NDJSON (one JSON object per line of the response):
``{"id", "seq", "attempt", "line", "at"}`` for each output line, ``{"dropped": N}`` where N lines
were removed before the stream reached them, and a last ``{"finished": true, "status": ...}``
once the job is finished. While the job is silent, a ``{"keepalive": true}`` line goes out every
``$WHATSNEXT_KEEPALIVE_SECONDS`` (default 15) so that proxies see traffic; readers skip it. One
request lasts at most the server's ``--max-wait``: it then ends with ``{"finished": false,
"status": ..., "reason": "max_wait"}`` (without ``reason`` when the server stops first), and the
reader resumes with ``?after=<last id>``. ``&format=text`` streams the bare lines instead, for
``curl`` (a keep-alive is an empty line there, and the stream just ends at the cap).
A follow holds one of its client's stream slots while it lasts (``limits``): past
``--max-streams-per-client`` or ``--max-streams`` it is answered 429 with ``Retry-After``.
Followers are woken by ``NOTIFY whatsnext_logs, '<job_id>'`` (sent by every append) through the
server's LISTEN connection, and look again every ``RECHECK`` seconds regardless, which is how they
notice that the job finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from ....models import FINISHED
from ..errors import not_found
from ..http import (
    attempt_answer,
    client_gone,
    json_response,
    parse_body,
    path_id,
    query_choice,
    query_flag,
    query_int,
)
from ..keys import hub_key, settings_key, store_key
from ..limits import stream_slot
from ..notify import NotifyHub
from ..notify.keyed import KeyedWakeups, keyed_wakeup
from ..roles import READ_JOB, Rule
from ..schemas_logs import LogAppend, LogAppendBatch, LogAppended, LogAppendResults, LogPage
from .table import OWN_ATTEMPT, routes

logs_routes = routes.section("logs")

log = structlog.get_logger("whatsnext.server")

LOG_CHANNEL = "whatsnext_logs"
PAGE = 1000
RECHECK = 0.5
"""Seconds a follower waits at most between looks (it learns that the job finished this way)."""
POLL_FIRST, POLL_CAP = 0.05, 1.0
"""Backoff between looks when the hub offers no subscription to LOG_CHANNEL."""
KEEPALIVE_LINE = b'{"keepalive": true}\n'
"""What an NDJSON follow stream sends while the job is silent (Settings.keepalive_seconds)."""


# ---------------------------------------------------------------- wake-ups of followers


class JobLogWaiter:
    """What one follow stream waits on: its job's notifications, or a bounded poll."""

    def __init__(self, wakeups: KeyedWakeups, event: asyncio.Event) -> None:
        self._wakeups = wakeups
        self.event = event
        self._delay = POLL_FIRST

    def before_read(self) -> None:
        """Forget earlier wake-ups: what they announced is about to be read."""
        self.event.clear()

    def got_lines(self) -> None:
        self._delay = POLL_FIRST

    async def wait(self, limit: float | None = None) -> None:
        """Wait for a wake-up, at most RECHECK seconds (or the poll backoff), and at most ``limit``."""
        if self._wakeups.listening:
            timeout = RECHECK
        else:
            timeout, self._delay = self._delay, min(self._delay * 2, POLL_CAP)
        if limit is not None:
            timeout = max(0.0, min(timeout, limit))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)


@contextlib.asynccontextmanager
async def job_log_waiter(hub: NotifyHub, job_id: int) -> AsyncIterator[JobLogWaiter]:
    """Wake-ups for new lines of one job, through ``NotifyHub.subscribe`` when the hub has it."""
    async with keyed_wakeup(hub, LOG_CHANNEL, job_id, polling="followers poll") as (wakeups, event):
        yield JobLogWaiter(wakeups, event)


# ---------------------------------------------------------------- routes


def _line(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "seq": row["seq"],
        "attempt": row["attempt"],
        "line": row["line"],
        "at": row["at"],
    }


def _lines(rows: Sequence[asyncpg.Record]) -> list[dict[str, Any]]:
    return [_line(r) for r in rows if r["id"] is not None]


@logs_routes.post(
    "/jobs/{job_id}/logs",
    "Append output lines of a job's running attempt (refused for another attempt, like a stale report)",
    body=LogAppend,
    response=LogAppended,
    **OWN_ATTEMPT,
)
async def append_logs(request: web.Request) -> web.Response:
    job_id = path_id(request, "job_id")
    body = await parse_body(request, LogAppend)
    row = await request.app[store_key].logs.append(
        job_id=job_id, attempt=body.attempt, lines=body.lines, keep=request.app[settings_key].log_keep_lines
    )
    return attempt_answer(job_id, row, "appended", "dropped")


@logs_routes.post(
    "/jobs/logs",
    "Append output lines of several jobs in one round trip (what workers use)",
    rule=Rule("work", "logs"),
    body=LogAppendBatch,
    response=LogAppendResults,
    errors=(400, 422),
)
async def append_logs_many(request: web.Request) -> web.Response:
    entries = (await parse_body(request, LogAppendBatch)).root
    rows = await request.app[store_key].logs.append_many(
        batches=[e.model_dump() for e in entries], keep=request.app[settings_key].log_keep_lines
    )
    return json_response({"results": rows})


@logs_routes.get(
    "/jobs/{job_id}/logs",
    "A job's output lines, oldest first; ?follow=1 streams them (NDJSON) until the job finishes",
    rule=READ_JOB,
    response=LogPage,
    query={
        "after": "only lines with a larger id (the last id you read)",
        "limit": "page size (default 1000, at most 10000)",
        "tail": "only the last N lines (after ?after=)",
        "follow": "1: stream the lines as they come, until the job finishes",
        "format": "with follow=1: ndjson (default) or text",
    },
    streams={
        "application/x-ndjson": "With ?follow=1: one JSON object per line: output lines "
        '{"id", "seq", "attempt", "line", "at"}, {"dropped": N}, {"keepalive": true} while the job is '
        'silent, and a last {"finished", "status"} ({"finished": false, "reason": "max_wait"} at the '
        "server's max wait: resume with ?after=<last id>).",
        "text/plain": "With ?follow=1&format=text: the bare output lines (an empty line as keep-alive).",
    },
)
async def read_logs(request: web.Request) -> web.StreamResponse:
    job_id = path_id(request, "job_id")
    after = query_int(request, "after", 0, 0) or 0
    limit = query_int(request, "limit", PAGE, 1, 10_000) or PAGE
    tail = query_int(request, "tail", None, 1, 100_000)
    if query_flag(request, "follow"):
        text = query_choice(request, "format", ("NDJSON", "TEXT")) == "TEXT"
        with stream_slot(request):  # 429 past --max-streams-per-client or --max-streams
            return await _follow(request, job_id, after, tail, text)
    rows = await request.app[store_key].logs.read(
        job_id=job_id, after=after, limit=tail if tail is not None else limit, tail=tail is not None
    )
    if not rows:
        raise not_found("job", job_id, "job_id")
    lines = _lines(rows)
    status = rows[0]["status"]
    return json_response(
        {
            "lines": lines,
            "dropped": rows[0]["dropped"],
            "finished": status in FINISHED,
            "status": status,
            "last_id": lines[-1]["id"] if lines else after,
        }
    )


# ---------------------------------------------------------------- follow


class _Stream:
    """Writes events as NDJSON, or as bare text lines."""

    def __init__(self, resp: web.StreamResponse, text: bool) -> None:
        self.resp = resp
        self.text = text
        self.attempt: int | None = None

    def encode(self, lines: list[dict[str, Any]], gap: int) -> bytes:
        out: list[bytes] = []
        if gap > 0:
            out.append(
                f"[... {gap} earlier lines dropped ...]\n".encode()
                if self.text
                else orjson.dumps({"dropped": gap}) + b"\n"
            )
        for line in lines:
            if self.text:
                if self.attempt is not None and line["attempt"] != self.attempt:
                    out.append(f"[... attempt {line['attempt']} ...]\n".encode())
                self.attempt = line["attempt"]
                out.append(line["line"].encode("utf-8", "replace") + b"\n")
            else:
                out.append(orjson.dumps(line) + b"\n")
        return b"".join(out)

    async def keepalive(self) -> None:
        """A line that carries nothing, so that proxies see traffic while the job is silent."""
        await self.resp.write(b"\n" if self.text else KEEPALIVE_LINE)

    async def end(self, finished: bool, status: str | None, reason: str | None = None) -> None:
        if not self.text:
            event: dict[str, Any] = {"finished": finished, "status": status}
            if reason is not None:
                event["reason"] = reason
            await self.resp.write(orjson.dumps(event) + b"\n")
        await self.resp.write_eof()


async def _follow(
    request: web.Request, job_id: int, after: int, tail: int | None, text: bool
) -> web.StreamResponse:
    logs, hub, settings = request.app[store_key].logs, request.app[hub_key], request.app[settings_key]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.max_wait
    async with job_log_waiter(hub, job_id) as waiter:
        waiter.before_read()
        rows = await logs.read(
            job_id=job_id, after=after, limit=tail if tail is not None else PAGE, tail=tail is not None
        )
        if not rows:
            raise not_found("job", job_id, "job_id")
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/plain; charset=utf-8" if text else "application/x-ndjson",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        stream = _Stream(resp, text)
        # The last line number sent: a jump past it means dropped lines (unknown when resuming).
        last_seq: int | None = 0 if after == 0 and tail is None else None
        full_page: int | None = None if tail is not None else PAGE  # a tail has nothing newer
        status: str | None = rows[0]["status"]
        last_write = loop.time()
        try:
            while True:
                status = rows[0]["status"]
                lines = _lines(rows)
                if lines:
                    gap = lines[0]["seq"] - last_seq - 1 if last_seq is not None else 0
                    await resp.write(stream.encode(lines, gap))
                    after, last_seq = lines[-1]["id"], lines[-1]["seq"]
                    last_write = loop.time()
                    waiter.got_lines()
                full = full_page is not None and len(lines) >= full_page
                full_page = PAGE
                if not full:
                    if status in FINISHED:
                        await stream.end(True, status)
                        return resp
                    if hub.closing or client_gone(request):
                        break
                    now = loop.time()
                    if now >= deadline:
                        # The longest a request lasts: the reader resumes with ?after=<last id>.
                        await stream.end(False, status, "max_wait")
                        return resp
                    if now - last_write >= settings.keepalive_seconds:
                        await stream.keepalive()
                        last_write = now
                    await waiter.wait(min(deadline, last_write + settings.keepalive_seconds) - now)
                    if hub.closing or client_gone(request):
                        break
                waiter.before_read()
                rows = await logs.read(job_id=job_id, after=after, limit=PAGE)
                if not rows:  # the job was deleted while followed
                    status = None
                    break
        except ConnectionError:
            return resp  # the reader went away
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("log follow ended early", job=job_id, error=str(exc))
        with contextlib.suppress(ConnectionError, OSError):
            await stream.end(False, status)
        return resp
