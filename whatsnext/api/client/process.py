"""Run one job's subprocess: supervised, captured output of any shape, timeout and cancellation.

Every job runs under :mod:`whatsnext.api.client.supervisor`, a small process that starts the job in
a process group of its own and kills that whole group when the worker dies (even by SIGKILL), when
the worker asks (cancel, timeout), and when the job's main process exits (what it left running).

The job's stdout and stderr go to one pipe that the worker always reads, in chunks, whatever the job
prints: lines end at ``\\n`` or ``\\r`` (each redraw of a progress bar is a line, ``\\r\\n`` is one
line break; a redraw that a later line overwrites within one read is left out), a line longer than
:data:`MAX_LINE` bytes keeps its start and a marker saying how much was cut, NUL bytes become
U+FFFD and invalid UTF-8 is replaced. Since the pipe never fills, a job can print anything at any
rate and still be cancelled or timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from .formatters.base import Outcome, RunContext

SUPERVISOR = str(Path(__file__).with_name("supervisor.py"))
CHUNK = 65_536
"""Bytes read from a job's output pipe at a time."""
MAX_LINE = 16_384
"""Longest line (in bytes, marker included) passed on; the rest of a longer line is counted, not kept."""
DRAIN_SECONDS = 2.0
"""After the job ended, how long output is still read from processes that escaped its group."""
ORPHAN_GRACE = 3.0
"""Most seconds between SIGTERM and SIGKILL when the supervisor finds the worker gone."""
SUPERVISOR_EXIT_SECONDS = 10.0
"""How long the worker waits for the supervisor after SIGKILL before killing it directly."""

_EOL = re.compile(rb"\r\n|\r|\n")


def clean_text(text: str) -> str:
    """``text`` without NUL characters (PostgreSQL text cannot hold them): each becomes U+FFFD."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class LineSplitter:
    """Turns a byte stream into lines of text: split on ``\\n``, ``\\r`` or ``\\r\\n``, capped, clean."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.keep = max(max_line - 40, 1)  # room for the cut marker
        self._line = bytearray()
        self._cut = 0
        self._after_cr = False

    def feed(self, data: bytes) -> list[str]:
        """The lines that ``data`` completes (the unfinished last one waits for more).

        A line ended by a lone ``\r`` is a redraw (a progress bar): when another line follows it
        in the same ``data``, the redraw is left out, as a terminal would overwrite it. So a bar
        redrawn faster than it is read gives one line per read, not one per redraw.
        """
        lines: list[str] = []
        pos = 0
        if self._after_cr and data[:1] == b"\n":
            pos = 1  # the second half of a \r\n split between two reads
        self._after_cr = False
        redraw = False
        for match in _EOL.finditer(data, pos):
            self._add(data, pos, match.start())
            if redraw:
                lines[-1] = self._take()
            else:
                lines.append(self._take())
            redraw = match.end() - match.start() == 1 and data[match.start()] == 13  # a lone \r
            pos = match.end()
        if data.endswith(b"\r") and pos == len(data):
            self._after_cr = True
        self._add(data, pos, len(data))
        return lines

    def close(self) -> list[str]:
        """The last line, when the stream ended without a line break."""
        if not self._line and not self._cut:
            return []
        return [self._take()]

    def _add(self, data: bytes, start: int, end: int) -> None:
        room = self.keep - len(self._line)
        if end - start <= room:
            self._line += data[start:end]
        else:
            self._line += data[start : start + max(room, 0)]
            self._cut += end - start - max(room, 0)

    def _take(self) -> str:
        text = clean_text(self._line.decode("utf-8", errors="replace"))
        if self._cut:
            text += f" [... {self._cut} bytes cut]"
        self._line = bytearray()
        self._cut = 0
        return text


class OutputTail:
    """Keeps the last ``limit`` characters of a job's output (older text dropped first, with a marker)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: deque[str] = deque()
        self._size = 0
        self.dropped = False

    def add(self, text: str) -> None:
        self._chunks.append(text)
        self._size += len(text)
        while self._size > self.limit:
            excess = self._size - self.limit
            oldest = self._chunks[0]
            if len(oldest) <= excess:
                self._chunks.popleft()
                self._size -= len(oldest)
            else:
                self._chunks[0] = oldest[excess:]
                self._size -= excess
            self.dropped = True

    def text(self) -> str:
        body = "".join(self._chunks)
        return ("[... earlier output dropped ...]\n" + body) if self.dropped else body


class _OutputPump:
    """Reads a job's output pipe whenever it has data (never pausing), line by line to the sinks."""

    def __init__(self, fd: int, tail: OutputTail, on_output: Callable[[str], None] | None) -> None:
        self.fd = fd
        self.tail = tail
        self.on_output = on_output
        self.lines = LineSplitter()
        self.ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._emit(self.lines.feed(data))
        else:
            self.close()

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            self.tail.add(line + "\n")
            if self.on_output is not None:
                try:
                    self.on_output(line)
                except Exception:  # a broken live-log sink must not stop the draining
                    self.on_output = None

    async def drained(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until every writer of the pipe has closed it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), timeout)

    def close(self) -> None:
        """Stop reading (at end of file, or giving up on processes that escaped the job's group)."""
        if self.ended.is_set():
            return
        self._loop.remove_reader(self.fd)
        os.close(self.fd)
        self._emit(self.lines.close())
        self.ended.set()


class _Control:
    """The worker's end of the supervisor's control pipe: signals for the job's group; closing = gone."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def signal(self, sig: int) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):  # the supervisor has already exited
            os.write(self.fd, bytes([sig]))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _findable(program: str, env: dict[str, str], cwd: str | None) -> bool:
    if os.sep in program:
        path = os.path.join(cwd or os.getcwd(), program)
        return os.path.isfile(path) and os.access(path, os.X_OK)
    return shutil.which(program, path=env.get("PATH", os.defpath)) is not None


async def run_process(
    argv: Sequence[str] | str,
    ctx: RunContext,
    *,
    shell: bool = False,
) -> Outcome:
    """Start ``argv`` (or a shell command line when ``shell``) under the supervisor.

    Output (stdout and stderr, merged) is passed line by line to ``ctx.on_output`` and its tail is
    kept for the report. When ``ctx.cancel`` is set or ``ctx.timeout`` passes, the job's whole
    process group gets ``ctx.stop_signal`` (SIGTERM unless the worker says otherwise), then SIGKILL
    after ``ctx.grace`` seconds; a suspended job, or one whose lease was lost, gets SIGKILL at once.
    While the group runs, ``ctx.signal_job`` sends it a signal (suspend, resume).
    """
    env = {**os.environ, **ctx.env}
    started = time.monotonic()
    if shell:
        assert isinstance(argv, str)
        command = ["/bin/sh", "-c", argv]
    else:
        assert not isinstance(argv, str)
        command = list(argv)
    if not command or not _findable(command[0], env, ctx.cwd):
        return Outcome(
            status="FAILED",
            exit_code=127,
            error=f"could not start {argv!r}: no such program (or not executable)",
            duration=time.monotonic() - started,
            retryable=False,
        )
    out_r, out_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    grace = min(ctx.grace, ORPHAN_GRACE)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            SUPERVISOR,
            str(ctl_r),
            str(os.getpid()),
            f"{grace:g}",
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out_w,
            stderr=out_w,
            pass_fds=(ctl_r,),
            env=env,
            cwd=ctx.cwd,
            start_new_session=True,
        )
    except OSError as exc:
        for fd in (out_r, ctl_w):
            os.close(fd)
        return Outcome(
            status="FAILED",
            exit_code=127,
            error=f"could not start {argv!r}: {exc}",
            duration=time.monotonic() - started,
        )
    finally:
        os.close(out_w)  # the job's processes hold the only write ends
        os.close(ctl_r)

    tail = OutputTail(ctx.tail_bytes)
    pump = _OutputPump(out_r, tail, ctx.on_output)
    control = _Control(ctl_w)
    ctx.signal_job = control.signal  # suspend (fenced lease), resume, kill at once (lease lost)
    if ctx.suspended:
        control.signal(signal.SIGSTOP)  # its lease ran past its fence before it started
    wait_task = asyncio.ensure_future(proc.wait())
    cancel_task = asyncio.ensure_future(ctx.cancel.wait())
    stopped_by: str | None = None
    try:
        done, _ = await asyncio.wait(
            {wait_task, cancel_task}, timeout=ctx.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if wait_task not in done:
            stopped_by = ctx.cancel_reason if cancel_task in done else "timeout"
            # A job suspended because its lease may be lost must not run again, not even to clean
            # up: another attempt may run elsewhere.
            control.signal(signal.SIGKILL if ctx.suspended or ctx.lost else ctx.stop_signal)
            try:
                await asyncio.wait_for(asyncio.shield(wait_task), ctx.grace)
            except TimeoutError:
                control.signal(signal.SIGKILL)
                try:
                    await asyncio.wait_for(asyncio.shield(wait_task), SUPERVISOR_EXIT_SECONDS)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await wait_task
        await pump.drained(DRAIN_SECONDS)
    except BaseException:
        # The worker itself is being torn down: never leave the job's processes behind.
        control.signal(signal.SIGKILL)
        wait_task.cancel()
        raise
    finally:
        ctx.signal_job = None
        cancel_task.cancel()
        control.close()  # should the supervisor still run, it now stops the job's group
        pump.close()

    code = proc.returncode
    duration = time.monotonic() - started
    log_tail = tail.text()
    if stopped_by == "timeout":
        return Outcome(status="FAILED", exit_code=code, error="timeout", log_tail=log_tail, duration=duration)
    if stopped_by is not None:
        return Outcome(
            status="CANCELLED", exit_code=code, error=stopped_by, log_tail=log_tail, duration=duration
        )
    if code == 0:
        return Outcome(status="COMPLETED", exit_code=0, log_tail=log_tail, duration=duration)
    reason = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return Outcome(status="FAILED", exit_code=code, error=reason, log_tail=log_tail, duration=duration)
