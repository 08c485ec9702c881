"""Tasks: what a project's jobs run, and their defaults."""

from __future__ import annotations

from typing import Any, NotRequired

import orjson
from typing_extensions import TypedDict, Unpack

from ..sql import S
from .base import Row, Table


class TaskFields(TypedDict):
    """A new task's fields: ``task_create``'s parameters (``placeholders``, ``shell`` and the
    concurrency pair may be left out)."""

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


class TaskStore(Table):
    async def create(self, **fields: Unpack[TaskFields]) -> Row:
        args: dict[str, Any] = {
            "placeholders": None,
            "shell": False,
            "concurrency_key": None,
            "concurrency_limit": None,
            **fields,
        }
        args["defaults"] = orjson.dumps(args["defaults"]).decode()
        return await self.one(S.task_create, **args)

    async def list(self, *, project: str) -> list[Row]:
        return await self.rows(S.task_list, project=project)

    async def names(self, *, project: str) -> list[str]:
        return [r["name"] for r in await self.rows(S.task_names, project=project)]
