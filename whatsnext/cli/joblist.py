"""``whatsnext jobs ls``: a project's jobs as a table: filters, chosen columns, ``--sort`` by a
column or a key of the results or parameters, ``--watch`` that follows every matching job (not
only those on the page) until all of them have ended."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..models import FINISHED, STATUSES
from . import toolkit as tk

if TYPE_CHECKING:
    from ..api.client.http import Http

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

SORT_ALIASES = {
    "prio": "priority",
    "try": "attempt",
    "worker": "worker_name",
    "created": "created_at",
    "started": "started_at",
    "finished": "finished_at",
    "params": "parameters",
}
"""Column headers (and the short names of ``--columns``) that ``--sort`` takes for the fields."""
SORTABLE = (
    "id",
    "name",
    "task",
    "group",
    "status",
    "priority",
    "attempt",
    "worker_name",
    "created_at",
    "started_at",
    "finished_at",
    "duration",
    "exit_code",
    "error",
    "unmet_deps",
    "required_cpu",
    "required_accelerators",
    "parameters",
    "result",
)
"""The fields of a listed job that ``--sort`` orders by (with ``result.KEY``, ``params.KEY``)."""
SORT_HELP = (
    "order by a column or a key of the results or parameters, '-' first for descending: "
    "--sort result.loss, --sort -duration, --sort params.lr"
)


# ---------------------------------------------------------------- the listing


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


@dataclass
class Listing:
    """What one look of ``jobs ls`` found: the page of jobs it shows, and (when it counted them:
    ``--watch``, ``--sort``) how many jobs the whole selection has, by status."""

    data: dict[str, Any]
    """``{"jobs": [...], "next_before": id|null}``: the page, as the server answers it."""
    counts: dict[str, int] | None = None
    total: int | None = None
    group: dict[str, Any] | None = None
    """The group of ``--group`` with its progress."""

    @property
    def finished(self) -> bool:
        """Every job of the selection (not only of the page) has ended."""
        counts = self.counts or {}
        return not any(counts.get(s) for s in STATUSES if s not in FINISHED)


async def _look(http: Http, args: argparse.Namespace, columns: list[str]) -> Listing:
    """One look at the jobs ``jobs ls`` lists: newest first; with ``--watch`` the running ones
    first; with ``--sort`` every job of the selection in that order (then the first --limit)."""
    from ..api.client import bulk

    where = tk.selection(args)
    project = args.project
    full = args.json or "params" in columns or "result" in columns
    group = await http.get(tk.group_path(project, args.group)) if args.group else None
    if args.sort:
        field = sort_field(args.sort)[0]
        every = await bulk.select(http, project, where, full=full or field in ("result", "parameters"))
        counts: dict[str, int] = {}
        for job in every:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        jobs = sort_jobs(every, args.sort)[: args.limit]
        return Listing({"jobs": jobs, "next_before": None}, counts, len(every), group)
    if args.watch:
        running = await bulk.page(http, project, where.only({"RUNNING"}), args.limit, full=full)
        others = where.only(s for s in STATUSES if s != "RUNNING")
        rest = await bulk.page(http, project, others, args.limit - len(running), full=full)
        counts, total = await bulk.count(http, project, where)
        return Listing({"jobs": running + rest, "next_before": None}, counts, total, group)
    params = where.params()
    data = await http.get(tk.project_path(project) + "/jobs", limit=args.limit, **params)
    return Listing(dict(data), group=group)


def _render(args: argparse.Namespace, listing: Listing, columns: list[str]) -> str:
    heads = [HEADERS.get(c, c) for c in columns]
    jobs = listing.data["jobs"]
    text = tk.table(_rows(jobs), columns, heads)
    if listing.total is not None and listing.total > len(jobs):
        text += f"\n({len(jobs)} of {listing.total} shown; --limit N shows more)"
    group = listing.group
    if group is not None:
        text = f"group {group['name']}  {tk.progress_bar(group['counts'], group['total'])}\n\n{text}"
    elif args.watch and listing.total is not None:
        text = f"{tk.progress_bar(listing.counts or {}, listing.total)}\n\n{text}"
    return text


def cmd_jobs_ls(args: argparse.Namespace) -> int:
    columns = job_columns(args.columns)
    tk.selection(args)  # a bad --status or --where is a usage error before anything is asked
    if args.sort:
        sort_field(args.sort)
    if not args.watch:
        listing = tk.with_http(args, lambda http: _look(http, args, columns))
        return tk.emit(args, listing.data, lambda d: _render(args, listing, columns))
    tty = sys.stdout.isatty()
    while True:
        listing = tk.with_http(args, lambda http: _look(http, args, columns))
        text = _render(args, listing, columns)
        if tty:
            sys.stdout.write("\x1b[H\x1b[2J")  # redraw in place
        stamp = datetime.now().strftime("%H:%M:%S")
        sys.stdout.write(f"{text}\n\n{stamp}  (every {args.every:g}s; Ctrl-C to stop)\n")
        sys.stdout.flush()
        if listing.finished:
            print("all done" if listing.total else "no jobs match")
            return tk.EXIT_OK
        time.sleep(args.every)


# ---------------------------------------------------------------- --sort


def allow_dash_values(p: argparse.ArgumentParser) -> None:
    """Let ``p`` take ``--sort -duration`` as written: argparse reads any ``-word`` as an option
    (and stops with "expected one argument"); here a ``-word`` that no option of ``p`` begins
    with is a value. ``p`` has no positional arguments, so a stray one is still an error."""
    parse = p._parse_optional

    def parse_optional(arg: str) -> Any:
        if len(arg) > 2 and arg[0] == "-" and arg[1] != "-":
            if not any(o.startswith(arg[:2]) for o in p._option_string_actions):
                return None
        return parse(arg)

    p._parse_optional = parse_optional  # type: ignore[method-assign]


def sort_field(spec: str) -> tuple[str, Callable[[dict[str, Any]], Any], bool]:
    """``--sort [-]FIELD[.KEY...]``: the field it reads (``result``, ``parameters`` or a column),
    how to read the value of a job, and whether descending. A field it does not know is a usage
    error naming those it does."""
    descending = spec.startswith("-")
    name = spec.lstrip("-+").strip()
    head, dot, rest = name.partition(".")
    head = SORT_ALIASES.get(head, head)
    if head not in SORTABLE:
        raise ValueError(
            f"--sort {spec!r}: no such column; choose from {', '.join(SORTABLE)}, or result.KEY, params.KEY"
        )
    path = rest.split(".") if dot else []
    if path and head not in ("result", "parameters"):
        raise ValueError(f"--sort {spec!r}: only result.KEY and params.KEY have keys")
    if dot and not all(path):
        raise ValueError(f"--sort {spec!r}: a key is missing after a '.'")

    def value(job: dict[str, Any]) -> Any:
        found: Any = job.get(head)
        for key in path:
            if isinstance(found, dict):
                found = found.get(key)
            elif isinstance(found, list) and key.isdigit() and int(key) < len(found):
                found = found[int(key)]
            else:
                return None
        return found

    return head, value, descending


def _rank(value: Any) -> tuple[int, float, str]:
    """Numbers (and booleans) before text before anything else; each kind in its own order."""
    if isinstance(value, bool | int | float):
        return (0, float(value), "")
    if isinstance(value, str):
        return (1, 0.0, value)
    return (2, 0.0, json.dumps(value, sort_keys=True))


def sort_jobs(jobs: list[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    """``jobs`` in the order ``--sort spec`` asks for; jobs without the value come last (either
    way), and jobs with equal values keep their order."""
    _, value, descending = sort_field(spec)
    present = [j for j in jobs if value(j) is not None]
    absent = [j for j in jobs if value(j) is None]
    present.sort(key=lambda j: _rank(value(j)), reverse=descending)
    return present + absent


# ---------------------------------------------------------------- parser


def register(sub: Any) -> None:
    jobs = tk.group(sub, "jobs", "submit and inspect jobs")
    p = tk.add(
        jobs,
        "ls",
        cmd_jobs_ls,
        "list a project's jobs, newest first (filters, chosen columns, --sort, --watch)",
        "whatsnext jobs ls --project demo --group sweep-1 --status failed,running "
        "--where lr=0.1 --columns params,result,duration\n"
        "  whatsnext jobs ls --project demo --group hp1 --columns result --sort result.loss --limit 5\n"
        "  whatsnext jobs ls --project demo --group hp1 --watch --limit 20",
    )
    tk.add_project(p)
    tk.add_filters(p)
    p.add_argument(
        "--columns",
        default=None,
        metavar="C1,C2",
        help=f"add columns ({', '.join(EXTRA_COLUMNS)}); '=id,name,params' for only those",
    )
    p.add_argument("--sort", default=None, metavar="[-]COLUMN", help=SORT_HELP)
    allow_dash_values(p)
    p.add_argument("--limit", type=int, default=100, help="show at most this many (default 100)")
    p.add_argument(
        "--watch",
        action="store_true",
        help="redraw, running jobs first, with a progress bar of every matching job (not only those "
        "shown) until all of them have ended",
    )
    p.add_argument(
        "--every", type=tk.duration, default=WATCH_EVERY, metavar="D", help="--watch: redraw interval"
    )
