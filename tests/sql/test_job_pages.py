"""Where new jobs are written (migration 0020): after jobs have run through their whole life
(submitted, handed out, completed, the table vacuumed) round after round, new jobs land on the
pages of recent jobs, never on a page that holds only jobs which finished long ago. Without the
table's fillfactor, each of those pages kept room for one pending job and took one: a new job
then cost a read and a write of a page anywhere in the table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from sql_calls import claim, end, enqueue

PROJECT = "pages"
"""The project of these tests (in a database of their own: ``migrated`` in conftest)."""
ROUNDS = 8
PER_ROUND = 1_000
NEW = 300


@pytest.fixture
async def conn(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated)
    try:
        await conn.execute("INSERT INTO projects (name) VALUES ($1) ON CONFLICT DO NOTHING", PROJECT)
        yield conn
    finally:
        await conn.close()


async def submit(conn: asyncpg.Connection, first: int, count: int) -> None:
    await enqueue(
        conn, PROJECT, *({"name": f"j{i}", "parameters": {"i": i}} for i in range(first, first + count))
    )


async def run_all(conn: asyncpg.Connection) -> None:
    """Hand out every pending job, 20 at a time, and complete each claim's jobs."""
    while rows := await claim(conn, PROJECT, 20, worker="node-0042"):
        await end(
            conn,
            *({"id": r["id"], "attempt": r["attempt"], "outcome": "COMPLETED", "exit_code": 0} for r in rows),
        )


async def test_new_jobs_stay_off_the_pages_of_jobs_that_finished_long_ago(conn: asyncpg.Connection) -> None:
    assert "fillfactor=90" in (
        await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'jobs'::regclass")
    )
    marks = []
    for r in range(ROUNDS):
        marks.append(await conn.fetchval("SELECT coalesce(max(id), 0) FROM jobs"))
        for first in range(r * PER_ROUND, (r + 1) * PER_ROUND, 500):
            await submit(conn, first, 500)
        await run_all(conn)
        await conn.execute("VACUUM jobs")  # what autovacuum does: the free space map learns the room
    old = marks[ROUNDS // 2]  # jobs up to this one ran in the first half of the rounds
    newest = await conn.fetchval("SELECT max(id) FROM jobs")
    await submit(conn, ROUNDS * PER_ROUND, NEW)

    pages = await conn.fetch(
        """
        WITH page AS (SELECT (ctid::text::point)[0]::bigint AS page, id FROM jobs)
        SELECT p.page, count(*) FILTER (WHERE p.id > $1) AS new, max(p.id) FILTER (WHERE p.id <= $1) AS others
          FROM page p GROUP BY p.page HAVING count(*) FILTER (WHERE p.id > $1) > 0
        """,
        newest,
    )
    assert sum(p["new"] for p in pages) == NEW
    settled = [p["page"] for p in pages if p["others"] is not None and p["others"] <= old]
    assert settled == [], f"new jobs on pages of jobs that finished rounds ago: {settled}"
