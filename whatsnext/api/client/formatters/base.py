"""The formatter interface: turn a job's parameters into something runnable, and run it.

A formatter has the two synchronous methods of the original interface, ``format(task,
parameters) -> str`` and ``execute(command) -> int``, and the asynchronous path the worker
uses, :meth:`Formatter.run`, which receives a :class:`JobSpec` and a :class:`RunContext` and
returns an :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import shlex
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from ....wire import UpstreamJob

OutcomeStatus = Literal["COMPLETED", "FAILED", "CANCELLED"]


class FormatError(ValueError):
    """A job's parameters cannot be turned into a command (missing parameter, bad template)."""


class PreflightError(ValueError):
    """What a worker would run cannot work (a missing script or program, a bad template): found
    before the first claim, so no job is touched."""


@dataclass(slots=True)
class JobSpec:
    """What the worker knows of a claimed job when it hands it to a formatter."""

    id: int
    name: str
    task: str
    parameters: dict[str, Any]
    attempt: int = 1
    priority: int = 0
    required_cpu: int = 1
    required_accelerators: int = 0
    timeout: float | None = None
    gpu_ids: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    """Paths or URIs the job reads ({parameter} templates; recorded as artifacts after the job)."""
    outputs: list[str] = field(default_factory=list)
    """Paths or URIs the job writes ({parameter} templates; recorded as artifacts after the job)."""
    previous_external_ids: list[str] = field(default_factory=list)
    """External jobs (``"slurm:<id>"``...) of earlier attempts that were lost: cancelled before this one runs."""
    command: str | None = None
    """The task's command template (run by formatters that take the task's command)."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """The task's default parameters (the job's own win)."""
    shell: bool = False
    """The task's command is a /bin/sh command line."""
    project: str | None = None
    """The job's project (its name; a worker may serve several)."""
    checkpoint: str | None = None
    """The latest checkpoint an earlier attempt named (``WHATSNEXT_CHECKPOINT``), if any."""
    resume: bool = False
    """This attempt follows one that was preempted or lost (``WHATSNEXT_RESUME=1``)."""
    checkpoint_dir: str | None = None
    """The job's checkpoint directory, the same for every attempt (``WHATSNEXT_CHECKPOINT_DIR``)."""
    checkpoint_file: str | None = None
    """Where the job writes the path of its latest checkpoint (``WHATSNEXT_CHECKPOINT_FILE``); the
    worker reads it when the attempt ends and the next attempt gets that path."""
    upstream: list[UpstreamJob] | None = None
    """What each job this one depends on left (``{id, name, task, status, result, artifacts}``, in
    id order), from the claim; None for a job without dependencies. Fills ``{upstream.NAME...}``
    in a command template."""
    result_file: str | None = None
    """Where the job may write its result as JSON (``WHATSNEXT_RESULT_FILE``, one per attempt in
    its directory); the worker reads it when the attempt ends."""
    upstream_file: str | None = None
    """``upstream.json`` in the job's directory, holding ``upstream`` (``WHATSNEXT_UPSTREAM``);
    None for a job without dependencies."""


@dataclass(slots=True)
class RunContext:
    """How the worker wants a job run: environment, live output sink, cancellation, limits."""

    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the job (CUDA_VISIBLE_DEVICES, WHATSNEXT_JOB_ID, ...)."""
    on_output: Callable[[str], None] | None = None
    """Called with each line the job prints (stdout and stderr), for live logs."""
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the worker when the job must stop (cancelled, or the worker is terminating)."""
    cancel_reason: str = "cancelled"
    timeout: float | None = None
    """Seconds the job may run before it is killed and reported FAILED with reason "timeout"."""
    grace: float = 10.0
    """Seconds between SIGTERM and SIGKILL when a job is stopped."""
    tail_bytes: int = 16_384
    """How much of the end of the job's output is kept for the report."""
    cwd: str | None = None
    on_external: Callable[[str], None] | None = None
    """Called by a formatter right after it submitted the job elsewhere, with the handle of the
    external job (``"slurm:<id>"``, ``"runai:<name>"``), so the worker can record it."""
    stop_signal: int = signal.SIGTERM
    """The first signal a stopped job gets (the worker's ``--job-signal``); SIGKILL follows after ``grace``."""
    requeue: bool = False
    """Set when the job is stopped to go back to the queue (the worker stops, preemption, an
    operator's requeue): its attempt is reported with ``requeue: true``."""
    lost: bool = False
    """Set when the attempt is no longer this worker's (its lease was lost): nothing is reported."""
    suspended: bool = False
    """The job's processes are stopped (SIGSTOP) until its lease is confirmed again."""
    signal_job: Callable[[int], None] | None = None
    """Set by the process runner while the job's process group runs: sends it a signal. A job
    without one (run elsewhere, or a function in the worker) cannot be suspended."""
    _on_cancel: list[Callable[[], None]] = field(default_factory=list)

    def request_stop(self, reason: str, *, requeue: bool = True) -> None:
        """Stop the job so that its attempt goes back to the queue (``requeue``) or is cancelled."""
        if not self.cancel.is_set():
            self.requeue = requeue
        self.request_cancel(reason)

    def suspend(self) -> bool:
        """Stop the job's processes where they are (SIGSTOP); False when it has none (yet: a
        process group started later starts stopped)."""
        if not self.suspended:
            self.suspended = True
            if self.signal_job is not None:
                self.signal_job(signal.SIGSTOP)
        return self.signal_job is not None

    def resume(self) -> None:
        """Let suspended processes go on (SIGCONT)."""
        if self.suspended:
            self.suspended = False
            if self.signal_job is not None:
                self.signal_job(signal.SIGCONT)

    def kill_lost(self, reason: str = "lease lost") -> None:
        """The attempt is no longer this worker's: kill the job at once (no grace), report nothing."""
        self.lost = True
        if self.signal_job is not None:
            self.signal_job(signal.SIGKILL)
        self.request_cancel(reason)

    def request_cancel(self, reason: str = "cancelled") -> None:
        """Ask the running job to stop (the worker calls this on cancel or termination)."""
        if self.cancel.is_set():
            return
        self.cancel_reason = reason
        self.cancel.set()
        callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            callback()

    def add_cancel_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the job is asked to stop (at once if it already was)."""
        if self.cancel.is_set():
            callback()
        else:
            self._on_cancel.append(callback)


@dataclass(slots=True)
class Outcome:
    """The result of running one job, as reported to the server."""

    status: OutcomeStatus
    exit_code: int | None = None
    result: Any = None
    error: str | None = None
    log_tail: str = ""
    duration: float | None = None
    requeue: bool = False
    """True when the job should go back to the queue without counting as a failure (preempted)."""
    retryable: bool = True
    """False when running it again cannot help (it cannot be formatted, its program does not
    exist): the job fails at once, whatever retries it has left."""


def apply_defaults(ctx: RunContext, env: Mapping[str, str] | None, cwd: str | None) -> None:
    """A formatter's own environment under the worker's (the worker's variables win), and its
    working folder unless the worker chose one."""
    if env:
        ctx.env = {**env, **ctx.env}
    if cwd and not ctx.cwd:
        ctx.cwd = cwd


class Formatter(ABC):
    """Base class of all formatters."""

    #: How many jobs this formatter may run at once regardless of CPU/GPU (None: no limit).
    max_concurrency: int | None = None
    #: Whether its jobs run outside the worker's host (SLURM, RUN:AI): the host's CPUs and GPUs
    #: then do not bound what the worker takes; ``max_concurrency`` does.
    runs_elsewhere: bool = False
    #: Whether it runs each job with its task's command template (the worker then claims only
    #: jobs of tasks that have one).
    uses_task_commands: bool = False
    #: Whether its jobs can see their checkpoint directory (through its variables, or ``job=``):
    #: the worker makes the directory only for those.
    uses_checkpoint_dir: bool = True

    def preflight(self) -> None:
        """Check, before the worker claims anything, that what it runs can work (the script and
        program exist, the template parses). Raise :class:`PreflightError` saying what is wrong."""
        return None

    @abstractmethod
    def format(self, task: str, parameters: dict[str, Any]) -> str:
        """Convert a job's parameters into an executable command string."""

    def execute(self, command: str) -> int:
        """Run a formatted command to completion and return its exit code (synchronous path)."""
        return subprocess.call(shlex.split(command))

    async def cancel_external(self, handle: str) -> None:
        """Cancel an external job an earlier attempt left (a handle given to ``ctx.on_external``).

        Handles of other kinds are ignored; formatters that submit jobs elsewhere override this.
        """
        return None

    async def run(self, job: JobSpec, ctx: RunContext) -> Outcome:
        """Run one job (asynchronous path used by the worker). Override for richer behaviour."""
        try:
            command = self.format(job.task, job.parameters)
        except FormatError as exc:
            return Outcome(status="FAILED", error=str(exc), retryable=False)
        code = await anyio.to_thread.run_sync(self.execute, command)
        return Outcome(
            status="COMPLETED" if code == 0 else "FAILED",
            exit_code=code,
            error=None if code == 0 else f"exit code {code}",
        )
