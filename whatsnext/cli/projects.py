"""``whatsnext projects ls|add|show|archive``."""

from __future__ import annotations

import argparse
from typing import Any

from . import toolkit as tk


def cmd_projects_ls(args: argparse.Namespace) -> int:
    return tk.show_list(
        args,
        "/projects",
        "projects",
        ["id", "name", "status", "description", "created_at"],
        status=args.status,
    )


def cmd_projects_add(args: argparse.Namespace) -> int:
    from ..api.client.errors import Conflict

    body = {"name": args.name, "description": args.description, "strict_tasks": args.strict}
    try:
        data = tk.call(args, "POST", "/projects", body)
    except Conflict:
        if not args.exist_ok:
            raise
        data = {**tk.call(args, "GET", tk.project_path(args.name)), "existed": True}
    return tk.emit(
        args,
        data,
        lambda d: f"{'project exists' if d.get('existed') else 'created project'} {d['name']} (id {d['id']})",
    )


def cmd_projects_show(args: argparse.Namespace) -> int:
    data = tk.call(args, "GET", tk.project_path(args.project))

    def render(d: dict[str, Any]) -> str:
        counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(d.get("jobs", {}).items())) or "no jobs"
        return tk.fields(
            [
                ("id", d["id"]),
                ("name", d["name"]),
                ("status", d["status"]),
                ("strict", "yes: jobs for unknown tasks are refused" if d.get("strict_tasks") else "no"),
                ("description", d["description"] or "-"),
                ("created", tk.cell(d["created_at"])),
                ("updated", tk.cell(d["updated_at"])),
                ("jobs", counts),
            ]
        )

    return tk.emit(args, data, render)


def cmd_projects_archive(args: argparse.Namespace) -> int:
    data = tk.call(args, "PATCH", tk.project_path(args.project), {"status": "ARCHIVED"})
    return tk.emit(args, data, lambda d: f"archived project {d['name']}")


def register(sub: Any) -> None:
    projects = tk.group(sub, "projects", "manage projects")
    p = tk.add(projects, "ls", cmd_projects_ls, "list projects", "whatsnext projects ls --status active")
    p.add_argument("--status", choices=["active", "archived", "ACTIVE", "ARCHIVED"])
    p = tk.add(
        projects, "add", cmd_projects_add, "create a project", 'whatsnext projects add demo -d "my runs"'
    )
    p.add_argument("name")
    p.add_argument("-d", "--description", default="")
    p.add_argument(
        "--exist-ok",
        action="store_true",
        help="a project of that name may exist already (scripts can re-run)",
    )
    p.add_argument(
        "--strict", action="store_true", help="refuse jobs for tasks the project does not have (typos)"
    )
    p = tk.add(
        projects,
        "show",
        cmd_projects_show,
        "show a project and its job counts",
        "whatsnext projects show demo",
    )
    p.add_argument("project")
    p = tk.add(
        projects,
        "archive",
        cmd_projects_archive,
        "archive a project (no new jobs)",
        "whatsnext projects archive demo",
    )
    p.add_argument("project")
