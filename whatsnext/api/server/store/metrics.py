"""Metrics: the database gauges of ``/metrics`` (one server computes them at a time) and project
names for labels."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..sql import S
from .base import Row, Table


class MetricsStore(Table):
    """Runs on the pool, or on the one connection that holds the gauges' lock (``asyncpg`` pools
    and connections answer the same ``fetch`` calls)."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self.pool = db  # type: ignore[assignment]

    async def lead(self) -> bool:
        """Take the gauges' session lock if free; whether this session holds it."""
        return bool(await self.value(S.metrics_lead))

    async def projects(self) -> list[str]:
        return [r["name"] for r in await self.rows(S.metrics_projects)]

    async def job_counts(self) -> list[Row]:
        return await self.rows(S.metrics_job_counts)

    async def oldest_eligible(self) -> list[Row]:
        return await self.rows(S.metrics_oldest_eligible)

    async def workers(self) -> list[Row]:
        """Workers by state (online, lost, offline: ``wn_worker_status``), with their CPUs and GPUs."""
        return await self.rows(S.metrics_workers)

    async def allocated(self) -> list[Row]:
        return await self.rows(S.metrics_allocated)

    async def standings(self) -> list[Row]:
        """Each project's share, quotas and usage of the pool (``metrics_pool``)."""
        return await self.rows(S.metrics_pool)

    async def project_name(self, *, project_id: int) -> str | None:
        name: Any = await self.value(S.metrics_project_name, project_id=project_id)
        return None if name is None else str(name)

    async def project_names(self, *, project_ids: list[int]) -> list[str]:
        return [r["name"] for r in await self.rows(S.metrics_project_names, project_ids=project_ids)]

    async def allocations(self) -> list[Row]:
        """Allocations by queue and state (``metrics_allocations``)."""
        return await self.rows(S.metrics_allocations)
