"""``whatsnext schedules add|ls|show|rm|pause|resume``: jobs submitted on a cron expression or
every N seconds."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from ..durations import format_duration
from . import toolkit as tk

GROUP_HELP = "jobs submitted by the server on a cron expression or every N seconds"


def schedule_path(project: str, name: str) -> str:
    return tk.project_path(project) + "/schedules/" + quote(name, safe="")


def timing(s: dict[str, Any]) -> str:
    """``cron 0 2 * * * (Europe/Berlin)`` or ``every 1h``."""
    if s.get("cron"):
        zone = s.get("timezone") or "UTC"
        return f"cron {s['cron']}" + ("" if zone == "UTC" else f" ({zone})")
    return "every " + format_duration(s["every"])


def _row(s: dict[str, Any]) -> dict[str, Any]:
    last = None
    if s.get("last_job_id") is not None:
        last = f"{s['last_job_id']} {(s.get('last_job_status') or 'removed').lower()}"
    return {
        **s,
        "when": timing(s),
        "next": "paused" if s["paused"] else tk.cell(s.get("next_run_at")),
        "last": last,
        "error": s.get("last_error"),
    }


def _job(args: argparse.Namespace) -> dict[str, Any]:
    """The job each tick submits, as the SDK's :class:`Job` puts it (its name: the schedule's
    unless ``--job-name``)."""
    from ..api.client import Job

    body = Job(
        name=args.job_name or args.name,
        task=args.task,
        parameters=tk.parse_params(args.param),
        priority=args.priority,
        required_cpu=args.cpus,
        required_accelerators=args.num_gpus,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        group=args.group or None,
    ).to_request()
    if not args.job_name:
        del body["name"]
    return body


def cmd_schedules_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "timezone": args.timezone, "job": _job(args)}
    if args.cron is not None:
        body["cron"] = args.cron
    else:
        if args.every != int(args.every) or args.every < 1:
            raise ValueError(f"--every takes whole seconds, at least 1 (got {args.every:g})")
        body["every"] = int(args.every)
    body["overlap"] = "allow" if args.allow_overlap else "skip"
    if args.paused:
        body["paused"] = True
    data = tk.call(args, "POST", tk.project_path(args.project) + "/schedules", body)
    return tk.emit(
        args,
        data,
        lambda s: (
            f"schedule {s['name']}: {timing(s)}, next run "
            + ("paused" if s["paused"] else tk.cell(s["next_run_at"]) + " UTC")
        ),
    )


def cmd_schedules_ls(args: argparse.Namespace) -> int:
    return tk.show_list(
        args,
        tk.project_path(args.project) + "/schedules",
        "schedules",
        ["name", "when", "next", "last_run_at", "last", "runs", "skipped", "error"],
        ["name", "when", "next run (UTC)", "last run", "last job", "runs", "skipped", "error"],
        rows=lambda schedules: map(_row, schedules),
    )


def cmd_schedules_show(args: argparse.Namespace) -> int:
    data = tk.call(args, "GET", schedule_path(args.project, args.name))

    def render(s: dict[str, Any]) -> str:
        r = _row(s)
        job = s["job"]
        return tk.fields(
            [
                ("name", s["name"]),
                ("when", r["when"]),
                ("next run", r["next"] + ("" if s["paused"] else " UTC")),
                ("last run", tk.cell(s["last_run_at"])),
                ("last job", r["last"] or "-"),
                ("runs", f"{s['runs']} ({s['skipped']} skipped while the last job was unfinished)"),
                ("overlap", s["overlap"]),
                ("job", f"task {job['task']} {tk.cell(job.get('parameters') or {})}"),
                ("last error", tk.cell(s["last_error"])),
            ]
        )

    return tk.emit(args, data, render)


def cmd_schedules_rm(args: argparse.Namespace) -> int:
    data = tk.call(args, "DELETE", schedule_path(args.project, args.name))
    return tk.emit(args, data, lambda s: f"removed schedule {s['name']} (its jobs stay)")


def _pause(args: argparse.Namespace, paused: bool) -> int:
    data = tk.call(args, "PATCH", schedule_path(args.project, args.name), {"paused": paused})
    return tk.emit(
        args,
        data,
        lambda s: (
            f"schedule {s['name']}: "
            + ("paused" if s["paused"] else f"resumed, next run {tk.cell(s['next_run_at'])} UTC")
        ),
    )


def cmd_schedules_pause(args: argparse.Namespace) -> int:
    return _pause(args, True)


def cmd_schedules_resume(args: argparse.Namespace) -> int:
    return _pause(args, False)


def register(sub: Any) -> None:
    schedules = tk.group(sub, "schedules", GROUP_HELP)
    p = tk.add(
        schedules,
        "add",
        cmd_schedules_add,
        "make a schedule: the server submits its job at each tick",
        'whatsnext schedules add nightly --cron "0 2 * * *" --timezone Europe/Berlin --task eval '
        "--param split=val\n"
        "  whatsnext schedules add refresh --every 15m --task fetch --project demo",
    )
    p.add_argument("name", help="the schedule's name (unique in the project; also its jobs' name)")
    tk.add_project(p)
    timing_group = p.add_mutually_exclusive_group(required=True)
    timing_group.add_argument(
        "--cron",
        metavar="EXPR",
        help="minute hour day-of-month month day-of-week, e.g. '0 2 * * *' (or @daily, @hourly ...)",
    )
    timing_group.add_argument(
        "--every", type=tk.positive_duration, metavar="D", help="a period: " + tk.DURATION_HELP
    )
    p.add_argument(
        "--timezone", default="UTC", metavar="TZ", help="the cron expression's IANA time zone (default UTC)"
    )
    p.add_argument("--task", required=True, help="the task of the job each tick submits")
    p.add_argument(
        "--job-name", default=None, metavar="NAME", help="the jobs' name (default: the schedule's)"
    )
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a parameter (repeatable)")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--cpus", type=int, default=None, help="override the task's CPU need")
    p.add_argument(
        "--num-gpus", type=int, default=None, metavar="N", help="override how many GPUs the job needs"
    )
    p.add_argument("--group", default=None, help="a group to follow, cancel and retry the jobs with")
    p.add_argument("--max-attempts", type=int, default=None, help="override the task's attempts")
    p.add_argument("--timeout", type=tk.duration, default=None, metavar="D", help=tk.DURATION_HELP)
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="submit at every tick, even while the last tick's job is unfinished (default: skip that tick)",
    )
    p.add_argument("--paused", action="store_true", help="make it paused (`schedules resume` starts it)")

    p = tk.add(
        schedules,
        "ls",
        cmd_schedules_ls,
        "list a project's schedules with their next run and last job",
        "whatsnext schedules ls --project demo",
    )
    tk.add_project(p)
    for name, func, text in (
        ("show", cmd_schedules_show, "show a schedule"),
        ("rm", cmd_schedules_rm, "remove a schedule (the jobs it made stay)"),
        ("pause", cmd_schedules_pause, "pause a schedule: its ticks make no job until resumed"),
        ("resume", cmd_schedules_resume, "resume a schedule at its first tick from now"),
    ):
        p = tk.add(schedules, name, func, text, f"whatsnext schedules {name} nightly --project demo")
        p.add_argument("name", help="the schedule's name")
        tk.add_project(p)
