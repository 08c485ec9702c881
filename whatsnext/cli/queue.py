"""``whatsnext queue ls|clear``: a project's pending jobs."""

from __future__ import annotations

import argparse
from typing import Any

from . import toolkit as tk


def cmd_queue_ls(args: argparse.Namespace) -> int:
    return tk.show_list(
        args,
        tk.project_path(args.project) + "/queue",
        "jobs",
        ["position", "id", "name", "task", "priority", "required_cpu", "required_accelerators", "waiting_on"],
        ["#", "id", "name", "task", "prio", "cpu", "gpus", "waiting on"],
        rows=lambda jobs: (
            {**j, "position": i + 1, "waiting_on": j["unmet_deps"] or ("" if j["eligible"] else "delay")}
            for i, j in enumerate(jobs)
        ),
        limit=args.limit,
    )


def cmd_queue_clear(args: argparse.Namespace) -> int:
    data = tk.call(args, "DELETE", tk.project_path(args.project) + "/queue")
    return tk.emit(args, data, lambda d: f"cancelled {d['deleted']} pending job(s)")


def register(sub: Any) -> None:
    queue = tk.group(sub, "queue", "the pending jobs of a project")
    p = tk.add(
        queue, "ls", cmd_queue_ls, "list pending jobs in hand-out order", "whatsnext queue ls --project demo"
    )
    tk.add_project(p)
    p.add_argument("--limit", type=int, default=100)
    p = tk.add(
        queue, "clear", cmd_queue_clear, "cancel every pending job", "whatsnext queue clear --project demo"
    )
    tk.add_project(p)
