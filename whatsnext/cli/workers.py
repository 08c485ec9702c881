"""``whatsnext workers ls``: the workers the server knows."""

from __future__ import annotations

import argparse
from typing import Any

from . import toolkit as tk


def cmd_workers_ls(args: argparse.Namespace) -> int:
    return tk.show_list(
        args,
        "/workers",
        "workers",
        ["id", "name", "host", "status", "cpu_use", "gpu_use", "running", "last_seen"],
        ["id", "name", "host", "status", "cpu", "gpus", "running", "last seen"],
        rows=lambda workers: (
            {
                **w,
                "cpu_use": f"{w['used_cpu']}/{w['cpu']}",
                "gpu_use": f"{w['used_accelerators']}/{w['accelerators']}",
            }
            for w in workers
        ),
        project=args.project,
        status=args.status,
    )


def register(sub: Any) -> None:
    workers = tk.group(sub, "workers", "the workers the server knows")
    p = tk.add(
        workers,
        "ls",
        cmd_workers_ls,
        "list workers: capacity, running jobs, last seen",
        "whatsnext workers ls --project demo",
    )
    p.add_argument("--project", default=None)
    p.add_argument("--status", choices=["online", "offline", "ONLINE", "OFFLINE"])
