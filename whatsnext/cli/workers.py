"""``whatsnext workers ls``: the workers the server knows."""

from __future__ import annotations

import argparse
from typing import Any

from ..limits import MAX_COUNT
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
        "list workers: capacity, running jobs, last seen, when their time ends",
        "whatsnext workers ls --project demo",
    )
    p.add_argument("--project", default=None)
    p.add_argument("--status", choices=["online", "offline", "ONLINE", "OFFLINE"])
