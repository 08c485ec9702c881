"""``whatsnext jobs add|sweep|show|requeue``: submit jobs and look at one (``jobs ls`` is in
:mod:`.joblist`, ``jobs cancel|retry|rm|wait`` in :mod:`.jobsets`)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from . import toolkit as tk

# ---------------------------------------------------------------- add, sweep


def cmd_jobs_add(args: argparse.Namespace) -> int:
    from ..api.client import Job
    from ..api.client.errors import NotFound

    job = Job(
        name=args.name or args.task,
        task=args.task,
        parameters=tk.parse_params(args.param),
        priority=args.priority,
        depends=[int(d) if d.isdigit() else d for d in args.depends] if args.depends else None,
        required_cpu=args.cpus,
        required_accelerators=tk.num_gpus(args, None),
        max_attempts=args.max_attempts,
        max_lost=args.max_lost,
        max_preempted=args.max_preempted,
        retry_delay=args.retry_delay,
        timeout=args.timeout,
        inputs=args.input,
        outputs=args.output,
        group=args.group or None,
        **tk.concurrency(args),
    )
    body = job.to_request()
    path = tk.project_path(args.project) + "/jobs"
    try:
        data = tk.call(args, "POST", path, body)
    except NotFound:
        if args.project != tk.DEFAULT_PROJECT or os.environ.get("WHATSNEXT_PROJECT"):
            raise
        # The implicit default project is created on first use.
        tk.call(
            args,
            "POST",
            "/projects",
            {"name": tk.DEFAULT_PROJECT, "description": "created by `whatsnext jobs add`"},
        )
        data = tk.call(args, "POST", path, body)
    tk.tell_new_tasks(data)
    return tk.emit(
        args, data, lambda d: f"queued job {d['id']} ({d['name']}, task {d['task']}): {d['status']}"
    )


def cmd_jobs_sweep(args: argparse.Namespace) -> int:
    from ..api.client.project import sweep_group_name, sweep_jobs

    grid: dict[str, list[Any]] = {}
    for spec in args.grid:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--grid expects KEY=V1,V2,..., got {spec!r}")
        grid[key] = [tk.parse_params([f"v={v}"])["v"] for v in values.split(",")]
    depends = [int(args.depends)] if args.depends else None
    jobs = sweep_jobs(
        args.task,
        grid,
        name=args.name,
        parameters=tk.parse_params(args.param),
        depends=depends,
        priority=args.priority,
        **tk.concurrency(args),
    )
    group = args.group or sweep_group_name(args.task)
    data = tk.call(
        args,
        "POST",
        tk.project_path(args.project) + "/jobs/batch",
        {"group": group, "jobs": [j.to_request() for j in jobs]},
    )
    tk.tell_new_tasks(data)
    data["names"] = [j.name for j in jobs]
    return tk.emit(
        args,
        data,
        lambda d: (
            f"queued {d['count']} jobs in group {d['group']}: "
            + ", ".join(f"{i} {n}" for i, n in zip(d["ids"], d["names"], strict=True))
            + f"\nfollow them: whatsnext jobs ls --project {args.project} --group {d['group']} --watch"
        ),
    )


# ---------------------------------------------------------------- one job


def cmd_jobs_show(args: argparse.Namespace) -> int:
    data = tk.call(args, "GET", f"/jobs/{args.job_id}")

    def render(d: dict[str, Any]) -> str:
        keys = [
            "id",
            "name",
            "project",
            "task",
            "group",
            "status",
            "priority",
            "parameters",
            "depends",
            "attempt",
            "attempts_used",
            "max_attempts",
            "lost",
            "max_lost",
            "preempted",
            "max_preempted",
            "required_cpu",
            "required_accelerators",
            "concurrency_key",
            "concurrency_limit",
            "worker_name",
            "created_at",
            "started_at",
            "finished_at",
            "duration",
            "exit_code",
            "result",
            "checkpoint",
        ]
        lines = [
            f"{k:<22} {tk.cell(d.get(k)) if k not in ('parameters', 'result') else json.dumps(d.get(k))}"
            for k in keys
        ]
        error = (d.get("error") or "-").rstrip().splitlines() or ["-"]
        lines.append(f"{'error':<22} {error[0]}")
        lines += [f"{'':<22} {line}" for line in error[1:]]
        if d.get("log_tail"):
            lines += ["", "output (tail):", d["log_tail"].rstrip()]
        return "\n".join(lines)

    return tk.emit(args, data, render)


def cmd_jobs_requeue(args: argparse.Namespace) -> int:
    data = tk.call(args, "POST", f"/jobs/{args.job_id}/requeue")
    return tk.emit(
        args,
        data,
        lambda d: f"job {d['id']}: running; its worker will stop it and it goes back to the queue",
    )


# ---------------------------------------------------------------- parser


def register(sub: Any) -> None:
    jobs = tk.group(sub, "jobs", "submit and inspect jobs")
    _register_add(jobs)
    _register_sweep(jobs)
    for name, func, text in (
        ("show", cmd_jobs_show, "show a job"),
        (
            "requeue",
            cmd_jobs_requeue,
            "hand a running job back to the queue: its worker stops it, no attempt is used",
        ),
    ):
        p = tk.add(jobs, name, func, text, f"whatsnext jobs {name} 42")
        p.add_argument("job_id", type=int)


def _register_add(jobs: Any) -> None:
    p = tk.add(
        jobs,
        "add",
        cmd_jobs_add,
        "queue a job",
        "whatsnext jobs add data-pipeline --project my-project --name process-data "
        "--param input=file.csv --param format=json\n"
        "  whatsnext jobs add simulate --project demo --concurrency-key licence-x --concurrency-limit 2",
    )
    p.add_argument("task")
    tk.add_project(p)
    p.add_argument("--name", default=None, help="job name (default: the task's)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a parameter (repeatable)")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument(
        "--depends", action="append", metavar="ID", help="a job that must complete first (repeatable)"
    )
    p.add_argument("--cpus", type=int, default=None, help="override the task's CPU need")
    p.add_argument(
        "--num-gpus", type=int, default=None, metavar="N", help="override how many GPUs the job needs"
    )
    p.add_argument("--gpus", dest="old_gpus", type=int, default=None, metavar="N", help="same as --num-gpus")
    p.add_argument("--group", default=None, help="a group to follow, cancel and retry the job with")
    p.add_argument("--max-attempts", type=int, default=None, help="override the task's attempts")
    p.add_argument(
        "--max-lost",
        type=int,
        default=None,
        help="override how often a lost worker may requeue it (default 3)",
    )
    p.add_argument(
        "--max-preempted",
        type=int,
        default=None,
        metavar="N",
        help="override how often a preemption may requeue it without using an attempt (default 10)",
    )
    p.add_argument("--retry-delay", type=tk.duration, default=None, metavar="D", help=tk.DURATION_HELP)
    p.add_argument("--timeout", type=tk.duration, default=None, metavar="D", help=tk.DURATION_HELP)
    p.add_argument("--input", action="append", metavar="PATH", help="a path it reads (replaces the task's)")
    p.add_argument("--output", action="append", metavar="PATH", help="a path it writes (replaces the task's)")
    tk.add_concurrency(p, "replaces the task's pair")


def _register_sweep(jobs: Any) -> None:
    p = tk.add(
        jobs,
        "sweep",
        cmd_jobs_sweep,
        "queue one job per combination of parameter values",
        "whatsnext jobs sweep train --project demo --grid lr=0.1,0.01 --grid bs=32,64",
    )
    p.add_argument("task")
    tk.add_project(p)
    p.add_argument(
        "--grid", action="append", required=True, metavar="KEY=V1,V2", help="values of one parameter"
    )
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a fixed parameter (repeatable)")
    p.add_argument("--name", default=None, help="name prefix (default: the task's)")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--depends", default=None, metavar="ID", help="a job every sweep job waits for")
    p.add_argument("--group", default=None, help="the sweep's group name (default TASK-sweep-DATE-TIME)")
    tk.add_concurrency(p, "for every job of the sweep, replacing the task's pair")
