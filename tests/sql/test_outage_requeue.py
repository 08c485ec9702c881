"""The reaper's clock (an outage of the queue costs no lease) and an operator's requeue, in SQL:
each test in a transaction that is rolled back, clocks and leases backdated instead of waited for."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

PROJECT = "out"
"""The project of these tests (in a database of their own: ``migrated`` and ``db`` in conftest)."""


async def running(db: asyncpg.Connection, n: int = 1, worker: int | None = None) -> list[int]:
    """Queue ``n`` jobs and claim them (for ``worker``): their ids."""
    batch = [{"task": "t", "name": f"j{i}"} for i in range(n)]
    await db.fetchval("SELECT ids FROM wn_enqueue('out', $1::jsonb)", json.dumps(batch))
    rows = await db.fetch(
        "SELECT * FROM wn_claim('out', $1, 'w', 100, 0, 100, 0, '{}', $2, 60, 300)", worker, n
    )
    return sorted(r["id"] for r in rows)


async def sweep(db: asyncpg.Connection, lease: float = 60, grace: float = 60, every: float = 15) -> list[Any]:
    return await db.fetch("SELECT * FROM wn_reap_sweep(1000, $1, $2, $3)", lease, grace, every)


async def set_clock(db: asyncpg.Connection, ago: float | None, every: float | None = 15) -> None:
    await db.execute(
        "UPDATE reaper_clock SET last_sweep_at = now() - make_interval(secs => $1), sweep_every = $2",
        ago,
        every,
    )


async def job(db: asyncpg.Connection, job_id: int) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT *, extract(epoch FROM lease_expires_at - now()) AS lease_left FROM jobs WHERE id = $1", job_id
    )


async def end(db: asyncpg.Connection, *changes: dict[str, Any]) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM wn_end_attempts($1::jsonb, 'test')", json.dumps(list(changes)))


# ---------------------------------------------------------------- the reaper's clock


async def test_a_sweep_after_the_queue_was_away_extends_leases_instead_of_reaping(
    db: asyncpg.Connection,
) -> None:
    a, b = await running(db, 2)
    # The queue was away for 300 s: the last sweep is that old, and a's lease ran out meanwhile.
    await set_clock(db, 300)
    await db.execute("UPDATE jobs SET lease_expires_at = now() - interval '240 seconds' WHERE id = $1", a)
    rows = await sweep(db, lease=60, grace=60)
    assert [(r["status"], r["jobs"]) for r in rows] == [("EXTENDED", 2)]
    assert rows[0]["away"] == pytest.approx(300, abs=1)
    ja, jb = await job(db, a), await job(db, b)
    assert ja["status"] == jb["status"] == "RUNNING"
    # a's lease moved by the gap plus the grace: -240 + 300 + 60 = 120 s left; b's 60 + 360.
    assert ja["lease_left"] == pytest.approx(120, abs=1)
    assert jb["lease_left"] == pytest.approx(420, abs=1)
    clock = await db.fetchrow("SELECT last_sweep_at = now() AS now, sweep_every FROM reaper_clock")
    assert clock["now"] and clock["sweep_every"] == 15
    # The next sweep finds the clock fresh: it extends nothing and reaps what has expired.
    await db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", a)
    rows = await sweep(db)
    assert [(r["status"], r["jobs"]) for r in rows] == [("PENDING", 1)]
    assert (await job(db, a))["error"] == "worker lost: lease expired"


async def test_an_ordinary_gap_extends_nothing(db: asyncpg.Connection) -> None:
    (a,) = await running(db)
    await db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", a)
    # The last sweep is older than a lease, but within the interval of the server that ran it
    # (a server that sweeps every 15 s beside one with a 2 s lease): no outage.
    await set_clock(db, 10, every=15)
    rows = await sweep(db, lease=2, grace=2, every=0.5)
    assert [(r["status"], r["jobs"]) for r in rows] == [("PENDING", 1)]
    # A clock never set (a new database) says nothing either.
    (b,) = await running(db)
    await db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", b)
    await set_clock(db, None, None)
    assert [r["status"] for r in await sweep(db)] == ["PENDING"]


async def test_a_sweep_that_finds_another_sweeping_leaves_the_clock(
    db: asyncpg.Connection, migrated: str
) -> None:
    """The reaper's lock is held by this transaction: another server's sweep does nothing, the
    clock included."""
    await db.execute("SELECT pg_advisory_xact_lock(hashtext('whatsnext.reaper'))")
    await set_clock(db, 300)
    other = await asyncpg.connect(migrated)
    try:
        assert await other.fetch("SELECT * FROM wn_reap_sweep(1000, 60, 60, 15)") == []
    finally:
        await other.close()
    assert await db.fetchval("SELECT extract(epoch FROM now() - last_sweep_at) FROM reaper_clock") == (
        pytest.approx(300, abs=1)
    )


# ---------------------------------------------------------------- requeue


async def test_a_requeued_attempt_ends_preempted_whatever_its_report_says(db: asyncpg.Connection) -> None:
    worker = await db.fetchval("INSERT INTO workers (name) VALUES ('w') RETURNING id")
    a, b, c = await running(db, 3, worker)
    for j in (a, b, c):
        assert await db.fetchval("SELECT wn_requeue($1, 'alice')", j) == "RUNNING"
    assert await db.fetchval("SELECT wn_requeue($1, 'alice')", a) == "RUNNING"  # again: nothing new
    # The worker learns it like a cancel.
    assert await db.fetchval("SELECT wn_heartbeat($1, 60, NULL, 5)", worker) == [a, b, c]
    rows = await end(
        db,
        {"id": a, "attempt": 1, "outcome": "CANCELLED"},
        {"id": b, "attempt": 1, "outcome": "FAILED", "error": "exit code 143"},
        {"id": c, "attempt": 1, "outcome": "COMPLETED"},
    )
    assert [(r["code"], r["status"]) for r in rows] == [
        (200, "PENDING"),
        (200, "PENDING"),
        (200, "COMPLETED"),
    ]
    for j in (a, b):
        row = await job(db, j)
        assert (row["last_outcome"], row["error"], row["attempt_base"], row["lost"]) == (
            "PREEMPTED",
            "requeued by alice",
            1,
            0,
        )
    history = await db.fetch("SELECT status, reason, actor FROM job_events WHERE job_id = $1 ORDER BY id", a)
    assert [(h["status"], h["reason"]) for h in history][-2:] == [
        ("RUNNING", "requeue requested"),
        ("PENDING", "requeued by alice"),
    ]
    # The same report again (its answer was lost): 200, nothing changes.
    (again,) = await end(db, {"id": a, "attempt": 1, "outcome": "CANCELLED"})
    assert (again["code"], again["status"]) == (200, "PENDING")
    # The next attempts are not requeued.
    await db.fetch("SELECT * FROM wn_claim('out', $1, 'w', 100, 0, 100, 0, '{}', 5, 60, 300)", worker)
    assert [(await job(db, j))["attempt"] for j in (a, b)] == [2, 2]
    assert await db.fetchval("SELECT wn_heartbeat($1, 60, NULL, 5)", worker) == []


async def test_requeue_refuses_what_is_not_running_and_yields_to_a_cancel(db: asyncpg.Connection) -> None:
    (a,) = await running(db)
    (pending,) = await db.fetchval(
        "SELECT ids FROM wn_enqueue('out', $1::jsonb)", '[{"task": "t", "name": "p"}]'
    )
    for job_id, code in ((pending, "WN409"), (2**62, "WN404")):
        with pytest.raises(asyncpg.PostgresError) as err:
            async with db.transaction():
                await db.fetchval("SELECT wn_requeue($1, 'x')", job_id)
        assert err.value.sqlstate == code
    # A requeue then a cancel: the cancel wins.
    await db.fetchval("SELECT wn_requeue($1, 'x')", a)
    assert await db.fetchval("SELECT wn_cancel($1, 'cancelled', 'y')", a) == "RUNNING"
    (row,) = await end(db, {"id": a, "attempt": 1, "outcome": "CANCELLED"})
    assert row["status"] == "CANCELLED"
    # A cancel then a requeue: refused.
    (b,) = await running(db)
    await db.fetchval("SELECT wn_cancel($1, 'cancelled', 'y')", b)
    with pytest.raises(asyncpg.PostgresError) as err:
        async with db.transaction():
            await db.fetchval("SELECT wn_requeue($1, 'x')", b)
    assert err.value.sqlstate == "WN409" and "being cancelled" in str(err.value)


async def test_cancel_and_requeue_notify_the_worker(migrated: str) -> None:
    """NOTIFY whatsnext_workers, the worker's id, in the transaction of the cancel or requeue
    (committed here, so that LISTEN hears them); a job without a worker notifies nobody."""
    listener = await asyncpg.connect(migrated)
    conn = await asyncpg.connect(migrated)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("whatsnext_workers", lambda *args: heard.put_nowait(args[3]))
    try:
        await conn.execute("INSERT INTO projects (name) VALUES ('out-notify')")
        worker = await conn.fetchval("INSERT INTO workers (name) VALUES ('w') RETURNING id")
        batch = json.dumps([{"task": "t", "name": n} for n in ("a", "b", "c")])
        await conn.fetchval("SELECT ids FROM wn_enqueue('out-notify', $1::jsonb)", batch)
        claim = "SELECT id FROM wn_claim('out-notify', $1, 'w', 100, 0, 100, 0, '{}', $2, 60, 300)"
        a, b = sorted(r["id"] for r in await conn.fetch(claim, worker, 2))
        (c,) = [r["id"] for r in await conn.fetch(claim, None, 1)]
        await conn.fetchval("SELECT wn_cancel($1, 'cancelled')", a)
        assert await asyncio.wait_for(heard.get(), 5) == str(worker)
        await conn.fetchval("SELECT wn_requeue($1)", b)
        assert await asyncio.wait_for(heard.get(), 5) == str(worker)
        await conn.fetchval("SELECT wn_cancel($1, 'cancelled')", c)
        await conn.fetchval("SELECT wn_cancel($1, 'cancelled')", a)  # already requested: no news
        await conn.execute("NOTIFY whatsnext_workers, 'end'")
        assert await asyncio.wait_for(heard.get(), 5) == "end"
    finally:
        await listener.close()
        await conn.close()
