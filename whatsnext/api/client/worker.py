"""The worker (``Client``): long-polls for jobs that fit its free capacity and runs them concurrently."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import anyio
import structlog

from ...limits import MAX_CLAIM_JOBS
from ...wire import ClaimRequest
from .artifacts import HASH_MAX_BYTES, HASH_MAX_SECONDS, ArtifactRecorder
from .backoff import Backoff
from .checkpoint import Checkpoints
from .deadline import as_deadline, claim_time_left, slurm_deadline, watch_end
from .errors import RETRYABLE, Conflict
from .formatters.base import Formatter
from .formatters.task import TaskFormatter
from .http import Http
from .idle import IdleClock, check_idle_timeout
from .job import Job
from .lifetime import attempt_services
from .logship import LogShipper
from .preflight import check_tasks, fetch_tasks
from .project import AsyncProject, Project
from .reporter import ERROR_CHARS, REPORT_BATCH_BYTES, REPORT_BATCH_ENTRIES, Reporter
from .resources import Capacity, worker_capacity
from .runner import ERROR_LINE_CHARS, ERROR_LINES, Runner, Running, WorkSummary, failure_reason
from .server import AsyncServer, Server
from .session import Session
from .shutdown import OnSigterm, Shutdown, check_drain_timeout, check_on_sigterm, parse_signal
from .syncio import run_sync
from .target import Target

log = structlog.get_logger("whatsnext.worker")

IDLE_ASK_INTERVAL = 60.0
"""Seconds between two asks of a waiting worker (``forever``) for why nothing fits it: it asks as
it starts waiting, then at most this often."""

ProjectKey = Project | AsyncProject | str | int
Projects = ProjectKey | Iterable[ProjectKey]
"""What ``Client(project=...)`` and ``work(project=...)`` take: a project (a ``Project``, an
``AsyncProject``, a name or an id) or several."""


def unfit_reason(
    unfit: dict[str, Any],
    capacity: Capacity,
    tags: list[str],
    tasks: list[str] | None,
    time_left: float | None = None,
) -> str:
    """Why a worker cannot take a pending job (from the claim's idle summary; ``time_left``: what
    its claims say is left of its time, None when it has no end)."""
    task = unfit.get("task")
    if not unfit.get("task_taken", True):
        if tasks is not None and task not in tasks:
            return f"its task {task!r} is not among this worker's tasks ({', '.join(tasks)})"
        if not unfit.get("has_command", True):
            return f"its task {task!r} has no command (run a worker with --script or --command for it)"
    missing = sorted(set(unfit.get("tags") or ()) - set(tags))
    if missing:
        return f"it needs tags {', '.join(missing)}, this worker has {', '.join(tags) or 'none'}"
    if unfit.get("gpus", 0) > capacity.total_accelerators:
        return f"it needs {unfit['gpus']} GPUs, this worker has {capacity.total_accelerators}"
    if unfit.get("cpu", 0) > capacity.total_cpu:
        return f"it needs {unfit['cpu']} CPUs, this worker has {capacity.total_cpu}"
    timeout = unfit.get("timeout")
    if timeout is not None and time_left is not None and timeout > time_left:
        return f"its timeout ({timeout:g} s) is longer than this worker's time left ({time_left:.0f} s)"
    return "it does not fit this worker"


async def _first(*aws: Any) -> set[asyncio.Future[Any]]:
    """Wait for the first of several awaitables; the others are cancelled unless they are tasks we keep."""
    futs = [asyncio.ensure_future(a) for a in aws]
    done, pending = await asyncio.wait(futs, return_when=asyncio.FIRST_COMPLETED)
    for p in pending:
        p.cancel()
    return done


class Client:
    """A worker: ``Client(entity, name, project, formatter, available_cpu=16, available_accelerators=4)``.

    ``work()`` asks the server for as many jobs as fit its free CPU and GPUs (long-polling when none
    is eligible), runs them concurrently through the formatter, reports each result as it finishes,
    and returns once the project has nothing left that it could run. ``work(forever=True)`` keeps
    waiting for new jobs, and ``idle_timeout=S`` ends that wait after S seconds with nothing running
    and nothing claimed (the worker deregisters and returns). SIGINT stops claiming and lets running jobs finish; SIGTERM does that
    (``on_sigterm="drain"``, for at most ``drain_timeout`` seconds) or stops them at once
    (``"requeue"``, the default inside a SLURM allocation). A second signal stops the jobs too:
    each gets ``job_signal``, SIGKILL after ``grace`` seconds, and goes back to the queue without
    using an attempt. Each job has a checkpoint directory under ``checkpoint_root`` (see
    :mod:`whatsnext.api.client.checkpoint`).

    ``project`` may be a list: one worker then serves those projects from one pool of capacity (the
    server shares it between them); ``all_projects=True`` serves every project it may work on. Each
    job runs with its own project (``WHATSNEXT_PROJECT``).
    """

    def __init__(
        self,
        entity: str = "",
        name: str | None = None,
        project: Projects | None = None,
        formatter: Formatter | None = None,
        available_cpu: int | None = None,
        available_accelerators: int | str | Iterable[int | str] | None = None,
        tags: Iterable[str] = (),
        *,
        all_projects: bool = False,
        tasks: Iterable[str] | None = None,
        server: Server | AsyncServer | str | None = None,
        poll_wait: float = 30.0,
        grace: float = 10.0,
        max_jobs: int | None = None,
        heartbeat: bool = True,
        live_logs: bool = True,
        artifact_roots: Iterable[str] = (),
        artifact_hash_bytes: int = HASH_MAX_BYTES,
        artifact_hash_seconds: float = HASH_MAX_SECONDS,
        deadline: datetime | float | str | None = None,
        on_sigterm: OnSigterm | None = None,
        drain_timeout: float | None = None,
        job_signal: int | str = signal.SIGTERM,
        checkpoint_root: str | os.PathLike[str] | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        if formatter is None:
            formatter = TaskFormatter()  # each job runs its task's command template
        self.entity = entity
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.formatter = formatter
        self.tags = list(tags)
        self.tasks = sorted(set(tasks)) if tasks else None
        """Only jobs of these tasks are claimed (None: any task)."""
        self.poll_wait = poll_wait
        self.grace = grace
        self.max_jobs = max_jobs or formatter.max_concurrency
        self.use_heartbeat = heartbeat
        self.live_logs = live_logs
        self.artifact_roots = list(artifact_roots)
        """Directories (besides each job's working directory) whose files may be recorded as artifacts."""
        self.artifact_hash = (artifact_hash_bytes, artifact_hash_seconds)
        self.on_sigterm: OnSigterm = check_on_sigterm(on_sigterm)
        self.drain_timeout = check_drain_timeout(drain_timeout)
        self.job_signal = parse_signal(job_signal)
        self.checkpoints = Checkpoints(checkpoint_root)
        self.idle_timeout = check_idle_timeout(idle_timeout)
        """Seconds with nothing running and nothing claimed after which the worker stops (None: never)."""
        self.target = Target()
        """The projects this worker claims from."""
        self.http: Http | None = None
        self._set_target(project, server, all_projects)
        self.capacity = worker_capacity(
            available_cpu, available_accelerators, runs_elsewhere=formatter.runs_elsewhere
        )
        self.deadline = as_deadline(deadline)
        """When this worker's time ends (None: no end); inside a SLURM allocation and not given, the
        allocation's end, read when ``work()`` starts."""
        self._find_deadline = deadline is None
        self._session: Session | None = None
        self._stop_requested = False
        self._kill_requested = False
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[int, Running] = {}
        self._logs: LogShipper | None = None
        self._artifacts: ArtifactRecorder | None = None
        self.summary = WorkSummary()
        self._told_unfit = False
        self._asked_idle_at = -IDLE_ASK_INTERVAL
        self._claim_fields: ClaimRequest = {}

    @property
    def project_key(self) -> str | None:
        """The project of a worker that serves one (its name or id), else None."""
        return self.target.one

    def _set_target(self, project: Projects | None, server: Any, all_projects: bool = False) -> None:
        if project is not None or all_projects:
            items = [project] if isinstance(project, ProjectKey) else list(project or ())
            keys: list[str] = []
            for item in items:
                if isinstance(item, Project):
                    item = item.aio
                if isinstance(item, AsyncProject):
                    keys.append(str(item.id))
                    if len(keys) == 1:
                        self.http = item._http
                else:
                    keys.append(str(item))
            self.target = Target.of(keys, all_projects)
            if self.target.empty:
                raise ValueError("no project: give at least one project, or all_projects=True")
        if isinstance(server, Server):
            server = server.aio
        if isinstance(server, AsyncServer):
            self.http = server.http
        elif isinstance(server, str):
            self.http = AsyncServer(server).http
        if self.http is None:
            self.http = AsyncServer().http

    # ------------------------------------------------------------ public API

    def work(
        self, forever: bool = False, project: Projects | None = None, *, all_projects: bool = False
    ) -> WorkSummary:
        """Run jobs until nothing is left (or forever); returns what was done. ``project`` or
        ``all_projects`` replaces the projects given to ``Client()``."""
        if project is not None or all_projects:
            self._set_target(project, None, all_projects)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(
                self.work_async(forever, handle_signals=threading.current_thread() is threading.main_thread())
            )
        # inside a running loop (a notebook): run on the SDK's background loop
        return run_sync(self.work_async(forever, handle_signals=False))

    def stop(self, kill: bool = False) -> None:
        """Stop claiming and let running jobs finish, for at most ``drain_timeout`` (``kill=True``:
        stop them now; they go back to the queue). Thread-safe."""
        loop = self._loop
        if loop is None:
            self._stop_requested = True
            self._kill_requested = self._kill_requested or kill
            return
        loop.call_soon_threadsafe(self._request_stop, kill)

    async def work_async(self, forever: bool = False, handle_signals: bool = False) -> WorkSummary:
        if self.target.empty:
            raise ValueError("no project: pass project= (or all_projects=True) to Client() or work()")
        assert self.http is not None
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.summary = WorkSummary()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        reporter = self._reporter = Reporter(self.http)
        self._logs = LogShipper(self.http) if self.live_logs else None
        self._artifacts = ArtifactRecorder(
            self.http,
            roots=self.artifact_roots,
            hash_max_bytes=self.artifact_hash[0],
            hash_max_seconds=self.artifact_hash[1],
        )
        runner = self._runner = Runner(
            self.http,
            project=self.target.one,
            formatter=self.formatter,
            capacity=self.capacity,
            grace=self.grace,
            running=self._running,
            reporter=reporter,
            summary=self.summary,
            slot_freed=self._slot_freed,
            logs=self._logs,
            artifacts=self._artifacts,
            checkpoints=self.checkpoints,
            job_signal=self.job_signal,
        )
        self._shutdown = Shutdown(
            on_sigterm=self.on_sigterm,
            drain_timeout=self.drain_timeout,
            stop_claiming=self._stop.set,
            stop_jobs=runner.stop_all,
        )
        if self._stop_requested:
            self._request_stop(self._kill_requested)
        session = self._session = Session(
            self.http,
            name=self.name,
            entity=self.entity,
            target=self.target,
            capacity=self.capacity,
            tags=self.tags,
            formatter=type(self.formatter).__name__,
            stop=self._stop,
        )
        try:
            await self._preflight()
            await self._find_end()
            await session.register()
            async with anyio.create_task_group() as services:
                services.start_soon(reporter.run)
                if self._logs is not None:
                    services.start_soon(self._logs.run)
                if self.use_heartbeat:  # heartbeats, fenced leases, the control stream
                    for service in attempt_services(self.http, session, runner, self._held):
                        services.start_soon(service)
                services.start_soon(self._progress_loop)
                if self.deadline is not None:  # near its end: claim no more, hand back what runs
                    services.start_soon(watch_end, self.deadline, self.grace, self._shutdown.stop_now)
                # Jobs run as plain asyncio tasks: many short ones start every second.
                async with asyncio.TaskGroup() as jobs:
                    await self._claim_loop(jobs, runner, forever)
                # Reports go on being retried while the server is away, until a signal gives up.
                await _first(reporter.drain(), self._shutdown.abandoned.wait())
                if self._logs is not None and not self._shutdown.abandoned.is_set():
                    await _first(self._logs.drain(), self._shutdown.abandoned.wait())
                services.cancel_scope.cancel()
            await session.deregister()
        finally:
            self._shutdown.close()
            with contextlib.suppress(Exception):
                await self.http.close()  # this loop's connections; a later call opens new ones
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self._loop.remove_signal_handler(sig)
            self._loop = None
        return self.summary

    # ------------------------------------------------------------ stopping

    def _on_signal(self, sig: int) -> None:
        self._shutdown.on_signal(sig)

    def _request_stop(self, kill: bool = False) -> None:
        if kill:
            self._shutdown.stop_now("worker stopped")
        else:
            self._shutdown.drain()

    # ------------------------------------------------------------ before the first claim

    async def _preflight(self) -> None:
        """Refuse to start (:class:`PreflightError`) when what this worker runs cannot work."""
        assert self.http is not None
        self.formatter.preflight()
        if self.target.all_projects:
            return  # which projects (and so which tasks) that covers, the server decides at each claim
        if not (self.tasks or self.formatter.uses_task_commands):
            return
        check_tasks(
            self.target, await fetch_tasks(self.http, self.target, self._stop), self.tasks, self.formatter
        )

    # ------------------------------------------------------------ the session

    async def _find_end(self) -> None:
        """The worker's end, registered with it: as given, else its SLURM allocation's."""
        if self.deadline is None and self._find_deadline:
            self.deadline = await asyncio.to_thread(slurm_deadline)
            if self.deadline is not None:
                log.info("deadline: the end of this SLURM allocation", deadline=self.deadline.isoformat())
        if self._session is not None:
            self._session.deadline = self.deadline

    def _time_left(self, wait: float = 0.0) -> float | None:
        """What a claim that waits up to ``wait`` says is left of this worker's time (its deadline
        less its grace and the wait; None: it has no end)."""
        return None if self.deadline is None else claim_time_left(self.deadline, self.grace, wait)

    @property
    def worker_id(self) -> int | None:
        """This worker's id on the server, once registered."""
        return self._session.worker_id if self._session is not None else None

    @property
    def lease_seconds(self) -> float:
        """How long the server leases a job to this worker without a heartbeat."""
        return self._session.lease_seconds if self._session is not None else 60.0

    @property
    def heartbeat_interval(self) -> float | None:
        """Seconds between heartbeats (from the server's register answer)."""
        return self._session.heartbeat_interval if self._session is not None else None

    @property
    def server_max_wait(self) -> float | None:
        """The longest claim wait the server grants (from its register answer); asked for no longer."""
        return self._session.max_wait if self._session is not None else None

    def _held(self) -> list[int]:
        """Jobs this worker answers for: running, or finished with the report not yet taken."""
        return sorted(set(self._running) | {job_id for job_id, _ in self._reporter.unacknowledged})

    async def _progress_loop(self, every: float = 10.0) -> None:
        """A line every ``every`` seconds while jobs are being done."""
        last = -1
        while True:
            await asyncio.sleep(every)
            done = self.summary.total
            if done != last or self._running:
                log.info(
                    "progress",
                    completed=self.summary.completed,
                    failed=self.summary.failed,
                    cancelled=self.summary.cancelled,
                    running=len(self._running),
                )
            last = done

    # ------------------------------------------------------------ claiming

    def _claim_body(self, wait: float, idle_summary: bool) -> ClaimRequest:
        cap = self.capacity
        slots = self.max_jobs - len(self._running) if self.max_jobs else None
        max_jobs = max(
            1,
            min(MAX_CLAIM_JOBS, slots if slots is not None else max(cap.free_cpu, cap.free_accelerators, 1)),
        )
        max_wait = self.server_max_wait
        body: ClaimRequest = {
            "worker_name": self.name,
            "worker_id": self.worker_id,
            "free_cpu": cap.free_cpu,
            "free_accelerators": cap.free_accelerators,
            "total_cpu": cap.total_cpu,
            "total_accelerators": cap.total_accelerators,
            "tags": self.tags,
            "max_jobs": max_jobs,
            "wait": wait if max_wait is None else min(wait, max_wait),
            "idle_summary": idle_summary,
            "tasks": self.tasks,
            "with_command": self.formatter.uses_task_commands,
        }
        if self._claim_fields:
            body.update(self._claim_fields)
        if self.deadline is not None:
            body["time_left"] = self._time_left(body["wait"])  # only jobs whose timeout fits
        return body

    def _full(self) -> bool:
        if self.max_jobs is not None and len(self._running) >= self.max_jobs:
            return True
        return self.capacity.free_cpu <= 0 and self.capacity.free_accelerators <= 0

    async def _claim_loop(self, jobs: asyncio.TaskGroup, runner: Runner, forever: bool) -> None:
        assert self.http is not None and self._stop is not None and self._session is not None
        reporter = runner.reporter
        backoff = Backoff()
        path = self.target.claim_path
        self._claim_fields = self.target.claim_fields()
        long_poll = forever
        idle_clock = IdleClock(self.idle_timeout)
        while not self._stop.is_set():
            if self._running:
                idle_clock.busy()
            else:
                idle_clock.idle(since=runner.last_ended)
                if idle_clock.expired():
                    log.info(
                        "idle: nothing ran or was claimed for the idle timeout; stopping",
                        idle_timeout=self.idle_timeout,
                    )
                    return
            if self._full():
                self._slot_freed.clear()
                await _first(self._slot_freed.wait(), self._stop.wait())
                continue
            # Until the project is done, look again every few seconds for what other workers left.
            wait = (self.poll_wait if forever else min(self.poll_wait, 5.0)) if long_poll else 0.0
            self._slot_freed.clear()
            # Watching for finished jobs: a worker that stops when the project is done needs to
            # know, and one with jobs running gets free capacity back when one of its own ends.
            watch = not forever or bool(self._running)
            # A waiting worker first asks, without waiting, what is pending: to say once why
            # nothing fits it.
            # Once a minute at most: a worker of many short jobs is idle many times a second, and
            # the summary reads every pending and running job of the project.
            ask_idle = (
                forever
                and not self._told_unfit
                and not self._running
                and time.monotonic() - self._asked_idle_at >= IDLE_ASK_INTERVAL
            )
            if ask_idle:
                self._asked_idle_at = time.monotonic()
                wait, watch = 0.0, True
            wait = idle_clock.bound(wait)  # back by the end of the idle timeout, to stop then
            sent_at = time.monotonic()
            claim = asyncio.ensure_future(
                self.http.post(path, self._claim_body(wait, watch), timeout=wait + 60)
            )
            # A long-poll of a worker that stops when the project is done also returns when a job
            # finishes anywhere (ours included), so it is never dropped on the way.
            await _first(claim, self._stop.wait())
            if not claim.done():
                # Stopped while waiting: the server may have handed us jobs in the answer we
                # dropped, so tell it what we really run.
                await self._session.reconcile(self._held())
                continue
            try:
                out = claim.result()
            except asyncio.CancelledError:
                continue
            except RETRYABLE as exc:
                delay = backoff.next(exc.retry_after)
                log.warning("claim failed; retrying", error=str(exc), retry_in=round(delay, 2))
                await _first(asyncio.sleep(idle_clock.bound(delay)), self._stop.wait())
                continue
            backoff.reset()
            if out.get("retry_after") and not out["jobs"]:
                # The server holds as many waiting claims as it takes: come back a little later.
                await _first(asyncio.sleep(float(out["retry_after"])), self._stop.wait())
                continue
            claimed = out["jobs"]
            # The leases began no earlier than the claim was sent plus the server's own wait.
            waited = out.get("waited")
            leased_at = sent_at + float(waited) if isinstance(waited, int | float) else None
            for data in claimed:
                runner.start(jobs, data, leased_at)
            if claimed:
                self._told_unfit = False
            if forever:
                if ask_idle and not claimed:
                    self._say_unfit(out.get("idle"))
                long_poll = forever
                continue
            if not claimed and any(job_id not in self._running for job_id, _ in reporter.unacknowledged):
                # Nothing handed out, and our own reports are still on their way: what the server
                # says is left would be stale. (With jobs handed out, the next claim comes anyway.)
                await _first(reporter.idle.wait(), self._stop.wait())
                long_poll = False
                continue
            idle = out.get("idle") or {}
            if not self._running and not idle.get("running") and not idle.get("runnable"):
                if idle.get("pending"):
                    unfit = idle.get("unfit")
                    log.info(
                        "nothing left that this worker can run",
                        pending=idle["pending"],
                        why=None if not unfit else f"job {unfit['id']}: {self._unfit_reason(unfit)}",
                    )
                return
            long_poll = True

    def _unfit_reason(self, unfit: dict[str, Any]) -> str:
        return unfit_reason(unfit, self.capacity, self.tags, self.tasks, self._time_left())

    def _say_unfit(self, idle: dict[str, Any] | None) -> None:
        """A waiting worker that found nothing says once why, when pending jobs do not fit it."""
        self._told_unfit = True
        idle = idle or {}
        unfit = idle.get("unfit")
        if idle.get("pending") and not idle.get("runnable") and unfit:
            log.info(
                "waiting: no pending job fits this worker",
                pending=idle["pending"],
                why=f"job {unfit['id']}: {self._unfit_reason(unfit)}",
            )


__all__ = [
    "ERROR_CHARS",
    "ERROR_LINES",
    "ERROR_LINE_CHARS",
    "REPORT_BATCH_BYTES",
    "REPORT_BATCH_ENTRIES",
    "Client",
    "Conflict",
    "Job",
    "WorkSummary",
    "failure_reason",
    "unfit_reason",
]
