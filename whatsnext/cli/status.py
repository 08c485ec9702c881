"""``whatsnext status``: the server's health."""

from __future__ import annotations

import argparse
from typing import Any

from ..durations import format_duration
from . import toolkit as tk


def cmd_status(args: argparse.Namespace) -> int:
    health = tk.call(args, "GET", "/health")
    projects = tk.call(args, "GET", "/projects")["projects"]
    server = tk.http(args).base_url

    def render(_: Any) -> str:
        return tk.fields(
            [
                ("server", server),
                ("status", health["status"]),
                ("version", health["version"]),
                ("database", health["database"]),
                ("schema", f"level {health.get('schema_level', '?')}"),
                ("projects", len(projects)),
                *([("retention", retention(health["retention"]))] if "retention" in health else []),
            ]
        )

    return tk.emit(args, {"server": server, **health, "projects": len(projects)}, render)


def retention(seconds: float | None) -> str:
    """The server's ``--retention`` as ``status`` shows it: a duration, or that none is set."""
    if seconds is None:
        return "none: finished jobs are kept forever (start the server with --retention 30d, see docs/retention.md)"
    return f"finished jobs are deleted {format_duration(seconds)} after they finish"


def register(sub: Any) -> None:
    tk.add(sub, "status", cmd_status, "show the server's health", "whatsnext status")
