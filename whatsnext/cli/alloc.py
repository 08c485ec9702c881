"""``whatsnext alloc add|ls|show|rm|pause|resume|run``: allocation queues, which start workers on
SLURM or RUN:AI when there is work for them (see docs/allocation.md).

The queue commands are thin calls of the server's ``/alloc/queues`` routes; ``alloc run`` (the
loop that submits the allocations) registers itself in :func:`register` below."""

from __future__ import annotations

from typing import Any

from . import toolkit as tk

GROUP_HELP = "allocation queues: workers started on SLURM or RUN:AI when there is work"


def register(sub: Any) -> None:
    alloc = tk.group(sub, "alloc", GROUP_HELP)
    register_queues(alloc)
    register_run(alloc)


def register_queues(alloc: Any) -> None:
    """``alloc add|ls|show|rm|pause|resume``."""


def register_run(alloc: Any) -> None:
    """``alloc run``: the loop that submits allocations for the queues."""
