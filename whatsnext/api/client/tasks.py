"""Tasks as the SDK and the CLI speak of them: what may change, and what a create that found the
task already there says of the settings it kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ...models import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_LOST, DEFAULT_MAX_PREEMPTED
from .http import project_path

TASK_SETTINGS = (
    "required_cpu",
    "required_accelerators",
    "required_tags",
    "command",
    "shell",
    "defaults",
    "max_attempts",
    "max_lost",
    "max_preempted",
    "retry_delay",
    "timeout",
    "inputs",
    "outputs",
    "concurrency_key",
    "concurrency_limit",
)
"""What a task is made of besides its name: what an update may change (``PATCH
/projects/{project}/tasks/{task}``)."""

LISTS = ("required_tags", "inputs", "outputs")

TASK_DEFAULTS: dict[str, Any] = {
    "required_cpu": 1,
    "required_accelerators": 0,
    "required_tags": [],
    "command": None,
    "shell": False,
    "defaults": {},
    "max_attempts": DEFAULT_MAX_ATTEMPTS,
    "max_lost": DEFAULT_MAX_LOST,
    "max_preempted": DEFAULT_MAX_PREEMPTED,
    "retry_delay": 0.0,
    "timeout": None,
    "inputs": [],
    "outputs": [],
    "concurrency_key": None,
    "concurrency_limit": None,
}
"""What a new task has of each setting the request leaves out (the server's defaults)."""


class TaskSettingsWarning(UserWarning):
    """``create_task(..., exist_ok=True)`` found the task with other settings and kept them."""


def task_path(project: str | int, task: str | int) -> str:
    """The path of a task of a project, by name or id."""
    return f"{project_path(project)}/tasks/{quote(str(task), safe='')}"


def asked_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a new task worth sending: those not at their default (:data:`TASK_DEFAULTS`),
    so that a create that finds the task already there names only what was asked of it."""
    return {k: v for k, v in settings.items() if k not in TASK_DEFAULTS or TASK_DEFAULTS[k] != v}


def task_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a task update: ``changes`` checked against :data:`TASK_SETTINGS` (TypeError
    naming an unknown one, ValueError for none), sequences as lists."""
    unknown = sorted(set(changes) - set(TASK_SETTINGS))
    if unknown:
        raise TypeError(f"a task has no setting {unknown[0]!r}: change one of {', '.join(TASK_SETTINGS)}")
    if not changes:
        raise ValueError(f"nothing to change: give one of {', '.join(TASK_SETTINGS)}")
    return {k: list(v) if k in LISTS and v is not None else v for k, v in changes.items()}


def _shown(value: Any) -> str:
    return "none" if value is None else repr(value)


def differs_message(name: str, differs: Mapping[str, Mapping[str, Any]], how: str) -> str:
    """What to tell someone whose create found task ``name`` with other settings (``differs``: the
    server's ``{field: {existing, asked}}``); ``how``: how they would change it."""
    parts = ", ".join(
        f"{field} {_shown(d.get('existing'))} (asked {_shown(d.get('asked'))})"
        for field, d in differs.items()
    )
    return (
        f"task {name!r} exists with other settings: {parts}; kept the existing task — use {how} to change it"
    )
