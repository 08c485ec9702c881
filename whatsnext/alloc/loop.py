"""The allocation loop (``whatsnext alloc run``): every ``interval``, for each allocation queue it
serves, it

1. takes (or renews) the queue's loop lease, so one loop submits for a queue at a time (a queue
   whose lease another live loop holds is skipped);
2. asks the scheduler what became of the queue's allocations and records their states (with the
   scheduler's reason), adopting the queue's allocations the scheduler runs that the server does
   not know (a loop stopped between submitting and recording);
3. reads the demand of the queue's projects and plans (:func:`~whatsnext.alloc.plan.plan`): which
   jobs fit its workers (the others are named in the log and the queue's ``last_error``), how
   many allocations to submit, which not yet started to cancel because the work is gone;
4. submits, at most ``max_submits_per_minute``, one at a time after a failure, waiting longer
   after each failure in a row (:class:`~whatsnext.alloc.plan.SubmitGate`); every submission,
   failed or not, is recorded as an allocation, and a failure is the queue's ``last_error``.

``dry_run`` changes nothing: it prints what a pass would submit (the exact command and script)
and cancel, and why.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from ..api.client.errors import Conflict, NotFound, WhatsNextError
from .api import AllocApi
from .backend import Backend, Observed
from .pilot import NAME_PREFIX, Pilot, log_path, new_name
from .plan import ACTIVE, FIRST_BACKOFF, MAX_BACKOFF, Plan, QueueSpec, Shape, Submission, SubmitGate, plan

log = structlog.get_logger("whatsnext.alloc")

NOT_SUBMITTED = "not submitted: "
"""The start of the reason of an allocation whose submission failed (how a restarted loop finds
its failures in a row, to keep backing off)."""
DEFAULT_LOG_DIR = Path("~/.whatsnext/alloc")
"""Where pilot logs go by default: ``<dir>/<queue>/<allocation>.log`` ($WHATSNEXT_ALLOC_LOG_DIR)."""
ENDED = ("FINISHED", "FAILED", "CANCELLED")


def default_log_dir() -> Path:
    return Path(os.environ.get("WHATSNEXT_ALLOC_LOG_DIR") or DEFAULT_LOG_DIR).expanduser().resolve()


def default_worker_command(backend: str) -> list[str]:
    """How an allocation runs ``whatsnext``: with this Python on SLURM (a cluster shares its
    filesystem), the image's ``whatsnext`` on RUN:AI."""
    return [sys.executable, "-m", "whatsnext"] if backend == "slurm" else ["whatsnext"]


@dataclass
class Settings:
    server: str
    """The server URL the workers reach (the allocator's ``--server``)."""
    token_file: str | None = None
    """The workers' token file (its path goes in the script, never the token)."""
    log_dir: Path = field(default_factory=default_log_dir)
    worker_command: list[str] | None = None
    """How an allocation runs ``whatsnext`` (None: :func:`default_worker_command`)."""
    interval: float = 30.0
    lease_seconds: float | None = None
    """How long a queue's loop lease lasts (None: three intervals, at least a minute)."""
    name_prefix: str = NAME_PREFIX
    first_backoff: float = FIRST_BACKOFF
    max_backoff: float = MAX_BACKOFF
    dry_run: bool = False
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    @property
    def lease(self) -> float:
        return self.lease_seconds or max(60.0, 3 * self.interval)


@dataclass
class QueueMemory:
    """What the loop keeps of a queue between passes."""

    gate: SubmitGate
    known: set[str] = field(default_factory=set)
    """External ids the server knows (not adopted again)."""
    active: list[dict[str, Any]] = field(default_factory=list)
    spec: QueueSpec | None = None
    summary: tuple[Any, ...] = ()
    observe_error: str | None = None
    """Why the scheduler could not say what became of the allocations in the last pass."""
    """What the last pass planned and why (logged when it changes)."""


class Allocator:
    def __init__(
        self,
        api: AllocApi,
        backends: Mapping[str, Backend],
        settings: Settings,
        names: Sequence[str] = (),
        *,
        clock: Callable[[], float] = time.time,
        out: Callable[[str], None] = print,
    ) -> None:
        self.api = api
        self.backends = dict(backends)
        self.settings = settings
        self.names = list(dict.fromkeys(names))
        self.clock = clock
        self.out = out
        self.memory: dict[str, QueueMemory] = {}
        self.passes = 0

    # ------------------------------------------------------------ the loop

    async def run(self, once: bool = False, stop: asyncio.Event | None = None) -> None:
        """Passes every ``interval`` until ``stop`` is set (one with ``once``); the queues' leases
        are given back at the end."""
        stop = stop or asyncio.Event()
        try:
            while True:
                try:
                    await self.run_pass()
                except NotFound:
                    raise
                except WhatsNextError as exc:  # the server is away: try again at the next pass
                    if once:
                        raise
                    log.warning(
                        "pass failed; trying again", error=exc.message, retry_in=self.settings.interval
                    )
                if once or stop.is_set():
                    break
                try:
                    await asyncio.wait_for(stop.wait(), self.settings.interval)
                    break
                except TimeoutError:
                    continue
        finally:
            if not self.settings.dry_run:
                await self.release()

    async def release(self) -> None:
        for name in self.memory:
            try:
                await self.api.release(name, self.settings.holder)
            except WhatsNextError as exc:
                log.warning("could not give back the loop lease", queue=name, error=exc.message)

    async def run_pass(self) -> None:
        self.passes += 1
        queues = {q["name"]: q for q in await self.api.queues()}
        missing = [n for n in self.names if n not in queues]
        if missing and self.passes == 1:
            raise NotFound(f"no allocation queue named {', '.join(repr(n) for n in missing)}")
        for name in missing + [n for n in self.memory if n not in queues and n not in missing]:
            await self._queue_gone(name)
        for name, data in queues.items():
            if self.names and name not in self.names:
                continue
            try:
                await self.queue_pass(data)
            except (WhatsNextError, RuntimeError, ValueError, OSError) as exc:
                message = getattr(exc, "message", None) or str(exc)
                log.error("queue pass failed", queue=name, error=message)
                await self._report(data, message)

    async def _queue_gone(self, name: str) -> None:
        """A queue deleted on the server: its allocations not started yet are cancelled."""
        memory = self.memory.pop(name, None)
        if memory is None or memory.spec is None or self.settings.dry_run:
            return
        backend = self.backends.get(memory.spec.backend)
        for allocation in memory.active:
            if allocation.get("state") == "QUEUED" and backend is not None:
                error = await backend.cancel(memory.spec, allocation)
                log.info(
                    "queue deleted: allocation cancelled",
                    queue=name,
                    allocation=allocation["name"],
                    error=error,
                )

    # ------------------------------------------------------------ one queue

    async def queue_pass(self, data: dict[str, Any]) -> Plan | None:
        spec = QueueSpec.from_api(data)
        backend = self.backends.get(spec.backend)
        if backend is None:
            raise ValueError(f"this allocator has no {spec.backend} backend")
        if not self.settings.dry_run:
            try:
                await self.api.lease(spec.name, self.settings.holder, self.settings.lease)
            except Conflict as exc:
                details = exc.details if isinstance(exc.details, dict) else {}
                log.info(
                    "queue skipped: another loop holds it",
                    queue=spec.name,
                    holder=details.get("holder"),
                    until=details.get("expires_at"),
                )
                return None
        memory = await self._memory(spec)
        memory.spec = spec
        active = await self._follow(spec, backend, memory)
        memory.active = active
        if spec.paused:
            log.info("queue paused: nothing submitted", queue=spec.name)
            if self.settings.dry_run:
                self.out(f"queue {spec.name} ({spec.backend}): paused, nothing would be submitted")
            return None
        demand = await self.api.demand(spec.projects)
        decided = plan(spec, [Shape.from_api(s) for s in demand.get("shapes") or ()], active, time.time())
        unfit = decided.unfit_message()
        summary = (decided.why(), unfit, len(decided.submit), len(decided.cancel))
        if summary != memory.summary:  # said when it changes, not every pass
            memory.summary = summary
            log.info(
                "queue pass",
                queue=spec.name,
                submit=len(decided.submit),
                cancel=len(decided.cancel),
                why=decided.why(),
                **({"unfit": unfit} if unfit else {}),
            )
        if self.settings.dry_run:
            self.out(f"queue {spec.name} ({spec.backend}): {decided.why()}")
            if unfit:
                self.out(f"  {unfit}")
        await self._cancel(spec, backend, decided.cancel)
        errors = await self._submit(spec, backend, memory, decided.submit)
        error = errors[-1] if errors else None
        if error is None and memory.gate.failures:
            error = data.get("last_error")  # still backing off: the failure stands
        await self._report(data, error or memory.observe_error or unfit)
        return decided

    async def _memory(self, spec: QueueSpec) -> QueueMemory:
        """The queue's memory; the first time, its pace starts from the submissions of recent loops."""
        memory = self.memory.get(spec.name)
        if memory is None:
            gate = SubmitGate(
                spec.max_submits_per_minute,
                first_backoff=self.settings.first_backoff,
                max_backoff=self.settings.max_backoff,
                clock=self.clock,
            )
            detail = await self.api.queue(spec.name)
            recent = detail.get("recent") or []
            wall, now = time.time(), self.clock()
            gate.seed(
                (now - (wall - _epoch(a["submitted_at"])), not _failed_submission(a))
                for a in recent
                if a.get("submitted_at") and not (a.get("shape") or {}).get("adopted")
            )
            memory = self.memory[spec.name] = QueueMemory(gate=gate)
            memory.known.update(str(a["external_id"]) for a in recent if a.get("external_id"))
        gate = memory.gate
        gate.per_minute = max(1, spec.max_submits_per_minute)
        return memory

    async def _follow(self, spec: QueueSpec, backend: Backend, memory: QueueMemory) -> list[dict[str, Any]]:
        """Record what the scheduler says of the queue's allocations; adopt those it runs that the
        server does not know. The allocations still queued or running."""
        allocations = await self.api.allocations(spec.name, ACTIVE)
        try:
            observed, found = await backend.observe(spec, allocations, self.settings.name_prefix)
        except (RuntimeError, OSError) as exc:  # the scheduler did not answer: the server's view stands
            log.warning("cannot read the allocations' states", queue=spec.name, error=str(exc))
            memory.observe_error = str(exc)
            observed, found = {}, []
        else:
            memory.observe_error = None
        memory.known.update(str(a["external_id"]) for a in allocations if a.get("external_id"))
        active: list[dict[str, Any]] = []
        for allocation in allocations:
            seen = observed.get(int(allocation["id"]))
            if seen is not None and (seen.state, seen.reason) != (
                allocation["state"],
                allocation.get("reason"),
            ):
                allocation = await self._record(spec, backend, allocation, seen)
            if allocation["state"] in ACTIVE:
                active.append(allocation)
        for item in found:
            if item.external_id in memory.known:
                continue
            memory.known.add(item.external_id)
            log.info(
                "allocation adopted", queue=spec.name, allocation=item.name, external_id=item.external_id
            )
            if self.settings.dry_run:
                continue
            body = {
                "name": item.name,
                "external_id": item.external_id,
                "workers": spec.workers_per_alloc,
                "time_limit": spec.time_limit,
                "shape": {"adopted": True},
                "state": item.observed.state,
                "reason": item.observed.reason,
            }
            try:
                adopted = await self.api.add_allocation(spec.name, body)
            except Conflict:
                continue
            if adopted["state"] in ACTIVE:
                active.append(adopted)
        return active

    async def _record(
        self, spec: QueueSpec, backend: Backend, allocation: dict[str, Any], seen: Observed
    ) -> dict[str, Any]:
        event = {"RUNNING": "allocation started", "QUEUED": "allocation waiting"}.get(
            seen.state, "allocation ended"
        )
        log.info(
            event,
            queue=spec.name,
            allocation=allocation["name"],
            external_id=allocation.get("external_id"),
            state=seen.state,
            reason=seen.reason,
        )
        if self.settings.dry_run:
            return {**allocation, "state": seen.state, "reason": seen.reason}
        updated = await self.api.update_allocation(
            int(allocation["id"]), {"state": seen.state, "reason": seen.reason}
        )
        if seen.state in ENDED:
            await backend.collect_log(spec, allocation, self._log_file(spec, allocation["name"]))
        return updated

    async def _cancel(self, spec: QueueSpec, backend: Backend, allocations: list[dict[str, Any]]) -> None:
        for allocation in allocations:
            if self.settings.dry_run:
                self.out(
                    f"  would cancel {allocation['name']} ({allocation.get('external_id')}): the work is gone"
                )
                continue
            error = await backend.cancel(spec, allocation)
            if error is not None:
                log.warning("cancel failed", queue=spec.name, allocation=allocation["name"], error=error)
                continue
            await self.api.update_allocation(
                int(allocation["id"]),
                {"state": "CANCELLED", "reason": "cancelled before it started: the work is gone"},
            )
            log.info("allocation cancelled: the work is gone", queue=spec.name, allocation=allocation["name"])

    async def _submit(
        self, spec: QueueSpec, backend: Backend, memory: QueueMemory, todo: list[Submission]
    ) -> list[str]:
        """Submit what the gate lets through; the errors of failed submissions."""
        allowed, why_not = memory.gate.allowed()
        if len(todo) > allowed:
            log.info("submissions held back", queue=spec.name, wanted=len(todo), now=allowed, why=why_not)
            if self.settings.dry_run:
                self.out(f"  {len(todo) - allowed} submission(s) held back: {why_not}")
        errors: list[str] = []
        for item in todo[:allowed]:
            name = new_name(spec.name, self.settings.name_prefix)
            pilot = self._pilot(spec, name, item.workers)
            log_file = self._log_file(spec, name)
            command = backend.command(pilot, spec, log_file)
            if self.settings.dry_run:
                self.out(f"  would submit {name} for {item.jobs} job(s) of {item.shape.describe()}:")
                self.out("    " + shlex.join(command.argv))
                if command.script_path is not None:
                    self.out(f"    with {command.script_path}:")
                    self.out("\n".join("      " + line for line in command.script.splitlines()))
                continue
            error = await self._submit_one(spec, backend, item, pilot, command, memory)
            if error is not None:
                errors.append(error)
                break  # one failure is enough for this pass: the next try waits for its backoff
        return errors

    async def _submit_one(
        self,
        spec: QueueSpec,
        backend: Backend,
        item: Submission,
        pilot: Pilot,
        command: Any,
        memory: QueueMemory,
    ) -> str | None:
        body: dict[str, Any] = {
            "name": pilot.name,
            "workers": pilot.workers,
            "time_limit": spec.time_limit,
            "shape": item.shape.record(spec, item.jobs),
        }
        recorded: dict[str, Any] | None = None
        if backend.kind == "runai":  # recorded first: RUN:AI's CLI lists no workloads to adopt
            recorded = await self.api.add_allocation(spec.name, {**body, "external_id": pilot.name})
        result = await backend.submit(command, pilot)
        delay = memory.gate.submitted(result.error is None)
        if result.error is not None:
            reason = NOT_SUBMITTED + result.error
            if recorded is not None:
                await self.api.update_allocation(int(recorded["id"]), {"state": "FAILED", "reason": reason})
            else:
                await self.api.add_allocation(spec.name, {**body, "state": "FAILED", "reason": reason})
            log.warning(
                "submission failed",
                queue=spec.name,
                allocation=pilot.name,
                error=result.error,
                failures=memory.gate.failures,
                retry_in=round(delay, 1),
            )
            return result.error
        assert result.external_id is not None
        memory.known.add(result.external_id)
        if recorded is None:
            recorded = await self.api.add_allocation(spec.name, {**body, "external_id": result.external_id})
        memory.active.append(recorded)
        log.info(
            "allocation submitted",
            queue=spec.name,
            allocation=pilot.name,
            external_id=result.external_id,
            workers=pilot.workers,
            jobs=item.jobs,
            demand=item.shape.describe(),
            log=str(self._log_file(spec, pilot.name)),
        )
        return None

    def _pilot(self, spec: QueueSpec, name: str, workers: int) -> Pilot:
        settings = self.settings
        return Pilot(
            queue=spec.name,
            name=name,
            projects=spec.projects,
            workers=workers,
            time_limit=spec.time_limit,
            idle_timeout=spec.idle_timeout,
            server=settings.server,
            worker_command=settings.worker_command or default_worker_command(spec.backend),
            cpus_per_worker=spec.cpus,
            gpus_per_worker=spec.gpus,
            worker_args=spec.worker_args,
            setup=spec.options.get("setup"),
            token_file=settings.token_file,
        )

    def _log_file(self, spec: QueueSpec, name: str) -> Path:
        return log_path(self.settings.log_dir, spec.name, name)

    async def _report(self, data: Mapping[str, Any], error: str | None) -> None:
        """Set the queue's ``last_error`` (None clears it) when it changes."""
        if self.settings.dry_run or error == data.get("last_error"):
            return
        try:
            await self.api.update_queue(str(data["name"]), {"last_error": error[:2000] if error else None})
        except WhatsNextError as exc:
            log.warning("could not record the queue's last error", queue=data["name"], error=exc.message)


def _epoch(value: str) -> float:
    return datetime.fromisoformat(str(value)).timestamp()


def _failed_submission(allocation: Mapping[str, Any]) -> bool:
    return allocation.get("state") == "FAILED" and str(allocation.get("reason") or "").startswith(
        NOT_SUBMITTED
    )


__all__ = [
    "DEFAULT_LOG_DIR",
    "NOT_SUBMITTED",
    "Allocator",
    "Settings",
    "default_log_dir",
    "default_worker_command",
]
