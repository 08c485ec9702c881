"""Groups: a sweep, or any batch the user names, followed, cancelled and retried as one."""

from __future__ import annotations

from ..sql import S
from .base import Row, Table


class GroupStore(Table):
    async def ensure(self, *, project: str, names: list[str]) -> dict[str, int]:
        """The ids of the named groups of a project, creating the missing ones."""
        if not names:
            return {}
        rows = await self.rows(S.group_ensure, project=project, names=sorted(set(names)))
        return {r["name"]: r["id"] for r in rows}

    async def list(self, *, project: str, limit: int) -> list[Row]:
        return await self.rows(S.group_list, project=project, limit=limit)

    async def get(self, *, project: str, group: str) -> Row | None:
        return await self.row(S.group_get, project=project, group=group)

    async def cancel(self, *, group_id: int, actor: str | None) -> int:
        return int(await self.value(S.group_cancel, group_id=group_id, actor=actor))

    async def retry(
        self,
        *,
        group_id: int,
        actor: str | None,
        failed: bool = True,
        cancelled: bool = True,
        lost: bool = True,
        downstream: bool = False,
    ) -> Row:
        """Put the group's jobs of the chosen kinds back in the queue (``downstream``: and the
        dependants that already ran over their results); ``ids`` of every job put back, and
        ``downstream`` of those dependants."""
        return await self.one(
            S.group_retry,
            group_id=group_id,
            actor=actor,
            failed=failed,
            cancelled=cancelled,
            lost=lost,
            downstream=downstream,
        )
