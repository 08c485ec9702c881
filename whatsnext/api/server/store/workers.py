"""Workers: registration, heartbeats, leaving, listing, and the lease reaper."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NotRequired

from typing_extensions import TypedDict, Unpack

from ....models import WorkerStatus
from ..sql import S
from .base import Row, Table


class Registration(TypedDict):
    """A worker's registration: ``worker_register``'s parameters (``token_id`` may be left out)."""

    project: str | None
    project_ids: NotRequired[list[int] | None]
    all_projects: NotRequired[bool]
    name: str
    entity: str
    host: str
    pid: int | None
    cpu: int
    accelerators: int
    tags: list[str]
    token_id: NotRequired[int | None]
    deadline: NotRequired[datetime | None]
    lease_seconds: float


class WorkerStore(Table):
    async def register(self, **fields: Unpack[Registration]) -> Row:
        defaults: dict[str, object] = {
            "token_id": None,
            "project_ids": None,
            "all_projects": False,
            "deadline": None,
        }
        return await self.one(S.worker_register, **(defaults | fields))

    async def heartbeat(
        self, *, worker_id: int, lease_seconds: float, running: list[int] | None, grace: float
    ) -> tuple[list[int], list[Row]]:
        """Extend the worker's leases: the ids of its jobs to stop, and the running attempts it
        holds (``{id, attempt}``: the leases just extended), read in one transaction."""
        beat, held = S.worker_heartbeat, S.worker_leases
        async with self.pool.acquire() as conn, conn.transaction():
            stop = await conn.fetchval(
                beat.text,
                *beat.args(worker_id=worker_id, lease_seconds=lease_seconds, running=running, grace=grace),
            )
            leases = await conn.fetch(held.text, *held.args(worker_id=worker_id))
        return list(stop), [dict(r) for r in leases]

    async def deregister(self, *, worker_id: int) -> int:
        """The worker leaves; how many running jobs it held (they end as lost)."""
        return int(await self.value(S.worker_deregister, worker_id=worker_id))

    async def list(
        self, *, project: str | None, status: WorkerStatus | None, projects: list[int] | None = None
    ) -> list[Row]:
        """Workers, of ``projects`` only when given; ``status`` as ``wn_worker_status`` says."""
        return await self.rows(
            S.worker_list, worker_id=None, project=project, status=status, projects=projects
        )

    async def get(self, *, worker_id: int, projects: list[int] | None = None) -> Row | None:
        """One worker as :meth:`list` shows it (None: no such worker, or not of ``projects``)."""
        return await self.row(
            S.worker_list, worker_id=worker_id, project=None, status=None, projects=projects
        )

    async def reap(self, *, batch: int, lease: float, grace: float, every: float) -> Sweep:
        """One sweep of the lease reaper (none if another server holds it): first the reaper's
        clock (leases extended when the queue was away for longer than ``every`` plus ``lease``:
        by the gap plus ``grace``), then the expired jobs it handled."""
        rows = await self.rows(S.reap, batch=batch, lease=lease, grace=grace, every=every)
        sweep = Sweep()
        for row in rows:
            if row["status"] == EXTENDED:
                sweep.away, sweep.extended = float(row["away"]), int(row["jobs"])
            else:
                del row["away"]
                sweep.handled.append(row)
        return sweep

    async def stops(self, *, worker_id: int) -> list[Row] | None:
        """The worker's running attempts it is asked to stop, as ``{id, attempt, stop}`` (stop:
        ``cancel`` or ``requeue``); None when there is no such worker."""
        rows = await self.rows(S.worker_stops, worker_id=worker_id)
        if not rows:
            return None
        return [r for r in rows if r["id"] is not None]


EXTENDED = "EXTENDED"
"""The status of the row of a sweep that extended every running lease (the queue was away)."""


@dataclass
class Sweep:
    """What one sweep of the lease reaper did."""

    handled: list[Row] = field(default_factory=list)
    """The expired jobs it handled: (project_name, task_name, status, jobs) rows."""
    away: float | None = None
    """Seconds since the sweep before, when the queue was away that long (None: it was not)."""
    extended: int = 0
    """Running leases extended because the queue was away."""
