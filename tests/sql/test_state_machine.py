"""The state machine of a running job, tested in SQL: every transition, each in a transaction that
is rolled back (no HTTP, no waiting: leases are backdated and the reaper is called directly)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from whatsnext.api.server.notify import JobsEvent
from whatsnext.api.server.sql import S

PROJECT = "sm"
"""The project of these tests (in a database of their own: ``migrated`` and ``db`` in conftest)."""


async def enqueue(db: asyncpg.Connection, *entries: dict[str, Any]) -> list[int]:
    batch = [{"task": "t", **e} for e in entries]
    return list(await db.fetchval("SELECT ids FROM wn_enqueue('sm', $1::jsonb)", json.dumps(batch)))


async def claim(db: asyncpg.Connection, n: int = 1, worker: int | None = None) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM wn_claim('sm', $1, 'w', 100, 0, 100, 0, '{}', $2, 60, 300)", worker, n
    )


async def end(db: asyncpg.Connection, *changes: dict[str, Any]) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM wn_end_attempts($1::jsonb, 'test')", json.dumps(list(changes)))


async def job(db: asyncpg.Connection, job_id: int) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)


async def history(db: asyncpg.Connection, job_id: int) -> list[tuple[str, str | None]]:
    """The job's history as the API answers it (its creation, then every status change)."""
    rows = await db.fetch(S.job_events.text, *S.job_events.args(job_id=job_id))
    return [(r["status"], r["reason"]) for r in rows]


async def test_completed_releases_dependants(db: asyncpg.Connection) -> None:
    a, b = await enqueue(db, {"name": "a"}, {"name": "b", "dep_idx": [1]})
    assert (await job(db, b))["unmet_deps"] == 1 and (await job(db, b))["eligible_at"] is None
    (got,) = await claim(db, 5)
    assert got["id"] == a and got["attempt"] == 1
    (res,) = await end(
        db, {"id": a, "attempt": 1, "outcome": "COMPLETED", "exit_code": 0, "result": {"x": 1}}
    )
    assert (res["code"], res["status"]) == (200, "COMPLETED")
    done, dependant = await job(db, a), await job(db, b)
    assert (
        done["result"] == '{"x": 1}'
        and done["finished_at"] is not None
        and done["last_outcome"] == "COMPLETED"
    )
    assert dependant["unmet_deps"] == 0 and dependant["eligible_at"] is not None
    assert await history(db, a) == [("PENDING", "created"), ("RUNNING", "w"), ("COMPLETED", None)]


async def test_failure_retries_with_delay_then_fails_and_blocks(db: asyncpg.Connection) -> None:
    a, b = await enqueue(
        db, {"name": "a", "max_attempts": 2, "retry_delay": 30}, {"name": "b", "dep_idx": [1]}
    )
    await claim(db)
    (res,) = await end(
        db, {"id": a, "attempt": 1, "outcome": "FAILED", "exit_code": 3, "error": "exit code 3"}
    )
    assert (res["code"], res["status"]) == (200, "PENDING")
    row = await job(db, a)
    delay = await db.fetchval("SELECT extract(epoch FROM available_at - now()) FROM jobs WHERE id = $1", a)
    assert 29 < delay <= 30 and row["error"] == "exit code 3"
    assert await claim(db) == [], "a job waiting out its retry delay is not handed out"
    await db.execute("UPDATE jobs SET available_at = now() WHERE id = $1", a)
    (again,) = await claim(db)
    assert again["attempt"] == 2
    (res,) = await end(
        db, {"id": a, "attempt": 2, "outcome": "FAILED", "exit_code": 3, "error": "exit code 3"}
    )
    assert (res["code"], res["status"]) == (200, "FAILED")
    assert (await job(db, b))["status"] == "BLOCKED"
    assert (await job(db, b))["error"] == f"dependency {a} (a) failed"


async def test_not_retryable_fails_at_once(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a", "max_attempts": 5})
    await claim(db)
    (res,) = await end(
        db, {"id": a, "attempt": 1, "outcome": "FAILED", "error": "missing parameter", "retryable": False}
    )
    assert res["status"] == "FAILED"


async def test_cancel_request_wins_over_failure_and_loss(db: asyncpg.Connection) -> None:
    a, b = await enqueue(db, {"name": "a", "max_attempts": 3}, {"name": "b"})
    await claim(db, 2)
    for job_id in (a, b):
        assert await db.fetchval("SELECT wn_cancel($1, 'cancelled')", job_id) == "RUNNING"
    (res,) = await end(db, {"id": a, "attempt": 1, "outcome": "FAILED", "error": "killed by signal 15"})
    assert res["status"] == "CANCELLED"
    (res,) = await end(db, {"id": b, "attempt": 1, "outcome": "LOST"})
    assert res["status"] == "CANCELLED"


async def test_preempted_goes_back_without_using_an_attempt(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a"})
    await claim(db)
    (res,) = await end(db, {"id": a, "attempt": 1, "outcome": "PREEMPTED", "error": "preempted"})
    assert res["status"] == "PENDING"
    (again,) = await claim(db)
    (res,) = await end(db, {"id": a, "attempt": again["attempt"], "outcome": "FAILED"})
    assert res["status"] == "FAILED", "the one attempt of max_attempts 1 was the second hand-out"
    assert again["attempt"] == 2


async def test_lost_work_is_requeued_until_max_lost(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a", "max_lost": 2})
    for attempt in (1, 2):
        (got,) = await claim(db)
        assert got["attempt"] == attempt
        (res,) = await end(db, {"id": a, "attempt": attempt, "outcome": "LOST", "error": "lease expired"})
        assert res["status"] == "PENDING"
    row = await job(db, a)
    assert row["lost"] == 2 and row["attempt"] - row["attempt_base"] == 0, "lost runs use no attempt"
    (got,) = await claim(db)
    (res,) = await end(db, {"id": a, "attempt": 3, "outcome": "LOST", "error": "lease expired"})
    assert res["status"] == "FAILED"
    assert (await job(db, a))["error"] == "worker lost: lease expired"
    reasons = [r for s, r in await history(db, a) if s in ("PENDING", "FAILED") and r != "created"]
    assert reasons == [
        "worker lost (lease expired): requeued, 1 of 2",
        "worker lost (lease expired): requeued, 2 of 2",
        "worker lost (lease expired): lost 3 times",
    ]


async def test_default_settings_survive_a_lost_worker(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a"})
    row = await job(db, a)
    assert (row["max_attempts"], row["max_lost"]) == (1, 3)
    await claim(db)
    await end(db, {"id": a, "attempt": 1, "outcome": "LOST"})
    (got,) = await claim(db)
    (res,) = await end(db, {"id": a, "attempt": got["attempt"], "outcome": "COMPLETED"})
    assert res["status"] == "COMPLETED"


async def test_reports_are_idempotent_and_fenced(db: asyncpg.Connection) -> None:
    a, b = await enqueue(db, {"name": "a"}, {"name": "b", "max_attempts": 2})
    await claim(db, 2)
    first = await end(db, {"id": a, "attempt": 1, "outcome": "COMPLETED"})
    again = await end(db, {"id": a, "attempt": 1, "outcome": "COMPLETED"})
    assert [(r["code"], r["status"]) for r in (*first, *again)] == [(200, "COMPLETED")] * 2
    assert [s for s, _ in await history(db, a)].count("COMPLETED") == 1, "the repeat changed nothing"
    (other,) = await end(db, {"id": a, "attempt": 1, "outcome": "FAILED"})
    assert other["code"] == 409 and "already ended as COMPLETED" in other["message"]
    # A failure that was retried: the repeated report answers the job's status now.
    await end(db, {"id": b, "attempt": 1, "outcome": "FAILED"})
    (res,) = await end(db, {"id": b, "attempt": 1, "outcome": "FAILED"})
    assert (res["code"], res["status"]) == (200, "PENDING")
    await claim(db)
    (stale,) = await end(db, {"id": b, "attempt": 1, "outcome": "FAILED"})
    assert stale["code"] == 409 and "stale report" in stale["message"]
    (missing,) = await end(db, {"id": 2**62, "attempt": 1, "outcome": "COMPLETED"})
    assert missing["code"] == 404


async def test_one_bad_entry_does_not_hold_back_a_batch(db: asyncpg.Connection) -> None:
    a, b, c = await enqueue(db, {"name": "a"}, {"name": "b"}, {"name": "c"})
    await claim(db, 3)
    rows = await end(
        db,
        {"id": c, "attempt": 1, "outcome": "COMPLETED"},
        {"id": a, "attempt": 7, "outcome": "COMPLETED"},
        {"id": b, "attempt": 1, "outcome": "FAILED"},
        {"id": c, "attempt": 1, "outcome": "COMPLETED"},
    )
    assert [(r["ord"], r["id"], r["code"], r["status"]) for r in rows] == [
        (1, c, 200, "COMPLETED"),
        (2, a, 409, "RUNNING"),
        (3, b, 200, "FAILED"),
        (4, c, 200, "COMPLETED"),
    ]


async def test_reaper_heartbeat_and_deregister_end_attempts_as_lost(db: asyncpg.Connection) -> None:
    worker = await db.fetchval("INSERT INTO workers (name) VALUES ('w') RETURNING id")
    a, b, c = await enqueue(db, {"name": "a"}, {"name": "b"}, {"name": "c"})
    await claim(db, 3, worker)
    # The reaper: a lease that ran out (backdated, not waited for).
    await db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", a)
    assert await db.fetchval("SELECT wn_reap(100)") == 1
    row = await job(db, a)
    assert (row["status"], row["lost"], row["error"]) == ("PENDING", 1, "worker lost: lease expired")
    # Heartbeat reconciliation: b was handed out but the worker never received it.
    await db.execute("UPDATE jobs SET started_at = now() - interval '1 minute' WHERE id = $1", b)
    assert await db.fetchval("SELECT wn_heartbeat($1, 60, $2, 5)", worker, [c]) == []
    assert (await job(db, b))["error"] == "worker lost: claimed but never received by its worker"
    # Deregister: what it still holds goes back as lost.
    assert await db.fetchval("SELECT wn_deregister($1)", worker) == 1
    assert [(await job(db, j))["status"] for j in (a, b, c)] == ["PENDING"] * 3
    assert [(await job(db, j))["attempt_base"] for j in (a, b, c)] == [1, 1, 1]


async def test_lost_external_handles_reach_the_next_worker(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a"})
    await claim(db)
    (res,) = await db.fetch("SELECT * FROM wn_job_started($1, 1, 'slurm:4242', '{0,1}')", a)
    assert res["code"] == 200
    assert (await job(db, a))["gpus"] == [0, 1]
    (stale,) = await db.fetch("SELECT * FROM wn_job_started($1, 9, 'slurm:1', NULL)", a)
    assert stale["code"] == 409
    await end(db, {"id": a, "attempt": 1, "outcome": "LOST"})
    (got,) = await claim(db)
    assert got["previous_external_ids"] == ["slurm:4242"]
    await db.fetch("SELECT * FROM wn_job_started($1, 2, 'slurm:4343', NULL)", a)
    row = await job(db, a)
    assert row["external_id"] == "slurm:4343" and row["lost_external_ids"] == []


async def test_wake_ups_come_from_one_helper(migrated: str) -> None:
    """Queueing, reaping and cancelling notify through wn_notify_jobs, with what a waiting claim
    needs to know whether it could take the job (committed, so that LISTEN hears them)."""
    listener = await asyncpg.connect(migrated)
    conn = await asyncpg.connect(migrated)
    heard: asyncio.Queue[JobsEvent | None] = asyncio.Queue()
    await listener.add_listener("whatsnext_jobs", lambda *args: heard.put_nowait(JobsEvent.parse(args[3])))
    try:
        project = await conn.fetchval("INSERT INTO projects (name) VALUES ('sm-wake') RETURNING id")
        batch = [
            {"name": "a", "task": "t", "required_cpu": 2, "required_tags": ["gpu-node"]},
            {"name": "b", "task": "t", "required_cpu": 4, "required_tags": ["gpu-node"]},
        ]
        ids = await conn.fetchval("SELECT ids FROM wn_enqueue('sm-wake', $1::jsonb)", json.dumps(batch))
        assert await asyncio.wait_for(heard.get(), 5) == JobsEvent(
            project, 2, f"n{ids[0]}", cpu=2, gpus=0, tags=frozenset({"gpu-node"})
        )
        await conn.fetch("SELECT * FROM wn_claim('sm-wake', NULL, 'w', 2, 0, 2, 0, '{gpu-node}', 1, 60, 300)")
        await conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1s' WHERE id = $1", ids[0])
        assert await conn.fetchval("SELECT wn_reap(10)") == 1
        event = await asyncio.wait_for(heard.get(), 5)
        assert event is not None and (event.project_id, event.count, event.cpu) == (project, 1, 2)
        assert await conn.fetchval("SELECT wn_cancel($1, 'no')", ids[1]) == "CANCELLED"
        event = await asyncio.wait_for(heard.get(), 5)
        assert event is not None and event.finished, "a cancel wakes workers waiting to exit"
    finally:
        await conn.execute("DELETE FROM projects WHERE name = 'sm-wake'")
        await listener.close()
        await conn.close()


async def test_lines_past_retention_are_never_written(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "chatty"})
    await claim(db)
    (res,) = await db.fetch(
        "SELECT * FROM wn_append_logs($1, 1, $2::text[], 5)", a, [f"line {i}" for i in range(1, 13)]
    )
    assert (res["code"], res["appended"], res["dropped"]) == (200, 12, 7)
    rows = await db.fetch("SELECT seq, line FROM job_logs WHERE job_id = $1 ORDER BY id", a)
    assert [(r["seq"], r["line"]) for r in rows] == [(i, f"line {i}") for i in range(8, 13)]
    (res,) = await db.fetch("SELECT * FROM wn_append_logs($1, 1, $2::text[], 5)", a, ["line 13", "line 14"])
    assert res["dropped"] == 9
    seqs = [r["seq"] for r in await db.fetch("SELECT seq FROM job_logs WHERE job_id = $1 ORDER BY id", a)]
    assert seqs == [10, 11, 12, 13, 14]
