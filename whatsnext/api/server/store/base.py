"""What every store class shares: run one named statement with named arguments."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..sql import Statement

Row = dict[str, Any]


class Table:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def rows(self, statement: Statement, **args: Any) -> list[Row]:
        return [dict(r) for r in await self.pool.fetch(statement.text, *statement.args(**args))]

    async def row(self, statement: Statement, **args: Any) -> Row | None:
        r = await self.pool.fetchrow(statement.text, *statement.args(**args))
        return None if r is None else dict(r)

    async def one(self, statement: Statement, **args: Any) -> Row:
        """The row of a statement that always answers one (otherwise it raises, WN404 for instance)."""
        row = await self.row(statement, **args)
        assert row is not None
        return row

    async def value(self, statement: Statement, **args: Any) -> Any:
        return await self.pool.fetchval(statement.text, *statement.args(**args))
