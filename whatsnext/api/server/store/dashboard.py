"""Reads of the web dashboard (``sql/queries/dashboard.sql``): aggregated counts, paged tables,
what a pending job waits for, and the history entries that drive live updates."""

from __future__ import annotations

from ..sql import S
from .base import Row, Table
from .filter import JobFilter

__all__ = ["DashboardStore", "JobFilter"]


RECENT_SAMPLE = 10_000
"""The most finished jobs the overview reads to say what each project completed lately
(``dash_completed_recently``): the last hour, or the time the last ``RECENT_SAMPLE`` took."""


class DashboardStore(Table):
    async def projects(self, *, projects: list[int] | None) -> list[Row]:
        """Every project (of ``projects``, or all) with its counts by status."""
        return await self.rows(S.dash_projects, projects=projects)

    async def completed_recently(self, *, projects: list[int] | None) -> tuple[dict[int, int], float]:
        """The jobs each project (of ``projects``, or all) completed lately, by project id, and
        the seconds that covers: the last hour, or less when more than ``RECENT_SAMPLE`` jobs
        finished in it (every job that finished since is counted)."""
        rows = await self.rows(S.dash_completed_recently, projects=projects, sample=RECENT_SAMPLE)
        by_project = {r["project_id"]: r["completed"] for r in rows if r["project_id"] is not None}
        return by_project, rows[0]["seconds"]

    async def cluster(self, *, projects: list[int] | None) -> Row:
        """The ONLINE workers (``wn_worker_status``) and the CPUs and GPUs they declare and hold."""
        return await self.one(S.dash_cluster, projects=projects)

    async def project(self, *, project: str) -> Row | None:
        return await self.row(S.dash_project, project=project)

    async def kanban(self, *, project_id: int, per_status: int) -> list[Row]:
        return await self.rows(S.dash_kanban, project_id=project_id, per_status=per_status)

    async def jobs(self, *, project_id: int, where: JobFilter, before: int | None, limit: int) -> list[Row]:
        return await self.rows(S.dash_jobs, project_id=project_id, before=before, limit=limit, **where.args())

    async def count(self, *, project_id: int, where: JobFilter) -> Row:
        # The same count as the REST list's (job_filter_counts), for a project named by its id.
        return await self.one(S.job_filter_counts, project=str(project_id), **where.args())

    async def job_ids(
        self, *, project_id: int, where: JobFilter, statuses: list[str], ids: list[int] | None, limit: int
    ) -> list[int]:
        rows = await self.rows(
            S.dash_job_ids, project_id=project_id, acting_on=statuses, ids=ids, limit=limit, **where.args()
        )
        return [r["id"] for r in rows]

    async def names(self, *, project_id: int) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"task": [], "group": []}
        for r in await self.rows(S.dash_project_names, project_id=project_id):
            out[r["kind"]].append(r["name"])
        return out

    async def attempts(self, *, job_id: int) -> list[Row]:
        return await self.rows(S.dash_attempts, job_id=job_id)

    async def why_workers(self, *, project_id: int) -> list[Row]:
        return await self.rows(S.dash_why_workers, project_id=project_id)

    async def why_pool(self, *, job_id: int) -> Row | None:
        """What sharing the pool holds a pending job to: its concurrency key, its project's quotas
        and the projects a claim serves before it (``ahead``, with their usage and share)."""
        return await self.row(S.dash_why_pool, job_id=job_id)

    async def why_alloc(self, *, job_id: int) -> list[Row]:
        """The allocations requested for a pending job: QUEUED or RUNNING ones of a queue serving
        its project, whose shape and time limit it fits (running ones first)."""
        return await self.rows(S.dash_why_alloc, job_id=job_id)

    async def pool_projects(self, *, projects: list[int] | None) -> list[Row]:
        """Each project of ``projects`` (None: all) in the pool, then one row (``id`` None) summing
        the others; each row carries the pool's totals and half-life."""
        return await self.rows(S.dash_pool, projects=projects)

    async def queue_ahead(self, *, job_id: int) -> int:
        return int(await self.value(S.dash_queue_ahead, job_id=job_id))

    async def workers(self, *, projects: list[int] | None) -> list[Row]:
        """Every worker (of ``projects`` when given) with its status (``wn_worker_status``), online
        ones first."""
        return await self.rows(S.dash_workers, projects=projects)

    async def graph(self, *, project_id: int, group: str | None, limit: int) -> tuple[list[Row], list[Row]]:
        nodes = await self.rows(S.dash_graph_nodes, project_id=project_id, group=group, limit=limit)
        edges = await self.rows(S.dash_graph_edges, ids=[n["id"] for n in nodes])
        return nodes, edges

    async def events_head(self) -> tuple[int, int]:
        """The cursors live updates start from: the newest history entry and the newest job."""
        row = await self.one(S.dash_events_head)
        return int(row["event"]), int(row["job"])

    async def events_since(self, *, after: int, after_job: int, limit: int) -> list[Row]:
        """History entries after ``after`` (kind ``event``) and jobs queued after ``after_job``
        (kind ``job``), each in order."""
        return await self.rows(S.dash_events_since, after=after, after_job=after_job, limit=limit)

    async def log_tail(self, *, job_id: int, limit: int) -> list[Row]:
        return await self.rows(S.dash_log_tail, job_id=job_id, limit=limit)

    async def artifacts(self, *, job_id: int) -> list[Row]:
        return await self.rows(S.dash_artifacts, job_id=job_id)
