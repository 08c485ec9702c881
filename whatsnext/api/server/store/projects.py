"""Projects: what the claim path reads about one."""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict, Unpack

from ..sql import S
from .base import Row, Table


class ProjectUpdate(TypedDict):
    """What to change of a project: None leaves a field as it is, but a quota named in ``quotas``
    takes its value, None removing it."""

    project: str
    name: str | None
    description: str | None
    status: str | None
    strict_tasks: bool | None
    strict_parameters: bool | None
    share: float | None
    max_gpus: int | None
    max_cpus: int | None
    max_running: int | None
    quotas: list[str]


class IdleQuestion(TypedDict):
    project_id: int
    total_cpu: int
    total_accelerators: int
    tags: list[str]
    tasks: NotRequired[list[str] | None]
    with_command: NotRequired[bool]
    time_left: NotRequired[float | None]


class ProjectStore(Table):
    async def create(
        self, *, name: str, description: str, strict_tasks: bool, strict_parameters: bool = False
    ) -> Row:
        return await self.one(
            S.project_create,
            name=name,
            description=description,
            strict_tasks=strict_tasks,
            strict_parameters=strict_parameters,
        )

    async def list(self, *, status: str | None, projects: list[int] | None) -> list[Row]:
        """Projects, optionally of one status and among ``projects`` (ids; None: all)."""
        return await self.rows(S.project_list, status=status, projects=projects)

    async def get(self, *, project: str) -> Row:
        """A project (id or name) with its job counts by status; unknown: WN404."""
        return await self.one(S.project_get, project=project)

    async def update(self, **fields: Unpack[ProjectUpdate]) -> Row:
        return await self.one(S.project_update, **fields)

    async def delete(self, *, project: str) -> None:
        await self.value(S.project_delete, project=project)

    async def resolve(self, *, project: str) -> Row:
        """The project's id and, when a job waits out a retry delay, in how many seconds the first
        one becomes eligible (``next_available_in``). Unknown project: WN404."""
        return await self.one(S.project_resolve, project=project)

    async def idle(self, **question: Unpack[IdleQuestion]) -> Row:
        """What a worker that found nothing needs to decide whether to wait or to stop."""
        defaults: dict[str, object] = {"tasks": None, "with_command": False, "time_left": None}
        return await self.one(S.project_idle, **(defaults | question))
