"""What the formatters that run jobs outside the worker's host share (SLURM, RUN:AI).

Such a job is known by a *handle*, ``"<kind>:<id>"`` (``slurm:123``, ``runai:wn-7-1``), reported to
the worker as soon as it is submitted (:func:`report_external`) so that the server can record it; a
worker that takes over a job whose earlier attempt was lost (its worker vanished) cancels that
attempt's external job first (:func:`handle_id` reads a handle back). The job's state is polled,
slowing down while nothing changes (:class:`PollInterval`, :class:`BatchPoller` for one query
covering every job in flight), its short commands run without blocking the event loop
(:func:`run_command`), and its output is read from where the cluster puts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from ..template import CommandTemplate
from .base import Formatter, JobSpec, RunContext

log = logging.getLogger(__name__)

#: Environment variables that select devices: the cluster's scheduler sets them for the job, so
#: values from the worker's machine are never copied into a job that runs elsewhere.
DEVICE_ENV_VARS = frozenset(
    {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"}
)
DROPPED_MARKER = "[... earlier output dropped ...]\n"
"""What starts an output tail that lost its beginning."""
MAX_POLL_ERRORS = 10
"""Failed status queries in a row after which the jobs they are about are given up."""
DEFAULT_MAX_JOBS = 100
"""How many jobs a worker keeps on the cluster at once unless told otherwise (``--max-jobs``): its
capacity, since the CPUs and GPUs of the host it runs on do not bound what the cluster runs."""


# --------------------------------------------------------------------------------------------
# Handles
# --------------------------------------------------------------------------------------------


def handle_id(handle: str, kind: str, pattern: re.Pattern[str]) -> str | None:
    """The id in ``"<kind>:<id>"`` when the handle is of ``kind`` and its id matches ``pattern``;
    None for another formatter's handle (left alone)."""
    got, _, ident = handle.partition(":")
    if got != kind or not pattern.match(ident):
        return None
    return ident


def report_external(ctx: RunContext, handle: str) -> None:
    """Tell the worker where the job now runs (``ctx.on_external``); never fails the job."""
    if ctx.on_external is None:
        return
    try:
        ctx.on_external(handle)
    except Exception as exc:  # the callback's failure must not fail the job
        log.exception("the worker's on_external callback failed for %s: %s", handle, exc)


async def cancel_on_teardown(argv: Sequence[str], limit: float) -> None:
    """The worker itself is being torn down: stop the external job (``argv``) even so, so that it
    is never left behind on the cluster."""
    await asyncio.shield(run_command(argv, limit=limit))


# --------------------------------------------------------------------------------------------
# The job's environment and output
# --------------------------------------------------------------------------------------------


class ExternalFormatter(Formatter):
    """A formatter that submits each job to a cluster, to run ``script`` (with ``executable``) or
    the template ``command`` there.

    Its jobs do not run on the worker's host, so that host's CPUs and GPUs do not bound them: the
    worker takes jobs of any size, up to ``max_concurrency`` at once (``--max-jobs``)."""

    runs_elsewhere = True
    max_concurrency: int | None = DEFAULT_MAX_JOBS
    script: str | None
    executable: str
    command: str | None
    shell: bool
    command_template: CommandTemplate
    poll_interval: float
    max_poll_interval: float

    def set_job_command(self, script: str | None, executable: str, command: str | None, shell: bool) -> None:
        """What the jobs run: exactly one of ``script`` and ``command`` (ValueError otherwise)."""
        if (script is None) == (command is None):
            raise ValueError(f"{type(self).__name__} needs exactly one of script= or command=")
        self.script = script
        self.executable = executable
        self.command = command
        self.shell = shell
        self.command_template = CommandTemplate(
            executable=executable, script=script, template=command, shell=shell
        )

    def set_poll_intervals(self, poll_interval: float, max_poll_interval: float) -> None:
        """How often the job's state is asked for: first, and at the slowest (ValueError unless
        ``0 < poll_interval <= max_poll_interval``)."""
        check_poll_intervals(poll_interval, max_poll_interval)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval


def one_line(text: str, limit: int = 200) -> str:
    """``text`` made safe for one line of a script: control characters (newlines...) become '?'."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


def job_environment(job: JobSpec, env: Mapping[str, str] | None) -> dict[str, str]:
    """The variables a remote job gets: WHATSNEXT_* from the job, then the worker's ``ctx.env``.

    Device-selection variables (``CUDA_VISIBLE_DEVICES``...) are left out: on a cluster the
    scheduler assigns the devices.
    """
    result = {
        "WHATSNEXT_JOB_ID": str(job.id),
        "WHATSNEXT_JOB_NAME": job.name,
        "WHATSNEXT_TASK": job.task,
        "WHATSNEXT_ATTEMPT": str(job.attempt),
    }
    for key, value in (env or {}).items():
        if key in DEVICE_ENV_VARS:
            continue
        result[key] = str(value)
    return result


def read_tail(path: Path, limit: int) -> str:
    """The last ``limit`` bytes of a file as text ("" when it does not exist)."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - limit))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return DROPPED_MARKER + text if size > limit else text


def tail_text(text: str, limit: int) -> str:
    """The last ``limit`` bytes of ``text`` (marked when its beginning is dropped)."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    return DROPPED_MARKER + data[-limit:].decode("utf-8", errors="replace")


class OutputFollower:
    """Reads what a job appended to its output file since the last look, as whole lines."""

    CHUNK = 4 * 1024 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def read_lines(self, final: bool = False) -> list[str]:
        lines: list[str] = []
        try:
            with self.path.open("rb") as fh:
                while True:
                    fh.seek(self.offset)
                    data = fh.read(self.CHUNK)
                    if not data:
                        break
                    self.offset += len(data)
                    parts = (self.partial + data).split(b"\n")
                    self.partial = parts.pop()
                    lines.extend(p.decode("utf-8", errors="replace").rstrip("\r") for p in parts)
                    if not final:
                        break
        except FileNotFoundError:
            return lines
        if final and self.partial:
            lines.append(self.partial.decode("utf-8", errors="replace").rstrip("\r"))
            self.partial = b""
        return lines


async def run_command(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    limit: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> tuple[int, str, str]:
    """Run a short command (sbatch, squeue...) without blocking the event loop.

    Returns ``(returncode, stdout, stderr)``; a command that cannot be started gives 127 and the
    reason in stderr, one that overruns ``limit`` is killed and gives 124.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
    except OSError as exc:
        return 127, "", f"cannot run {argv[0]}: {exc.strerror or exc}"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return 124, "", f"{argv[0]} did not answer within {limit:.0f} s"
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    rc = proc.returncode if proc.returncode is not None else -1
    return rc, out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------
# Polling
# --------------------------------------------------------------------------------------------


def check_poll_intervals(poll_interval: float, max_poll_interval: float) -> None:
    if poll_interval <= 0 or max_poll_interval < poll_interval:
        raise ValueError("need 0 < poll_interval <= max_poll_interval")


class PollSettings(Protocol):
    poll_interval: float
    max_poll_interval: float


class PollInterval:
    """The delay between two status queries: ``poll_interval`` after a change, then 1.5 times
    longer each time nothing changed, up to ``max_poll_interval`` (read from ``settings`` each
    time, so a formatter's own values always apply)."""

    def __init__(self, settings: PollSettings) -> None:
        self.settings = settings
        self.current = settings.poll_interval

    def changed(self) -> None:
        self.current = self.settings.poll_interval

    def unchanged(self) -> None:
        self.current = min(self.current * 1.5, self.settings.max_poll_interval)


@dataclass(eq=False)
class Tracked:
    """What a poller knows of one submitted job."""

    job_id: str
    state: str = "PENDING"
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    final: bool = False
    lost: str | None = None
    """Set when the cluster no longer knows the job, or cannot be asked about it any more."""
    ran: bool = False
    """Seen running once: waiting again after that means the cluster requeued it."""
    started_at: str | None = None
    """When the cluster says its run started: a later start means it was requeued and started
    again between two looks."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class PollError(RuntimeError):
    """A status query failed in an expected way (the tool's error): retried at the next interval."""


class BatchPoller(ABC):
    """One polling loop per formatter, covering every job that formatter has in flight: one query
    about all of them per interval (:meth:`poll`), not one per job."""

    MAX_CONSECUTIVE_ERRORS = MAX_POLL_ERRORS
    system = "the cluster"
    """Whom the poller asks, in its messages (SLURM)."""
    logger: ClassVar[logging.Logger] = log

    def __init__(self, settings: PollSettings) -> None:
        self._settings = settings
        self._jobs: dict[str, Tracked] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._interval = PollInterval(settings)
        self._errors = 0
        self.polls = 0
        """How many queries this poller made (for diagnostics)."""

    @abstractmethod
    async def poll(self, pending: list[Tracked]) -> bool:
        """Query the state of ``pending`` and update them; whether any changed. A :class:`PollError`
        (or any other exception) is retried at the next interval."""

    def watch(self, job_id: str) -> Tracked:
        tracked = Tracked(job_id)
        self._jobs[job_id] = tracked
        self.kick()
        return tracked

    def unwatch(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        if not self._jobs and self._wake is not None:
            self._wake.set()  # let the loop notice it has nothing left to watch, and end

    def kick(self) -> None:
        """Something changed (a new job, a cancellation): poll at the short interval again."""
        self._interval.changed()
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._loop(), name=f"whatsnext-{self.system.lower()}-poller")
        assert self._wake is not None
        self._wake.set()

    async def _loop(self) -> None:
        last_poll = time.monotonic()
        while self._jobs:
            assert self._wake is not None
            self._wake.clear()
            delay = last_poll + self._interval.current - time.monotonic()
            if delay > 0:
                # A wake-up only means "recompute the delay" (the interval may have shrunk).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            pending = [t for t in self._jobs.values() if not t.final]
            if not pending:
                last_poll = time.monotonic()
                continue
            try:
                self.polls += 1
                changed = await self.poll(pending)
                self._errors = 0
            except Exception as exc:
                # Any failure (the cluster unreachable, odd output) is retried at the next
                # interval; only a long run of them gives up on the jobs.
                if not isinstance(exc, PollError):
                    self.logger.exception("unexpected error while polling %s", self.system)
                changed = False
                self._errors += 1
                self.logger.warning(
                    "%s poll failed (%d in a row): %s", self.system.lower(), self._errors, exc
                )
                if self._errors >= self.MAX_CONSECUTIVE_ERRORS:
                    for tracked in pending:
                        tracked.lost = f"cannot query {self.system}: {exc}"
                        tracked.final = True
                        tracked.changed.set()
            last_poll = time.monotonic()
            if changed:
                self._interval.changed()
            else:
                self._interval.unchanged()
