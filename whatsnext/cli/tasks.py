"""``whatsnext tasks ls|add``: what a task's jobs run and what they need."""

from __future__ import annotations

import argparse
from typing import Any

from ..models import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_LOST, DEFAULT_MAX_PREEMPTED
from . import toolkit as tk


def cmd_tasks_ls(args: argparse.Namespace) -> int:
    return tk.show_list(
        args,
        tk.project_path(args.project) + "/tasks",
        "tasks",
        ["id", "name", "required_cpu", "required_accelerators", "max_attempts", "timeout", "command"],
        ["id", "name", "cpu", "gpus", "attempts", "timeout", "command"],
    )


def cmd_tasks_add(args: argparse.Namespace) -> int:
    from ..api.client.errors import Conflict

    body = {
        "name": args.name,
        "project_id": args.project,
        "required_cpu": args.cpus,
        "required_accelerators": tk.num_gpus(args, 0),
        "command": args.command,
        "shell": args.shell,
        "defaults": tk.parse_params(args.default),
        "max_attempts": args.max_attempts,
        "max_lost": args.max_lost,
        "max_preempted": args.max_preempted,
        "retry_delay": args.retry_delay,
        "timeout": args.timeout,
        "required_tags": [t for t in (args.tags or "").split(",") if t],
        "inputs": args.input or [],
        "outputs": args.output or [],
        **tk.concurrency(args),
    }
    try:
        data = tk.call(args, "POST", "/tasks/", body)
    except Conflict:
        if not args.exist_ok:
            raise
        tasks = tk.call(args, "GET", tk.project_path(args.project) + "/tasks")["tasks"]
        data = {**next(t for t in tasks if t["name"] == args.name), "existed": True}
    return tk.emit(
        args,
        data,
        lambda d: (
            f"{'task exists' if d.get('existed') else 'created task'} {d['name']} (id {d['id']}): "
            f"{d['required_cpu']} CPU, {d['required_accelerators']} GPU"
            + (f", runs {d['command']}" if d.get("command") else "")
            + (
                f", at most {d['concurrency_limit']} at once with key {d['concurrency_key']}"
                if d.get("concurrency_key")
                else ""
            )
        ),
    )


def register(sub: Any) -> None:
    tasks = tk.group(sub, "tasks", "manage tasks (resource needs, retries, timeouts of their jobs)")
    p = tk.add(tasks, "ls", cmd_tasks_ls, "list a project's tasks", "whatsnext tasks ls --project demo")
    tk.add_project(p)
    p = tk.add(
        tasks,
        "add",
        cmd_tasks_add,
        "create a task: the command its jobs run and what they need",
        'whatsnext tasks add train --project demo --command "python train.py --lr {lr} --epochs {epochs}" '
        "--default epochs=10 --cpus 8 --num-gpus 1 --max-attempts 3\n"
        "  whatsnext tasks add simulate --project demo --command 'sim {case}' "
        "--concurrency-key licence-x --concurrency-limit 2",
    )
    p.add_argument("name")
    tk.add_project(p)
    p.add_argument(
        "--command",
        metavar="TEMPLATE",
        help="what its jobs run, {param} filled from each job's parameters: 'python train.py --lr {lr}' "
        "(a worker without --script/--command runs it)",
    )
    p.add_argument(
        "--shell", action="store_true", help="--command is a /bin/sh line (pipes, &&; values are quoted)"
    )
    p.add_argument("--default", action="append", metavar="KEY=VALUE", help="a default parameter (repeatable)")
    p.add_argument("--cpus", type=int, default=1, help="CPUs each job needs (default 1)")
    p.add_argument("--num-gpus", type=int, default=None, metavar="N", help="GPUs each job needs (default 0)")
    p.add_argument("--gpus", dest="old_gpus", type=int, default=None, metavar="N", help="same as --num-gpus")
    p.add_argument("--exist-ok", action="store_true", help="a task of that name may exist already")
    p.add_argument("--tags", default="", help="comma-separated tags a worker must have")
    p.add_argument(
        "--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, help="failures of its own a job may have"
    )
    p.add_argument(
        "--max-lost",
        type=int,
        default=DEFAULT_MAX_LOST,
        help="times a job may go back to the queue because its worker vanished (no attempt used)",
    )
    p.add_argument(
        "--max-preempted",
        type=int,
        default=DEFAULT_MAX_PREEMPTED,
        metavar="N",
        help="times a job may go back to the queue because it was preempted (no attempt used; "
        f"default {DEFAULT_MAX_PREEMPTED})",
    )
    p.add_argument("--retry-delay", type=tk.duration, default=0.0, metavar="D", help=tk.DURATION_HELP)
    p.add_argument("--timeout", type=tk.duration, default=None, metavar="D", help=tk.DURATION_HELP)
    p.add_argument(
        "--input", action="append", metavar="PATH", help="a path its jobs read, {param} fields allowed"
    )
    p.add_argument(
        "--output", action="append", metavar="PATH", help="a path its jobs write, {param} fields allowed"
    )
    tk.add_concurrency(p, "the default of its jobs")
