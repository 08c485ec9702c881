"""``whatsnext prune``: delete finished jobs older than a duration, now (admin under --auth).

The server deletes (or counts) in batches for a few seconds per request and says whether it is
done, and where it stopped; this command asks again from there until it is, showing the running
totals on a terminal."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..durations import format_duration
from . import toolkit as tk

if TYPE_CHECKING:
    from ..api.client.http import Http

LABELS = {
    "jobs": "jobs",
    "events": "history rows",
    "logs": "output lines",
    "artifacts": "artifact records",
    "dependencies": "dependency rows",
    "workers": "worker rows",
    "sessions": "expired sessions",
    "groups": "empty groups",
    "allocations": "ended allocations",
}
"""What each count of ``POST /prune`` is, as the summary names it (in its order)."""


def cmd_prune(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"older_than": args.older_than, "dry_run": args.dry_run}
    if args.project is not None:
        body["project"] = args.project
    show = not args.json and sys.stderr.isatty()

    async def run(session: Http) -> dict[str, Any]:
        totals: dict[str, int] = {}
        batches = 0
        shown = False
        while True:
            data = await session.request("POST", "/prune", json=body)
            for kind, n in data["counts"].items():
                totals[kind] = totals.get(kind, 0) + int(n)
            batches += int(data["batches"])
            if data["done"]:
                break
            body.pop("after", None)
            if data.get("next"):
                body["after"] = data["next"]  # go on from where that request stopped
            if show:
                verb = "counted" if args.dry_run else "deleted"
                line = f"\r{verb} {totals.get('jobs', 0):,} jobs so far ({batches} batches)..."
                print(line, end="", file=sys.stderr, flush=True)
                shown = True
        if shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        return {**data, "counts": totals, "batches": batches}

    result = tk.with_http(args, run)

    def render(d: dict[str, Any]) -> str:
        where = f"project {d['project']}" if d["project"] is not None else "every project"
        verb = "would delete (dry run, nothing deleted)" if d["dry_run"] else "deleted"
        head = f"{verb}: finished more than {format_duration(d['older_than'])} ago, {where}"
        counts = d["counts"]
        rows = [(LABELS.get(kind, kind), f"{n:,}") for kind, n in counts.items()]
        return head + "\n" + tk.fields(rows)

    return tk.emit(args, result, render)


def register(sub: Any) -> None:
    p = tk.add(
        sub,
        "prune",
        cmd_prune,
        "delete finished jobs older than a duration, with their history, output and artifact records (admin)",
        "whatsnext prune --older-than 30d --dry-run   # count what would go\n"
        "  whatsnext prune --older-than 30d\n"
        "  whatsnext prune --older-than 7d --project demo\n\n"
        "Jobs that an unfinished job depends on, and the jobs of a group with an unfinished member,\n"
        "stay. For every project (no --project), worker rows not heard from for as long and expired\n"
        "dashboard sessions go too. To prune all the time, start the server with --retention 30d.\n"
        "See docs/retention.md.",
    )
    p.add_argument(
        "--older-than",
        required=True,
        type=tk.positive_duration,
        metavar="D",
        help="delete jobs that finished longer ago than this: " + tk.DURATION_HELP,
    )
    p.add_argument(
        "--project",
        default=None,
        help="only this project's jobs (name or id; default every project, worker rows, "
        "expired sessions and ended allocations included)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
