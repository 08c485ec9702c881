"""Allocations as SLURM batch jobs: ``sbatch`` submits a pilot script under the job name
``whatsnext-alloc-<queue>-<id>``; ``squeue`` (this user's jobs, found by that prefix) says what
runs and waits, and for a job it no longer lists, ``sacct`` (when SLURM keeps accounting) or
``scontrol show job`` says how it ended; ``scancel`` cancels.

SLURM states become allocation states: PENDING is QUEUED (with SLURM's reason: Priority,
Resources, ...), RUNNING, COMPLETING and the like are RUNNING, COMPLETED is FINISHED, so is
TIMEOUT (its time was used), CANCELLED and PREEMPTED are CANCELLED, FAILED, NODE_FAIL,
OUT_OF_MEMORY and BOOT_FAIL are FAILED; a job SLURM no longer knows is FINISHED.
"""

from __future__ import annotations

import asyncio
import getpass
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from .backend import Command, Found, Observed, Submitted, first_line, run
from .pilot import Pilot, is_ours
from .plan import QueueSpec

log = structlog.get_logger("whatsnext.alloc")

QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "RESIZING"})
RUNNING_STATES = frozenset(
    {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"}
)
FINISHED_STATES = {"COMPLETED": None, "TIMEOUT": "TIMEOUT: it used its whole time limit"}
CANCELLED_STATES = {"CANCELLED": None, "PREEMPTED": "PREEMPTED", "REVOKED": "REVOKED", "DEADLINE": "DEADLINE"}
GONE = "SLURM no longer knows the job"
_ID = re.compile(r"^\d+(_\d+)?$")
_NO_ACCOUNTING = ("accounting storage is disabled", "slurmdbd", "not configured")


def slurm_time(seconds: float) -> str:
    """``--time`` for ``seconds``: ``D-HH:MM:SS``, rounded up to whole minutes (SLURM's unit)."""
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00"


def allocation_state(state: str, reason: str | None = None, exit_code: str | None = None) -> Observed:
    """An allocation's state from SLURM's job state (``CANCELLED by 0`` reads as CANCELLED)."""
    word = (state.split() or ["UNKNOWN"])[0].upper().rstrip("+")
    why = None if reason in (None, "", "None", "(null)") else reason
    if word in QUEUED_STATES:
        return Observed("QUEUED", why)
    if word in RUNNING_STATES:
        return Observed("RUNNING", None)
    if word in FINISHED_STATES:
        return Observed("FINISHED", FINISHED_STATES[word])
    if word in CANCELLED_STATES:
        return Observed("CANCELLED", CANCELLED_STATES[word] or why)
    detail = word
    if word == "FAILED" and exit_code and exit_code not in ("0:0", "0"):
        detail = f"FAILED: exit code {exit_code} (see the allocation's log)"
    elif why and why != "NonZeroExitCode":
        detail = f"{word}: {why}"
    return Observed("FAILED", detail)


class SlurmBackend:
    """Submit allocations with ``sbatch`` and follow them with ``squeue``."""

    kind = "slurm"

    def __init__(
        self,
        *,
        sbatch: str = "sbatch",
        squeue: str = "squeue",
        scontrol: str = "scontrol",
        scancel: str = "scancel",
        sacct: str = "sacct",
        gres_flag: Literal["gres", "gpus"] = "gres",
        user: str | None = None,
    ) -> None:
        if gres_flag not in ("gres", "gpus"):
            raise ValueError(f"gres_flag must be 'gres' or 'gpus', not {gres_flag!r}")
        self.sbatch, self.squeue, self.scontrol, self.scancel, self.sacct = (
            sbatch,
            squeue,
            scontrol,
            scancel,
            sacct,
        )
        self.gres_flag = gres_flag
        self.user = user or getpass.getuser()
        self._accounting: bool | None = None
        """Whether ``sacct`` answers (None: not asked yet)."""

    # ------------------------------------------------------------ submitting

    def directives(self, pilot: Pilot, queue: QueueSpec, log_file: Path) -> list[str]:
        """The sbatch options of an allocation (before the queue's own ``sbatch_args``)."""
        options = queue.options
        out = [
            f"--job-name={pilot.name}",
            f"--time={slurm_time(pilot.time_limit)}",
            f"--output={log_file}",
            "--nodes=1",
            "--ntasks=1",
            f"--cpus-per-task={queue.cpus * pilot.workers}",
        ]
        gpus = queue.gpus * pilot.workers
        if gpus:
            out.append(f"--gpus={gpus}" if self.gres_flag == "gpus" else f"--gres=gpu:{gpus}")
        if options.get("partition"):
            out.append(f"--partition={options['partition']}")
        if options.get("account"):
            out.append(f"--account={options['account']}")
        out += [str(arg) for arg in options.get("sbatch_args") or ()]
        return out

    def command(self, pilot: Pilot, queue: QueueSpec, log_file: Path) -> Command:
        script_path = log_file.with_suffix(".sbatch")
        script = "#!/bin/bash\n" + pilot.script(scheduler_end=True)
        argv = [self.sbatch, "--parsable", *self.directives(pilot, queue, log_file), str(script_path)]
        return Command(argv=argv, script=script, script_path=script_path)

    async def submit(self, command: Command, pilot: Pilot) -> Submitted:
        assert command.script_path is not None
        try:
            await asyncio.to_thread(_write_script, command.script_path, command.script)
        except OSError as exc:
            return Submitted(
                None, f"cannot write the pilot script {command.script_path}: {exc.strerror or exc}"
            )
        rc, out, err = await run(command.argv)
        job_id = out.strip().splitlines()[0].split(";")[0].strip() if out.strip() else ""
        if rc != 0 or not _ID.match(job_id):
            return Submitted(
                None, f"sbatch failed: {first_line(err) or first_line(out) or f'exit code {rc}'}"
            )
        return Submitted(job_id)

    # ------------------------------------------------------------ following

    async def observe(
        self, queue: QueueSpec, allocations: Sequence[Mapping[str, Any]], prefix: str
    ) -> tuple[dict[int, Observed], list[Found]]:
        rc, out, err = await run([self.squeue, "-h", "-u", self.user, "-o", "%i|%j|%T|%r"])
        if rc != 0:
            raise RuntimeError(f"squeue failed: {first_line(err) or f'exit code {rc}'}")
        listed: dict[str, tuple[str, Observed]] = {}
        for line in out.splitlines():
            parts = line.strip().split("|", 3)
            if len(parts) == 4 and is_ours(parts[1], queue.name, prefix):
                listed[parts[0]] = (parts[1], allocation_state(parts[2], parts[3]))
        observed: dict[int, Observed] = {}
        for allocation in allocations:
            external = allocation.get("external_id")
            if not external:
                continue
            if external in listed:
                observed[int(allocation["id"])] = listed[external][1]
            else:
                observed[int(allocation["id"])] = await self.final_state(str(external))
        found = [Found(name, job_id, state) for job_id, (name, state) in listed.items()]
        return observed, found

    async def final_state(self, job_id: str) -> Observed:
        """How a job ``squeue`` no longer lists ended: from ``sacct`` when SLURM keeps accounting,
        else from ``scontrol show job`` (while SLURM remembers it), else FINISHED (gone)."""
        if self._accounting is not False:
            rc, out, err = await run(
                [self.sacct, "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode,Reason"]
            )
            text = (out + err).lower()
            if rc != 0 or any(mark in text for mark in _NO_ACCOUNTING):
                self._accounting = False
            else:
                self._accounting = True
                rows = [line.split("|") for line in out.splitlines() if line.strip()]
                if rows and len(rows[0]) >= 2:
                    reason = rows[0][2] if len(rows[0]) > 2 else None
                    return allocation_state(rows[0][0], reason, rows[0][1])
        rc, out, err = await run([self.scontrol, "-o", "show", "job", job_id])
        if rc != 0:
            return Observed("FINISHED", GONE)
        state = re.search(r"\bJobState=(\S+)", out)
        code = re.search(r"\bExitCode=(\S+)", out)
        reason = re.search(r"\bReason=(\S+)", out)
        if state is None:
            return Observed("FINISHED", GONE)
        return allocation_state(
            state.group(1), reason.group(1) if reason else None, code.group(1) if code else None
        )

    async def cancel(self, queue: QueueSpec, allocation: Mapping[str, Any]) -> str | None:
        external = allocation.get("external_id")
        if not external:
            return None
        rc, out, err = await run([self.scancel, str(external)])
        if rc != 0 and "invalid job id" not in (err + out).lower():
            return f"scancel failed: {first_line(err) or f'exit code {rc}'}"
        return None

    async def collect_log(self, queue: QueueSpec, allocation: Mapping[str, Any], log_file: Path) -> None:
        """SLURM writes the output to the log itself (``--output``)."""


def _write_script(path: Path, script: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(0o700)


__all__ = ["SlurmBackend", "allocation_state", "slurm_time"]
