"""Tasks: what a project's jobs run, and their defaults; each change of a task is a new version."""

from __future__ import annotations

from typing import Any, NotRequired

import orjson
from typing_extensions import TypedDict, Unpack

from ..sql import S
from .base import Row, Table


class TaskFields(TypedDict):
    """A new task's fields: ``task_create``'s parameters (``placeholders``, ``shell``, the
    concurrency pair and ``actor`` may be left out)."""

    project: str
    name: str
    required_cpu: int
    required_accelerators: int
    required_tags: list[str]
    command: str | None
    placeholders: NotRequired[list[str] | None]
    shell: NotRequired[bool]
    defaults: dict[str, Any]
    max_attempts: int
    max_lost: int
    max_preempted: int
    retry_delay: float
    timeout: float | None
    inputs: list[str]
    outputs: list[str]
    concurrency_key: NotRequired[str | None]
    concurrency_limit: NotRequired[int | None]
    actor: NotRequired[str | None]


class TaskStore(Table):
    async def create(self, **fields: Unpack[TaskFields]) -> Row:
        """A new task at version 1; a task of that name in the project: asyncpg's
        UniqueViolationError."""
        args: dict[str, Any] = {
            "placeholders": None,
            "shell": False,
            "concurrency_key": None,
            "concurrency_limit": None,
            "actor": None,
            **fields,
        }
        args["defaults"] = orjson.dumps(args["defaults"]).decode()
        return await self.one(S.task_create, **args)

    async def get(self, *, project: str, task: str) -> Row | None:
        """A task of ``project`` by name or id; None when it has none such (unknown project: WN404)."""
        return await self.row(S.task_get, project=project, task=task)

    async def update(
        self,
        *,
        project: str,
        task: str,
        changes: dict[str, Any],
        actor: str | None,
        version: int | None = None,
    ) -> Row:
        """Set ``changes`` (field → value; ``placeholders`` with ``command``) on a task for the jobs
        submitted from now on: the task at its new version, or as it was when nothing changed.
        ``version``: the version the change was checked against (another one: WN409). Unknown
        task: WN404 naming ``task``."""
        return await self.one(
            S.task_update,
            project=project,
            task=task,
            changes=orjson.dumps(changes).decode(),
            actor=actor,
            version=version,
        )

    async def versions(self, *, project: str, task: str) -> list[Row]:
        """A task's versions, oldest first; none when the project has no such task."""
        return await self.rows(S.task_versions, project=project, task=task)

    async def list(self, *, project: str) -> list[Row]:
        return await self.rows(S.task_list, project=project)

    async def names(self, *, project: str) -> list[str]:
        return [r["name"] for r in await self.rows(S.task_names, project=project)]
