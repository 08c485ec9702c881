"""The `whatsnext groups` commands and `whatsnext jobs ls` (filters, chosen columns, --watch):
following sweeps and named batches from the terminal."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from .models import FINISHED, STATUSES, TERMINAL

BASE_COLUMNS = ["id", "name", "task", "status", "priority", "attempt", "worker_name", "created_at"]
HEADERS = {
    "priority": "prio",
    "attempt": "try",
    "worker_name": "worker",
    "created_at": "created",
    "params": "params",
    "parameters": "params",
}
EXTRA_COLUMNS = ("params", "result", "duration", "group", "error", "exit_code", "started_at", "finished_at")
WATCH_EVERY = 2.0
BAR_WIDTH = 30


def _cli() -> Any:
    from . import cli

    return cli


def _group_path(project: str, group: str) -> str:
    return _cli().project_path(project) + "/groups/" + quote(group, safe="")


def progress_bar(counts: dict[str, int], total: int, width: int = BAR_WIDTH) -> str:
    """``[#####=====.....]  12/40 done (completed 10, failed 2, running 3, pending 25)``."""
    done = sum(counts.get(s, 0) for s in TERMINAL)
    running = counts.get("RUNNING", 0)
    filled = round(width * done / total) if total else 0
    active = min(width - filled, round(width * running / total)) if total else 0
    bar = "#" * filled + ">" * active + "." * (width - filled - active)
    parts = ", ".join(f"{s.lower()} {counts[s]}" for s in STATUSES if counts.get(s))
    return f"[{bar}] {done}/{total} done" + (f" ({parts})" if parts else "")


# ---------------------------------------------------------------- groups


def _group_row(g: dict[str, Any]) -> dict[str, Any]:
    counts = g.get("counts") or {}
    return {
        **g,
        "done": f"{g['finished']}/{g['total']}",
        "failed": counts.get("FAILED", 0),
        "running": counts.get("RUNNING", 0),
        "pending": counts.get("PENDING", 0),
    }


def cmd_groups_ls(args: argparse.Namespace) -> int:
    cli = _cli()
    data = cli.call(args, "GET", cli.project_path(args.project) + "/groups", limit=args.limit)
    return cli.emit(
        args,
        data,
        lambda d: cli.table(
            [_group_row(g) for g in d["groups"]],
            ["id", "name", "done", "running", "pending", "failed", "created_at"],
            ["id", "name", "done", "running", "pending", "failed", "created"],
        ),
    )


def cmd_groups_show(args: argparse.Namespace) -> int:
    cli = _cli()
    data = cli.call(args, "GET", _group_path(args.project, args.group))

    def render(g: dict[str, Any]) -> str:
        return "\n".join(
            [
                f"id        {g['id']}",
                f"name      {g['name']}",
                f"created   {cli._cell(g['created_at'])}",
                f"progress  {progress_bar(g['counts'], g['total'])}",
                f"jobs      whatsnext jobs ls --project {args.project} --group {g['name']}",
            ]
        )

    return cli.emit(args, data, render)


def cmd_groups_cancel(args: argparse.Namespace) -> int:
    cli = _cli()
    data = cli.call(args, "POST", _group_path(args.project, args.group) + "/cancel")
    return cli.emit(args, data, lambda d: f"group {d['name']}: cancelled {d['count']} unfinished job(s)")


def cmd_groups_retry(args: argparse.Namespace) -> int:
    cli = _cli()
    data = cli.call(args, "POST", _group_path(args.project, args.group) + "/retry")
    return cli.emit(args, data, lambda d: f"group {d['name']}: {d['count']} job(s) back in the queue")


# ---------------------------------------------------------------- jobs ls


def parse_where(pairs: Sequence[str] | None) -> dict[str, Any] | None:
    """``--where lr=0.1`` (repeatable): the parameters the jobs must have (values typed as JSON)."""
    if not pairs:
        return None
    out = _cli().parse_params(pairs)
    return out or None


def _duration(job: dict[str, Any]) -> str | None:
    if job.get("duration") is not None:
        return f"{job['duration']:.1f}s"
    started = job.get("started_at")
    if job.get("status") == "RUNNING" and isinstance(started, str):
        try:
            since = datetime.fromisoformat(started)
        except ValueError:
            return None
        return f"{(datetime.now(since.tzinfo) - since).total_seconds():.0f}s+"
    return None


def job_columns(spec: str | None) -> list[str]:
    """The columns of ``jobs ls``: the usual ones, with ``--columns`` added (or, given with a
    leading ``=``, instead: ``--columns =id,name,params``)."""
    if not spec:
        return list(BASE_COLUMNS)
    replace = spec.startswith("=")
    wanted = [c.strip() for c in spec.lstrip("=").split(",") if c.strip()]
    known = set(BASE_COLUMNS) | set(EXTRA_COLUMNS) | {"parameters"}
    for c in wanted:
        if c not in known:
            raise ValueError(f"unknown column {c!r}: choose from {', '.join(sorted(known))}")
    wanted = ["params" if c == "parameters" else c for c in wanted]
    if replace:
        return wanted
    return [*BASE_COLUMNS[:4], *[c for c in wanted if c not in BASE_COLUMNS], *BASE_COLUMNS[4:]]


def _rows(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**j, "params": j.get("parameters"), "duration": _duration(j)} for j in jobs]


def _fetch(args: argparse.Namespace) -> dict[str, Any]:
    cli = _cli()
    statuses = ",".join(s.upper() for part in (args.status or ()) for s in part.split(",") if s)
    where = parse_where(args.where)
    return cli.call(
        args,
        "GET",
        cli.project_path(args.project) + "/jobs",
        status=statuses or None,
        task=args.task,
        group=args.group,
        name=args.name,
        where=json.dumps(where) if where else None,
        limit=args.limit,
    )


def _render(args: argparse.Namespace, data: dict[str, Any], columns: list[str]) -> str:
    cli = _cli()
    heads = [HEADERS.get(c, c) for c in columns]
    text = cli.table(_rows(data["jobs"]), columns, heads)
    if args.group:
        group = cli.call(args, "GET", _group_path(args.project, args.group))
        text = f"group {group['name']}  {progress_bar(group['counts'], group['total'])}\n\n{text}"
    elif args.watch:
        counts: dict[str, int] = {}
        for j in data["jobs"]:
            counts[j["status"]] = counts.get(j["status"], 0) + 1
        text = f"{progress_bar(counts, len(data['jobs']))}\n\n{text}"
    return text


def _finished(data: dict[str, Any]) -> bool:
    return all(j["status"] in FINISHED for j in data["jobs"])


def cmd_jobs_ls(args: argparse.Namespace) -> int:
    cli = _cli()
    columns = job_columns(args.columns)
    if not args.watch:
        data = _fetch(args)
        return cli.emit(args, data, lambda d: _render(args, d, columns))
    tty = sys.stdout.isatty()
    while True:
        data = _fetch(args)
        text = _render(args, data, columns)
        if tty:
            sys.stdout.write("\x1b[H\x1b[2J")  # redraw in place
        stamp = datetime.now().strftime("%H:%M:%S")
        sys.stdout.write(f"{text}\n\n{stamp}  (every {args.every:g}s; Ctrl-C to stop)\n")
        sys.stdout.flush()
        if _finished(data):
            print("all done" if data["jobs"] else "no jobs match")
            return cli.EXIT_OK
        time.sleep(args.every)


# ---------------------------------------------------------------- parser


def register_jobs_ls(jobs: Any, add: Any, project_help: str, default_project: str) -> None:
    p = add(
        jobs,
        "ls",
        cmd_jobs_ls,
        "list a project's jobs, newest first (filters, chosen columns, --watch)",
        "whatsnext jobs ls --project demo --group sweep-1 --status failed,running "
        "--where lr=0.1 --columns params,result,duration --watch",
    )
    p.add_argument("--project", default=default_project, help=project_help)
    p.add_argument(
        "--status",
        action="append",
        metavar="S[,S]",
        help=f"only these statuses (repeatable or comma-separated: {','.join(s.lower() for s in STATUSES)})",
    )
    p.add_argument("--task", default=None, help="only jobs of this task")
    p.add_argument("--group", default=None, help="only jobs of this group (name or id); shows its progress")
    p.add_argument(
        "--name", default=None, metavar="PATTERN", help="job name, * matches anything: 'train[lr=0.1*'"
    )
    p.add_argument(
        "--where",
        action="append",
        metavar="KEY=VALUE",
        help="only jobs with this parameter value (repeatable)",
    )
    p.add_argument(
        "--columns",
        default=None,
        metavar="C1,C2",
        help=f"add columns ({', '.join(EXTRA_COLUMNS)}); '=id,name,params' for only those",
    )
    p.add_argument("--limit", type=int, default=100, help="show at most this many (default 100)")
    p.add_argument(
        "--watch", action="store_true", help="redraw with a progress bar until every listed job is finished"
    )
    p.add_argument(
        "--every", type=float, default=WATCH_EVERY, metavar="SECONDS", help="--watch: redraw interval"
    )


def register_groups(sub: Any, add: Any, group: Any, project_help: str, default_project: str) -> None:
    groups = group(sub, "groups", "sweeps and named batches: progress, cancel and retry as one")
    p = add(
        groups,
        "ls",
        cmd_groups_ls,
        "list a project's groups with their progress",
        "whatsnext groups ls --project demo",
    )
    p.add_argument("--project", default=default_project, help=project_help)
    p.add_argument("--limit", type=int, default=100, help="show at most this many (default 100)")
    for name, func, text in (
        ("show", cmd_groups_show, "show a group's progress"),
        ("cancel", cmd_groups_cancel, "cancel a group's unfinished jobs"),
        ("retry", cmd_groups_retry, "put a group's failed and cancelled jobs back in the queue"),
    ):
        p = add(groups, name, func, text, f"whatsnext groups {name} sweep-1 --project demo")
        p.add_argument("group", help="the group's name or id")
        p.add_argument("--project", default=default_project, help=project_help)
