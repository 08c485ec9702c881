"""``whatsnext workers ls``: the workers the server knows, and their status (ONLINE, LOST, OFFLINE)."""

from __future__ import annotations

import argparse
from typing import Any

from ..limits import MAX_COUNT
from ..models import WORKER_STATUSES
from . import toolkit as tk


def worker_row(w: dict[str, Any]) -> dict[str, Any]:
    """A worker as ``workers ls`` shows it: CPUs and GPUs in use of its total (``any`` for a worker
    whose jobs run on a cluster, unbounded), and when its time ends (``-``: no end)."""

    def use(used: int, total: int) -> str:
        return f"{used}/{'any' if total >= MAX_COUNT else total}"

    return {
        **w,
        "cpu_use": use(w["used_cpu"], w["cpu"]),
        "gpu_use": use(w["used_accelerators"], w["accelerators"]),
        "ends": w.get("deadline"),
    }


def cmd_workers_ls(args: argparse.Namespace) -> int:
    return tk.show_list(
        args,
        "/workers",
        "workers",
        ["id", "name", "host", "status", "cpu_use", "gpu_use", "running", "last_seen", "ends"],
        ["id", "name", "host", "status", "cpu", "gpus", "running", "last seen", "ends"],
        rows=lambda workers: (worker_row(w) for w in workers),
        project=args.project,
        status=args.status,
    )


def register(sub: Any) -> None:
    workers = tk.group(sub, "workers", "the workers the server knows")
    p = tk.add(
        workers,
        "ls",
        cmd_workers_ls,
        "list workers: status, capacity, running jobs, last seen, when their time ends",
        "whatsnext workers ls --project demo --status lost",
    )
    p.add_argument("--project", default=None, help="only the workers serving this project (name or id)")
    p.add_argument(
        "--status",
        type=str.lower,
        choices=[s.lower() for s in WORKER_STATUSES],
        help="only the workers with this status: online; lost (their last heartbeat is older than "
        "their lease: crashed, killed or cut off; online again at their next heartbeat); offline "
        "(they left)",
    )
