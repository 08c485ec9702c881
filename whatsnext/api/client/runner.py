"""The worker's runner: starts each claimed job through the formatter with its share of the
worker's capacity, supervises it (cancellation, where it runs outside this host), and hands its
report to the reporter when it ends."""

from __future__ import annotations

import asyncio
import signal
import time
import traceback
from dataclasses import dataclass, field

import structlog

from ...wire import ClaimedJob, ReportEntry, bounded_result
from .artifacts import ArtifactRecorder
from .backoff import Backoff
from .checkpoint import Checkpoints
from .control import ControlStream
from .errors import RETRYABLE, Conflict, WhatsNextError
from .fence import Attempt, LeaseGuard
from .formatters.base import Formatter, JobSpec, Outcome, RunContext
from .http import Http, job_path
from .logship import LogShipper
from .process import clean_text
from .reporter import ERROR_CHARS, Reporter
from .resources import Capacity

log = structlog.get_logger("whatsnext.worker")

ERROR_LINES = 5
"""How many of a failed job's last non-empty output lines its error carries (besides the reason)."""
ERROR_LINE_CHARS = 300


def failure_reason(error: str | None, log_tail: str) -> str | None:
    """A failure's reason with the job's last non-empty output lines, bounded (the whole output
    stays in the job's log)."""
    lines = [line.rstrip() for line in log_tail.splitlines() if line.strip()][-ERROR_LINES:]
    if not lines:
        return error
    shown = "\n".join(
        line if len(line) <= ERROR_LINE_CHARS else line[: ERROR_LINE_CHARS - 3] + "..." for line in lines
    )
    text = f"{error or 'failed'}; last output:\n{shown}"
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


@dataclass
class WorkSummary:
    """What one ``work()`` call did."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    requeued: int = 0
    """Attempts stopped and handed back to the queue (the worker stopped, preemption, requeue)."""
    jobs: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.completed + self.failed + self.cancelled + self.requeued


@dataclass
class Running:
    spec: JobSpec
    ctx: RunContext
    gpu_ids: list[str]
    started: float
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the attempt has stopped and given its capacity back."""
    lost: bool = False
    """The attempt is no longer this worker's (lease lost, or superseded): it reports nothing."""

    @property
    def key(self) -> Attempt:
        return (self.spec.id, self.spec.attempt)


def job_spec(data: ClaimedJob) -> JobSpec:
    """What a formatter gets of a claimed job."""
    return JobSpec(
        id=data["id"],
        name=data["name"],
        task=data["task"],
        parameters=data["parameters"],
        attempt=data["attempt"],
        priority=data["priority"],
        required_cpu=data["required_cpu"],
        required_accelerators=data["required_accelerators"],
        timeout=data.get("timeout"),
        inputs=list(data.get("inputs") or ()),
        outputs=list(data.get("outputs") or ()),
        previous_external_ids=list(data.get("previous_external_ids") or ()),
        command=data.get("command"),
        defaults=dict(data.get("defaults") or {}),
        shell=bool(data.get("shell")),
        project=data.get("project"),
        checkpoint=data.get("checkpoint"),
        resume=bool(data.get("resume")),
        upstream=data.get("upstream"),
    )


def _numeric(gpu_ids: list[str]) -> bool:
    """GPU ids given as indexes (the server records those; UUIDs stay in the worker's log)."""
    return bool(gpu_ids) and all(g.isascii() and g.isdigit() for g in gpu_ids)


class Runner:
    """Runs one ``work()`` call's jobs: ``running`` holds those not finished yet."""

    def __init__(
        self,
        http: Http,
        *,
        project: str | None,
        formatter: Formatter,
        capacity: Capacity,
        grace: float,
        running: dict[int, Running],
        reporter: Reporter,
        summary: WorkSummary,
        slot_freed: asyncio.Event,
        logs: LogShipper | None,
        artifacts: ArtifactRecorder | None,
        checkpoints: Checkpoints | None = None,
        job_signal: int = signal.SIGTERM,
    ) -> None:
        self.http = http
        self.project = project
        """The worker's project when it serves one (a job's own ``project`` wins)."""
        self.formatter = formatter
        self.capacity = capacity
        self.grace = grace
        self.running = running
        self.reporter = reporter
        self.summary = summary
        self.slot_freed = slot_freed
        self.last_ended: float | None = None
        """When (``time.monotonic()``) a job last ended here: the worker is idle since then when
        nothing else runs."""
        """Set whenever a job ends (its capacity is free again)."""
        self.logs = logs
        self.artifacts = artifacts
        self._external_reports: set[asyncio.Task[None]] = set()
        self._started_posts: dict[tuple[int, int], list[asyncio.Task[None]]] = {}
        """Per running attempt, its ``started`` posts: its report waits for them (else they are stale)."""
        self.checkpoints = checkpoints
        self.job_signal = job_signal
        """The first signal a stopped job gets (SIGKILL follows after the grace)."""
        self.attempts: dict[Attempt, Running] = {}
        """Every attempt not ended yet, an older one handed back included (``running`` holds the
        newest of each job)."""
        self.guard: LeaseGuard | None = None
        """Keeps each attempt inside its lease (set once the worker knows its lease terms)."""
        self.stopping: str | None = None
        """Set when the worker stops its jobs: an attempt that starts now is handed back at once."""
        self.control: ControlStream | None = None
        """The worker's control stream (cancels and requeues at once), once it is open."""

    def start(self, jobs: asyncio.TaskGroup, data: ClaimedJob, leased_at: float | None = None) -> None:
        """Run a claimed job; its lease began at ``leased_at`` (``time.monotonic()``; None: now)."""
        spec = job_spec(data)
        previous = self.running.get(spec.id)
        if previous is not None:
            # Handed back a job whose older attempt still runs here (its lease ran out while this
            # worker could not renew it): that attempt stops before this one starts, so two
            # attempts of one job never run at once. Its report will be refused as stale.
            log.warning(
                "job handed back while an older attempt runs here: stopping that one first",
                job=spec.id,
                attempt=spec.attempt,
                older=previous.spec.attempt,
            )
            previous.lost = True  # its lease is gone: nothing to report
            previous.ctx.request_cancel("superseded by a newer attempt")
        gpu_ids = self.capacity.take(spec.required_cpu, spec.required_accelerators)
        spec.gpu_ids = gpu_ids
        env = {
            "WHATSNEXT_JOB_ID": str(spec.id),
            "WHATSNEXT_JOB_NAME": spec.name,
            "WHATSNEXT_TASK": spec.task,
            "WHATSNEXT_ATTEMPT": str(spec.attempt),
            "WHATSNEXT_PROJECT": spec.project or self.project or "",
            "WHATSNEXT_SERVER": self.http.base_url,
        }
        if self.checkpoints is not None and self.formatter.uses_checkpoint_dir:
            env.update(self.checkpoints.prepare(spec, env["WHATSNEXT_PROJECT"]))
        if self.capacity.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        on_output = self.logs.open(spec.id, spec.attempt) if self.logs is not None else None
        ctx = RunContext(
            env=env, on_output=on_output, timeout=spec.timeout, grace=self.grace, stop_signal=self.job_signal
        )
        ctx.on_external = lambda handle: self._record_external(spec, handle)
        entry = Running(spec, ctx, gpu_ids, time.monotonic())
        self.running[spec.id] = entry
        self.attempts[entry.key] = entry
        if self.guard is not None:
            self.guard.started(entry.key, leased_at)
        if self.stopping is not None:
            ctx.request_stop(self.stopping)  # handed out as the worker stops: straight back
        if self.control is not None:
            self.control.started(entry.key)
        self.reporter.unacknowledged.add((spec.id, spec.attempt))
        # A worker of several projects says whose job it is.
        whose = {} if self.project is not None else {"project": spec.project}
        log.info(
            "job started", job=spec.id, name=spec.name, attempt=spec.attempt, gpus=gpu_ids or None, **whose
        )
        if _numeric(gpu_ids):
            self._record_external(spec, None)  # which GPUs this attempt got, for its history
        jobs.create_task(self._run_one(entry, previous))

    def cancel(self, job_ids: list[int]) -> None:
        """Stop the jobs cancelled on the server (from a heartbeat's answer)."""
        for job_id in job_ids:
            running = self.running.get(job_id)
            if running is not None and not running.ctx.cancel.is_set():
                log.info("job cancelled on the server; stopping it", job=job_id)
                running.ctx.request_cancel("cancelled")

    def stop_attempt(self, attempt: Attempt, how: str) -> None:
        """Stop one attempt at the server's word (its control stream): ``cancel`` reports it
        CANCELLED, ``requeue`` hands it back to the queue."""
        entry = self.attempts.get(attempt)
        if entry is None or entry.ctx.cancel.is_set():
            return
        log.info(
            f"job {'cancelled' if how == 'cancel' else 'requeued'} on the server; stopping it", job=attempt[0]
        )
        if how == "cancel":
            entry.ctx.request_cancel("cancelled")
        else:
            entry.ctx.request_stop("requeued on the server")

    def running_attempts(self) -> list[Attempt]:
        return list(self.attempts)

    def stop_all(self, reason: str) -> None:
        """Stop every running attempt now; each is handed back to the queue (the worker stops)."""
        self.stopping = reason
        for entry in list(self.attempts.values()):
            entry.ctx.request_stop(reason)

    # ------------------------------------------------------------ fenced leases (LeaseGuard)

    def suspend(self, attempt: Attempt) -> bool:
        entry = self.attempts.get(attempt)
        return entry is not None and entry.ctx.suspend()

    def resume(self, attempt: Attempt) -> None:
        entry = self.attempts.get(attempt)
        if entry is not None:
            entry.ctx.resume()

    def lose(self, attempt: Attempt) -> None:
        """The attempt is no longer this worker's: kill its job at once, report nothing for it."""
        entry = self.attempts.get(attempt)
        if entry is None:
            return
        entry.lost = True
        entry.ctx.kill_lost()

    def _record_external(self, spec: JobSpec, handle: str | None) -> None:
        """``ctx.on_external``: tell the server, in the background, where this attempt runs (its
        handle outside this host, if any) and which GPU ids it got."""
        gpus = [int(g) for g in spec.gpu_ids] if _numeric(spec.gpu_ids) else None
        task = asyncio.get_running_loop().create_task(
            self._post_external(spec.id, spec.attempt, handle, gpus)
        )
        self._external_reports.add(task)
        task.add_done_callback(self._external_reports.discard)
        self._started_posts.setdefault((spec.id, spec.attempt), []).append(task)

    async def _post_external(
        self, job_id: int, attempt: int, handle: str | None, gpus: list[int] | None, tries: int = 8
    ) -> None:
        """``POST /jobs/{id}/started`` with the external handle and GPU ids; retried, never fails the job."""
        backoff = Backoff()
        body = {"attempt": attempt, "external_id": handle, "gpus": gpus}
        for left in range(tries - 1, -1, -1):
            try:
                await self.http.post(f"{job_path(job_id)}/started", body)
                return
            except RETRYABLE as exc:
                if left == 0:
                    log.warning("external handle not recorded", job=job_id, handle=handle, error=str(exc))
                    return
                await asyncio.sleep(backoff.next())
            except WhatsNextError as exc:  # stale attempt (409), or a server without the route
                log.warning("external handle refused", job=job_id, handle=handle, error=str(exc))
                if isinstance(exc, Conflict):
                    self._lost((job_id, attempt), "the server refused its start as a stale attempt")
                return

    def _lost(self, attempt: Attempt, why: str) -> None:
        if self.guard is not None:
            self.guard.lost(attempt, why)
        else:
            self.lose(attempt)

    async def _run_one(self, entry: Running, previous: Running | None = None) -> None:
        spec, ctx = entry.spec, entry.ctx
        started = time.monotonic()
        try:
            if previous is not None:
                await previous.ended.wait()  # the older attempt of this job has stopped
            # A lost earlier attempt may still run elsewhere: cancel it first (one run per attempt).
            for handle in spec.previous_external_ids:
                log.info("cancelling the external job of a lost attempt", job=spec.id, handle=handle)
                await self.formatter.cancel_external(handle)
            if ctx.cancel.is_set():  # stopped before it began (the worker stops, or lost)
                outcome = Outcome(status="CANCELLED", error=ctx.cancel_reason)
            else:
                outcome = await self.formatter.run(spec, ctx)
        except Exception as exc:  # a formatter bug fails this job, not the worker
            outcome = Outcome(
                status="FAILED",
                error=f"formatter error: {type(exc).__name__}: {exc}",
                log_tail="".join(traceback.format_exception(exc))[-ctx.tail_bytes :],
            )
        finally:
            if self.running.get(spec.id) is entry:
                del self.running[spec.id]
            if self.attempts.get(entry.key) is entry:
                del self.attempts[entry.key]
            if self.guard is not None:
                self.guard.ended(entry.key)
            self.capacity.give(spec.required_cpu, entry.gpu_ids)
            entry.ended.set()
            self.last_ended = time.monotonic()
            self.slot_freed.set()
        if outcome.duration is None:
            outcome.duration = time.monotonic() - started
        if self.artifacts is not None and (spec.inputs or spec.outputs):
            await self.artifacts.record(spec, ctx)  # never raises
        if self.logs is not None:
            await self.logs.finish(spec.id, attempt=spec.attempt)  # the lines reach the server first
        posts = self._started_posts.pop((spec.id, spec.attempt), None)
        if posts:
            await asyncio.wait(posts, timeout=30)  # how it started reaches the server before how it ended
        checkpoint = self.checkpoints.read(spec) if self.checkpoints is not None else None
        if entry.lost or ctx.lost:
            self.reporter.unacknowledged.discard(entry.key)
            log.info(
                "attempt ended after its lease was lost; not reported", job=spec.id, attempt=spec.attempt
            )
            return
        status = outcome.status
        requeue = outcome.requeue
        if status == "CANCELLED" and ctx.requeue:
            status, requeue = "FAILED", True  # handed back: PREEMPTED, no attempt used
        error = outcome.error
        if status == "FAILED" and outcome.log_tail and (error or "").startswith(("exit code", "killed by")):
            error = failure_reason(error, outcome.log_tail)  # the cause is usually in the last lines
        result = outcome.result
        if self.checkpoints is not None:
            if result is None:
                result = self.checkpoints.read_result(spec)  # what the job wrote to WHATSNEXT_RESULT_FILE
            self.checkpoints.finish(spec)  # what is left is what the job itself wrote
        report: ReportEntry = {
            "id": spec.id,
            "attempt": spec.attempt,
            "status": status,
            "exit_code": outcome.exit_code,
            "result": bounded_result(result),
            "error": clean_text(error) if error else None,  # no NUL: PostgreSQL text refuses it
            "log": clean_text(outcome.log_tail) or None,
            "duration": round(outcome.duration, 6),
            "requeue": requeue,
            "retryable": outcome.retryable,
        }
        if checkpoint is not None:
            report["checkpoint"] = checkpoint
        self.reporter.put(report)
        self.summary.jobs.append(spec.id)
        if requeue:
            self.summary.requeued += 1
        elif status == "COMPLETED":
            self.summary.completed += 1
        elif status == "CANCELLED":
            self.summary.cancelled += 1
        else:
            self.summary.failed += 1
        # Short successful jobs are many: they show in the periodic progress line instead.
        emit = log.info if status != "COMPLETED" or outcome.duration >= 1.0 else log.debug
        emit(
            "job finished",
            job=spec.id,
            status="REQUEUED" if requeue else status,
            exit_code=outcome.exit_code,
            seconds=round(outcome.duration, 3),
            error=error,
        )
