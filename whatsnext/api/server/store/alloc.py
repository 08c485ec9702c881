"""Automatic allocation: demand for workers, allocation queues, the lease of a queue's loop and the
allocations it submitted."""

from __future__ import annotations

from typing import Any

from ..sql import S
from .base import Row, Table

RECENT = 50
"""Allocations a queue's view lists (newest first)."""


class AllocStore(Table):
    async def demand(self, *, projects: list[int] | None) -> list[Row]:
        """Eligible pending jobs of ``projects`` (None: all) by shape, with how many no ONLINE
        worker (``wn_worker_status``) could take."""
        return await self.rows(S.alloc_demand, projects=projects)

    async def queues(self, *, name: str | None = None, projects: list[int] | None = None) -> list[Row]:
        """Queues (the one ``name``, None: all) serving only ``projects`` (None: any), with their
        allocations counted by state."""
        return await self.rows(S.alloc_queue_list, name=name, projects=projects)

    async def queue(self, *, name: str) -> Row | None:
        rows = await self.queues(name=name)
        return rows[0] if rows else None

    async def queue_projects(self, *, name: str) -> list[int] | None:
        """The projects the queue ``name`` serves (None: no such queue)."""
        row = await self.row(S.alloc_queue_projects, name=name)
        return None if row is None else list(row["project_ids"])

    async def create(self, **fields: Any) -> int | None:
        """A new queue's id; None when one of that name exists."""
        return await self.value(S.alloc_queue_create, **fields)

    async def update(self, **fields: Any) -> int | None:
        """Change a queue (None for a field: keep it); its id, None when there is no such queue."""
        return await self.value(S.alloc_queue_update, **fields)

    async def delete(self, *, name: str) -> int:
        return int(await self.value(S.alloc_queue_delete, name=name))

    async def take_lease(self, *, name: str, holder: str, seconds: float) -> Row | None:
        """Take or renew the lease of the queue's loop; None when another holder's is live (or no
        such queue)."""
        return await self.row(S.alloc_lease_take, name=name, holder=holder, seconds=seconds)

    async def lease(self, *, name: str) -> Row | None:
        return await self.row(S.alloc_lease_get, name=name)

    async def release_lease(self, *, name: str, holder: str) -> int:
        return int(await self.value(S.alloc_lease_release, name=name, holder=holder))

    async def create_allocation(self, **fields: Any) -> int:
        return int(await self.value(S.alloc_create, **fields))

    async def update_allocation(self, **fields: Any) -> Row | None:
        """Change an allocation: ``{id, state, refused}`` (the state it had; ``refused``: an ended
        allocation asked for another state, left as it was); None when there is no such one."""
        return await self.row(S.alloc_update, **fields)

    async def allocations(
        self,
        *,
        queue_id: int | None = None,
        id: int | None = None,
        state: str | None = None,
        limit: int = RECENT,
    ) -> list[Row]:
        """Allocations, newest first."""
        return await self.rows(S.alloc_list, queue_id=queue_id, id=id, state=state, limit=limit)

    async def recent(self, *, queue_ids: list[int], per_queue: int) -> list[Row]:
        """The latest ``per_queue`` allocations of each of ``queue_ids``, by queue name, newest first."""
        return await self.rows(S.alloc_recent, queue_ids=queue_ids, per_queue=per_queue)

    async def allocation(self, *, id: int) -> Row | None:
        rows = await self.allocations(id=id, limit=1)
        return rows[0] if rows else None

    async def allocation_queue(self, *, id: int) -> Row | None:
        """The queue of the allocation ``id``: ``{name, project_ids}``."""
        return await self.row(S.alloc_queue_of, id=id)
