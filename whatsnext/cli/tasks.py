"""``whatsnext tasks ls|add|show|update|versions``: what a task's jobs run and what they need; a
change is a new version for the jobs submitted after it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..models import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_LOST, DEFAULT_MAX_PREEMPTED
from . import toolkit as tk

NONE = "none"
"""The value of ``--timeout`` that removes a task's timeout (``tasks update``)."""
SET_OPTIONS = (
    "command",
    "shell",
    "required_cpu",
    "max_attempts",
    "max_lost",
    "max_preempted",
    "retry_delay",
    "timeout",
)
"""The settings ``tasks update`` takes one option each for, kept in ``args.set_<setting>`` when given
(another command's ``args.command`` names the command group)."""
AFTER_UPDATE = "jobs already submitted keep the version they were submitted with"


def cmd_tasks_ls(args: argparse.Namespace) -> int:
    return tk.show_list(
        args,
        tk.project_path(args.project) + "/tasks",
        "tasks",
        [
            "id",
            "name",
            "version",
            "required_cpu",
            "required_accelerators",
            "max_attempts",
            "timeout",
            "command",
        ],
        ["id", "name", "version", "cpu", "gpus", "attempts", "timeout", "command"],
    )


def summary(d: dict[str, Any]) -> str:
    """A task in one line: ``train (id 3, version 2): 8 CPU, 1 GPU, runs python train.py``."""
    return (
        f"{d['name']} (id {d['id']}, version {d.get('version', 1)}): "
        f"{d['required_cpu']} CPU, {d['required_accelerators']} GPU"
        + (f", runs {d['command']}" if d.get("command") else "")
        + (
            f", at most {d['concurrency_limit']} at once with key {d['concurrency_key']}"
            if d.get("concurrency_key")
            else ""
        )
    )


def cmd_tasks_add(args: argparse.Namespace) -> int:
    from ..api.client.tasks import asked_settings, differs_message

    settings = {
        "required_cpu": args.cpus,
        "required_accelerators": tk.num_gpus(args, 0),
        "command": args.command,
        "shell": args.shell,
        "defaults": tk.parse_params(args.default),
        "max_attempts": args.max_attempts,
        "max_lost": args.max_lost,
        "max_preempted": args.max_preempted,
        "retry_delay": args.retry_delay,
        "timeout": args.timeout,
        "required_tags": [t for t in (args.tags or "").split(",") if t],
        "inputs": args.input or [],
        "outputs": args.output or [],
        **tk.concurrency(args),
    }
    body = {"name": args.name, "project_id": args.project, **asked_settings(settings)}
    if args.exist_ok:
        body["exist_ok"] = True
    data = tk.call(args, "POST", "/tasks/", body)
    if data.get("differs"):
        how = f"`whatsnext tasks update {args.name} --project {args.project} ...`"
        print(f"whatsnext: warning: {differs_message(args.name, data['differs'], how)}", file=sys.stderr)
    return tk.emit(
        args, data, lambda d: f"{'task exists' if d.get('existed') else 'created task'} {summary(d)}"
    )


def cmd_tasks_show(args: argparse.Namespace) -> int:
    from ..api.client.tasks import task_path

    data = tk.call(args, "GET", task_path(args.project, args.name))

    def render(d: dict[str, Any]) -> str:
        pair = d.get("concurrency_key")
        return tk.fields(
            [
                ("id", d["id"]),
                ("name", d["name"]),
                ("version", d.get("version", 1)),
                ("command", d["command"] or "-"),
                ("shell", "yes" if d.get("shell") else "no"),
                ("defaults", tk.cell(d["defaults"] or None)),
                ("cpu", d["required_cpu"]),
                ("gpus", d["required_accelerators"]),
                ("tags", ",".join(d["required_tags"]) or "-"),
                ("attempts", d["max_attempts"]),
                ("max lost", d.get("max_lost")),
                ("max preempted", d.get("max_preempted")),
                ("retry delay", d["retry_delay"]),
                ("timeout", tk.cell(d["timeout"])),
                ("inputs", ", ".join(d.get("inputs") or []) or "-"),
                ("outputs", ", ".join(d.get("outputs") or []) or "-"),
                ("concurrency", f"{d['concurrency_limit']} at once with key {pair}" if pair else "-"),
                ("created", tk.cell(d["created_at"])),
                ("updated", tk.cell(d.get("updated_at"))),
            ]
        )

    return tk.emit(args, data, render)


def update_changes(args: argparse.Namespace, current: dict[str, Any]) -> dict[str, Any]:
    """The settings ``tasks update`` was given, as ``PATCH`` takes them: ``--default`` and
    ``--drop-default`` change the task's ``current`` defaults one key at a time."""
    changes: dict[str, Any] = {}
    if args.no_command:
        changes["command"] = None
    for key in SET_OPTIONS:  # left out: not in args (argparse.SUPPRESS)
        if hasattr(args, f"set_{key}"):
            changes[key] = getattr(args, f"set_{key}")
    gpus = tk.num_gpus(args, None)
    if gpus is not None:
        changes["required_accelerators"] = gpus
    if args.tags is not None:
        changes["required_tags"] = [t for t in args.tags.split(",") if t]
    for option, key in (("input", "inputs"), ("output", "outputs")):
        if getattr(args, f"no_{key}"):
            changes[key] = []
        elif getattr(args, option):
            changes[key] = getattr(args, option)
    if args.clear_defaults or args.default or args.drop_default:
        defaults = {} if args.clear_defaults else dict(current.get("defaults") or {})
        for key in args.drop_default or ():
            if key not in defaults:
                raise ValueError(f"--drop-default {key}: task {current['name']!r} has no default {key!r}")
            del defaults[key]
        changes["defaults"] = defaults | tk.parse_params(args.default)
    if args.no_concurrency:
        changes |= {"concurrency_key": None, "concurrency_limit": None}
    else:
        changes |= tk.concurrency(args)
    return changes


def _changed(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What an update changed: ``command 'a' → 'b', required_cpu 1 → 2``."""
    from ..api.client.tasks import TASK_SETTINGS

    def shown(value: Any) -> str:
        return NONE if value is None else repr(value)

    return ", ".join(
        f"{k} {shown(before.get(k))} → {shown(after.get(k))}"
        for k in TASK_SETTINGS
        if before.get(k) != after.get(k)
    )


def cmd_tasks_update(args: argparse.Namespace) -> int:
    from ..api.client.tasks import task_changes, task_path

    path = task_path(args.project, args.name)
    before = tk.call(args, "GET", path)
    changes = update_changes(args, before)
    if not changes:
        return tk.fail(
            "nothing to change: give --command, --default, --cpus, --num-gpus, --timeout ... "
            "(whatsnext tasks update --help)",
            tk.EXIT_USAGE,
        )
    data = tk.call(args, "PATCH", path, task_changes(changes))

    def render(d: dict[str, Any]) -> str:
        if d.get("version") == before.get("version"):
            return (
                f"task {d['name']} unchanged (version {d.get('version', 1)}): it has those settings already"
            )
        return (
            f"updated task {d['name']} to version {d['version']}: {_changed(before, d)}\n  ({AFTER_UPDATE})"
        )

    return tk.emit(args, data, render)


def version_rows(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each version with what changed since the one before (``changed``)."""
    rows, previous = [], None
    for v in versions:
        flat = {"command": v["command"], "defaults": v["defaults"], "shell": v["shell"], **v["settings"]}
        if previous is None:
            changed = "first"
        else:
            changed = ", ".join(k for k in flat if flat[k] != previous.get(k)) or "-"
        rows.append({**v, "changed": changed, "actor": v.get("actor")})
        previous = flat
    return rows


def cmd_tasks_versions(args: argparse.Namespace) -> int:
    from ..api.client.tasks import task_path

    data = tk.call(args, "GET", task_path(args.project, args.name) + "/versions")
    return tk.emit(
        args,
        data,
        lambda d: tk.table(
            version_rows(d["versions"]),
            ["version", "created_at", "actor", "changed", "command", "defaults"],
            ["version", "created", "by", "changed", "command", "defaults"],
        ),
    )


def _timeout(text: str) -> float | None:
    """``--timeout`` of ``tasks update``: a duration, or ``none`` (no timeout)."""
    return None if text.strip().lower() == NONE else tk.duration(text)


def _add_gpus(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--num-gpus", type=int, default=None, metavar="N", help=f"GPUs each job needs{default}")
    p.add_argument("--gpus", dest="old_gpus", type=int, default=None, metavar="N", help="same as --num-gpus")


def _add_paths(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input", action="append", metavar="PATH", help="a path its jobs read, {param} fields allowed"
    )
    p.add_argument(
        "--output", action="append", metavar="PATH", help="a path its jobs write, {param} fields allowed"
    )


def register(sub: Any) -> None:
    tasks = tk.group(sub, "tasks", "manage tasks (resource needs, retries, timeouts of their jobs)")
    p = tk.add(tasks, "ls", cmd_tasks_ls, "list a project's tasks", "whatsnext tasks ls --project demo")
    tk.add_project(p)
    p = tk.add(
        tasks,
        "add",
        cmd_tasks_add,
        "create a task: the command its jobs run and what they need",
        'whatsnext tasks add train --project demo --command "python train.py --lr {lr} --epochs {epochs}" '
        "--default epochs=10 --cpus 8 --num-gpus 1 --max-attempts 3\n"
        "  whatsnext tasks add simulate --project demo --command 'sim {case}' "
        "--concurrency-key licence-x --concurrency-limit 2",
    )
    p.add_argument("name")
    tk.add_project(p)
    p.add_argument(
        "--command",
        metavar="TEMPLATE",
        help="what its jobs run, {param} filled from each job's parameters: 'python train.py --lr {lr}' "
        "(a worker without --script/--command runs it)",
    )
    p.add_argument(
        "--shell", action="store_true", help="--command is a /bin/sh line (pipes, &&; values are quoted)"
    )
    p.add_argument("--default", action="append", metavar="KEY=VALUE", help="a default parameter (repeatable)")
    p.add_argument("--cpus", type=int, default=1, help="CPUs each job needs (default 1)")
    _add_gpus(p, " (default 0)")
    p.add_argument(
        "--exist-ok",
        action="store_true",
        help="a task of that name may exist already: it is kept as it is, and a warning names each "
        "setting it has that differs from those given",
    )
    p.add_argument("--tags", default="", help="comma-separated tags a worker must have")
    p.add_argument(
        "--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, help="failures of its own a job may have"
    )
    p.add_argument(
        "--max-lost",
        type=int,
        default=DEFAULT_MAX_LOST,
        help="times a job may go back to the queue because its worker vanished (no attempt used)",
    )
    p.add_argument(
        "--max-preempted",
        type=int,
        default=DEFAULT_MAX_PREEMPTED,
        metavar="N",
        help="times a job may go back to the queue because it was preempted (no attempt used; "
        f"default {DEFAULT_MAX_PREEMPTED})",
    )
    p.add_argument("--retry-delay", type=tk.duration, default=0.0, metavar="D", help=tk.DURATION_HELP)
    p.add_argument("--timeout", type=tk.duration, default=None, metavar="D", help=tk.DURATION_HELP)
    _add_paths(p)
    tk.add_concurrency(p, "the default of its jobs")

    p = tk.add(
        tasks,
        "show",
        cmd_tasks_show,
        "show a task and its current version",
        "whatsnext tasks show train --project demo",
    )
    p.add_argument("name", help="the task's name or id")
    tk.add_project(p)

    register_update(tasks)


def register_update(tasks: Any) -> None:
    keep = argparse.SUPPRESS  # an option left out leaves the setting as it is
    p = tk.add(
        tasks,
        "update",
        cmd_tasks_update,
        "change a task for the jobs submitted from now on: a new version (jobs already submitted "
        "keep the version they were submitted with)",
        'whatsnext tasks update train --project demo --command "python train2.py --lr {lr}"\n'
        "  whatsnext tasks update train --default epochs=20 --drop-default seed --cpus 4 --num-gpus 2\n"
        "  whatsnext tasks update train --timeout 2h --max-attempts 3\n"
        "  whatsnext tasks update train --timeout none --no-concurrency",
    )
    p.add_argument("name", help="the task's name or id")
    tk.add_project(p)
    command = p.add_mutually_exclusive_group()
    command.add_argument(
        "--command",
        dest="set_command",
        default=keep,
        metavar="TEMPLATE",
        help="what its jobs run, {param} placeholders",
    )
    command.add_argument("--no-command", action="store_true", help="remove its command template")
    p.add_argument(
        "--shell",
        dest="set_shell",
        action=argparse.BooleanOptionalAction,
        default=keep,
        help="whether the command is a /bin/sh line",
    )
    p.add_argument(
        "--default",
        action="append",
        metavar="KEY=VALUE",
        help="set one default parameter, keeping the others (repeatable)",
    )
    p.add_argument("--drop-default", action="append", metavar="KEY", help="remove one default (repeatable)")
    p.add_argument("--clear-defaults", action="store_true", help="remove every default first")
    p.add_argument(
        "--cpus", dest="set_required_cpu", type=int, default=keep, metavar="N", help="CPUs each job needs"
    )
    _add_gpus(p, "")
    p.add_argument("--tags", default=None, help="comma-separated tags a worker must have ('' for none)")
    p.add_argument(
        "--max-attempts",
        dest="set_max_attempts",
        type=int,
        metavar="N",
        default=keep,
        help="failures of its own a job may have",
    )
    p.add_argument(
        "--max-lost",
        dest="set_max_lost",
        type=int,
        metavar="N",
        default=keep,
        help="times a job may go back to the queue when its worker vanished",
    )
    p.add_argument(
        "--max-preempted",
        dest="set_max_preempted",
        type=int,
        default=keep,
        metavar="N",
        help="times a job may be preempted",
    )
    p.add_argument(
        "--retry-delay",
        dest="set_retry_delay",
        type=tk.duration,
        default=keep,
        metavar="D",
        help=tk.DURATION_HELP,
    )
    p.add_argument(
        "--timeout",
        dest="set_timeout",
        type=_timeout,
        default=keep,
        metavar="D|none",
        help=tk.DURATION_HELP + f"; {NONE}: no timeout",
    )
    _add_paths(p)
    p.add_argument("--no-inputs", action="store_true", help="remove its input paths")
    p.add_argument("--no-outputs", action="store_true", help="remove its output paths")
    tk.add_concurrency(p, "the default of its jobs")
    p.add_argument("--no-concurrency", action="store_true", help="remove its concurrency key and limit")

    p = tk.add(
        tasks,
        "versions",
        cmd_tasks_versions,
        "list a task's versions: what each ran, what changed and who changed it",
        "whatsnext tasks versions train --project demo",
    )
    p.add_argument("name", help="the task's name or id")
    tk.add_project(p)
