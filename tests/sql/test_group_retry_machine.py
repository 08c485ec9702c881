"""Rerunning what failed in a group, in SQL (wn_retry_group, wn_rerun_downstream): the kinds a
retry chooses (failed, lost, cancelled), the ids it answers, and the dependants that already ran
over the old results put back to wait for the new run. Each test in a transaction rolled back;
leases are backdated and the reaper called directly."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from whatsnext.api.server.sql import S

PROJECT = "gr"
"""The project of these tests (in a database of their own: ``migrated`` and ``db`` in conftest)."""

FINAL = ("COMPLETED", "FAILED", "CANCELLED")


async def group(db: asyncpg.Connection, name: str = "hp1") -> int:
    return int(
        await db.fetchval(
            "INSERT INTO job_groups (project_id, name) VALUES (wn_project_id('gr'), $1) RETURNING id", name
        )
    )


async def enqueue(db: asyncpg.Connection, *entries: dict[str, Any]) -> list[int]:
    batch = [{"task": "t", **e} for e in entries]
    return list(await db.fetchval("SELECT ids FROM wn_enqueue('gr', $1::jsonb)", json.dumps(batch)))


async def run(db: asyncpg.Connection, outcomes: dict[int, str]) -> None:
    """Claim every eligible job and end each as ``outcomes`` says (all of them must be there)."""
    claimed = await db.fetch("SELECT * FROM wn_claim('gr', NULL, 'w', 100, 0, 100, 0, '{}', 100, 60, 300)")
    assert sorted(r["id"] for r in claimed) == sorted(outcomes), "the jobs eligible now"
    ends = [{"id": r["id"], "attempt": r["attempt"], "outcome": outcomes[r["id"]]} for r in claimed]
    for e in ends:
        if e["outcome"] == "FAILED":
            e["exit_code"], e["error"] = 1, "exit code 1"
    await db.fetch("SELECT * FROM wn_end_attempts($1::jsonb, 'test')", json.dumps(ends))


async def lose(db: asyncpg.Connection, job_id: int) -> None:
    """Lose a job's attempt for good (max_lost 0): its lease runs out (backdated) and the reaper
    ends it."""
    claimed = await db.fetch("SELECT * FROM wn_claim('gr', NULL, 'w', 100, 0, 100, 0, '{}', 1, 60, 300)")
    assert [r["id"] for r in claimed] == [job_id]
    await db.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", job_id)
    assert await db.fetchval("SELECT wn_reap(100)") == 1


async def retry(db: asyncpg.Connection, group_id: int, **kinds: bool) -> tuple[list[int], list[int]]:
    args = {"failed": False, "cancelled": False, "lost": False, "downstream": False, **kinds}
    row = await db.fetchrow(S.group_retry.text, *S.group_retry.args(group_id=group_id, actor="me", **args))
    assert row is not None
    return list(row["ids"]), list(row["downstream"])


async def status(db: asyncpg.Connection, *ids: int) -> list[str]:
    rows = await db.fetch("SELECT id, status FROM jobs WHERE id = ANY ($1)", list(ids))
    by_id = {r["id"]: r["status"] for r in rows}
    return [by_id[i] for i in ids]


async def job(db: asyncpg.Connection, job_id: int) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)


async def history(db: asyncpg.Connection, job_id: int) -> list[tuple[str, str | None, str | None]]:
    rows = await db.fetch(
        "SELECT status, reason, actor FROM job_events WHERE job_id = $1 ORDER BY id", job_id
    )
    return [(r["status"], r["reason"], r["actor"]) for r in rows]


async def sweep(db: asyncpg.Connection) -> tuple[int, dict[str, int]]:
    """A group hp1 of six: two complete, two fail (exit 1), one is cancelled, one is lost."""
    g = await group(db)
    ids = await enqueue(
        db,
        *({"name": f"ok{i}", "group_id": g} for i in range(2)),
        *({"name": f"bad{i}", "group_id": g} for i in range(2)),
        {"name": "cx", "group_id": g},
        {"name": "gone", "group_id": g, "max_lost": 0, "priority": 9},
    )
    names = dict(zip(["ok0", "ok1", "bad0", "bad1", "cx", "gone"], ids, strict=True))
    await lose(db, names["gone"])
    assert await db.fetchval("SELECT wn_cancel($1, 'not needed', 'me')", names["cx"]) == "CANCELLED"
    await run(
        db,
        {
            names["ok0"]: "COMPLETED",
            names["ok1"]: "COMPLETED",
            names["bad0"]: "FAILED",
            names["bad1"]: "FAILED",
        },
    )
    gone = await job(db, names["gone"])
    assert (gone["status"], gone["last_outcome"]) == ("FAILED", "LOST")
    assert (await job(db, names["bad0"]))["last_outcome"] == "FAILED"
    return g, names


async def test_each_kind_is_chosen_on_its_own(db: asyncpg.Connection) -> None:
    g, n = await sweep(db)
    bad0, bad1, cx, gone = n["bad0"], n["bad1"], n["cx"], n["gone"]
    assert await retry(db, g, failed=True) == ([bad0, bad1], [])
    assert await status(db, bad0, bad1, cx, gone) == ["PENDING", "PENDING", "CANCELLED", "FAILED"]
    assert await retry(db, g, failed=True) == ([], []), "nothing failed is left"
    assert await retry(db, g, lost=True) == ([gone], [])
    row = await job(db, gone)
    assert (row["status"], row["lost"], row["attempt_base"], row["error"]) == (
        "PENDING",
        0,
        row["attempt"],
        None,
    )
    assert row["eligible_at"] is not None
    assert await retry(db, g, cancelled=True) == ([cx], [])
    assert await status(db, n["ok0"], n["ok1"]) == ["COMPLETED", "COMPLETED"]
    assert (await history(db, cx))[-1] == ("PENDING", "retried", "me")


async def test_kinds_combine(db: asyncpg.Connection) -> None:
    g, n = await sweep(db)
    assert await retry(db, g, lost=True, cancelled=True) == (sorted([n["cx"], n["gone"]]), [])
    assert await status(db, n["bad0"], n["bad1"]) == ["FAILED", "FAILED"]


async def test_by_default_every_failed_lost_and_cancelled_job_goes_back(db: asyncpg.Connection) -> None:
    g, n = await sweep(db)
    got = await db.fetchrow("SELECT * FROM wn_retry_group($1, 'me')", g)
    assert list(got["ids"]) == sorted([n["bad0"], n["bad1"], n["cx"], n["gone"]])
    assert list(got["downstream"]) == []


async def test_what_a_rerun_job_blocked_goes_back_with_it(db: asyncpg.Connection) -> None:
    g = await group(db)
    bad, ok = await enqueue(db, {"name": "bad", "group_id": g}, {"name": "ok", "group_id": g})
    (child,) = await enqueue(db, {"name": "child", "dep_ids": [bad]})
    await run(db, {bad: "FAILED", ok: "COMPLETED"})
    assert await status(db, child) == ["BLOCKED"]
    assert await retry(db, g, failed=True) == ([bad, child], [])
    row = await job(db, child)
    assert (row["status"], row["unmet_deps"], row["eligible_at"]) == ("PENDING", 1, None)


async def test_downstream_reruns_what_ran_over_the_old_results(db: asyncpg.Connection) -> None:
    g = await group(db)
    bad, ok = await enqueue(db, {"name": "bad", "group_id": g}, {"name": "ok", "group_id": g})
    # The aggregate runs once the whole group is final; report runs after the aggregate.
    (agg,) = await enqueue(db, {"name": "agg", "dep_groups": ["hp1"], "dep_groups_on": ["finished"]})
    (report,) = await enqueue(db, {"name": "report", "dep_ids": [agg]})
    await run(db, {bad: "FAILED", ok: "COMPLETED"})
    await run(db, {agg: "COMPLETED"})
    await run(db, {report: "COMPLETED"})
    before = await job(db, agg)

    # Without --downstream, the aggregate is left as it ran.
    assert await retry(db, g, failed=True) == ([bad], [])
    assert await status(db, agg, report) == ["COMPLETED", "COMPLETED"]
    await run(db, {bad: "FAILED"})

    # With it, the aggregate and what ran after it wait for the new run.
    assert await retry(db, g, failed=True, downstream=True) == ([bad, agg, report], [agg, report])
    a, r = await job(db, agg), await job(db, report)
    assert (a["status"], a["unmet_deps"], a["eligible_at"], a["finished_at"]) == ("PENDING", 1, None, None)
    assert (r["status"], r["unmet_deps"], r["eligible_at"]) == ("PENDING", 1, None)
    assert a["attempt_base"] == a["attempt"] == before["attempt"] and a["lost"] == 0
    assert (await history(db, agg))[-1] == ("PENDING", f"rerun: upstream {bad} retried", "me")
    assert (await history(db, report))[-1] == ("PENDING", f"rerun: upstream {agg} retried", "me")
    assert await status(db, ok) == ["COMPLETED"], "a member that completed is not rerun"

    # The rerun goes in order: the failed member, then the aggregate, then the report.
    await run(db, {bad: "COMPLETED"})
    await run(db, {agg: "COMPLETED"})
    await run(db, {report: "COMPLETED"})
    assert (await job(db, agg))["attempt"] == before["attempt"] + 1


async def test_downstream_leaves_what_has_not_run_waiting_for_the_rerun(db: asyncpg.Connection) -> None:
    """A dependant of a rerun aggregate that has not run yet (it also waits for a running job)
    waits for the aggregate again; one that runs now is left to finish."""
    g = await group(db)
    (bad,) = await enqueue(db, {"name": "bad", "group_id": g})
    (agg,) = await enqueue(db, {"name": "agg", "dep_ids": [bad], "dep_ids_on": ["finished"]})
    await run(db, {bad: "FAILED"})
    await run(db, {agg: "COMPLETED"})
    slow, both, busy = await enqueue(
        db,
        {"name": "slow"},
        {"name": "both", "dep_ids": [agg], "dep_idx": [1]},
        {"name": "busy", "dep_ids": [agg]},
    )
    claimed = await db.fetch("SELECT * FROM wn_claim('gr', NULL, 'w', 100, 0, 100, 0, '{}', 100, 60, 300)")
    assert sorted(r["id"] for r in claimed) == [slow, busy]
    assert (await job(db, both))["unmet_deps"] == 1, "it waits for slow only"

    assert await retry(db, g, failed=True, downstream=True) == ([bad, agg], [agg])
    assert (await job(db, both))["unmet_deps"] == 2, "it waits for the rerun aggregate again"
    assert await status(db, busy, both) == ["RUNNING", "PENDING"]


async def test_a_rerun_dependant_whose_condition_can_no_longer_be_met_is_blocked(
    db: asyncpg.Connection,
) -> None:
    """An alert that runs when a member fails ran; the member reruns and completes: the alert,
    put back to wait for it, will not run again."""
    g = await group(db)
    (bad,) = await enqueue(db, {"name": "bad", "group_id": g})
    (alert,) = await enqueue(db, {"name": "alert", "dep_ids": [bad], "dep_ids_on": ["failure"]})
    await run(db, {bad: "FAILED"})
    await run(db, {alert: "COMPLETED"})
    assert await retry(db, g, failed=True, downstream=True) == ([bad, alert], [alert])
    await run(db, {bad: "COMPLETED"})
    row = await job(db, alert)
    assert (row["status"], row["blocked_by"]) == ("BLOCKED", bad)
