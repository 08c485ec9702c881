"""The worker (``Client``): long-polls for jobs that fit its free capacity and runs them concurrently."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import structlog

from .artifacts import HASH_MAX_BYTES, HASH_MAX_SECONDS, ArtifactRecorder
from .backoff import Backoff
from .errors import Conflict, NotFound, ServerError, WhatsNextError
from .errors import ConnectionError as ServerUnreachable
from .formatters.base import Formatter, JobSpec, Outcome, PreflightError, RunContext
from .formatters.task import TaskFormatter
from .http import Http
from .job import Job
from .logship import LogShipper
from .process import clean_text
from .project import AsyncProject, Project, project_path
from .resources import Capacity, resolve_gpu_ids
from .server import AsyncServer, Server
from .syncio import run_sync

log = structlog.get_logger("whatsnext.worker")

RETRYABLE = (ServerUnreachable, ServerError)
ERROR_LINES = 5
"""How many of a failed job's last non-empty output lines its error carries (besides the reason)."""
ERROR_LINE_CHARS = 300
ERROR_CHARS = 2000


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


def unfit_reason(unfit: dict[str, Any], capacity: Capacity, tags: list[str], tasks: list[str] | None) -> str:
    """Why a worker cannot take a pending job (from the claim's idle summary)."""
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
    return "it does not fit this worker"


@dataclass
class WorkSummary:
    """What one ``work()`` call did."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    jobs: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.completed + self.failed + self.cancelled


@dataclass
class _Running:
    spec: JobSpec
    ctx: RunContext
    gpu_ids: list[str]
    started: float


REPORT_BATCH_BYTES = 512 * 1024
"""A report request stays under this many bytes of JSON (proxies commonly refuse 1 MiB bodies)."""
REPORT_BATCH_ENTRIES = 500


def _report_size(report: dict[str, Any]) -> int:
    return len(orjson.dumps(report))


def _slimmed(report: dict[str, Any]) -> dict[str, Any]:
    """A report the server can surely take: the outcome without the output tail and result."""
    slim = {k: v for k, v in report.items() if k not in ("log", "result")}
    if isinstance(slim.get("error"), str):
        slim["error"] = slim["error"][-ERROR_CHARS:]
    return slim


def _numeric(gpu_ids: list[str]) -> bool:
    """GPU ids given as indexes (the server records those; UUIDs stay in the worker's log)."""
    return bool(gpu_ids) and all(g.isascii() and g.isdigit() for g in gpu_ids)


class _Reporter:
    """Sends finished jobs' reports in batches; retries with backoff until the server takes them.

    A batch stays under ``REPORT_BATCH_BYTES``. A batch the server refuses as a whole (413 behind
    a proxy with a smaller body limit, 400/422) is split in halves and each half sent again; a
    single report refused on its own is sent once more without its output tail and result. The
    server answers each entry in a batch on its own, so one bad entry never holds back the others.
    """

    def __init__(self, http: Http) -> None:
        self.http = http
        self.pending: list[tuple[dict[str, Any], int]] = []
        """Reports not delivered yet, each with its size as JSON (measured once)."""
        self.unacknowledged: set[tuple[int, int]] = set()
        """Jobs started here whose report the server has not taken yet: still ours."""
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.batch_bytes = REPORT_BATCH_BYTES

    def put(self, report: dict[str, Any]) -> None:
        self.pending.append((report, _report_size(report)))
        self.idle.clear()
        self.wakeup.set()

    def _next_batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        size = 2
        for report, report_size in self.pending[:REPORT_BATCH_ENTRIES]:
            n = report_size + 1
            if batch and size + n > self.batch_bytes:
                break
            batch.append(report)
            size += n
        return batch

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                batch = self._next_batch()
                try:
                    results = await self._send(batch)
                except RETRYABLE as exc:
                    delay = backoff.next(exc.retry_after)
                    log.warning(
                        "report not delivered; retrying",
                        error=str(exc),
                        retry_in=round(delay, 2),
                        jobs=[r["id"] for r in batch],
                    )
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                del self.pending[: len(batch)]
                self.unacknowledged.difference_update((r["id"], r["attempt"]) for r in batch)
                for result in results:
                    if result["code"] != 200:
                        log.warning("report refused", job=result["id"], reason=result["message"])
            self.idle.set()

    async def _send(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Deliver ``batch``, splitting what the server refuses as a whole; the per-entry answers."""
        try:
            out = await self.http.post("/jobs/reports", batch)
        except RETRYABLE:
            raise
        except WhatsNextError as exc:
            if len(batch) > 1:
                if exc.status == 413:
                    self.batch_bytes = max(4096, self.batch_bytes // 2)
                log.info("report batch refused; sending it in halves", status=exc.status, reports=len(batch))
                half = len(batch) // 2
                return [*(await self._send(batch[:half])), *(await self._send(batch[half:]))]
            slim = _slimmed(batch[0])
            if slim != batch[0]:
                log.warning(
                    "report refused; sending it without its output", job=batch[0]["id"], error=str(exc)
                )
                return await self._send([slim])
            log.error("report refused", job=batch[0]["id"], error=str(exc), details=exc.details)
            return [{"id": batch[0]["id"], "code": exc.status or 400, "message": str(exc)}]
        results: list[dict[str, Any]] = out["results"]
        retry = [r for r, res in zip(batch, results, strict=False) if res["code"] == 422 and _slimmed(r) != r]
        if retry:
            # An entry the server could not take as it is: its outcome, without the output, can be.
            again = {
                r["id"]: res
                for r, res in zip(retry, await self._send([_slimmed(r) for r in retry]), strict=False)
            }
            results = [again.get(res["id"], res) if res["code"] == 422 else res for res in results]
        return results


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
    waiting for new jobs. SIGINT/SIGTERM stop claiming and let running jobs finish; a second signal
    stops the jobs too.
    """

    def __init__(
        self,
        entity: str = "",
        name: str | None = None,
        project: Project | AsyncProject | str | None = None,
        formatter: Formatter | None = None,
        available_cpu: int | None = None,
        available_accelerators: int | str | Iterable[int | str] | None = None,
        tags: Iterable[str] = (),
        *,
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
        self._external_reports: set[asyncio.Task[None]] = set()
        self._started_posts: dict[int, list[asyncio.Task[None]]] = {}
        """Per running job, its ``started`` posts: its report waits for them (else they are stale)."""
        self.project_key: str | None = None
        self.http: Http | None = None
        self._set_target(project, server)
        cpu = available_cpu if available_cpu is not None else (os.cpu_count() or 1)
        self.capacity = Capacity(cpu, resolve_gpu_ids(available_accelerators))
        self.worker_id: int | None = None
        self.lease_seconds = 60.0
        self.server_max_wait: float | None = None
        """The longest claim wait the server grants (from its register answer); asked for no longer."""
        self._stop_requested = False
        self._kill_requested = False
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[int, _Running] = {}
        self._logs: LogShipper | None = None
        self._artifacts: ArtifactRecorder | None = None
        self.summary = WorkSummary()
        self._told_unfit = False

    def _set_target(self, project: Any, server: Any) -> None:
        if isinstance(project, Project):
            project = project.aio
        if isinstance(project, AsyncProject):
            self.project_key = str(project.id)
            self.http = project._http
        elif project is not None:
            self.project_key = str(project)
        if isinstance(server, Server):
            server = server.aio
        if isinstance(server, AsyncServer):
            self.http = server.http
        elif isinstance(server, str):
            self.http = AsyncServer(server).http
        if self.http is None:
            self.http = AsyncServer().http

    # ------------------------------------------------------------ public API

    def work(self, forever: bool = False, project: Project | AsyncProject | str | None = None) -> WorkSummary:
        """Run jobs until nothing is left (or forever); returns what was done."""
        if project is not None:
            self._set_target(project, None)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(
                self.work_async(forever, handle_signals=threading.current_thread() is threading.main_thread())
            )
        # inside a running loop (a notebook): run on the SDK's background loop
        return run_sync(self.work_async(forever, handle_signals=False))

    def stop(self, kill: bool = False) -> None:
        """Stop claiming and let running jobs finish (``kill=True``: stop them too). Thread-safe."""
        loop = self._loop
        if loop is None:
            self._stop_requested = True
            self._kill_requested = self._kill_requested or kill
            return
        loop.call_soon_threadsafe(self._request_stop, kill)

    async def work_async(self, forever: bool = False, handle_signals: bool = False) -> WorkSummary:
        if self.project_key is None:
            raise ValueError("no project: pass project= to Client() or work()")
        assert self.http is not None
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._slot_freed = asyncio.Event()
        if self._stop_requested:
            self._request_stop(self._kill_requested)
        self.summary = WorkSummary()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        reporter = self._reporter = _Reporter(self.http)
        self._logs = LogShipper(self.http) if self.live_logs else None
        self._artifacts = ArtifactRecorder(
            self.http,
            roots=self.artifact_roots,
            hash_max_bytes=self.artifact_hash[0],
            hash_max_seconds=self.artifact_hash[1],
        )
        try:
            await self._preflight()
            await self._register()
            async with anyio.create_task_group() as services:
                services.start_soon(reporter.run)
                if self._logs is not None:
                    services.start_soon(self._logs.run)
                if self.use_heartbeat:
                    services.start_soon(self._heartbeat_loop)
                services.start_soon(self._progress_loop)
                # Jobs run as plain asyncio tasks: many short ones start every second.
                async with asyncio.TaskGroup() as jobs:
                    await self._claim_loop(jobs, reporter, forever)
                await self._drain_reports(reporter)
                if self._logs is not None:
                    await self._logs.drain()
                services.cancel_scope.cancel()
            await self._deregister()
        finally:
            with contextlib.suppress(Exception):
                await self.http.close()  # this loop's connections; a later call opens new ones
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self._loop.remove_signal_handler(sig)
            self._loop = None
        return self.summary

    # ------------------------------------------------------------ stopping

    def _on_signal(self, sig: int) -> None:
        log.info(
            "signal received",
            signal=signal.Signals(sig).name,
            action="stopping running jobs"
            if self._stop and self._stop.is_set()
            else "finishing running jobs, claiming no more (again to stop them)",
        )
        self._request_stop(kill=bool(self._stop and self._stop.is_set()))

    def _request_stop(self, kill: bool = False) -> None:
        assert self._stop is not None
        self._stop.set()
        if kill:
            for running in self._running.values():
                running.ctx.request_cancel("worker terminated")

    # ------------------------------------------------------------ before the first claim

    async def _preflight(self) -> None:
        """Refuse to start (:class:`PreflightError`) when what this worker runs cannot work."""
        assert self.http is not None
        self.formatter.preflight()
        if not (self.tasks or self.formatter.uses_task_commands):
            return
        backoff = Backoff()
        while True:
            try:
                tasks = (await self.http.get(f"{project_path(self.project_key or '')}/tasks"))["tasks"]
                break
            except RETRYABLE as exc:  # the server may start after its workers
                if self._stop is not None and self._stop.is_set():
                    raise
                delay = backoff.next()
                log.warning("server unreachable; retrying", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
        names = [t["name"] for t in tasks]
        unknown = [t for t in self.tasks or () if t not in names]
        if unknown:
            import difflib

            guess = difflib.get_close_matches(unknown[0], names, n=1, cutoff=0.6)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            raise PreflightError(
                f"project {self.project_key} has no task {unknown[0]!r}{hint}; its tasks: {', '.join(names) or 'none'}"
            )
        mine = [t for t in tasks if self.tasks is None or t["name"] in self.tasks]
        if isinstance(self.formatter, TaskFormatter):
            runnable = [t for t in mine if t.get("command")]
            if not runnable:
                which = ", ".join(t["name"] for t in mine) or "none"
                raise PreflightError(
                    f"no task of project {self.project_key} has a command to run (tasks: {which}): give "
                    "one (whatsnext tasks add NAME --command 'python train.py --lr {lr}') or run the "
                    "worker with --script, --command or --python"
                )
            self.formatter.check_tasks(runnable)
            skipped = [t["name"] for t in mine if not t.get("command")]
            if skipped:
                log.info("tasks without a command are left to other workers", tasks=skipped)

    # ------------------------------------------------------------ server calls

    async def _register(self) -> None:
        assert self.http is not None
        backoff = Backoff()
        while True:
            try:
                reg = await self.http.post(
                    "/workers",
                    {
                        "name": self.name,
                        "entity": self.entity,
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "project": self.project_key,
                        "cpu": self.capacity.total_cpu,
                        "accelerators": self.capacity.total_accelerators,
                        "tags": self.tags,
                    },
                )
                break
            except RETRYABLE as exc:
                if self._stop is not None and self._stop.is_set():
                    raise
                delay = backoff.next()
                log.warning("server unreachable; retrying", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
        self.worker_id = int(reg["id"])
        self.lease_seconds = float(reg["lease_seconds"])
        self.heartbeat_interval = float(reg["heartbeat_interval"])
        self.server_max_wait = float(reg["max_wait"]) if reg.get("max_wait") else None
        log.info(
            "worker registered",
            worker_id=self.worker_id,
            project=self.project_key,
            cpu=self.capacity.total_cpu,
            gpus=self.capacity.gpu_ids,
            formatter=type(self.formatter).__name__,
        )

    async def _deregister(self) -> None:
        assert self.http is not None
        if self.worker_id is None:
            return
        try:
            await self.http.delete(f"/workers/{self.worker_id}")
        except WhatsNextError as exc:
            log.warning("could not deregister (the server will expire our leases)", error=str(exc))

    async def _heartbeat_loop(self) -> None:
        assert self.http is not None
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                out = await self.http.post(f"/workers/{self.worker_id}/heartbeat", {"running": self._held()})
            except NotFound:
                log.warning("the server forgot this worker; registering again")
                with contextlib.suppress(WhatsNextError):
                    await self._register()
                continue
            except RETRYABLE as exc:
                log.warning("heartbeat failed", error=str(exc))
                continue
            for job_id in out["cancel"]:
                running = self._running.get(job_id)
                if running is not None and not running.ctx.cancel.is_set():
                    log.info("job cancelled on the server; stopping it", job=job_id)
                    running.ctx.request_cancel("cancelled")

    def _held(self) -> list[int]:
        """Jobs this worker answers for: running, or finished with the report not yet taken."""
        return sorted(set(self._running) | {job_id for job_id, _ in self._reporter.unacknowledged})

    async def _reconcile(self) -> None:
        """Hand back jobs the server gave us in an answer we did not read (no claim is in flight now)."""
        assert self.http is not None
        try:
            await self.http.post(
                f"/workers/{self.worker_id}/heartbeat", {"running": self._held(), "grace": 0}
            )
        except WhatsNextError as exc:
            log.warning("could not hand back unread claims (the next heartbeat will)", error=str(exc))

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

    async def _drain_reports(self, reporter: _Reporter) -> None:
        if not reporter.idle.is_set():
            log.info("delivering the last reports", jobs=len(reporter.pending))
        await reporter.idle.wait()

    # ------------------------------------------------------------ claiming

    def _claim_body(self, wait: float, idle_summary: bool) -> dict[str, Any]:
        cap = self.capacity
        slots = self.max_jobs - len(self._running) if self.max_jobs else None
        max_jobs = max(
            1, min(1000, slots if slots is not None else max(cap.free_cpu, cap.free_accelerators, 1))
        )
        return {
            "worker_name": self.name,
            "worker_id": self.worker_id,
            "free_cpu": cap.free_cpu,
            "free_accelerators": cap.free_accelerators,
            "total_cpu": cap.total_cpu,
            "total_accelerators": cap.total_accelerators,
            "tags": self.tags,
            "max_jobs": max_jobs,
            "wait": wait if self.server_max_wait is None else min(wait, self.server_max_wait),
            "idle_summary": idle_summary,
            "tasks": self.tasks,
            "with_command": self.formatter.uses_task_commands,
        }

    def _full(self) -> bool:
        if self.max_jobs is not None and len(self._running) >= self.max_jobs:
            return True
        return self.capacity.free_cpu <= 0 and self.capacity.free_accelerators <= 0

    async def _claim_loop(self, jobs: asyncio.TaskGroup, reporter: _Reporter, forever: bool) -> None:
        assert self.http is not None and self._stop is not None
        backoff = Backoff()
        path = f"{project_path(self.project_key or '')}/claim"
        long_poll = forever
        while not self._stop.is_set():
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
            ask_idle = forever and not self._told_unfit and not self._running
            if ask_idle:
                wait, watch = 0.0, True
            claim = asyncio.ensure_future(
                self.http.post(path, self._claim_body(wait, watch), timeout=wait + 60)
            )
            # A long-poll of a worker that stops when the project is done also returns when a job
            # finishes anywhere (ours included), so it is never dropped on the way.
            await _first(claim, self._stop.wait())
            if not claim.done():
                # Stopped while waiting: the server may have handed us jobs in the answer we
                # dropped, so tell it what we really run.
                await self._reconcile()
                continue
            try:
                out = claim.result()
            except asyncio.CancelledError:
                continue
            except RETRYABLE as exc:
                delay = backoff.next(exc.retry_after)
                log.warning("claim failed; retrying", error=str(exc), retry_in=round(delay, 2))
                await _first(asyncio.sleep(delay), self._stop.wait())
                continue
            backoff.reset()
            if out.get("retry_after") and not out["jobs"]:
                # The server holds as many waiting claims as it takes: come back a little later.
                await _first(asyncio.sleep(float(out["retry_after"])), self._stop.wait())
                continue
            claimed = out["jobs"]
            for data in claimed:
                self._start(jobs, reporter, data)
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
                        why=None
                        if not unfit
                        else f"job {unfit['id']}: {unfit_reason(unfit, self.capacity, self.tags, self.tasks)}",
                    )
                return
            long_poll = True

    def _say_unfit(self, idle: dict[str, Any] | None) -> None:
        """A waiting worker that found nothing says once why, when pending jobs do not fit it."""
        self._told_unfit = True
        idle = idle or {}
        unfit = idle.get("unfit")
        if idle.get("pending") and not idle.get("runnable") and unfit:
            log.info(
                "waiting: no pending job fits this worker",
                pending=idle["pending"],
                why=f"job {unfit['id']}: {unfit_reason(unfit, self.capacity, self.tags, self.tasks)}",
            )

    # ------------------------------------------------------------ running

    def _start(self, jobs: asyncio.TaskGroup, reporter: _Reporter, data: dict[str, Any]) -> None:
        spec = JobSpec(
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
        )
        gpu_ids = self.capacity.take(spec.required_cpu, spec.required_accelerators)
        spec.gpu_ids = gpu_ids
        env = {
            "WHATSNEXT_JOB_ID": str(spec.id),
            "WHATSNEXT_JOB_NAME": spec.name,
            "WHATSNEXT_TASK": spec.task,
            "WHATSNEXT_ATTEMPT": str(spec.attempt),
            "WHATSNEXT_PROJECT": self.project_key or "",
            "WHATSNEXT_SERVER": self.http.base_url if self.http else "",
        }
        if self.capacity.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        on_output = self._logs.open(spec.id, spec.attempt) if self._logs is not None else None
        ctx = RunContext(env=env, on_output=on_output, timeout=spec.timeout, grace=self.grace)
        ctx.on_external = lambda handle: self._record_external(spec, handle)
        self._running[spec.id] = _Running(spec, ctx, gpu_ids, time.monotonic())
        reporter.unacknowledged.add((spec.id, spec.attempt))
        log.info("job started", job=spec.id, name=spec.name, attempt=spec.attempt, gpus=gpu_ids or None)
        if _numeric(gpu_ids):
            self._record_external(spec, None)  # which GPUs this attempt got, for its history
        jobs.create_task(self._run_one(spec, ctx, reporter))

    def _record_external(self, spec: JobSpec, handle: str | None) -> None:
        """``ctx.on_external``: tell the server, in the background, where this attempt runs (its
        handle outside this host, if any) and which GPU ids it got."""
        gpus = [int(g) for g in spec.gpu_ids] if _numeric(spec.gpu_ids) else None
        task = asyncio.get_running_loop().create_task(
            self._post_external(spec.id, spec.attempt, handle, gpus)
        )
        self._external_reports.add(task)
        task.add_done_callback(self._external_reports.discard)
        self._started_posts.setdefault(spec.id, []).append(task)

    async def _post_external(
        self, job_id: int, attempt: int, handle: str | None, gpus: list[int] | None, tries: int = 8
    ) -> None:
        """``POST /jobs/{id}/started`` with the external handle and GPU ids; retried, never fails the job."""
        assert self.http is not None
        backoff = Backoff()
        body = {"attempt": attempt, "external_id": handle, "gpus": gpus}
        for left in range(tries - 1, -1, -1):
            try:
                await self.http.post(f"/jobs/{job_id}/started", body)
                return
            except RETRYABLE as exc:
                if left == 0:
                    log.warning("external handle not recorded", job=job_id, handle=handle, error=str(exc))
                    return
                await asyncio.sleep(backoff.next())
            except WhatsNextError as exc:  # stale attempt (409), or a server without the route
                log.warning("external handle refused", job=job_id, handle=handle, error=str(exc))
                return

    async def _run_one(self, spec: JobSpec, ctx: RunContext, reporter: _Reporter) -> None:
        started = time.monotonic()
        try:
            # A lost earlier attempt may still run elsewhere: cancel it first (one run per attempt).
            for handle in spec.previous_external_ids:
                log.info("cancelling the external job of a lost attempt", job=spec.id, handle=handle)
                await self.formatter.cancel_external(handle)
            outcome = await self.formatter.run(spec, ctx)
        except Exception as exc:  # a formatter bug fails this job, not the worker
            outcome = Outcome(
                status="FAILED",
                error=f"formatter error: {type(exc).__name__}: {exc}",
                log_tail="".join(traceback.format_exception(exc))[-ctx.tail_bytes :],
            )
        finally:
            running = self._running.pop(spec.id, None)
            if running is not None:
                self.capacity.give(spec.required_cpu, running.gpu_ids)
            self._slot_freed.set()
        if outcome.duration is None:
            outcome.duration = time.monotonic() - started
        if self._artifacts is not None and (spec.inputs or spec.outputs):
            await self._artifacts.record(spec, ctx)  # never raises
        if self._logs is not None:
            await self._logs.finish(spec.id)  # the lines reach the server before the report
        posts = self._started_posts.pop(spec.id, None)
        if posts:
            await asyncio.wait(posts, timeout=30)  # how it started reaches the server before how it ended
        status = outcome.status
        if status == "CANCELLED" and ctx.cancel_reason == "worker terminated":
            status = "FAILED"
        error = outcome.error
        if status == "FAILED" and outcome.log_tail and (error or "").startswith(("exit code", "killed by")):
            error = failure_reason(error, outcome.log_tail)  # the cause is usually in the last lines
        report = {
            "id": spec.id,
            "attempt": spec.attempt,
            "status": status,
            "exit_code": outcome.exit_code,
            "result": outcome.result,
            "error": clean_text(error) if error else None,  # no NUL: PostgreSQL text refuses it
            "log": clean_text(outcome.log_tail) or None,
            "duration": round(outcome.duration, 6),
            "requeue": outcome.requeue,
            "retryable": outcome.retryable,
        }
        reporter.put(report)
        self.summary.jobs.append(spec.id)
        if status == "COMPLETED":
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
            status=status,
            exit_code=outcome.exit_code,
            seconds=round(outcome.duration, 3),
            error=error,
        )


__all__ = ["Client", "Conflict", "Job", "WorkSummary"]
