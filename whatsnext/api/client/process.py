"""Run one job's subprocess: own process group, captured output, timeout and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Sequence

from .formatters.base import Outcome, RunContext


class OutputTail:
    """Keeps the last ``limit`` bytes of a job's output (older text dropped first, with a marker)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: deque[str] = deque()
        self._size = 0
        self.dropped = False

    def add(self, text: str) -> None:
        self._chunks.append(text)
        self._size += len(text)
        while self._size > self.limit and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft())
            self.dropped = True
        if self._size > self.limit:  # a single huge chunk
            only = self._chunks.pop()
            self._chunks.append(only[-self.limit :])
            self._size = self.limit
            self.dropped = True

    def text(self) -> str:
        body = "".join(self._chunks)
        return ("[... earlier output dropped ...]\n" + body) if self.dropped else body


def _kill_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def run_process(
    argv: Sequence[str] | str,
    ctx: RunContext,
    *,
    shell: bool = False,
) -> Outcome:
    """Start ``argv`` (or a shell command line when ``shell``) in its own process group.

    Output (stdout and stderr, merged) is streamed line by line to ``ctx.on_output`` and its tail
    is kept for the report. When ``ctx.cancel`` is set or ``ctx.timeout`` passes, the whole process
    group gets SIGTERM, then SIGKILL after ``ctx.grace`` seconds.
    """
    env = {**os.environ, **ctx.env}
    started = time.monotonic()
    try:
        if shell:
            assert isinstance(argv, str)
            proc = await asyncio.create_subprocess_shell(
                argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                cwd=ctx.cwd,
                start_new_session=True,
            )
        else:
            assert not isinstance(argv, str)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                cwd=ctx.cwd,
                start_new_session=True,
            )
    except OSError as exc:
        return Outcome(
            status="FAILED",
            exit_code=127,
            error=f"could not start {argv!r}: {exc}",
            duration=time.monotonic() - started,
        )

    tail = OutputTail(ctx.tail_bytes)

    async def pump() -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            text = line.decode("utf-8", errors="replace")
            tail.add(text)
            if ctx.on_output is not None:
                ctx.on_output(text.rstrip("\n"))

    pump_task = asyncio.ensure_future(pump())
    wait_task = asyncio.ensure_future(proc.wait())
    cancel_task = asyncio.ensure_future(ctx.cancel.wait())
    stopped_by: str | None = None
    try:
        done, _ = await asyncio.wait(
            {wait_task, cancel_task}, timeout=ctx.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if wait_task not in done:
            stopped_by = ctx.cancel_reason if cancel_task in done else "timeout"
            _kill_group(proc, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(wait_task), ctx.grace)
            except TimeoutError:
                _kill_group(proc, signal.SIGKILL)
                await wait_task
    except BaseException:
        # The worker itself is being torn down: never leave the job's processes behind.
        _kill_group(proc, signal.SIGKILL)
        raise
    finally:
        cancel_task.cancel()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(pump_task, 5)
        # Children that outlive the leader are part of this job too.
        _kill_group(proc, signal.SIGKILL)

    code = proc.returncode
    duration = time.monotonic() - started
    if stopped_by == "timeout":
        return Outcome(
            status="FAILED", exit_code=code, error="timeout", log_tail=tail.text(), duration=duration
        )
    if stopped_by is not None:
        return Outcome(
            status="CANCELLED", exit_code=code, error=stopped_by, log_tail=tail.text(), duration=duration
        )
    if code == 0:
        return Outcome(status="COMPLETED", exit_code=0, log_tail=tail.text(), duration=duration)
    reason = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return Outcome(status="FAILED", exit_code=code, error=reason, log_tail=tail.text(), duration=duration)
