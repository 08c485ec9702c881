"""Allocations as RUN:AI training workloads, through the ``runai`` command (CLI v2 by default,
``training submit/describe/delete/logs``; v1: ``submit``, ``describe job``, ``delete job``,
``logs``), as the RUN:AI formatter uses it.

A workload named ``whatsnext-alloc-<queue>-<id>`` runs the pilot script with ``bash -c`` in the
queue's ``image`` (which must have ``whatsnext`` installed, or ``setup`` must install it), in the
queue's ``runai_project``, with ``gpus_per_worker`` x workers GPUs and ``cpus_per_worker`` x
workers CPUs. Its state comes from ``describe -o json``; RUN:AI has no time limit of its own, so
a workload still running well past the queue's ``time_limit`` is deleted. When one ends, its
output (``runai logs``) is kept in the allocation's log file.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from ..api.client.formatters.runai import (
    CANCELLED_STATES,
    COMPLETED_STATES,
    FAILED_STATES,
    PREEMPTED_STATES,
    RUNNING_STATES,
    TIMED_OUT_STATES,
    parse_describe,
)
from .backend import Command, Found, Observed, Submitted, first_line, run
from .pilot import Pilot
from .plan import QueueSpec

GONE = "RUN:AI no longer knows the workload"
OVERTIME = 300.0
"""Seconds past its time limit after which a running workload is deleted."""
_NOT_FOUND = re.compile(r"not found|does not exist|doesn't exist|no such|no workload", re.IGNORECASE)


def allocation_state(status: str | None, exit_code: int | None = None) -> Observed:
    """An allocation's state from a workload's status."""
    word = (status or "").strip()
    key = word.lower().replace(" ", "")
    if key in RUNNING_STATES:
        return Observed("RUNNING")
    if key in COMPLETED_STATES:
        return Observed("FINISHED")
    if key in TIMED_OUT_STATES:
        return Observed("FINISHED", f"{word}: it used its whole time")
    if key in CANCELLED_STATES:
        return Observed("CANCELLED", word)
    if key in PREEMPTED_STATES:
        return Observed("CANCELLED", f"{word}: preempted by RUN:AI")
    if key in FAILED_STATES:
        code = f", exit code {exit_code}" if exit_code not in (None, 0) else ""
        return Observed("FAILED", f"workload {word}{code}")
    return Observed("QUEUED", word or None)


class RunaiBackend:
    """Submit allocations with ``runai`` and follow them with ``runai describe``."""

    kind = "runai"

    def __init__(self, *, runai: str = "runai", cli_version: Literal[1, 2] = 2) -> None:
        if cli_version not in (1, 2):
            raise ValueError(f"cli_version must be 1 or 2, not {cli_version!r}")
        self.runai = runai
        self.cli_version = cli_version

    def _project(self, queue: QueueSpec) -> str:
        project = queue.options.get("runai_project")
        if not project:
            raise ValueError(f"queue {queue.name!r}: a runai queue needs options.runai_project")
        return str(project)

    def _verb(self, verb: str) -> list[str]:
        if self.cli_version == 1:
            return {"describe": ["describe", "job"], "logs": ["logs"], "delete": ["delete", "job"]}[verb]
        return ["training", verb]

    def command(self, pilot: Pilot, queue: QueueSpec, log_file: Path) -> Command:
        project = self._project(queue)
        image = queue.options.get("image")
        if not image:
            raise ValueError(f"queue {queue.name!r}: a runai queue needs options.image")
        gpus = queue.gpus * pilot.workers
        cpus = queue.cpus * pilot.workers
        if self.cli_version == 1:
            argv = [self.runai, "submit", "--name", pilot.name, "-p", project, "-i", str(image)]
            if gpus:
                argv += ["-g", str(gpus)]
            argv += ["--cpu", str(cpus)]
        else:
            argv = [self.runai, "training", "submit", pilot.name, "-p", project, "-i", str(image)]
            if gpus:
                argv += ["--gpu-devices-request", str(gpus)]
            argv += ["--cpu-core-request", str(cpus)]
        argv += ["--backoff-limit", "0", *[str(a) for a in queue.options.get("runai_args") or ()]]
        script = pilot.script(scheduler_end=False)
        argv += ["--command", "--", "bash", "-c", script]
        return Command(argv=argv, script=script)

    async def submit(self, command: Command, pilot: Pilot) -> Submitted:
        rc, out, err = await run(command.argv)
        if rc != 0:
            return Submitted(
                None, f"runai submit failed: {first_line(err) or first_line(out) or f'exit code {rc}'}"
            )
        return Submitted(pilot.name)

    async def observe(
        self, queue: QueueSpec, allocations: Sequence[Mapping[str, Any]], prefix: str
    ) -> tuple[dict[int, Observed], list[Found]]:
        """Each allocation's workload, described (RUN:AI's CLI lists no workloads by name here,
        so there is nothing to adopt: an allocation is recorded before its workload is submitted)."""
        project = self._project(queue)
        observed: dict[int, Observed] = {}
        for allocation in allocations:
            name = allocation.get("external_id")
            if not name:
                continue
            rc, out, err = await run(
                [self.runai, *self._verb("describe"), str(name), "-p", project, "-o", "json"]
            )
            if rc != 0:
                if _NOT_FOUND.search(err + out):
                    observed[int(allocation["id"])] = Observed("FINISHED", GONE)
                continue  # RUN:AI did not answer: asked again at the next pass
            try:
                status, code = parse_describe(out)
            except ValueError:
                continue
            state = allocation_state(status, code)
            if state.state == "RUNNING" and _overtime(allocation, queue):
                error = await self.cancel(queue, allocation)
                if error is None:
                    state = Observed("CANCELLED", f"deleted {OVERTIME:g} s past its time limit")
            observed[int(allocation["id"])] = state
        return observed, []

    async def cancel(self, queue: QueueSpec, allocation: Mapping[str, Any]) -> str | None:
        name = allocation.get("external_id")
        if not name:
            return None
        rc, out, err = await run([self.runai, *self._verb("delete"), str(name), "-p", self._project(queue)])
        if rc != 0 and not _NOT_FOUND.search(err + out):
            return f"runai delete failed: {first_line(err) or f'exit code {rc}'}"
        return None

    async def collect_log(self, queue: QueueSpec, allocation: Mapping[str, Any], log_file: Path) -> None:
        name = allocation.get("external_id")
        if not name:
            return
        rc, out, _ = await run([self.runai, *self._verb("logs"), str(name), "-p", self._project(queue)])
        if rc == 0 and out:
            await asyncio.to_thread(_write_log, log_file, out)


def _overtime(allocation: Mapping[str, Any], queue: QueueSpec) -> bool:
    started = allocation.get("started_at")
    if not started:
        return False
    try:
        began = datetime.fromisoformat(str(started)).timestamp()
    except ValueError:
        return False
    limit = float(allocation.get("time_limit") or queue.time_limit)
    return time.time() > began + limit + OVERTIME


def _write_log(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(text)


__all__ = ["RunaiBackend", "allocation_state"]
