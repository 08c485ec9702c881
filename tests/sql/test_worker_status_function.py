"""wn_worker_status, the one definition of a worker's status, in SQL: each test in a transaction
that is rolled back, heartbeats and the reaper's clock backdated instead of waited for."""

from __future__ import annotations

import asyncpg

PROJECT = "wstatus"
"""The project of these tests (in a database of their own: ``migrated`` and ``db`` in conftest)."""


async def status(db: asyncpg.Connection, worker: int) -> str:
    return str(
        await db.fetchval(
            "SELECT wn_worker_status(status, last_seen, lease_seconds) FROM workers WHERE id = $1", worker
        )
    )


async def seen(db: asyncpg.Connection, worker: int, ago: float) -> None:
    await db.execute(
        "UPDATE workers SET last_seen = now() - make_interval(secs => $2) WHERE id = $1", worker, ago
    )


async def clock(
    db: asyncpg.Connection, ago: float | None, every: float | None = 15, until: float | None = None
) -> None:
    """The reaper's clock: the last sweep ``ago`` seconds ago (None: never), the recovery grace
    ending in ``until`` seconds (None: none)."""
    await db.execute(
        "UPDATE reaper_clock SET last_sweep_at = now() - make_interval(secs => $1), sweep_every = $2,"
        " recovery_until = now() + make_interval(secs => $3)",
        ago,
        every,
        until,
    )


async def test_lost_once_the_last_heartbeat_is_older_than_the_lease_it_was_granted(
    db: asyncpg.Connection,
) -> None:
    worker = await db.fetchval("INSERT INTO workers (name) VALUES ('w') RETURNING id")
    await clock(db, 1)
    assert await db.fetchval("SELECT lease_seconds FROM workers WHERE id = $1", worker) == 60  # the default
    assert await status(db, worker) == "ONLINE"
    await seen(db, worker, 59)
    assert await status(db, worker) == "ONLINE"
    await seen(db, worker, 61)
    assert await status(db, worker) == "LOST"
    # A heartbeat: seen now, with the lease of the server that answered it (5 s).
    await db.fetchval("SELECT wn_heartbeat($1, 5, NULL, 5)", worker)
    assert await db.fetchval("SELECT lease_seconds FROM workers WHERE id = $1", worker) == 5
    assert await status(db, worker) == "ONLINE"
    await seen(db, worker, 6)
    assert await status(db, worker) == "LOST"
    # Gone: OFFLINE, whenever last seen.
    assert await db.fetchval("SELECT wn_deregister($1)", worker) == 0
    await seen(db, worker, 3600)
    assert await status(db, worker) == "OFFLINE"


async def test_no_worker_is_lost_while_the_queue_is_away_nor_during_the_recovery_grace(
    db: asyncpg.Connection,
) -> None:
    worker = await db.fetchval("INSERT INTO workers (name) VALUES ('w') RETURNING id")
    await seen(db, worker, 600)
    # A clock never set (a new database) says nothing: LOST.
    await clock(db, None, None)
    assert await status(db, worker) == "LOST"
    # The last sweep older than its interval plus the worker's lease (15 + 60): the queue is away
    # and no sweep has noticed yet. Within that: an ordinary gap.
    await clock(db, 76)
    assert await status(db, worker) == "ONLINE"
    await clock(db, 74)
    assert await status(db, worker) == "LOST"
    # The sweep that notices the outage starts the recovery grace (30 s here).
    await clock(db, 600)
    rows = await db.fetch("SELECT * FROM wn_reap_sweep(1000, 60, 30, 15)")
    assert [r["status"] for r in rows] == ["EXTENDED"]
    assert await db.fetchval("SELECT recovery_until = now() + interval '30 seconds' FROM reaper_clock")
    assert await status(db, worker) == "ONLINE"
    # An ordinary sweep leaves the grace as it is.
    assert await db.fetch("SELECT * FROM wn_reap_sweep(1000, 60, 30, 15)") == []
    assert await db.fetchval("SELECT recovery_until = now() + interval '30 seconds' FROM reaper_clock")
    # Once the grace has passed: LOST.
    await clock(db, 1, until=-1)
    assert await status(db, worker) == "LOST"
