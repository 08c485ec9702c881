"""The state machine's SQL functions called directly (the tests under tests/sql): queue jobs,
hand them out, end their attempts."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def enqueue(db: asyncpg.Connection, project: str, *entries: dict[str, Any]) -> list[int]:
    """Queue ``entries`` (task ``t`` unless given) in ``project``; their ids in order."""
    batch = [{"task": "t", **e} for e in entries]
    return list(await db.fetchval("SELECT ids FROM wn_enqueue($1, $2::jsonb)", project, json.dumps(batch)))


async def claim(db: asyncpg.Connection, project: str, n: int = 1, worker: str = "w") -> list[asyncpg.Record]:
    """Hand out up to ``n`` jobs of ``project`` to ``worker`` (100 CPUs free): wn_claim's rows."""
    return await db.fetch(
        "SELECT * FROM wn_claim($1, NULL, $3, 100, 0, 100, 0, '{}', $2, 60, 300)", project, n, worker
    )


async def end(db: asyncpg.Connection, *changes: dict[str, Any]) -> None:
    """End attempts as a report would (``{id, attempt, outcome, ...}`` each)."""
    await db.fetch("SELECT * FROM wn_end_attempts($1::jsonb, 'test')", json.dumps(list(changes)))
