"""Jobs: queueing, claiming, the end of attempts (the state machine), cancel, retry, reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ....wire import AttemptEnd, ClaimArgs
from ..sql import S
from .base import Row, Table
from .filter import JobFilter

_TIMES = ("lease_expires_at", "eligible_at")
UNREAD = "claimed but never received by its worker"


def claimed_rows(claimed: list[Row] | None) -> list[Row]:
    """``wn_claim`` rows that came as JSON (``wn_enqueue_claim``), with their times as datetimes
    again, as ``wn_claim`` rows come (so that the claim's answer is the same either way)."""
    rows = claimed or []
    for row in rows:
        for key in _TIMES:
            value = row.get(key)
            if isinstance(value, str):
                row[key] = datetime.fromisoformat(value).astimezone(UTC)
    return rows


@dataclass(slots=True)
class Enqueued:
    """What one submission statement returned (``job_enqueue``, ``job_enqueue_one``)."""

    ids: list[int]
    """One id per entry, in batch order: the new job's, or the existing job's (``existing``)."""
    created_tasks: list[str]
    """The tasks the submission created."""
    known_tasks: list[str]
    """When it created tasks: the names of those the project had before, oldest first."""
    claimed: list[Row]
    """The ``wn_claim`` rows of the waiting claim it ran, in hand-out order."""
    project: str
    """The project's name."""
    job: Row | None = None
    """For one job: the job as ``job_get`` shows it."""
    existing: list[int] = field(default_factory=list)
    """The 0-based indexes of the entries whose unique key belonged to a job the project had (their
    ids are those jobs'; nothing was created for them)."""
    warnings: list[Row] = field(default_factory=list)
    """``{index, field, message}``: a parameter no placeholder of the task's command uses."""


_ENQUEUED = ("ids", "created_tasks", "claimed", "project_name", "known_tasks", "existing", "warnings")


class JobStore(Table):
    async def advance_claim_marks(self, *, from_start: bool = False) -> int:
        """Move each project's claim mark forward (``wn_advance_marks``; ``from_start``: back too,
        where a job that can be handed out lies before it); returns how many moved."""
        return int(await self.value(S.advance_claim_marks, from_start=from_start))

    async def submit(
        self,
        *,
        project: str,
        jobs_json: str,
        actor: str | None,
        claim: dict[str, Any] | None = None,
        single: bool = False,
    ) -> Enqueued:
        """Queue a batch (a JSON array of ``wn_job_entry`` objects, ``batch.entries_json``) in one
        statement, with the jobs ``claim`` (a waiting claim's ``wn_claim`` arguments,
        ``notify.Waiter.claim``) took in the same transaction; ``single``: the batch is one job,
        returned as ``get`` shows it."""
        statement = S.job_enqueue_one if single else S.job_enqueue
        row = await self.one(statement, project=project, jobs=jobs_json, actor=actor, claim=claim)
        ids, created, claimed, name, known, existing, warnings = (row.pop(key) for key in _ENQUEUED)
        return Enqueued(
            list(ids),
            list(created or ()),
            list(known or ()),
            claimed_rows(claimed),
            name,
            row if single else None,
            list(existing or ()),
            list(warnings or ()),
        )

    async def enqueue(
        self, *, project: str, jobs_json: str, actor: str | None, claim: dict[str, Any] | None = None
    ) -> tuple[list[int], list[str], list[Row]]:
        """Queue a batch (a JSON array of ``wn_job_entry`` objects, ``batch.entries_json``): the ids
        in batch order (an existing job's for an entry whose unique key the project had), the tasks
        it created, and the jobs ``claim`` (a waiting claim's ``wn_claim`` arguments,
        ``notify.Waiter.claim``) took in the same transaction."""
        queued = await self.submit(project=project, jobs_json=jobs_json, actor=actor, claim=claim)
        return queued.ids, queued.created_tasks, queued.claimed

    async def get(self, *, job_id: int) -> Row | None:
        return await self.row(S.job_get, job_id=job_id)

    async def list(
        self, *, project: str, where: JobFilter, before: int | None, limit: int, full: bool = True
    ) -> list[Row]:
        """A page of a project's jobs matching ``where``, newest first. Without ``full``,
        parameters and results are left out."""
        return await self.rows(
            S.job_list, full=full, project=project, before=before, limit=limit, **where.args()
        )

    async def counts(self, *, project: str, where: JobFilter) -> Row:
        """How many of a project's jobs match ``where``: ``{counts: {status: n}, total}``."""
        return await self.one(S.job_filter_counts, project=project, **where.args())

    async def queue(self, *, project: str, limit: int, offset: int) -> list[Row]:
        return await self.rows(S.queue_list, project=project, limit=limit, offset=offset)

    async def delete(self, *, project: str, job_id: int) -> Row | None:
        return await self.row(S.job_delete, project=project, job_id=job_id)

    async def clear_queue(self, *, project: str, actor: str | None) -> int:
        return int(await self.value(S.queue_clear, project=project, actor=actor))

    async def claim(self, *, project: str, args: ClaimArgs) -> list[Row]:
        """Hand out eligible jobs (``wn_claim``) of ``project`` to the claim ``args``; its
        ``actor`` is who the RUNNING events name (the claiming token's name under --auth; None:
        the worker's name)."""
        return await self.rows(S.job_claim, project=project, **args)

    async def end_attempts(
        self, changes: list[AttemptEnd], *, actor: str | None, token: int | None = None
    ) -> list[Row]:
        """Apply the state machine; one (ord, id, code, status, message) row per change, in order.
        With ``token`` (a worker token's id), the jobs its workers do not hold answer 403."""
        return await self.rows(
            S.job_end_attempts, changes=orjson.dumps(changes).decode(), actor=actor, token=token
        )

    async def release_unread(self, rows: list[Row]) -> None:
        """Jobs claimed for a request that went away before it read them: back to the queue now
        (LOST, using no attempt), as the worker's next heartbeat would have them."""
        if rows:
            await self.end_attempts(
                [{"id": r["id"], "attempt": r["attempt"], "outcome": "LOST", "error": UNREAD} for r in rows],
                actor=None,
            )

    async def started(
        self, *, job_id: int, attempt: int, external_id: str | None, gpus: list[int] | None
    ) -> Row:
        return await self.one(
            S.job_started, job_id=job_id, attempt=attempt, external_id=external_id, gpus=gpus
        )

    async def cancel(self, *, job_id: int, reason: str, actor: str | None) -> str:
        return str(await self.value(S.job_cancel, job_id=job_id, reason=reason, actor=actor))

    async def retry(self, *, job_id: int, actor: str | None) -> int:
        return int(await self.value(S.job_retry, job_id=job_id, actor=actor))

    async def requeue(self, *, job_id: int, actor: str | None) -> str:
        """Ask the worker of a running job to hand it back to the queue; the job's status."""
        return str(await self.value(S.job_requeue, job_id=job_id, actor=actor))

    async def events(self, *, job_id: int) -> list[Row]:
        return await self.rows(S.job_events, job_id=job_id)

    async def dependencies(self, *, job_id: int) -> list[Row]:
        return await self.rows(S.job_dependencies, job_id=job_id)

    async def graph(self, *, project: str, limit: int) -> tuple[list[Row], list[Row]]:
        nodes = await self.rows(S.project_graph_nodes, project=project, limit=limit)
        edges = await self.rows(S.project_graph_edges, project=project, limit=limit)
        return nodes, edges
