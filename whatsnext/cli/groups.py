"""``whatsnext groups ls|show|cancel|retry``: following sweeps and named batches from the terminal."""

from __future__ import annotations

import argparse
from typing import Any

from . import toolkit as tk


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
    return tk.show_list(
        args,
        tk.project_path(args.project) + "/groups",
        "groups",
        ["id", "name", "done", "running", "pending", "failed", "created_at"],
        ["id", "name", "done", "running", "pending", "failed", "created"],
        rows=lambda groups: map(_group_row, groups),
        limit=args.limit,
    )


def cmd_groups_show(args: argparse.Namespace) -> int:
    data = tk.call(args, "GET", tk.group_path(args.project, args.group))

    def render(g: dict[str, Any]) -> str:
        return tk.fields(
            [
                ("id", g["id"]),
                ("name", g["name"]),
                ("created", tk.cell(g["created_at"])),
                ("progress", tk.progress_bar(g["counts"], g["total"])),
                ("jobs", f"whatsnext jobs ls --project {args.project} --group {g['name']}"),
            ]
        )

    return tk.emit(args, data, render)


def cmd_groups_cancel(args: argparse.Namespace) -> int:
    data = tk.call(args, "POST", tk.group_path(args.project, args.group) + "/cancel")
    return tk.emit(args, data, lambda d: f"group {d['name']}: cancelled {d['count']} unfinished job(s)")


def cmd_groups_retry(args: argparse.Namespace) -> int:
    body = {
        "failed": args.failed,
        "cancelled": args.cancelled,
        "lost": args.lost,
        "downstream": args.downstream,
    }
    data = tk.call(args, "POST", tk.group_path(args.project, args.group) + "/retry", body)

    def render(d: dict[str, Any]) -> str:
        line = f"group {d['name']}: {d['count']} job(s) back in the queue"
        if d["ids"]:
            line += ": " + " ".join(map(str, d["ids"]))
        if d["downstream"]:
            line += f"\n{len(d['downstream'])} of them ran downstream and run again: "
            line += " ".join(map(str, d["downstream"]))
        return line

    return tk.emit(args, data, render)


RETRY_HELP = (
    "put a group's failed, lost or cancelled jobs back in the queue (none of --failed, --cancelled, "
    "--lost given: all of them)"
)
RETRY_EXAMPLES = (
    "whatsnext groups retry sweep-1 --project demo\n"
    "  whatsnext groups retry sweep-1 --project demo --failed\n"
    "  whatsnext groups retry sweep-1 --project demo --lost --cancelled\n"
    "  whatsnext groups retry sweep-1 --project demo --failed --downstream"
)


def register(sub: Any) -> None:
    groups = tk.group(sub, "groups", "sweeps and named batches: progress, cancel and retry as one")
    p = tk.add(
        groups,
        "ls",
        cmd_groups_ls,
        "list a project's groups with their progress",
        "whatsnext groups ls --project demo",
    )
    tk.add_project(p)
    p.add_argument("--limit", type=int, default=100, help="show at most this many (default 100)")
    for name, func, text in (
        ("show", cmd_groups_show, "show a group's progress"),
        ("cancel", cmd_groups_cancel, "cancel a group's unfinished jobs"),
    ):
        p = tk.add(groups, name, func, text, f"whatsnext groups {name} sweep-1 --project demo")
        p.add_argument("group", help="the group's name or id")
        tk.add_project(p)
    p = tk.add(groups, "retry", cmd_groups_retry, RETRY_HELP, RETRY_EXAMPLES)
    p.add_argument("group", help="the group's name or id")
    tk.add_project(p)
    p.add_argument("--failed", action="store_true", help="the FAILED jobs whose last attempt was not lost")
    p.add_argument("--cancelled", action="store_true", help="the CANCELLED jobs")
    p.add_argument(
        "--lost",
        action="store_true",
        help="the FAILED jobs whose last attempt was lost (their worker went away)",
    )
    p.add_argument(
        "--downstream",
        action="store_true",
        help="also rerun the jobs downstream of those (in any group) that already ran over their "
        "old results: they run again after the new run",
    )
