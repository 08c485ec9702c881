"""Job output lines: appends (bounded per job) and reads."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from ..sql import S
from .base import Row, Table


class LogStore(Table):
    async def append(self, *, job_id: int, attempt: int, lines: list[str], keep: int) -> Row:
        """(code, status, message, appended, dropped) for one job's lines."""
        return await self.one(S.log_append, job_id=job_id, attempt=attempt, lines=lines, keep=keep)

    async def append_many(self, *, batches: list[dict[str, Any]], keep: int) -> list[Row]:
        return await self.rows(S.log_append_many, batches=orjson.dumps(batches).decode(), keep=keep)

    async def read(self, *, job_id: int, after: int, limit: int, tail: bool = False) -> list[asyncpg.Record]:
        """The job's status, dropped count and lines after ``after`` (the last ``limit`` with
        ``tail``); one row with NULL line columns when there is no such line, none for an unknown job."""
        statement = S.log_tail if tail else S.log_page
        return list(
            await self.pool.fetch(statement.text, *statement.args(job_id=job_id, after=after, limit=limit))
        )

    async def dead_rows(self) -> int:
        return int(await self.value(S.log_dead_rows))

    async def vacuum(self) -> None:
        await self.pool.execute(S.log_vacuum.text)
