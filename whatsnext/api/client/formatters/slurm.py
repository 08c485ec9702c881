"""Run jobs on a SLURM cluster: one ``sbatch`` submission per job, state read back with ``squeue``.

Each job becomes a batch script (``#SBATCH`` directives derived from the job's CPU/GPU needs and
the formatter's options, ``export`` lines for the worker's environment, then the command). All
the jobs one formatter has in flight are watched by a single poller that asks ``squeue`` about all
of them at once, so a worker with a hundred jobs on the cluster costs one ``squeue`` call per poll
interval, not a hundred. Jobs that ``squeue`` no longer lists are looked up once with
``scontrol show job`` to read their final state and exit code (this works without SLURM
accounting).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ..template import Upstream, bash_quote
from .base import FormatError, JobSpec, Outcome, RunContext
from .external import (
    BatchPoller,
    ExternalFormatter,
    OutputFollower,
    PollError,
    Tracked,
    cancel_on_teardown,
    handle_id,
    job_environment,
    one_line,
    read_tail,
    report_external,
    run_command,
)

log = logging.getLogger(__name__)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SLURM_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")


# --------------------------------------------------------------------------------------------
# SLURM states
# --------------------------------------------------------------------------------------------

#: States after which a job never runs again.
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)
#: States in which the job's processes exist (the timeout clock runs from the first of these).
STARTED_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"})
#: States of a job SLURM put back in its queue after it ran (``scontrol requeue``, a preemption
#: with PreemptMode=REQUEUE, a node failure): PENDING counts only once the job was seen running.
REQUEUE_STATES = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
#: What WhatsNext makes of a job that SLURM took away from it: the attempt goes back to the
#: WhatsNext queue without using an attempt (the SLURM job is cancelled first).
HANDED_BACK = {"PREEMPTED": "preempted in SLURM", "REQUEUED": "requeued by SLURM"}

_FAILURE_REASONS = {
    "TIMEOUT": "timeout",
    "OUT_OF_MEMORY": "OUT_OF_MEMORY: the job exceeded its memory limit",
    "NODE_FAIL": "NODE_FAIL: the node running the job failed",
    "BOOT_FAIL": "BOOT_FAIL: the node could not be booted for the job",
    "DEADLINE": "DEADLINE: the job reached its deadline",
    "SPECIAL_EXIT": "SPECIAL_EXIT: the job was held in a special exit state",
    "REVOKED": "REVOKED: the job was revoked by the federation",
}


def _parse_scontrol(text: str) -> tuple[str | None, int | None, int | None, str | None]:
    """JobState, exit code, signal and Reason from ``scontrol -o show job ID`` output."""
    state = re.search(r"\bJobState=(\S+)", text)
    code = re.search(r"\bExitCode=(\d+):(\d+)", text)
    reason = re.search(r"\bReason=(\S+)", text)
    return (
        state.group(1) if state else None,
        int(code.group(1)) if code else None,
        int(code.group(2)) if code else None,
        reason.group(1) if reason and reason.group(1) != "None" else None,
    )


class _SlurmPoller(BatchPoller):
    """Asks ``squeue`` about every job the formatter has in flight at once; ``scontrol`` about
    those it no longer lists."""

    system = "SLURM"
    logger = log

    def __init__(self, formatter: SlurmFormatter) -> None:
        super().__init__(formatter)
        self._fmt = formatter

    async def poll(self, pending: list[Tracked]) -> bool:
        fmt = self._fmt
        ids = ",".join(t.job_id for t in pending)
        rc, out, err = await run_command([fmt.squeue, "-h", "-o", "%i %T %S %r", "-j", ids])
        listed: dict[str, str] = {}
        starts: dict[str, str] = {}
        held: set[str] = set()
        if rc == 0:
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    listed[parts[0]] = parts[1]
                if len(parts) >= 3:
                    starts[parts[0]] = parts[2]
                if len(parts) >= 4 and parts[3] == "BeginTime":
                    held.add(parts[0])
        elif "invalid job id" not in err.lower():
            raise PollError(f"squeue exited {rc}: {err.strip() or out.strip()}")
        changed = False
        for tracked in pending:
            state = listed.get(tracked.job_id)
            if state == "PENDING" and not tracked.ran and tracked.job_id in held:
                # Waiting for a start time although never seen running: SLURM holds a job it
                # requeued that way (it may have run between two looks); its restart count says.
                state = await self._requeued_state(tracked.job_id) or state
            if state is not None and state not in FINAL_STATES:
                changed |= self._update(tracked, state, started_at=starts.get(tracked.job_id))
                continue
            # Gone from squeue (or listed as finished): scontrol keeps the final record.
            src, sout, serr = await run_command([fmt.scontrol, "-o", "show", "job", tracked.job_id])
            if src != 0:
                if "invalid job id" in serr.lower():
                    tracked.lost = f"SLURM no longer knows job {tracked.job_id}"
                    tracked.final = True
                    tracked.changed.set()
                    changed = True
                    continue
                raise PollError(f"scontrol exited {src}: {serr.strip()}")
            final_state, code, sig, reason = _parse_scontrol(sout)
            if final_state is None:
                raise PollError(f"cannot read JobState from scontrol output: {sout.strip()[:200]}")
            changed |= self._update(tracked, final_state, code, sig, reason)
        return changed

    async def _requeued_state(self, job_id: str) -> str | None:
        """REQUEUED when ``scontrol`` counts restarts of the job (None: it cannot tell)."""
        rc, out, _ = await run_command([self._fmt.scontrol, "-o", "show", "job", job_id])
        restarts = re.search(r"\bRestarts=(\d+)", out) if rc == 0 else None
        return "REQUEUED" if restarts is not None and int(restarts.group(1)) > 0 else None

    @staticmethod
    def _update(
        tracked: Tracked,
        state: str,
        exit_code: int | None = None,
        sig: int | None = None,
        reason: str | None = None,
        started_at: str | None = None,
    ) -> bool:
        state = state.upper()
        restarted = False
        if state in STARTED_STATES:
            tracked.ran = True
            if started_at is not None and started_at not in ("N/A", "Unknown"):
                # Running again with a later start: requeued and started again between two looks.
                restarted = tracked.started_at is not None and started_at != tracked.started_at
                tracked.started_at = tracked.started_at or started_at
        if restarted or state in REQUEUE_STATES or (state == "PENDING" and tracked.ran):
            state = "REQUEUED"  # SLURM requeued it: WhatsNext requeues it instead (see HANDED_BACK)
        final = state in FINAL_STATES or state == "REQUEUED"
        if state == tracked.state and final == tracked.final:
            return False
        tracked.state = state
        tracked.final = final
        tracked.exit_code = exit_code
        tracked.signal = sig
        tracked.reason = reason
        tracked.changed.set()
        return True


# --------------------------------------------------------------------------------------------
# The formatter
# --------------------------------------------------------------------------------------------


def default_log_dir() -> Path:
    """Where scripts and outputs go by default: under the home directory, which clusters share
    between the submit host and the compute nodes."""
    return Path.home() / ".whatsnext" / "slurm"


class SlurmFormatter(ExternalFormatter):
    """Submit each job to SLURM with ``sbatch`` and follow it until it finishes.

    The command is built by the same engine as :class:`CLIFormatter` builds it
    (:class:`~whatsnext.api.client.template.CommandTemplate`): either
    ``<executable> <script> --key value ...`` (``script``) or a template such as
    ``"python train.py --lr {lr}"`` (``command``), written into the batch script as the quoted
    argument vector; ``shell=True`` writes a shell template instead (values shell-quoted,
    placeholders inside quotes refused).

    Each submission is reported to ``ctx.on_external`` as ``"slurm:<id>"``;
    :meth:`cancel_external` cancels such a job (a worker taking over a lost job does that first).
    """

    def __init__(
        self,
        script: str | None = None,
        executable: str = "python",
        command: str | None = None,
        *,
        shell: bool = False,
        partition: str | None = None,
        account: str | None = None,
        time: str | None = None,
        mem: str | int | None = None,
        sbatch_args: Sequence[str] = (),
        log_dir: str | os.PathLike[str] | None = None,
        poll_interval: float = 2.0,
        max_poll_interval: float = 30.0,
        gres_flag: Literal["gres", "gpus"] = "gres",
        sbatch: str = "sbatch",
        squeue: str = "squeue",
        scontrol: str = "scontrol",
        scancel: str = "scancel",
        stop_wait: float = 60.0,
    ) -> None:
        self.set_job_command(script, executable, command, shell)
        if gres_flag not in ("gres", "gpus"):
            raise ValueError(f"gres_flag must be 'gres' or 'gpus', not {gres_flag!r}")
        self.set_poll_intervals(poll_interval, max_poll_interval)
        if isinstance(sbatch_args, str):
            sbatch_args = shlex.split(sbatch_args)
        self.partition = partition
        self.account = account
        self.time = time
        self.mem = mem
        self.sbatch_args = tuple(sbatch_args)
        self.log_dir = Path(log_dir) if log_dir is not None else default_log_dir()
        self.gres_flag = gres_flag
        self.sbatch = sbatch
        self.squeue = squeue
        self.scontrol = scontrol
        self.scancel = scancel
        self.stop_wait = stop_wait
        """Seconds to wait, after ``scancel``, for SLURM to report the job ended."""
        self._poller = _SlurmPoller(self)

    # -- rendering ----------------------------------------------------------------------------

    def format(self, task: str, parameters: dict[str, Any]) -> str:
        """The command line of the batch script: every value quoted for bash, on one line."""
        return self.command_line(task, parameters)

    def command_line(self, task: str, parameters: Mapping[str, Any], upstream: Upstream = None) -> str:
        """:meth:`format`, with the job's ``upstream`` for its ``{upstream.NAME...}`` references."""
        try:
            return self.command_template.shell_line(parameters, quote=bash_quote, upstream=upstream)
        except FormatError as exc:
            raise FormatError(f"task {task!r}: {exc}") from None

    @staticmethod
    def job_name(job: JobSpec) -> str:
        """``wn-<id>-<name>``, with the name reduced to characters every shell and tool accepts."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", job.name).strip("_")[:48]
        return f"wn-{job.id}-{name}" if name else f"wn-{job.id}"

    def output_path(self, job: JobSpec) -> Path:
        return self.log_dir / f"wn-{job.id}-{job.attempt}.out"

    def time_limit(self, job: JobSpec) -> str | None:
        """The ``--time`` value: the configured one, else the job's timeout in whole minutes."""
        if self.time:
            return self.time
        if job.timeout is not None and job.timeout > 0:
            return str(max(1, math.ceil(job.timeout / 60)))
        return None

    def render_script(
        self,
        job: JobSpec,
        env: Mapping[str, str] | None = None,
        *,
        command: str | None = None,
        cwd: str | None = None,
    ) -> str:
        """The complete batch script for ``job`` (raises :class:`FormatError` on bad parameters)."""
        if command is None:
            command = self.command_line(job.task, job.parameters, job.upstream)
        directives = [
            f"--job-name={self.job_name(job)}",
            f"--cpus-per-task={max(1, job.required_cpu)}",
        ]
        if job.required_accelerators > 0:
            if self.gres_flag == "gpus":
                directives.append(f"--gpus={job.required_accelerators}")
            else:
                directives.append(f"--gres=gpu:{job.required_accelerators}")
        if self.mem is not None:
            directives.append(f"--mem={self.mem}")
        limit = self.time_limit(job)
        if limit:
            directives.append(f"--time={limit}")
        if self.partition:
            directives.append(f"--partition={self.partition}")
        if self.account:
            directives.append(f"--account={self.account}")
        if cwd:
            directives.append(f"--chdir={cwd}")
        directives.append(f"--output={self.output_path(job)}")
        directives.extend(self.sbatch_args)

        lines = ["#!/bin/bash"]
        lines += [f"#SBATCH {d}" for d in directives]
        lines.append(
            f"# WhatsNext job {job.id} ({one_line(job.name)}), task {one_line(job.task)}, attempt {job.attempt}"
        )
        for key, value in job_environment(job, env).items():
            if not _ENV_NAME.match(key):
                log.warning("not exporting %r to SLURM job %s: not a valid variable name", key, job.id)
                continue
            lines.append(f"export {key}={bash_quote(value)}")
        lines.append(command)
        return "\n".join(lines) + "\n"

    # -- synchronous path ---------------------------------------------------------------------

    def execute(self, command: str) -> int:
        """Submit ``command`` with ``sbatch --wait``, print its output, return its exit code."""
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        directives = ["--job-name=wn-exec", f"--output={self.log_dir}/wn-exec-%j.out"]
        if self.mem is not None:
            directives.append(f"--mem={self.mem}")
        if self.time:
            directives.append(f"--time={self.time}")
        if self.partition:
            directives.append(f"--partition={self.partition}")
        if self.account:
            directives.append(f"--account={self.account}")
        directives.extend(self.sbatch_args)
        body = "#!/bin/bash\n" + "".join(f"#SBATCH {d}\n" for d in directives) + command + "\n"
        fd, script_name = tempfile.mkstemp(prefix="wn-exec-", suffix=".sbatch", dir=self.log_dir)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
            proc = subprocess.run(
                [self.sbatch, "--parsable", "--wait", script_name],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as exc:
            sys.stderr.write(f"cannot run {self.sbatch}: {exc}\n")
            return 127
        finally:
            Path(script_name).unlink(missing_ok=True)
        job_id = proc.stdout.strip().splitlines()[0].split(";")[0] if proc.stdout.strip() else ""
        if job_id:
            out_path = self.log_dir / f"wn-exec-{job_id}.out"
            with contextlib.suppress(FileNotFoundError):
                sys.stdout.write(out_path.read_text(errors="replace"))
                sys.stdout.flush()
        if proc.returncode != 0 and not job_id:
            sys.stderr.write(proc.stderr)
        return proc.returncode

    # -- asynchronous path --------------------------------------------------------------------

    async def run(self, job: JobSpec, ctx: RunContext) -> Outcome:
        started = time.monotonic()
        try:
            script = self.render_script(job, ctx.env, cwd=ctx.cwd)
        except FormatError as exc:  # another attempt would fail the same way
            return Outcome(status="FAILED", error=str(exc), duration=0.0, retryable=False)

        out_path = self.output_path(job)
        script_path = out_path.with_suffix(".sbatch")
        try:
            await asyncio.to_thread(self._write_script, script_path, out_path, script)
        except OSError as exc:
            return Outcome(
                status="FAILED",
                error=f"cannot write the batch script to {script_path}: {exc}",
                duration=time.monotonic() - started,
            )

        rc, out, err = await run_command([self.sbatch, "--parsable", str(script_path)], cwd=ctx.cwd)
        slurm_id = out.strip().splitlines()[0].split(";")[0].strip() if out.strip() else ""
        if rc != 0 or not slurm_id.isdigit():
            message = err.strip() or out.strip() or f"exit code {rc}"
            return Outcome(
                status="FAILED",
                error=f"sbatch failed: {message}",
                duration=time.monotonic() - started,
            )
        log.info("job %s submitted to SLURM as %s", job.id, slurm_id)
        report_external(ctx, f"slurm:{slurm_id}")
        if ctx.on_output is not None:
            ctx.on_output(f"[whatsnext] submitted to SLURM as job {slurm_id}")

        tracked = self._poller.watch(slurm_id)
        try:
            return await self._follow(tracked, ctx, out_path, started)
        except BaseException:
            await cancel_on_teardown([self.scancel, slurm_id], limit=30)
            raise
        finally:
            self._poller.unwatch(slurm_id)

    @staticmethod
    def _write_script(script_path: Path, out_path: Path, script: str) -> None:
        script_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        out_path.unlink(missing_ok=True)  # never show a previous run's output as this one's
        script_path.write_text(script)
        script_path.chmod(0o700)

    async def cancel_external(self, handle: str) -> None:
        """Cancel the SLURM job behind ``"slurm:<id>"`` and wait (up to ``stop_wait`` s) until
        SLURM no longer runs it; other handles are not ours and are left alone."""
        slurm_id = handle_id(handle, "slurm", _SLURM_ID)
        if slurm_id is None:
            return
        rc, _, err = await run_command([self.scancel, slurm_id], limit=60)
        if rc != 0 and "invalid job id" not in err.lower():
            log.warning("scancel %s exited %d: %s", slurm_id, rc, err.strip())
        deadline = time.monotonic() + self.stop_wait
        while time.monotonic() < deadline:
            rc, out, err = await run_command([self.squeue, "-h", "-o", "%T", "-j", slurm_id], limit=60)
            states = set(out.split())
            if (rc == 0 and not states - FINAL_STATES) or "invalid job id" in err.lower():
                return
            await asyncio.sleep(self.poll_interval)
        log.warning("SLURM job %s still listed %s s after scancel", slurm_id, self.stop_wait)

    async def _scancel(self, slurm_id: str) -> None:
        rc, _, err = await run_command([self.scancel, slurm_id], limit=60)
        if rc != 0:
            log.warning("scancel %s exited %d: %s", slurm_id, rc, err.strip())
        self._poller.kick()

    async def _follow(self, tracked: Tracked, ctx: RunContext, out_path: Path, started: float) -> Outcome:
        follower = OutputFollower(out_path) if ctx.on_output is not None else None
        output_tick = min(1.0, self.poll_interval)
        run_deadline: float | None = None
        stop_deadline: float | None = None
        stopped_by: str | None = None  # "cancel" or "timeout"
        cancel_wait = asyncio.ensure_future(ctx.cancel.wait())
        try:
            while True:
                tracked.changed.clear()
                now = time.monotonic()
                if tracked.final:
                    break
                if run_deadline is None and ctx.timeout is not None and tracked.state in STARTED_STATES:
                    run_deadline = now + ctx.timeout
                if stopped_by is None:
                    if ctx.cancel.is_set():
                        stopped_by = "cancel"
                    elif run_deadline is not None and now >= run_deadline:
                        stopped_by = "timeout"
                    if stopped_by is not None:
                        await self._scancel(tracked.job_id)
                        stop_deadline = time.monotonic() + max(ctx.grace, 0.0) + self.stop_wait
                        continue
                elif stop_deadline is not None and now >= stop_deadline:
                    log.warning(
                        "SLURM job %s still %s after scancel; giving up on it", tracked.job_id, tracked.state
                    )
                    break

                waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(tracked.changed.wait())]
                if stopped_by is None and not cancel_wait.done():
                    waits.append(cancel_wait)
                limits = [
                    d - now
                    for d in (run_deadline if stopped_by is None else None, stop_deadline)
                    if d is not None
                ]
                if follower is not None and tracked.state in STARTED_STATES:
                    limits.append(output_tick)
                timeout = max(0.0, min(limits)) if limits else None
                try:
                    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waits[0].cancel()
                if follower is not None:
                    await self._emit(follower, ctx, final=False)
        finally:
            cancel_wait.cancel()

        if tracked.state in HANDED_BACK and stopped_by is None:
            # SLURM may run a preempted or requeued job again by itself; WhatsNext requeues it instead.
            await run_command([self.scancel, tracked.job_id], limit=60)
        if follower is not None:
            await self._emit(follower, ctx, final=True)
        log_tail = await asyncio.to_thread(read_tail, out_path, ctx.tail_bytes)
        return self._outcome(tracked, stopped_by, ctx, log_tail, time.monotonic() - started)

    @staticmethod
    async def _emit(follower: OutputFollower, ctx: RunContext, *, final: bool) -> None:
        lines = await asyncio.to_thread(follower.read_lines, final)
        if ctx.on_output is not None:
            for line in lines:
                ctx.on_output(line)

    @staticmethod
    def _outcome(
        tracked: Tracked, stopped_by: str | None, ctx: RunContext, log_tail: str, duration: float
    ) -> Outcome:
        state = tracked.state
        code = tracked.exit_code
        ended = functools.partial(Outcome, log_tail=log_tail, duration=duration)
        if stopped_by == "timeout" and state != "COMPLETED":
            return ended(status="FAILED", exit_code=code, error="timeout")
        if stopped_by == "cancel" and state != "COMPLETED":
            return ended(status="CANCELLED", exit_code=code, error=ctx.cancel_reason)
        if tracked.lost is not None:
            return ended(status="FAILED", error=tracked.lost)
        if state == "COMPLETED":
            return ended(status="COMPLETED", exit_code=0)
        if state == "CANCELLED":
            return ended(status="CANCELLED", exit_code=code, error="cancelled in SLURM (scancel)")
        if state in HANDED_BACK:
            return ended(status="FAILED", exit_code=code, error=HANDED_BACK[state], requeue=True)
        if state == "TIMEOUT" and tracked.signal and not code:
            code = -tracked.signal  # killed at its time limit, as the worker's own timeout kills
        if state == "FAILED":
            if tracked.signal:
                error = f"killed by signal {tracked.signal}"
                code = code if code else -tracked.signal
            else:
                error = f"exit code {code}"
            if tracked.reason and tracked.reason != "NonZeroExitCode":
                error += f" ({tracked.reason})"
            return ended(status="FAILED", exit_code=code, error=error)
        reason = _FAILURE_REASONS.get(state, f"SLURM job ended in state {state}")
        return ended(status="FAILED", exit_code=code, error=reason)
