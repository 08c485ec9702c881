"""What the allocator asks of a scheduler (SLURM, RUN:AI): submit an allocation, say what became
of the queue's allocations (and which of its allocations the server does not know yet), cancel one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..api.client.formatters.external import run_command
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
    return await run_command(argv, limit=limit, env=clean_env())


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
