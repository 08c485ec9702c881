"""Preemptions and checkpoints in the state machine, tested in SQL (each test in a transaction that
is rolled back; leases are backdated and the reaper called directly):

* a preempted attempt goes back to PENDING without using an attempt, at most ``max_preempted``
  times (N allows N requeues: the next preemption fails the job "preempted N+1 times");
* ``attempts_used`` (attempt - attempt_base) counts only the attempts that counted against
  ``max_attempts``, while ``attempt`` grows at every hand-out;
* a checkpoint named by the current attempt becomes the job's, an artifact of that attempt and a
  field of its history row; the next claim carries it, with ``resume`` after PREEMPTED or LOST.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from whatsnext.api.server.sql import S

PROJECT = "pre"
"""The project of these tests (in a database of their own: ``migrated`` and ``db`` in conftest)."""


async def enqueue(db: asyncpg.Connection, *entries: dict[str, Any]) -> list[int]:
    batch = [{"task": "t", **e} for e in entries]
    return list(await db.fetchval("SELECT ids FROM wn_enqueue('pre', $1::jsonb)", json.dumps(batch)))


async def claim(db: asyncpg.Connection, worker: int | None = None) -> asyncpg.Record:
    (row,) = await db.fetch(
        "SELECT * FROM wn_claim('pre', $1, 'w', 100, 0, 100, 0, '{}', 1, 60, 300)", worker
    )
    return row


async def end(db: asyncpg.Connection, *changes: dict[str, Any]) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM wn_end_attempts($1::jsonb, 'test')", json.dumps(list(changes)))


async def shown(db: asyncpg.Connection, job_id: int) -> asyncpg.Record:
    """The job as GET /jobs/{id} shows it."""
    return await db.fetchrow("SELECT * FROM wn_job($1)", job_id)


async def history(db: asyncpg.Connection, job_id: int) -> list[tuple[str, str | None, str | None]]:
    rows = await db.fetch(S.job_events.text, *S.job_events.args(job_id=job_id))
    return [(r["status"], r["reason"], r["checkpoint"]) for r in rows]


async def artifacts(db: asyncpg.Connection, job_id: int) -> list[tuple[str, str, str, int | None]]:
    rows = await db.fetch(S.artifact_list.text, *S.artifact_list.args(job_id=job_id))
    return [(r["direction"], r["uri"], r["kind"], r["attempt"]) for r in rows if r["id"] is not None]


# ---------------------------------------------------------------- preemptions


async def test_max_preempted_n_allows_n_requeues_then_fails(db: asyncpg.Connection) -> None:
    a, b = await enqueue(db, {"name": "a", "max_attempts": 2}, {"name": "b", "dep_idx": [1]})
    assert ((await shown(db, a))["max_preempted"], (await shown(db, a))["preempted"]) == (10, 0)
    for n in range(1, 11):
        got = await claim(db)
        assert (got["id"], got["attempt"]) == (a, n)
        (res,) = await end(db, {"id": a, "attempt": n, "outcome": "PREEMPTED", "error": "preempted"})
        assert (res["code"], res["status"]) == (200, "PENDING")
        row = await shown(db, a)
        assert (row["preempted"], row["attempts_used"], row["attempt"]) == (n, 0, n)
    got = await claim(db)
    (res,) = await end(db, {"id": a, "attempt": 11, "outcome": "PREEMPTED", "error": "preempted"})
    assert (res["code"], res["status"]) == (200, "FAILED")
    row = await shown(db, a)
    assert (row["error"], row["preempted"], row["attempts_used"], row["attempt"]) == (
        "preempted 11 times",
        11,
        0,
        11,
    ), "the last preemption used no attempt either"
    assert (await shown(db, b))["status"] == "BLOCKED", "a job failed by preemptions blocks its dependants"
    reasons = [r for s, r, _ in await history(db, a) if s in ("PENDING", "FAILED") and r != "created"]
    assert reasons == ["preempted"] * 10 + ["preempted 11 times"]
    # The same report again (its answer was lost): 200, nothing changes.
    (again,) = await end(db, {"id": a, "attempt": 11, "outcome": "PREEMPTED"})
    assert (again["code"], again["status"]) == (200, "FAILED")
    # A retry gives fresh budgets: preemptions included.
    assert await db.fetchval("SELECT wn_retry($1, 'test')", a) == 2
    row = await shown(db, a)
    assert (row["status"], row["preempted"], row["attempts_used"]) == ("PENDING", 0, 0)


async def test_max_preempted_zero_fails_at_the_first_preemption(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a", "max_preempted": 0})
    await claim(db)
    (res,) = await end(db, {"id": a, "attempt": 1, "outcome": "PREEMPTED"})
    assert res["status"] == "FAILED" and (await shown(db, a))["error"] == "preempted 1 times"


async def test_max_preempted_comes_from_the_task_unless_the_job_gives_its_own(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO tasks (project_id, name, max_preempted) SELECT id, 'spot', 2 FROM projects WHERE name = 'pre'"
    )
    a, b = await enqueue(db, {"name": "a", "task": "spot"}, {"name": "b", "task": "spot", "max_preempted": 5})
    c, d = await enqueue(
        db, {"name": "c", "task": "spot", "dep_ids": [a]}, {"name": "d", "task": "spot", "max_preempted": 0}
    )
    assert [(await shown(db, j))["max_preempted"] for j in (a, b, c, d)] == [2, 5, 2, 0]


async def test_preemptions_and_failures_are_counted_apart(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a", "max_attempts": 2, "max_preempted": 3})
    await claim(db)
    assert (await shown(db, a))["attempts_used"] == 1, "the running attempt counts"
    await end(db, {"id": a, "attempt": 1, "outcome": "FAILED", "error": "exit code 1"})
    assert (await shown(db, a))["attempts_used"] == 1
    await claim(db)
    await end(db, {"id": a, "attempt": 2, "outcome": "PREEMPTED"})
    await claim(db)
    await end(db, {"id": a, "attempt": 3, "outcome": "LOST", "error": "lease expired"})
    row = await shown(db, a)
    assert (row["attempt"], row["attempts_used"], row["preempted"], row["lost"]) == (3, 1, 1, 1)
    await claim(db)
    (res,) = await end(db, {"id": a, "attempt": 4, "outcome": "FAILED", "error": "exit code 1"})
    assert res["status"] == "FAILED", "the second failure of its own uses the second attempt"
    assert (await shown(db, a))["attempts_used"] == 2


async def test_a_cancel_request_wins_over_a_preemption_and_is_not_counted(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a"})
    await claim(db)
    assert await db.fetchval("SELECT wn_cancel($1, 'cancelled')", a) == "RUNNING"
    (res,) = await end(db, {"id": a, "attempt": 1, "outcome": "PREEMPTED"})
    assert res["status"] == "CANCELLED" and (await shown(db, a))["preempted"] == 0


# ---------------------------------------------------------------- checkpoints


async def test_a_checkpoint_is_kept_recorded_and_handed_to_a_resuming_attempt(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a"})
    first = await claim(db)
    assert (first["checkpoint"], first["resume"]) == (None, False), "a first attempt starts afresh"
    (res,) = await end(
        db,
        {
            "id": a,
            "attempt": 1,
            "outcome": "PREEMPTED",
            "error": "preempted",
            "checkpoint": "/ck/a/step-10.pt",
        },
    )
    assert res["code"] == 200
    assert (await shown(db, a))["checkpoint"] == "/ck/a/step-10.pt"
    assert await artifacts(db, a) == [("out", "/ck/a/step-10.pt", "checkpoint", 1)]
    assert (await history(db, a))[-1] == ("PENDING", "preempted", "/ck/a/step-10.pt")
    second = await claim(db)
    assert (second["attempt"], second["checkpoint"], second["resume"]) == (2, "/ck/a/step-10.pt", True)
    # A report without a checkpoint keeps the job's; a COMPLETED one may name a final checkpoint.
    (res,) = await end(db, {"id": a, "attempt": 2, "outcome": "COMPLETED", "checkpoint": "/ck/a/final.pt"})
    assert res["status"] == "COMPLETED"
    assert (await shown(db, a))["checkpoint"] == "/ck/a/final.pt"
    assert await artifacts(db, a) == [
        ("out", "/ck/a/step-10.pt", "checkpoint", 1),
        ("out", "/ck/a/final.pt", "checkpoint", 2),
    ]


async def test_a_lost_attempt_resumes_from_the_checkpoint_it_inherited(db: asyncpg.Connection) -> None:
    worker = await db.fetchval("INSERT INTO workers (name) VALUES ('w') RETURNING id")
    (a,) = await enqueue(db, {"name": "a"})
    await claim(db, worker)
    await end(db, {"id": a, "attempt": 1, "outcome": "PREEMPTED", "checkpoint": "s3://bucket/a/1"})
    await claim(db, worker)
    # The lease runs out (backdated) and the reaper ends the attempt LOST.
    await db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", a)
    assert await db.fetchval("SELECT wn_reap(100)") == 1
    third = await claim(db, worker)
    assert (third["attempt"], third["checkpoint"], third["resume"]) == (3, "s3://bucket/a/1", True)
    # A lost attempt without a checkpoint of its own still resumes (from nothing).
    (b,) = await enqueue(db, {"name": "b"})
    await claim(db, worker)
    await end(db, {"id": b, "attempt": 1, "outcome": "LOST", "error": "lease expired"})
    again = await claim(db, worker)
    assert (again["id"], again["checkpoint"], again["resume"]) == (b, None, True)


async def test_after_a_failed_attempt_the_checkpoint_is_handed_but_not_resumed(
    db: asyncpg.Connection,
) -> None:
    (a,) = await enqueue(db, {"name": "a", "max_attempts": 3})
    await claim(db)
    await end(
        db, {"id": a, "attempt": 1, "outcome": "FAILED", "error": "exit code 2", "checkpoint": "/ck/a/1"}
    )
    retry = await claim(db)
    assert (retry["checkpoint"], retry["resume"]) == ("/ck/a/1", False)
    # A manual retry of a job that failed for good: the same.
    await end(db, {"id": a, "attempt": 2, "outcome": "FAILED", "retryable": False})
    assert await db.fetchval("SELECT wn_retry($1, 'test')", a) == 1
    again = await claim(db)
    assert (again["attempt"], again["checkpoint"], again["resume"]) == (3, "/ck/a/1", False)


async def test_an_older_attempts_report_never_touches_the_checkpoint(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a"})
    await claim(db)
    await end(db, {"id": a, "attempt": 1, "outcome": "PREEMPTED", "checkpoint": "/ck/a/1"})
    await claim(db)
    # Attempt 1 again, as another outcome or in a batch beside the current attempt's report.
    rows = await end(
        db,
        {"id": a, "attempt": 1, "outcome": "COMPLETED", "checkpoint": "/ck/a/stale"},
        {"id": a, "attempt": 2, "outcome": "PREEMPTED", "checkpoint": "/ck/a/2"},
        {"id": a, "attempt": 1, "outcome": "PREEMPTED", "checkpoint": "/ck/a/stale"},
    )
    assert [(r["code"], r["status"]) for r in rows] == [(409, "PENDING"), (200, "PENDING"), (409, "PENDING")]
    assert (await shown(db, a))["checkpoint"] == "/ck/a/2"
    assert [uri for _, uri, _, _ in await artifacts(db, a)] == ["/ck/a/1", "/ck/a/2"]
    # A repeated report of an ended attempt (200) records nothing either.
    (again,) = await end(db, {"id": a, "attempt": 2, "outcome": "PREEMPTED", "checkpoint": "/ck/a/late"})
    assert again["code"] == 200 and (await shown(db, a))["checkpoint"] == "/ck/a/2"
    assert [c for _, _, c in await history(db, a) if c] == ["/ck/a/1", "/ck/a/2"]


async def test_a_checkpoint_named_again_or_declared_keeps_one_artifact(db: asyncpg.Connection) -> None:
    (a,) = await enqueue(db, {"name": "a", "outputs": ["/ck/a/latest"]})
    await claim(db)
    await end(db, {"id": a, "attempt": 1, "outcome": "PREEMPTED", "checkpoint": "/ck/a/latest"})
    await claim(db)
    # The worker records the declared output of attempt 2 (the same path), then the report names it.
    (rec,) = await db.fetch(
        "SELECT * FROM wn_record_artifacts($1, $2::jsonb, 2)",
        a,
        json.dumps([{"direction": "out", "uri": "/ck/a/latest", "size": 7}]),
    )
    assert rec["code"] == 200
    assert await artifacts(db, a) == [("out", "/ck/a/latest", "checkpoint", 2)]
    await end(db, {"id": a, "attempt": 2, "outcome": "COMPLETED", "checkpoint": "/ck/a/latest"})
    rows = await db.fetch(S.artifact_list.text, *S.artifact_list.args(job_id=a))
    assert [(r["uri"], r["kind"], r["attempt"], r["size"]) for r in rows] == [
        ("/ck/a/latest", "checkpoint", 2, 7)
    ]
