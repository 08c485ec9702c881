"""Schedules: their rows, and the transactions in which a server takes their due ticks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..sql import S, Statement
from .base import Row, Table


class Transaction:
    """Statements of the schedule loop on one connection, inside one transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def _row(self, statement: Statement, **args: Any) -> Row | None:
        r = await self.conn.fetchrow(statement.text, *statement.args(**args))
        return None if r is None else dict(r)

    def savepoint(self) -> Any:
        """A nested transaction: what fails in it is undone, the rest of the transaction stays."""
        return self.conn.transaction()

    async def groups(self, *, project: str, names: list[str]) -> dict[str, int]:
        """The ids of the named groups of ``project``, creating the missing ones (``group_ensure``)."""
        if not names:
            return {}
        rows = await self.conn.fetch(
            S.group_ensure.text, *S.group_ensure.args(project=project, names=sorted(set(names)))
        )
        return {r["name"]: r["id"] for r in rows}

    async def enqueue(self, *, project: str, jobs_json: str, actor: str | None) -> list[int]:
        """Queue the job as a tick would (``schedule_try``); the caller rolls it back."""
        row = await self._row(S.schedule_try, project=project, jobs=jobs_json, actor=actor)
        assert row is not None
        return list(row["ids"])

    async def fire(
        self, *, schedule_id: int, tick: datetime, next_run_at: datetime, jobs_json: str, actor: str | None
    ) -> Row:
        """One tick of a schedule this transaction locked: ``{outcome, job_id}`` (``wn_schedule_fire``)."""
        row = await self._row(
            S.schedule_fire,
            schedule_id=schedule_id,
            tick=tick,
            next_run_at=next_run_at,
            jobs=jobs_json,
            actor=actor,
        )
        assert row is not None
        return row

    async def failed(self, *, schedule_id: int, next_run_at: datetime, error: str) -> None:
        """A tick that made no job: the schedule moves on and records why."""
        await self.conn.execute(
            S.schedule_failed.text,
            *S.schedule_failed.args(schedule_id=schedule_id, next_run_at=next_run_at, error=error),
        )


@dataclass
class Due:
    """The due schedules a server locked, in the transaction that takes their ticks."""

    tx: Transaction
    rows: list[Row]
    now: datetime | None
    """The transaction's time (None when nothing is due): the following tick of each is the first
    after it."""


class ScheduleStore(Table):
    async def list(self, *, project: str) -> list[Row]:
        return await self.rows(S.schedule_list, project=project, schedule=None)

    async def get(self, *, project: str, schedule: str) -> Row | None:
        """One schedule of a project, by name or id."""
        rows = await self.rows(S.schedule_list, project=project, schedule=schedule)
        return rows[0] if rows else None

    async def timing(self, *, project: str, schedule: str) -> Row | None:
        """What a change of the schedule starts from (its id, timing, next tick, paused)."""
        return await self.row(S.schedule_timing, project=project, schedule=schedule)

    async def create(self, **fields: Any) -> int | None:
        """A new schedule's id; None when the project has one of that name."""
        return await self.value(S.schedule_create, **fields)

    async def update(self, **fields: Any) -> int | None:
        """Change a schedule (None for a field: keep it); its id, None when there is no such one."""
        return await self.value(S.schedule_update, **fields)

    async def delete(self, *, id: int) -> int:
        return int(await self.value(S.schedule_delete, id=id))

    async def seconds_to_next(self) -> float | None:
        """Seconds until the earliest tick of any schedule (0 or less: due now; None: none)."""
        return await self.value(S.schedule_next)

    @contextlib.asynccontextmanager
    async def trial(self) -> AsyncIterator[Transaction]:
        """A transaction that is rolled back at the end, whatever happens in it."""
        async with self.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                yield Transaction(conn)
            finally:
                await tx.rollback()

    @contextlib.asynccontextmanager
    async def due(self, *, limit: int) -> AsyncIterator[Due]:
        """The due schedules no other server holds (at most ``limit``), locked in a transaction
        that commits when the block ends without an error (``schedule_due``)."""
        async with self.pool.acquire() as conn, conn.transaction():
            statement = S.schedule_due
            rows = [dict(r) for r in await conn.fetch(statement.text, *statement.args(limit=limit))]
            yield Due(Transaction(conn), rows, rows[0]["now"] if rows else None)
