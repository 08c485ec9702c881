"""Live logs from the worker: ship each running job's output lines to the server in small batches.

``LogShipper.open(job_id, attempt)`` gives the ``RunContext.on_output`` callback of one job. The
callback only appends to an in-memory buffer, so a job never waits for the network. A background
task (:meth:`LogShipper.run`) posts each job's buffered lines every ``interval`` seconds, or as soon
as ``batch_lines`` are waiting; the lines of all due jobs go in one ``POST /jobs/logs``. When the
job ends,
:meth:`LogShipper.finish` sends what is left and waits for that delivery (bounded), so that the
lines are on the server before the job's report.

Memory is bounded: a job's buffer holds at most ``job_buffer_chars`` characters and all buffers
together ``total_buffer_chars``; past that the oldest lines are dropped and counted, and the next
batch starts with a marker line saying how many. Lines longer than ``max_line_chars`` are cut.
One request carries at most ``max_request_lines`` lines and about ``max_request_chars`` characters
(512 Ki by default); a bigger backlog goes in several requests.
Connection errors and server errors are retried with backoff while the lines wait in the (bounded)
buffer; a refused batch (stale attempt, unknown job) is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from ...limits import MAX_LOG_BATCH, MAX_LOG_REQUEST
from .backoff import Backoff
from .errors import RETRYABLE, NotFound, WhatsNextError
from .http import Http

log = structlog.get_logger("whatsnext.logship")

MAX_REQUEST_CHARS = 512 * 1024
"""Characters of output in one ``POST /jobs/logs`` (plus at most one line per job past it): with
``max_line_chars`` this keeps a log batch well under a proxy's body limit (docs/deployment.md)."""
CUT_MARK = " [... line cut]"


def dropped_marker(n: int) -> str:
    return f"[... {n} lines dropped by the worker ...]"


def clean_line(line: str, limit: int) -> str:
    """One line as shipped: what a terminal would show after carriage returns, no NULs, cut to ``limit``."""
    line = line.rstrip("\r\n")
    if "\r" in line:
        line = line.rsplit("\r", 1)[-1]
    if "\x00" in line:
        line = line.replace("\x00", "\ufffd")
    if len(line) > limit:
        line = line[: max(limit - len(CUT_MARK), 0)] + CUT_MARK
    return line


@dataclass
class _JobBuffer:
    job_id: int
    attempt: int
    lines: deque[str] = field(default_factory=deque)
    chars: int = 0
    dropped: int = 0
    """Lines dropped by the bounds since the last marker was sent."""
    since: float | None = None
    """When the oldest unsent line arrived (monotonic)."""
    finished: bool = False
    dead: bool = False
    """The server refused this job's lines (stale attempt, unknown job): discard what comes."""
    flushers: list[asyncio.Future[None]] = field(default_factory=list)

    def wake_flushers(self) -> None:
        for fut in self.flushers:
            if not fut.done():
                fut.set_result(None)
        self.flushers.clear()


class LogShipper:
    """Collects the output lines of a worker's running jobs and posts them in small batches."""

    def __init__(
        self,
        http: Http,
        *,
        interval: float = 0.5,
        batch_lines: int = 200,
        max_batch: int = MAX_LOG_BATCH,
        max_request_lines: int = 5000,
        max_request_chars: int = MAX_REQUEST_CHARS,
        max_line_chars: int = 16_384,
        job_buffer_chars: int = 4_000_000,
        total_buffer_chars: int = 32_000_000,
        post_timeout: float = 30.0,
    ) -> None:
        self.http = http
        self.interval = interval
        self.batch_lines = batch_lines
        self.max_batch = max(1, min(max_batch, MAX_LOG_BATCH))
        self.max_request_lines = max(1, min(max_request_lines, MAX_LOG_REQUEST))
        self.max_request_chars = max(1, max_request_chars)
        self.max_line_chars = max_line_chars
        self.job_buffer_chars = job_buffer_chars
        self.total_buffer_chars = max(total_buffer_chars, job_buffer_chars)
        self.post_timeout = post_timeout
        self.delivered = 0
        """Lines the server took."""
        self.dropped = 0
        """Lines dropped to keep the buffers bounded."""
        self.discarded = 0
        """Lines the server refused (stale attempt, unknown job, invalid)."""
        self.disabled = False
        """The server has no log route: nothing is collected."""
        self._jobs: dict[int, _JobBuffer] = {}
        self._chars = 0
        self._wake = asyncio.Event()
        self._flush = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None

    # ------------------------------------------------------------ collecting (never waits)

    def open(self, job_id: int, attempt: int) -> Callable[[str], None]:
        """Start collecting one attempt's lines; returns the callback for ``RunContext.on_output``."""
        old = self._jobs.get(job_id)
        if old is not None:
            self._forget(old)
        self._jobs[job_id] = _JobBuffer(job_id, attempt)

        def on_output(line: str) -> None:
            if self._loop is not None and threading.get_ident() != self._thread:
                self._loop.call_soon_threadsafe(self.write, job_id, line, attempt)
            else:
                self.write(job_id, line, attempt)

        return on_output

    def write(self, job_id: int, line: str, attempt: int | None = None) -> None:
        """Buffer one line of a job (call on the event loop's thread; ``open`` first). A line of
        another attempt than the one collected (an older one still stopping) is dropped."""
        buf = self._jobs.get(job_id)
        if buf is None or buf.dead or self.disabled or (attempt is not None and attempt != buf.attempt):
            return
        line = clean_line(line, self.max_line_chars)
        buf.lines.append(line)
        size = len(line) + 1
        buf.chars += size
        self._chars += size
        if buf.since is None:
            buf.since = time.monotonic()
        self._idle.clear()
        while buf.chars > self.job_buffer_chars and len(buf.lines) > 1:
            self._drop_oldest(buf)
        if self._chars > self.total_buffer_chars:
            self._enforce_total()
        if len(buf.lines) >= self.batch_lines:
            self._wake.set()
        elif not self._wake.is_set() and len(buf.lines) == 1:
            self._wake.set()  # the sender starts this buffer's interval

    def _drop_oldest(self, buf: _JobBuffer) -> None:
        line = buf.lines.popleft()
        size = len(line) + 1
        buf.chars -= size
        self._chars -= size
        buf.dropped += 1
        self.dropped += 1

    def _enforce_total(self) -> None:
        while self._chars > self.total_buffer_chars:
            largest = max(self._jobs.values(), key=lambda b: b.chars)
            if not largest.lines:
                return
            self._drop_oldest(largest)

    def _forget(self, buf: _JobBuffer) -> None:
        self._chars -= buf.chars
        buf.chars = 0
        buf.lines.clear()
        buf.wake_flushers()
        if self._jobs.get(buf.job_id) is buf:
            del self._jobs[buf.job_id]
        self._update_idle()

    def _update_idle(self) -> None:
        if not any(b.lines or b.dropped for b in self._jobs.values()):
            self._idle.set()

    # ------------------------------------------------------------ flushing

    async def finish(self, job_id: int, timeout: float = 10.0, attempt: int | None = None) -> None:
        """The job ended: send its buffered lines now and wait (at most ``timeout``) for the server.

        Returns early when the server cannot be reached: the lines stay buffered and are retried
        in the background, so a report is never held up by an outage. Never raises. With
        ``attempt``: only if that attempt's lines are the ones collected.
        """
        buf = self._jobs.get(job_id)
        if buf is None or (attempt is not None and attempt != buf.attempt):
            return
        buf.finished = True
        if buf.dead or not (buf.lines or buf.dropped):
            self._forget(buf)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        buf.flushers.append(fut)
        self._wake.set()
        self._flush.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), timeout)

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every buffered line is delivered (or refused); False if some remain after ``timeout``."""
        for buf in self._jobs.values():
            buf.finished = True
        self._wake.set()
        self._flush.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            left = sum(len(b.lines) for b in self._jobs.values())
            log.warning("live log lines not delivered", lines=left)
            return False

    # ------------------------------------------------------------ sending

    async def run(self) -> None:
        """Send batches until cancelled (run it in the worker's task group)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        backoff = Backoff()
        while True:
            await self._wait_for_work()
            if await self._send_round():
                backoff.reset()
                continue
            delay = backoff.next()
            log.warning("live log lines not delivered; retrying", retry_in=round(delay, 2))
            # Sleep, but let a flush request through at once: finish() waits for one attempt.
            self._flush.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush.wait(), delay)

    def _due(self, buf: _JobBuffer, now: float) -> bool:
        if not (buf.lines or buf.dropped) or buf.dead:
            return False
        if buf.flushers or buf.finished or len(buf.lines) >= self.batch_lines:
            return True
        return buf.since is None or now - buf.since >= self.interval

    async def _wait_for_work(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            pending = [b for b in self._jobs.values() if (b.lines or b.dropped) and not b.dead]
            if any(self._due(b, now) for b in pending):
                return
            timeout = None
            if pending:
                oldest = min((b.since for b in pending if b.since is not None), default=now)
                timeout = max(0.0, oldest + self.interval - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _send_round(self) -> bool:
        """Post every due buffer (several jobs per request); False when the server could not be reached."""
        now = time.monotonic()
        due = sorted((b for b in self._jobs.values() if self._due(b, now)), key=lambda b: b.job_id)
        while due and not self.disabled:
            entries: list[tuple[_JobBuffer, list[str], int]] = []
            lines_left, chars_left = self.max_request_lines, self.max_request_chars
            for buf in due:
                if lines_left <= 0 or chars_left <= 0:
                    break
                batch, marker, chars = self._take(buf, min(self.max_batch, lines_left), chars_left)
                entries.append((buf, batch, marker))
                lines_left -= len(batch)
                chars_left -= chars
            if not await self._post(entries):
                for b in list(self._jobs.values()):
                    b.wake_flushers()  # the flush attempt failed: let the reports go
                return False
            for buf, _, _ in entries:
                if not (buf.lines or buf.dropped):
                    buf.since = None
                    buf.wake_flushers()
                    if buf.finished:
                        self._forget(buf)
            now = time.monotonic()
            # Every buffer due now, not only the round's first ones: a job flooding its output keeps
            # the round going, and a job that ended meanwhile must not wait for the flood to stop.
            due = sorted((b for b in self._jobs.values() if self._due(b, now)), key=lambda b: b.job_id)
        self._update_idle()
        return True

    def _take(self, buf: _JobBuffer, max_lines: int, max_chars: int) -> tuple[list[str], int, int]:
        """Take the next lines of a buffer (at least one); a marker first if lines were dropped."""
        batch: list[str] = []
        marker = buf.dropped
        if marker:
            batch.append(dropped_marker(marker))
            buf.dropped = 0
        taken = 0
        while buf.lines and len(batch) < max_lines:
            size = len(buf.lines[0]) + 1
            if batch and taken + size > max_chars:
                break
            batch.append(buf.lines.popleft())
            taken += size
        buf.chars -= taken
        self._chars -= taken
        if not buf.lines:
            buf.since = None  # the next line starts a new interval (a backlog stays due)
        return batch, marker, taken

    async def _post(self, entries: list[tuple[_JobBuffer, list[str], int]]) -> bool:
        body = [{"id": b.job_id, "attempt": b.attempt, "lines": lines} for b, lines, _ in entries]
        try:
            out = await self.http.post("/jobs/logs", body, timeout=self.post_timeout)
        except RETRYABLE as exc:
            log.debug("live log lines not delivered", jobs=[b.job_id for b, _, _ in entries], error=str(exc))
            for buf, lines, marker in entries:
                self._put_back(buf, lines[1 if marker else 0 :], marker)
            return False
        except NotFound:
            log.warning("the server takes no live logs (an older server?); not sending them")
            self.disabled = True
            for b in list(self._jobs.values()):
                self._forget(b)
            return True
        except Exception as exc:  # refused (invalid), or a bug: drop these lines, never the worker
            message = exc.message if isinstance(exc, WhatsNextError) else repr(exc)
            log.warning("live log lines refused", jobs=[b.job_id for b, _, _ in entries], error=message)
            self.discarded += sum(len(lines) for _, lines, _ in entries)
            return True
        results = {r["id"]: r for r in out["results"]}
        for buf, lines, _ in entries:
            result = results.get(buf.job_id)
            if result is not None and result["code"] == 200:
                self.delivered += len(lines)
            else:
                self._refused(buf, lines, result["message"] if result else "no answer")
        return True

    def _put_back(self, buf: _JobBuffer, lines: list[str], marker: int) -> None:
        if buf.dead or self._jobs.get(buf.job_id) is not buf:
            return
        buf.lines.extendleft(reversed(lines))
        size = sum(len(line) + 1 for line in lines)
        buf.chars += size
        self._chars += size
        buf.dropped += marker
        if buf.since is None:
            buf.since = time.monotonic()
        while buf.chars > self.job_buffer_chars and len(buf.lines) > 1:
            self._drop_oldest(buf)
        if self._chars > self.total_buffer_chars:
            self._enforce_total()

    def _refused(self, buf: _JobBuffer, batch: list[str], reason: str) -> None:
        log.info("live log lines refused; dropping this job's lines", job=buf.job_id, reason=reason)
        buf.dead = True
        self.discarded += len(batch) + len(buf.lines)
        self._chars -= buf.chars
        buf.chars = 0
        buf.lines.clear()
        buf.dropped = 0
        buf.wake_flushers()
        if buf.finished:
            self._forget(buf)


__all__ = ["LogShipper", "clean_line", "dropped_marker"]
