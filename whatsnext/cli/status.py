"""``whatsnext status``: the server's health."""

from __future__ import annotations

import argparse
from typing import Any

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
            ]
        )

    return tk.emit(args, {"server": server, **health, "projects": len(projects)}, render)


def register(sub: Any) -> None:
    tk.add(sub, "status", cmd_status, "show the server's health", "whatsnext status")
