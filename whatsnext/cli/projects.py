"""``whatsnext projects ls|add|show|update|archive``."""

from __future__ import annotations

import argparse
from typing import Any

from . import toolkit as tk

QUOTAS = (("max_gpus", "GPU"), ("max_cpus", "CPU"), ("max_running", "running"))
"""A project's quotas, and how a person reads each: ``8 GPU, 64 CPU, 10 running``."""
STRICT_PARAMETERS_HELP = "refuse a job with a parameter no placeholder of its task's command uses (a typo)"
NONE = "none"
"""The value of a quota option that removes the quota (``--max-gpus none``)."""


def share_text(project: dict[str, Any]) -> str:
    """A project's share as a person reads it: ``1``, ``2.5``."""
    return f"{project.get('share', 1.0):g}"


def quota_text(project: dict[str, Any]) -> str:
    """A project's quotas in one cell: ``8 GPU, 64 CPU, 10 running``; ``-`` for none."""
    parts = [f"{project[key]} {unit}" for key, unit in QUOTAS if project.get(key) is not None]
    return ", ".join(parts) or "-"


def strict_text(project: dict[str, Any]) -> str:
    """What a project refuses, in one cell: ``tasks, parameters``; ``-`` for nothing."""
    parts = [what for what in ("tasks", "parameters") if project.get(f"strict_{what}")]
    return ", ".join(parts) or "-"


def cmd_projects_ls(args: argparse.Namespace) -> int:
    def rows(projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**p, "share": share_text(p), "quota": quota_text(p), "strict": strict_text(p)} for p in projects
        ]

    return tk.show_list(
        args,
        "/projects",
        "projects",
        ["id", "name", "status", "share", "quota", "strict", "description", "created_at"],
        rows=rows,
        status=args.status,
    )


def cmd_projects_add(args: argparse.Namespace) -> int:
    from ..api.client.errors import Conflict

    body = {
        "name": args.name,
        "description": args.description,
        "strict_tasks": args.strict,
        "strict_parameters": args.strict_parameters,
    }
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
                (
                    "strict parameters",
                    "yes: a parameter no placeholder of the task's command uses is refused"
                    if d.get("strict_parameters")
                    else "no: such a parameter is accepted with a warning",
                ),
                ("share", share_text(d)),
                ("quota", quota_text(d)),
                ("description", d["description"] or "-"),
                ("created", tk.cell(d["created_at"])),
                ("updated", tk.cell(d["updated_at"])),
                ("jobs", counts),
            ]
        )

    return tk.emit(args, data, render)


def cmd_projects_update(args: argparse.Namespace) -> int:
    from ..api.client.project import update_project

    keys = ("share", *(key for key, _ in QUOTAS), "strict_parameters")
    changes = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    if not changes:
        return tk.fail(
            "nothing to change: give --share, --max-gpus, --max-cpus, --max-running or "
            "--[no-]strict-parameters",
            tk.EXIT_USAGE,
        )
    data = tk.with_http(args, lambda http: update_project(http, args.project, **changes))
    return tk.emit(
        args,
        data,
        lambda d: (
            f"updated project {d['name']}: share {share_text(d)}, quota {quota_text(d)}"
            + (
                f", strict parameters {'on' if d['strict_parameters'] else 'off'}"
                if "strict_parameters" in changes
                else ""
            )
        ),
    )


def _quota(text: str) -> int | None:
    """A quota option's value: a whole number, 0 or more, or ``none`` (no quota)."""
    if text.strip().lower() == NONE:
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or {NONE!r}, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more (or {NONE!r}), got {value}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


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
    p.add_argument("--strict-parameters", action="store_true", help=STRICT_PARAMETERS_HELP)
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
        "update",
        cmd_projects_update,
        "set a project's share of the pool and its quotas (a token that covers every project), and "
        "whether it refuses parameters no placeholder uses",
        "whatsnext projects update demo --share 2 --max-gpus 8 --max-cpus 64 --max-running 10\n"
        "  whatsnext projects update demo --max-gpus none     # remove the GPU quota\n"
        "  whatsnext projects update demo --strict-parameters # refuse --param stpes=40 (a typo)",
    )
    p.add_argument("project")
    p.add_argument(
        "--share",
        type=_share,
        default=argparse.SUPPRESS,
        metavar="N",
        help="its weight when projects wait for the pool (every project starts at 1)",
    )
    for key, unit in QUOTAS:
        held = "jobs it may run" if key == "max_running" else f"{unit}s its running jobs may hold"
        p.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            type=_quota,
            default=argparse.SUPPRESS,
            metavar="N|none",
            help=f"{held} at once, on all workers ({NONE}: no quota)",
        )
    p.add_argument(
        "--strict-parameters",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help=STRICT_PARAMETERS_HELP + " (--no-strict-parameters: accept it with a warning)",
    )
    p = tk.add(
        projects,
        "archive",
        cmd_projects_archive,
        "archive a project (no new jobs)",
        "whatsnext projects archive demo",
    )
    p.add_argument("project")
