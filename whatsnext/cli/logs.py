"""``whatsnext jobs logs``, ``jobs artifacts`` and ``artifacts find``: a job's output, live, and the
files jobs read and wrote."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from . import toolkit as tk

if TYPE_CHECKING:
    from ..api.client.http import Http


def _attempt_marker(attempt: int) -> str:
    return f"[... attempt {attempt} ...]"


class _LinePrinter:
    """Prints log events as text: lines, dropped-line markers, and where a new attempt starts."""

    def __init__(self) -> None:
        self.attempt: int | None = None

    def render(self, event: dict[str, Any]) -> str | None:
        from ..api.client.joblogs import dropped_line

        if "dropped" in event and "line" not in event:
            return dropped_line(event["dropped"])
        if "line" not in event:
            return None
        out = event["line"]
        if self.attempt is not None and event["attempt"] != self.attempt:
            out = _attempt_marker(event["attempt"]) + "\n" + out
        self.attempt = event["attempt"]
        return out


def _quiet_broken_pipe() -> int:
    # The reader went away (`... | head`): stop quietly, and keep Python from complaining at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return tk.EXIT_OK


def _read_all(args: argparse.Namespace) -> dict[str, Any]:
    from ..api.client.joblogs import read_logs

    return tk.with_http(args, lambda http: read_logs(http, args.job_id, tail=args.tail))


def _render_page(data: dict[str, Any]) -> str:
    from ..api.client.joblogs import dropped_line

    printer = _LinePrinter()
    out: list[str] = []
    lines = data["lines"]
    if lines and lines[0]["seq"] > 1 and data["dropped"] >= lines[0]["seq"] - 1:
        out.append(dropped_line(lines[0]["seq"] - 1))
    for event in lines:
        text = printer.render(event)
        if text is not None:
            out.append(text)
    return "\n".join(out)


def _waiting(seconds: float, error: Exception) -> None:
    """Say on stderr that the server asked the follow to come back later (429)."""
    print(f"the server refused the follow for now ({error}); retrying in {seconds:g} s", file=sys.stderr)


def _follow(args: argparse.Namespace) -> int:
    from ..api.client.joblogs import follow_logs

    printer = _LinePrinter()

    async def go(http: Http) -> str | None:
        status = None
        async for event in follow_logs(http, args.job_id, tail=args.tail, on_wait=_waiting):
            if args.json:
                print(json.dumps(event, default=str), flush=True)
                continue
            if "finished" in event:
                status = event.get("status")
                continue
            text = printer.render(event)
            if text is not None:
                print(text, flush=True)
        return status

    status = tk.with_http(args, go)
    if not args.json and status is not None:
        print(f"job {args.job_id} {status}", file=sys.stderr)
    return tk.EXIT_OK


def cmd_jobs_logs(args: argparse.Namespace) -> int:
    """Print a job's output lines; with ``-f``, keep printing them as they come until the job is finished."""
    try:
        if args.follow:
            return _follow(args)
        data = _read_all(args)
        if not data["lines"] and not args.json:
            print(f"job {args.job_id} has no output yet ({data['status']})", file=sys.stderr)
            return tk.EXIT_OK
        return tk.emit(args, data, _render_page)
    except BrokenPipeError:
        return _quiet_broken_pipe()


def human_size(n: int | None) -> str | None:
    if n is None:
        return None
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _short_uri(uri: str, width: int = 60) -> str:
    return uri if len(uri) <= width else "..." + uri[-(width - 3) :]


def _artifact_rows(artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **a,
            "uri": _short_uri(a["uri"]),
            "size": human_size(a["size"]),
            "sha256": a["sha256"][:12] if a.get("sha256") else None,
            "missing": "MISSING" if a["missing"] else "",
        }
        for a in artifacts
    ]


def cmd_jobs_artifacts(args: argparse.Namespace) -> int:
    """List what a job read and wrote, as its worker found them after the job."""
    return tk.show_list(
        args,
        f"/jobs/{args.job_id}/artifacts",
        "artifacts",
        ["direction", "uri", "size", "sha256", "modified_at", "missing"],
        ["dir", "uri", "size", "sha256", "modified", ""],
        rows=_artifact_rows,
    )


def cmd_artifacts_find(args: argparse.Namespace) -> int:
    """Which jobs of a project wrote (``--direction in``: read) a file, newest first."""
    uri = args.uri if "://" in args.uri or args.uri.startswith("file:") else os.path.abspath(args.uri)
    return tk.show_list(
        args,
        tk.project_path(args.project) + "/artifacts",
        "artifacts",
        ["job_id", "job_name", "job_status", "direction", "size", "sha256", "recorded_at", "missing"],
        ["job", "name", "status", "dir", "size", "sha256", "recorded", ""],
        rows=_artifact_rows,
        uri=uri,
        direction=args.direction,
        limit=args.limit,
    )


def register(sub: Any) -> None:
    jobs = tk.group(sub, "jobs", "submit and inspect jobs")
    p = tk.add(
        jobs,
        "logs",
        cmd_jobs_logs,
        "print a job's output (-f: and what follows, until the job is finished)",
        "whatsnext jobs logs 42 -f",
    )
    p.add_argument("job_id", type=int)
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until the job is finished"
    )
    p.add_argument("--tail", type=int, default=None, metavar="N", help="start with the last N lines only")
    p = tk.add(
        jobs, "artifacts", cmd_jobs_artifacts, "list what a job read and wrote", "whatsnext jobs artifacts 42"
    )
    p.add_argument("job_id", type=int)

    artifacts = tk.group(sub, "artifacts", "the files that jobs read and wrote")
    p = tk.add(
        artifacts,
        "find",
        cmd_artifacts_find,
        "find the jobs that wrote a file, newest first",
        "whatsnext artifacts find results/model.pt --project demo",
    )
    p.add_argument("uri", metavar="PATH_OR_URI", help="a path (relative ones are made absolute) or a URI")
    tk.add_project(p)
    p.add_argument(
        "--direction", choices=["out", "in", "any"], default="out", help="out: writers (default), in: readers"
    )
    p.add_argument("--limit", type=int, default=100)
