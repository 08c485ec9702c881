"""Tasks: what a project's jobs run, and their defaults."""

from __future__ import annotations

from typing import Any

import orjson

from ..sql import S
from .base import Row, Table


class TaskStore(Table):
    async def create(
        self,
        *,
        project: str,
        name: str,
        required_cpu: int,
        required_accelerators: int,
        required_tags: list[str],
        command: str | None,
        placeholders: list[str] | None = None,
        shell: bool = False,
        defaults: dict[str, Any],
        max_attempts: int,
        max_lost: int,
        retry_delay: float,
        timeout: float | None,
        inputs: list[str],
        outputs: list[str],
    ) -> Row:
        return await self.one(
            S.task_create,
            project=project,
            name=name,
            required_cpu=required_cpu,
            required_accelerators=required_accelerators,
            required_tags=required_tags,
            command=command,
            placeholders=placeholders,
            shell=shell,
            defaults=orjson.dumps(defaults).decode(),
            max_attempts=max_attempts,
            max_lost=max_lost,
            retry_delay=retry_delay,
            timeout=timeout,
            inputs=inputs,
            outputs=outputs,
        )

    async def list(self, *, project: str) -> list[Row]:
        return await self.rows(S.task_list, project=project)

    async def names(self, *, project: str) -> list[str]:
        return [r["name"] for r in await self.rows(S.task_names, project=project)]
