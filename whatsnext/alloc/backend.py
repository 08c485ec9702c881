"""What the allocator asks of a scheduler (SLURM, RUN:AI): submit an allocation, say what became
of the queue's allocations (and which of its allocations the server does not know yet), cancel one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .pilot import Pilot
from .plan import QueueSpec

COMMAND_LIMIT = 60.0
"""Seconds a scheduler command (sbatch, squeue, runai) may take."""
HIDDEN_ENV = ("WHATSNEXT_TOKEN",)
"""Variables of the allocator's environment that scheduler commands never see (SLURM would hand
them on to the allocation)."""


@dataclass(frozen=True)
class Observed:
    """An allocation's state as the scheduler tells it (an allocation state of the API)."""

    state: str
    reason: str | None = None


@dataclass(frozen=True)
class Found:
    """An allocation of the queue the scheduler runs that the server may not know (a loop stopped
    between submitting it and recording it)."""

    name: str
    external_id: str
    observed: Observed


@dataclass(frozen=True)
class Submitted:
    external_id: str | None
    """The scheduler's handle (None when the submission failed)."""
    error: str | None = None
    """Why the submission failed (None: it did not)."""


@dataclass(frozen=True)
class Command:
    """What a submission runs: the command and the script it hands over."""

    argv: list[str]
    script: str
    script_path: Path | None = None
    """Where the script is written first (None: it is passed in ``argv``)."""


class Backend(Protocol):
    kind: str

    def command(self, pilot: Pilot, queue: QueueSpec, log_file: Path) -> Command:
        """The submission of ``pilot``, as it would run."""
        ...

    async def submit(self, command: Command, pilot: Pilot) -> Submitted: ...

    async def observe(
        self, queue: QueueSpec, allocations: Sequence[Mapping[str, Any]], prefix: str
    ) -> tuple[dict[int, Observed], list[Found]]:
        """The state of each allocation (by id) the scheduler can tell, and the queue's allocations
        it holds now (their names start with ``prefix``, the allocator's name prefix, and the
        queue's name: :func:`~whatsnext.alloc.pilot.is_ours`); an allocation missing from the
        first is unchanged."""
        ...

    async def cancel(self, queue: QueueSpec, allocation: Mapping[str, Any]) -> str | None:
        """Cancel an allocation; the error when that failed (None: cancelled or gone)."""
        ...

    async def collect_log(self, queue: QueueSpec, allocation: Mapping[str, Any], log_file: Path) -> None:
        """Keep the ended allocation's output in ``log_file`` when the scheduler holds it."""
        ...


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of scheduler commands: the allocator's, less :data:`HIDDEN_ENV`."""
    env = {k: v for k, v in os.environ.items() if k not in HIDDEN_ENV}
    env.update(extra or {})
    return env


async def run(argv: Sequence[str], *, limit: float = COMMAND_LIMIT) -> tuple[int, str, str]:
    """Run a scheduler command without blocking the loop, in :func:`clean_env`: ``(returncode,
    stdout, stderr)``; 127 when it cannot start, 124 when it overruns ``limit``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=clean_env(),
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


def first_line(text: str, limit: int = 500) -> str:
    """The message of a command's output: its non-empty lines joined, cut at ``limit``."""
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


__all__ = [
    "COMMAND_LIMIT",
    "Backend",
    "Command",
    "Found",
    "Observed",
    "Submitted",
    "clean_env",
    "first_line",
    "run",
]
