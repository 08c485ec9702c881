"""``whatsnext jobs add|sweep|show|requeue``: submit jobs and look at one (``jobs ls`` is in
:mod:`.joblist`, ``jobs cancel|retry|rm|wait`` in :mod:`.jobsets`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ..models import CONDITIONS
from . import toolkit as tk

T = TypeVar("T")


# ---------------------------------------------------------------- add, sweep


def parse_depends(specs: Sequence[str] | None) -> list[Any] | None:
    """``--depends ID[:on]`` (repeatable): job ids, each with its condition (``12:finished``)."""
    if not specs:
        return None
    out: list[Any] = []
    for spec in specs:
        ref, _, on = spec.partition(":")
        if not ref.isascii() or not ref.isdigit() or not int(ref):
            raise ValueError(
                f"--depends expects a job id, ID:{'|'.join(CONDITIONS)} (12:finished), got {spec!r}"
            )
        if on and on not in CONDITIONS:
            raise ValueError(f"--depends {spec}: the condition is one of {', '.join(CONDITIONS)}, got {on!r}")
        out.append((int(ref), on) if on else int(ref))
    return out


def parse_depends_groups(specs: Sequence[str] | None) -> list[tuple[str, str]] | None:
    """``--depends-group NAME[:on]`` (repeatable): groups, each with its condition (``hp1:finished``).
    A name may hold ':' itself: only a known condition after the last one is taken as one."""
    if not specs:
        return None
    out: list[tuple[str, str]] = []
    for spec in specs:
        name, sep, on = spec.rpartition(":")
        if not sep or on not in CONDITIONS:
            name, on = spec, "success"
        if not name:
            raise ValueError(
                f"--depends-group expects a group name, NAME:{'|'.join(CONDITIONS)}, got {spec!r}"
            )
        out.append((name, on))
    return out


def tell_warnings(data: dict[str, Any]) -> None:
    """Print on stderr the warnings of a submission's answer (a parameter the command never uses)."""
    from ..api.client.submit import warning_lines

    for line in warning_lines(data):
        print(f"whatsnext: warning: {line}", file=sys.stderr)


def _submitted(data: dict[str, Any]) -> str:
    """What ``jobs add`` says of the job it submitted: queued, or existing (its unique key)."""
    if data.get("existing"):
        return (
            f"existing job {data['id']} ({data['name']}, unique key {data.get('unique_key')}): "
            f"{data['status']}; nothing queued"
        )
    return f"queued job {data['id']} ({data['name']}, task {data['task']}): {data['status']}"


def start_time(text: str) -> datetime:
    """``--not-before``: an ISO time, local unless it has a zone (argparse ``type=``)."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give an ISO time such as 2026-12-07T02:00 (local unless it has a zone)"
        ) from None
    return when.astimezone()  # a naive time is local time


def cmd_jobs_add(args: argparse.Namespace) -> int:
    from ..api.client import Job
    from ..api.client.errors import NotFound
    from ..api.client.submit import submit_job

    job = Job(
        name=args.name or args.task,
        task=args.task,
        parameters=tk.parse_params(args.param),
        priority=args.priority,
        depends=parse_depends(args.depends),
        depends_group=parse_depends_groups(args.depends_group),
        unique_key=args.unique_key,
        dedupe=args.dedupe,
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
        not_before=args.not_before,
        delay=args.delay,
        **tk.concurrency(args),
    )
    try:
        data = tk.with_http(args, lambda http: _quiet(submit_job(http, args.project, job)))
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
        data = tk.with_http(args, lambda http: _quiet(submit_job(http, args.project, job)))
    tk.tell_new_tasks(data)
    tell_warnings(data)
    return tk.emit(args, data, _submitted)


async def _quiet(submission: Awaitable[T]) -> T:
    """A submission of the SDK without its Python warnings: the CLI prints them its own way."""
    import warnings

    from ..api.client.submit import SubmitWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SubmitWarning)
        return await submission


def cmd_jobs_sweep(args: argparse.Namespace) -> int:
    from ..api.client.project import sweep_group_name, sweep_jobs
    from ..api.client.submit import submit_jobs

    grid: dict[str, list[Any]] = {}
    for spec in args.grid:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--grid expects KEY=V1,V2,..., got {spec!r}")
        grid[key] = [tk.parse_params([f"v={v}"])["v"] for v in values.split(",")]
    jobs = sweep_jobs(
        args.task,
        grid,
        name=args.name,
        parameters=tk.parse_params(args.param),
        depends=parse_depends(args.depends),
        priority=args.priority,
        **tk.concurrency(args),
    )
    groups = parse_depends_groups(args.depends_group)
    for job in jobs:
        job.depends_group = groups
    group = args.group or sweep_group_name(args.task, jobs if args.dedupe else None)
    data = tk.with_http(
        args, lambda http: _quiet(submit_jobs(http, args.project, jobs, group, dedupe=args.dedupe))
    )
    tk.tell_new_tasks(data)
    tell_warnings(data)
    data["names"] = [j.name for j in jobs]
    return tk.emit(args, data, lambda d: _swept(args, d))


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def _swept(args: argparse.Namespace, data: dict[str, Any]) -> str:
    """What ``jobs sweep`` says of the jobs it submitted: those queued, those that existed."""
    existing = data.get("existing") or [False] * len(data["ids"])
    rows = list(zip(data["ids"], data["names"], existing, strict=True))
    new = [f"{i} {n}" for i, n, old in rows if not old]
    old = [f"{i} {n}" for i, n, was in rows if was]
    lines = []
    if new:
        lines.append(f"queued {_jobs(len(new))} in group {data['group']}: " + ", ".join(new))
    if old:
        lines.append(
            f"existing {_jobs(len(old))} (same task and parameters, or the same keys), nothing queued "
            "for them: " + ", ".join(old)
        )
    lines.append(f"follow them: whatsnext jobs ls --project {args.project} --group {data['group']} --watch")
    return "\n".join(lines)


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
        "  whatsnext jobs add simulate --project demo --concurrency-key licence-x --concurrency-limit 2\n"
        "  whatsnext jobs add aggregate --project demo --depends-group hp1:finished --unique-key agg-hp1\n"
        "  whatsnext jobs add refresh --project demo --not-before 2026-12-07T02:00+01:00\n"
        "  whatsnext jobs add retry-later --project demo --delay 30m\n"
        "  whatsnext jobs add report --project demo --depends 12 --depends 13:failure --dedupe",
    )
    p.add_argument("task")
    tk.add_project(p)
    p.add_argument("--name", default=None, help="job name (default: the task's)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a parameter (repeatable)")
    p.add_argument("--priority", type=int, default=0)
    add_depends(p, "the job")
    p.add_argument(
        "--unique-key",
        metavar="KEY",
        help="the job's key in the project: submitted again, the job already there is the answer "
        "(nothing queued); with other fields, a refusal naming them",
    )
    p.add_argument(
        "--dedupe",
        action="store_true",
        help="key the job by its task and parameters (unless --unique-key): the same job is never queued twice",
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
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--not-before",
        type=start_time,
        default=None,
        metavar="T",
        help="do not start the job before this time (ISO: 2026-12-07T02:00, local unless it has a zone)",
    )
    start.add_argument(
        "--delay", type=tk.duration, default=None, metavar="D", help="do not start the job before D from now"
    )
    p.add_argument("--input", action="append", metavar="PATH", help="a path it reads (replaces the task's)")
    p.add_argument("--output", action="append", metavar="PATH", help="a path it writes (replaces the task's)")
    tk.add_concurrency(p, "replaces the task's pair")


def add_depends(p: argparse.ArgumentParser, who: str) -> None:
    """``--depends ID[:on]`` and ``--depends-group NAME[:on]``, both repeatable."""
    on = "|".join(CONDITIONS)
    p.add_argument(
        "--depends",
        action="append",
        metavar=f"ID[:{on}]",
        help=f"a job {who} waits for (repeatable): until it completed (success, the default), reached any "
        "final state (finished) or failed or was cancelled (failure)",
    )
    p.add_argument(
        "--depends-group",
        action="append",
        metavar=f"NAME[:{on}]",
        help=f"a group {who} waits for (repeatable): every job the group has now, each as --depends",
    )


def _register_sweep(jobs: Any) -> None:
    p = tk.add(
        jobs,
        "sweep",
        cmd_jobs_sweep,
        "queue one job per combination of parameter values",
        "whatsnext jobs sweep train --project demo --grid lr=0.1,0.01 --grid bs=32,64\n"
        "  whatsnext jobs sweep train --project demo --grid lr=0.1,0.01 --group hp1 --dedupe\n"
        "  whatsnext jobs sweep evaluate --project demo --grid split=val,test --depends-group hp1",
    )
    p.add_argument("task")
    tk.add_project(p)
    p.add_argument(
        "--grid", action="append", required=True, metavar="KEY=V1,V2", help="values of one parameter"
    )
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a fixed parameter (repeatable)")
    p.add_argument("--name", default=None, help="name prefix (default: the task's)")
    p.add_argument("--priority", type=int, default=0)
    add_depends(p, "every job of the sweep")
    p.add_argument(
        "--group",
        default=None,
        help="the sweep's group name (default TASK-sweep-DATE-TIME; with --dedupe TASK-sweep-HASH, the "
        "same for the same sweep)",
    )
    p.add_argument(
        "--dedupe",
        action="store_true",
        help="key each job by its task and parameters: running the same sweep again queues none of "
        "the jobs it queued before",
    )
    tk.add_concurrency(p, "for every job of the sweep, replacing the task's pair")
