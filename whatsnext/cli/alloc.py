"""``whatsnext alloc add|ls|show|rm|pause|resume|run``: allocation queues, which start workers on
SLURM or RUN:AI when there is work for them (see docs/allocation.md).

The queue commands are thin calls of the server's ``/alloc/queues`` routes; ``alloc run`` (the
loop that submits the allocations) registers itself in :func:`register` below."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from ..durations import format_duration, positive_duration
from . import toolkit as tk

GROUP_HELP = "allocation queues: workers started on SLURM or RUN:AI when there is work"
STATES = ("QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED")
OPTIONS = (
    ("partition", "partition"),
    ("account", "account"),
    ("gpus_per_worker", "gpus_per_worker"),
    ("cpus_per_worker", "cpus_per_worker"),
    ("sbatch_arg", "sbatch_args"),
    ("setup", "setup"),
    ("runai_project", "runai_project"),
    ("image", "image"),
    ("runai_arg", "runai_args"),
)
"""Command-line options that become the queue's backend ``options``: (argument, option)."""
LS_COLUMNS = ("name", "backend", "projects", "state", "max_workers", "limit")
LS_HEADERS = ("name", "backend", "projects", "state", "max", "limit")
STATE_COLUMNS = tuple(s.lower() for s in STATES)
RECENT_COLUMNS = (
    "id",
    "name",
    "external_id",
    "state",
    "reason",
    "workers",
    "submitted_at",
    "started_at",
    "ended_at",
)
RECENT_HEADERS = ("id", "name", "external id", "state", "reason", "workers", "submitted", "started", "ended")


def queue_path(name: str) -> str:
    return "/alloc/queues/" + quote(name, safe="")


def queue_row(q: dict[str, Any]) -> dict[str, Any]:
    """A queue as ``alloc ls`` shows it: its projects, limits and allocations by state."""
    counts = q.get("allocations") or {}
    return {
        **q,
        "projects": ",".join(q["projects"]),
        "state": "paused" if q["paused"] else "active",
        "limit": format_duration(q["time_limit"]),
        **{s.lower(): counts.get(s, 0) for s in STATES},
    }


def cmd_alloc_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "name": args.name,
        "backend": args.backend,
        "projects": [int(p) if p.isdigit() else p for p in args.project],
        "time_limit": args.time_limit,
        "max_workers": args.max_workers,
    }
    for arg, field in (
        ("worker_args", "worker_args"),
        ("workers_per_alloc", "workers_per_alloc"),
        ("idle_timeout", "idle_timeout"),
        ("max_submits_per_minute", "max_submits_per_minute"),
    ):
        if getattr(args, arg) is not None:
            body[field] = getattr(args, arg)
    options = {field: getattr(args, arg) for arg, field in OPTIONS if getattr(args, arg) is not None}
    if options:
        body["options"] = options
    data = tk.call(args, "POST", "/alloc/queues", body)
    return tk.emit(args, data, lambda d: f"created allocation queue {d['name']} ({describe(d)})")


def describe(q: dict[str, Any]) -> str:
    """``slurm, projects a, b: at most 2 workers, 1 per allocation, time limit 2h, idle 5m``."""
    return (
        f"{q['backend']}, project{'s' if len(q['projects']) != 1 else ''} {', '.join(q['projects'])}: "
        f"at most {q['max_workers']} worker{'s' if q['max_workers'] != 1 else ''}, "
        f"{q['workers_per_alloc']} per allocation, time limit {format_duration(q['time_limit'])}, "
        f"idle timeout {format_duration(q['idle_timeout'])}"
    )


def cmd_alloc_ls(args: argparse.Namespace) -> int:
    return tk.show_list(
        args,
        "/alloc/queues",
        "queues",
        [*LS_COLUMNS, *STATE_COLUMNS, "last_error"],
        [*LS_HEADERS, *STATE_COLUMNS, "last error"],
        rows=lambda queues: (queue_row(q) for q in queues),
    )


def cmd_alloc_show(args: argparse.Namespace) -> int:
    data = tk.call(args, "GET", queue_path(args.name))

    def render(q: dict[str, Any]) -> str:
        counts = q["allocations"]
        options = ", ".join(f"{k}={v}" for k, v in sorted(q["options"].items())) or "-"
        loop = f"{q['loop_holder']} until {tk.cell(q['loop_expires_at'])}" if q["loop_holder"] else "-"
        error = f"{q['last_error']} ({tk.cell(q['last_error_at'])})" if q["last_error"] else "-"
        head = tk.fields(
            [
                ("queue", f"{q['name']} ({'paused' if q['paused'] else 'active'})"),
                ("serves", describe(q)),
                ("worker args", q["worker_args"] or "-"),
                ("options", options),
                ("submits", f"at most {q['max_submits_per_minute']} a minute"),
                ("allocations", ", ".join(f"{s.lower()} {counts.get(s, 0)}" for s in STATES)),
                ("loop", loop),
                ("last error", error),
            ]
        )
        recent = tk.table(q["recent"], RECENT_COLUMNS, RECENT_HEADERS)
        return f"{head}\n\n{recent}"

    return tk.emit(args, data, render)


def cmd_alloc_rm(args: argparse.Namespace) -> int:
    data = tk.call(args, "DELETE", queue_path(args.name))
    return tk.emit(args, data, lambda d: f"deleted allocation queue {args.name} and its allocations")


def _pause(args: argparse.Namespace, paused: bool) -> int:
    data = tk.call(args, "PATCH", queue_path(args.name), {"paused": paused})
    word = "paused (no new allocations)" if paused else "resumed"
    return tk.emit(args, data, lambda d: f"allocation queue {d['name']} {word}")


def cmd_alloc_pause(args: argparse.Namespace) -> int:
    return _pause(args, True)


def cmd_alloc_resume(args: argparse.Namespace) -> int:
    return _pause(args, False)


def register(sub: Any) -> None:
    alloc = tk.group(sub, "alloc", GROUP_HELP)
    register_queues(alloc)
    register_run(alloc)


def register_queues(alloc: Any) -> None:
    """``alloc add|ls|show|rm|pause|resume``."""
    p = tk.add(
        alloc,
        "add",
        cmd_alloc_add,
        "create an allocation queue: where and how workers are started for its projects' pending jobs",
        'whatsnext alloc add gpu --project demo --backend slurm --worker-args "--cpus 8 --tags a100" '
        "--time-limit 2h --max-workers 4 --idle-timeout 5m --partition gpu --gpus-per-worker 1 "
        '--sbatch-arg=--qos=normal --setup "module load cuda"',
    )
    p.add_argument("name", help="the queue's name (its allocations' job names start with it)")
    p.add_argument(
        "--project",
        action="append",
        required=True,
        metavar="NAME_OR_ID",
        help="a project it serves (repeatable)",
    )
    p.add_argument("--backend", required=True, choices=["slurm", "runai"], help="where workers are started")
    p.add_argument(
        "--worker-args",
        metavar="ARGS",
        help="options of each `whatsnext worker` it starts, in one quoted string ('--cpus 8 --tags a100'; "
        "one option alone is written --worker-args=--cpus=8)",
    )
    p.add_argument(
        "--time-limit",
        required=True,
        type=positive_duration,
        metavar="D",
        help="each allocation's time limit (2h, 90m)",
    )
    p.add_argument(
        "--max-workers", required=True, type=int, metavar="N", help="workers queued plus running, at most"
    )
    p.add_argument("--workers-per-alloc", type=int, metavar="N", help="workers in one allocation (default 1)")
    p.add_argument(
        "--idle-timeout",
        type=positive_duration,
        metavar="D",
        help="a worker with nothing to do exits after this, which ends its allocation (default 5m)",
    )
    p.add_argument(
        "--max-submits-per-minute", type=int, metavar="N", help="submissions a minute, at most (default 4)"
    )
    slurm = p.add_argument_group("SLURM")
    slurm.add_argument("--partition", help="sbatch --partition")
    slurm.add_argument("--account", help="sbatch --account")
    slurm.add_argument("--gpus-per-worker", type=int, metavar="N", help="GPUs of each worker")
    slurm.add_argument("--cpus-per-worker", type=int, metavar="N", help="CPUs of each worker")
    slurm.add_argument(
        "--sbatch-arg",
        action="append",
        metavar="ARG",
        help="one more sbatch option, written --sbatch-arg=--qos=low (repeatable)",
    )
    slurm.add_argument(
        "--setup", metavar="LINES", help="shell lines run before the worker ('module load cuda')"
    )
    runai = p.add_argument_group("RUN:AI")
    runai.add_argument("--runai-project", metavar="NAME", help="runai submit --project")
    runai.add_argument("--image", help="the workload's container image")
    runai.add_argument(
        "--runai-arg",
        action="append",
        metavar="ARG",
        help="one more runai submit option, written --runai-arg=--node-pool=a100 (repeatable)",
    )

    tk.add(
        alloc,
        "ls",
        cmd_alloc_ls,
        "list allocation queues: their allocations by state and last error",
        "whatsnext alloc ls",
    )
    p = tk.add(
        alloc,
        "show",
        cmd_alloc_show,
        "show an allocation queue with its latest allocations (state, scheduler reason)",
        "whatsnext alloc show gpu",
    )
    p.add_argument("name")
    p = tk.add(
        alloc,
        "rm",
        cmd_alloc_rm,
        "delete an allocation queue and its allocations (its loop cancels what it still has)",
        "whatsnext alloc rm gpu",
    )
    p.add_argument("name")
    p = tk.add(
        alloc,
        "pause",
        cmd_alloc_pause,
        "pause an allocation queue: no new allocations (those it has run on)",
        "whatsnext alloc pause gpu",
    )
    p.add_argument("name")
    p = tk.add(
        alloc, "resume", cmd_alloc_resume, "resume a paused allocation queue", "whatsnext alloc resume gpu"
    )
    p.add_argument("name")


def cmd_alloc_run(args: argparse.Namespace) -> int:
    """Run the allocation loop (see :mod:`whatsnext.alloc.loop`)."""
    import asyncio
    import os
    import shlex
    from pathlib import Path

    from ..alloc.loop import Settings, default_log_dir
    from ..alloc.run import backends, run_loop, warn_about
    from ..logs import configure

    configure(args.log_level)
    token_file = None
    if args.worker_token_file:
        tk.read_token_file(args.worker_token_file)  # readable and holds a token; its path goes on
        token_file = str(Path(args.worker_token_file).expanduser().resolve())
    http = tk.http(args)
    settings = Settings(
        server=http.base_url,
        token_file=token_file,
        log_dir=Path(args.log_dir).expanduser().resolve() if args.log_dir else default_log_dir(),
        worker_command=shlex.split(args.worker_command) if args.worker_command else None,
        interval=args.interval,
        lease_seconds=args.lease,
        name_prefix=args.name_prefix,
        first_backoff=args.backoff,
        max_backoff=max(args.max_backoff, args.backoff),
        dry_run=args.dry_run,
    )
    warn_about(settings, has_own_token=bool(os.environ.get("WHATSNEXT_TOKEN")))
    kinds = backends(gres_flag=args.gres_flag, runai_bin=args.runai_bin, runai_cli=args.runai_cli)
    asyncio.run(run_loop(http, settings, args.names, kinds, once=args.once or args.dry_run))
    return tk.EXIT_OK


def register_run(alloc: Any) -> None:
    """``alloc run``: the loop that submits allocations for the queues."""
    p = tk.add(
        alloc,
        "run",
        cmd_alloc_run,
        "run the allocation loop where sbatch or runai works (a login node): submit allocations whose "
        "workers run the queues' pending jobs, cancel those not started when the work is gone",
        "whatsnext --server http://queue.lab:8000 alloc run gpu --worker-token-file ~/.whatsnext/worker-token\n"
        "  whatsnext alloc run --dry-run          # what one pass would submit, and why",
        json_out=False,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="the queues to serve (default: every queue)")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="submit and change nothing: print the sbatch or runai command (and script) a pass would "
        "run, what it would cancel, and why (implies --once)",
    )
    p.add_argument(
        "--worker-token-file",
        metavar="PATH",
        help="the workers' token file, readable where the allocations run; its path is handed to each "
        "worker (--worker-token-file), never a token (the allocator's own is never handed on)",
    )
    p.add_argument(
        "--log-dir",
        metavar="DIR",
        help="where pilot logs go: DIR/QUEUE/ALLOCATION.log, with the SLURM script beside it "
        "(default $WHATSNEXT_ALLOC_LOG_DIR, else ~/.whatsnext/alloc); on a shared filesystem",
    )
    p.add_argument(
        "--worker-command",
        metavar="CMD",
        help="how an allocation runs whatsnext (default: this Python with -m whatsnext on SLURM, "
        "'whatsnext' in a RUN:AI image)",
    )
    p.add_argument(
        "--interval",
        type=tk.positive_duration,
        default=30.0,
        metavar="D",
        help="time between passes (default 30s)",
    )
    p.add_argument(
        "--lease",
        type=tk.positive_duration,
        default=None,
        metavar="D",
        help="how long a queue's loop lease lasts unless renewed (default three intervals, at least 1m)",
    )
    p.add_argument(
        "--backoff",
        type=tk.positive_duration,
        default=30.0,
        metavar="D",
        help="wait after a failed submission before the next, doubled after each failure in a row "
        "(default 30s)",
    )
    p.add_argument(
        "--max-backoff",
        type=tk.positive_duration,
        default=600.0,
        metavar="D",
        help="the longest wait between failed submissions (default 10m)",
    )
    p.add_argument(
        "--name-prefix",
        default="whatsnext-alloc-",
        metavar="PREFIX",
        help="allocations are named PREFIX<queue>-<id> (SLURM job name, RUN:AI workload); a restarted "
        "loop finds its queue's allocations by it (default whatsnext-alloc-)",
    )
    p.add_argument(
        "--gres-flag",
        choices=["gres", "gpus"],
        default="gres",
        help="slurm: ask for GPUs with --gres=gpu:N (default) or --gpus=N",
    )
    p.add_argument(
        "--runai-bin", default="runai", metavar="PATH", help="runai: the runai command (default runai)"
    )
    p.add_argument("--runai-cli", type=int, choices=[1, 2], default=2, help="runai: CLI version (default 2)")
    p.add_argument("--log-level", default="INFO")
