"""Claim marks (claim_marks, migration 0019): a claim starts at its project's mark, the sweep
(wn_advance_marks) moves the mark to the first job that can be handed out, and every way a job
becomes eligible before the mark moves it back (wn_lower_mark, from triggers on jobs), so
hand-out order never changes. Most tests run in a transaction rolled back; the ones about
concurrent transactions and a held horizon commit on a project of their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import sql_calls
from conftest import wait_until
from sql_calls import end

from whatsnext.api.server.sql import S

PROJECT = "cm"
"""The project of these tests (in a database of their own: ``migrated`` and ``db`` in conftest)."""
END = (9223372036854775807, 9223372036854775807)
"""The mark of a project with nothing to hand out."""


async def enqueue(db: asyncpg.Connection, *entries: dict[str, Any], project: str = PROJECT) -> list[int]:
    return await sql_calls.enqueue(db, project, *entries)


async def claim(db: asyncpg.Connection, n: int = 1, project: str = PROJECT) -> list[int]:
    return [r["id"] for r in await sql_calls.claim(db, project, n)]


async def mark(db: asyncpg.Connection, project: str = PROJECT) -> tuple[int, int] | None:
    row = await db.fetchrow(
        "SELECT m.rank, m.id FROM claim_marks m JOIN projects p ON p.id = m.project_id WHERE p.name = $1",
        project,
    )
    return None if row is None else (row["rank"], row["id"])


async def advance(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT wn_advance_marks()"))


async def test_the_sweep_moves_the_mark_to_the_first_job_it_can_hand_out(db: asyncpg.Connection) -> None:
    assert await mark(db) is None  # no mark yet: claims read from the start
    ids = await enqueue(db, *({"name": f"j{i}"} for i in range(6)))
    assert await advance(db) >= 1 and await mark(db) == (0, ids[0])
    assert await claim(db, 3) == ids[:3]
    assert await mark(db) == (0, ids[0])  # a claim never writes the mark
    await advance(db)
    assert await mark(db) == (0, ids[3])
    assert await advance(db) == 0  # nothing moved: nothing written
    assert await claim(db, 5) == ids[3:]
    await advance(db)
    assert await mark(db) == END
    # The next job made eligible moves it back at once, and is handed out.
    (late,) = await enqueue(db, {"name": "late", "priority": -3})
    assert await mark(db) == (3, late)
    assert await claim(db) == [late]


async def test_every_way_back_to_eligible_moves_the_mark_back(db: asyncpg.Connection) -> None:
    first, up, down, *rest = await enqueue(
        db,
        {"name": "first", "max_attempts": 3},
        {"name": "up"},
        {"name": "down", "dep_idx": [2]},
        *({"name": f"r{i}"} for i in range(4)),
    )
    assert await claim(db, 2) == [first, up]
    await advance(db)
    assert await mark(db) == (0, rest[0])

    # A failed attempt put back: the oldest job again, handed out before the newer ones.
    await end(db, {"id": first, "attempt": 1, "outcome": "FAILED", "exit_code": 1})
    assert await mark(db) == (0, first)
    assert await claim(db) == [first]
    await advance(db)

    # The last dependency met: the dependant, older than the rest, goes first.
    await end(db, {"id": up, "attempt": 1, "outcome": "COMPLETED", "exit_code": 0})
    assert await mark(db) == (0, down)
    assert await claim(db) == [down]
    await advance(db)
    assert await mark(db) == (0, rest[0])

    # A higher priority, new or raised: before everything else.
    (urgent,) = await enqueue(db, {"name": "urgent", "priority": 5})
    assert await mark(db) == (-5, urgent)
    await db.execute("UPDATE jobs SET priority = 9 WHERE id = $1", rest[3])
    assert await mark(db) == (-9, rest[3])
    assert await claim(db, 3) == [rest[3], urgent, rest[0]]

    # Lost with its worker: requeued by the reaper, back before the mark.
    await advance(db)
    assert await mark(db) == (0, rest[1])
    await db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 hour' WHERE id = $1", first)
    await db.fetch("SELECT * FROM wn_reap(100)")
    assert (await db.fetchval("SELECT status FROM jobs WHERE id = $1", first)) == "PENDING"
    assert await mark(db) == (0, first)
    assert await claim(db, 2) == [first, rest[1]]


async def test_a_delayed_job_holds_the_mark_until_it_is_handed_out(db: asyncpg.Connection) -> None:
    later, *now = await enqueue(db, {"name": "later", "delay": 3600}, {"name": "a"}, {"name": "b"})
    assert await claim(db, 5) == now
    await advance(db)
    assert await mark(db) == (0, later)  # pending, not yet due: the mark stays before it
    await db.execute("UPDATE jobs SET available_at = now() WHERE id = $1", later)
    assert await claim(db) == [later]


# ----------------------------------------------------------------- concurrent transactions


@pytest.fixture
async def conns(migrated: str, request: pytest.FixtureRequest) -> AsyncIterator[list[asyncpg.Connection]]:
    """Three connections to the module's database and a project of the test's own (committed)."""
    opened = [await asyncpg.connect(migrated) for _ in range(3)]
    project = project_of(request)
    await opened[0].execute("INSERT INTO projects (name) VALUES ($1)", project)
    try:
        yield opened
    finally:
        for conn in opened:  # a transaction a failed test left open ends with its connection
            conn.terminate()
        conn = await asyncpg.connect(migrated)
        try:
            await conn.execute("DELETE FROM jobs WHERE project_id = wn_project_id($1)", project)
            await conn.execute("DELETE FROM projects WHERE name = $1", project)
        finally:
            await conn.close()


def project_of(request: pytest.FixtureRequest) -> str:
    return f"cm-{request.node.name[-40:]}"


async def test_a_sweep_leaves_a_project_whose_jobs_are_being_made_eligible(
    conns: list[asyncpg.Connection], request: pytest.FixtureRequest
) -> None:
    """An older job not yet committed (its transaction holds the project's shared lock) is not
    skipped by a sweep that cannot see it: the sweep leaves the project for its next round."""
    a, b, c = conns
    p = project_of(request)
    done = await enqueue(a, {"name": "done"}, project=p)
    await claim(a, project=p)
    tx = b.transaction()
    await tx.start()
    (older,) = await enqueue(b, {"name": "older"}, project=p)
    (newer,) = await enqueue(c, {"name": "newer"}, project=p)  # committed, after the one above
    assert older < newer
    await advance(a)
    assert await mark(a, p) in (None, (0, done[0])), "the sweep moved past a job it could not see"
    await tx.commit()
    assert await claim(a, project=p) == [older]
    await advance(a)
    assert await mark(a, p) == (0, newer)


async def test_a_job_made_eligible_during_a_sweep_moves_the_new_mark_back(
    conns: list[asyncpg.Connection], request: pytest.FixtureRequest
) -> None:
    """A statement that makes a job eligible while a sweep holds the project waits for it, then
    sees the sweep's mark and moves it back."""
    a, b, c = conns
    p = project_of(request)
    await enqueue(a, {"name": "done"}, project=p)
    await claim(a, project=p)
    sweep = a.transaction()
    await sweep.start()
    await advance(a)  # nothing left to hand out: the mark goes past the end, not yet committed
    insert = asyncio.create_task(enqueue(b, {"name": "new"}, project=p))
    await waits_for_advisory_lock(c, b.get_server_pid())
    assert not insert.done()
    await sweep.commit()
    (new,) = await asyncio.wait_for(insert, 10)
    assert await mark(a, p) == (0, new)
    assert await claim(a, project=p) == [new]


async def waits_for_advisory_lock(watcher: asyncpg.Connection, pid: int) -> None:
    """Until the backend ``pid`` waits for an advisory lock (``watcher`` outside a transaction)."""

    async def waiting() -> bool:
        return (
            await watcher.fetchval("SELECT wait_event FROM pg_stat_activity WHERE pid = $1", pid)
            == "advisory"
        )

    await wait_until(waiting, what="the statement to wait for the sweep's lock")


READ = "SELECT pg_stat_get_xact_tuples_returned('jobs_claim_order'::regclass)"
"""Index entries that scans of the hand-out order returned in this transaction."""


async def index_entries_read(conn: asyncpg.Connection, project: str) -> int:
    """How many entries of jobs_claim_order one claim of ``project`` reads (in a transaction of
    its own, rolled back: the transaction's statistics count its reads)."""
    tx = conn.transaction()
    await tx.start()
    try:
        before = await conn.fetchval(READ)
        assert await claim(conn, project=project)
        after = await conn.fetchval(READ)
        return int(after - before)
    finally:
        await tx.rollback()


async def test_with_the_horizon_held_a_claim_reads_from_the_mark(
    conns: list[asyncpg.Connection], request: pytest.FixtureRequest
) -> None:
    """While a transaction holds the xmin horizon the index entries of every job handed out since
    stay; a claim reads from the mark on, not all of them."""
    a, _, holder = conns
    p = project_of(request)
    held = holder.transaction()
    await held.start()
    await holder.fetchval("SELECT txid_current()")  # a writing transaction: the horizon stays here
    try:
        ids = await enqueue(a, *({"name": f"j{i}"} for i in range(1200)), project=p)
        await advance(a)
        for _ in range(10):
            await claim(a, 100, project=p)
        assert await index_entries_read(a, p) > 1000  # every entry handed out since is still there
        await advance(a)
        assert await mark(a, p) == (0, ids[1000])
        assert await index_entries_read(a, p) < 10
    finally:
        await held.rollback()


async def entries_read_by(conn: asyncpg.Connection, query: str, *args: Any) -> tuple[Any, int]:
    """What ``query`` answers, and how many entries of jobs_claim_order it read."""
    tx = conn.transaction()
    await tx.start()
    try:
        before = await conn.fetchval(READ)
        value = await conn.fetchval(query, *args)
        return value, int(await conn.fetchval(READ) - before)
    finally:
        await tx.rollback()


async def test_with_the_horizon_held_the_next_delayed_job_is_found_from_the_mark(
    conns: list[asyncpg.Connection], request: pytest.FixtureRequest
) -> None:
    """A claim that finds nothing asks when the next delayed job is due before it waits (one
    project: project_resolve; several: sharing_next_available): from the mark on too."""
    a, _, holder = conns
    p = project_of(request)
    held = holder.transaction()
    await held.start()
    await holder.fetchval("SELECT txid_current()")
    try:
        await enqueue(a, *({"name": f"j{i}"} for i in range(1200)), project=p)
        await enqueue(a, {"name": "later", "delay": 3600}, project=p)
        await advance(a)
        for _ in range(12):
            await claim(a, 100, project=p)
        await advance(a)  # the mark: the delayed job, the first that can be handed out
        pid = await a.fetchval("SELECT id FROM projects WHERE name = $1", p)
        resolve = S.project_resolve
        query = f"SELECT next_available_in FROM ({resolve.text}) r"
        due, read = await entries_read_by(a, query, *resolve.args(project=p))
        assert 3590 < due <= 3600 and 0 < read < 10
        pool = S.sharing_next_available
        due, read = await entries_read_by(a, pool.text, *pool.args(projects=[pid]))
        assert 3590 < due <= 3600 and 0 < read < 10
    finally:
        await held.rollback()


async def test_a_sweep_from_the_start_moves_a_mark_that_lies_too_far_back(db: asyncpg.Connection) -> None:
    """The server's safety net: a mark past a job that can be handed out (no statement should
    leave one) is moved back by a sweep from the start, and only by it."""
    ids = await enqueue(db, *({"name": f"j{i}"} for i in range(3)))
    await advance(db)
    await db.execute("UPDATE claim_marks SET id = $1 WHERE project_id = wn_project_id($2)", ids[2], PROJECT)
    await advance(db)
    assert await mark(db) == (0, ids[2])
    assert await db.fetchval("SELECT wn_advance_marks(true)") >= 1
    assert await mark(db) == (0, ids[0])
    assert await claim(db) == [ids[0]]
