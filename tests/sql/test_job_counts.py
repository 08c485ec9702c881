"""Job counts kept by trigger (job_counts, wn_count_jobs, read by wn_job_counts): after every way a
job's status changes they equal a GROUP BY over jobs, each test in a transaction rolled back."""

from __future__ import annotations

from typing import Any

import asyncpg
import sql_calls
from sql_calls import end

PROJECT = "jc"
"""The project of these tests (in a database of their own: ``migrated`` and ``db`` in conftest)."""


async def enqueue(db: asyncpg.Connection, *entries: dict[str, Any], project: str = PROJECT) -> list[int]:
    return await sql_calls.enqueue(db, project, *entries)


async def claim(db: asyncpg.Connection, n: int = 1) -> list[asyncpg.Record]:
    return await sql_calls.claim(db, PROJECT, n)


async def counted(db: asyncpg.Connection) -> dict[tuple[str, str], int]:
    rows = await db.fetch(
        "SELECT p.name, c.status, c.n FROM wn_job_counts() c JOIN projects p ON p.id = c.project_id"
    )
    return {(r["name"], r["status"]): int(r["n"]) for r in rows}


async def grouped(db: asyncpg.Connection) -> dict[tuple[str, str], int]:
    rows = await db.fetch(
        "SELECT p.name, j.status, count(*) AS n FROM jobs j JOIN projects p ON p.id = j.project_id "
        "GROUP BY p.name, j.status"
    )
    return {(r["name"], r["status"]): int(r["n"]) for r in rows}


async def same(db: asyncpg.Connection, expected: dict[str, int] | None = None) -> None:
    """The counters equal a GROUP BY over jobs (and, when given, this project's counts are these)."""
    have = await counted(db)
    assert have == await grouped(db)
    if expected is not None:
        assert {s: n for (p, s), n in have.items() if p == PROJECT} == expected


async def test_inserts_of_every_kind_are_counted(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO projects (name) VALUES ('jc-other')")
    await enqueue(db, *({"name": f"a{i}"} for i in range(5)))
    await enqueue(db, {"name": "up"}, {"name": "down", "dep_idx": [1]})
    await enqueue(db, *({"name": f"o{i}"} for i in range(3)), project="jc-other")
    # Rows written straight into the table count as well (what the benchmarks' seeding does).
    await db.execute(
        "INSERT INTO jobs (project_id, task_id, name, status) "
        "SELECT p.id, t.id, 'done-' || g, 'COMPLETED' FROM projects p JOIN tasks t ON t.project_id = p.id, "
        "generate_series(1, 40) g WHERE p.name = $1",
        PROJECT,
    )
    await same(db, {"PENDING": 7, "COMPLETED": 40})
    assert (await counted(db))[("jc-other", "PENDING")] == 3


async def test_claim_complete_fail_retry_and_cancel(db: asyncpg.Connection) -> None:
    ids = await enqueue(
        db,
        {"name": "ok"},
        {"name": "flaky", "max_attempts": 2},
        {"name": "bad"},
        {"name": "queued"},
        {"name": "running"},
    )
    ok, flaky, bad, queued, running = ids
    got = await claim(db, 5)
    attempt = {r["id"]: r["attempt"] for r in got}
    await same(db, {"RUNNING": 5})
    await end(db, {"id": ok, "attempt": attempt[ok], "outcome": "COMPLETED", "exit_code": 0})
    await end(db, {"id": flaky, "attempt": attempt[flaky], "outcome": "FAILED", "exit_code": 1})
    await end(db, {"id": bad, "attempt": attempt[bad], "outcome": "FAILED", "exit_code": 1})
    # A failure with attempts left goes back to PENDING; the last one is FAILED.
    await same(db, {"RUNNING": 2, "COMPLETED": 1, "PENDING": 1, "FAILED": 1})
    assert await db.fetchval("SELECT wn_cancel($1, 'no')", queued) == "RUNNING"  # asked to stop
    await end(db, {"id": queued, "attempt": attempt[queued], "outcome": "CANCELLED"})
    await same(db, {"RUNNING": 1, "COMPLETED": 1, "PENDING": 1, "FAILED": 1, "CANCELLED": 1})
    assert await db.fetchval("SELECT wn_cancel($1, 'no')", flaky) == "CANCELLED"  # a pending one
    assert await db.fetchval("SELECT wn_retry($1)", bad) == 1
    await same(db, {"RUNNING": 1, "COMPLETED": 1, "PENDING": 1, "CANCELLED": 2})
    # A heartbeat's update (no status changes) leaves the counts as they are.
    before = await db.fetchval("SELECT count(*) FROM job_counts")
    await db.execute("UPDATE jobs SET lease_expires_at = now() + interval '1 minute' WHERE id = $1", running)
    assert await db.fetchval("SELECT count(*) FROM job_counts") == before
    await same(db)


async def test_dependants_blocked_then_released_and_deleted(db: asyncpg.Connection) -> None:
    up, down, last = await enqueue(
        db, {"name": "up"}, {"name": "down", "dep_idx": [1]}, {"name": "last", "dep_idx": [2]}
    )
    (got,) = await claim(db)
    assert got["id"] == up
    await end(db, {"id": up, "attempt": got["attempt"], "outcome": "FAILED", "exit_code": 2})
    await same(db, {"FAILED": 1, "BLOCKED": 2})
    await db.fetchval("SELECT wn_retry($1)", up)  # releases what it blocked
    await same(db, {"PENDING": 3})
    await db.execute("DELETE FROM jobs WHERE id = ANY ($1::bigint[])", [down, last])
    await same(db, {"PENDING": 1})


async def test_a_deleted_project_leaves_no_counts(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO projects (name) VALUES ('jc-gone')")
    await enqueue(db, *({"name": f"g{i}"} for i in range(4)), project="jc-gone")
    await enqueue(db, {"name": "stays"})
    assert (await counted(db))[("jc-gone", "PENDING")] == 4
    await db.execute("DELETE FROM projects WHERE name = 'jc-gone'")
    assert (
        await db.fetchval(
            "SELECT count(*) FROM wn_job_counts() c WHERE NOT EXISTS "
            "(SELECT 1 FROM projects p WHERE p.id = c.project_id)"
        )
        == 0
    )
    await same(db, {"PENDING": 1})


async def test_folding_keeps_the_sums_and_the_table_small(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a"})
    await db.execute("SELECT setseed(0.25)")  # the fold's draw, made repeatable
    for i in range(2_000):
        status = "RUNNING" if i % 2 == 0 else "PENDING"
        await db.execute("UPDATE jobs SET status = $2 WHERE id = $1", a, status)
    # 2,000 statements each added two rows; the folds kept a few hundred at most.
    assert await db.fetchval("SELECT count(*) FROM job_counts") < 600
    await same(db, {"PENDING": 1})


async def test_truncate_empties_the_counts(db: asyncpg.Connection) -> None:
    await enqueue(db, {"name": "a"}, {"name": "b"})
    await db.execute("TRUNCATE jobs CASCADE")
    assert await counted(db) == {}
