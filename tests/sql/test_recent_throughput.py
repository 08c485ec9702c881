"""What the dashboard's overview says each project completed lately (``dash_completed_recently``):
the last hour while it holds fewer finished jobs than the sample, else the time the sample's jobs
took, exact for the window it names either way, and never more than the sample read."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from sql_calls import claim, end, enqueue

from whatsnext.api.server.sql import S

PROJECT = "throughput"
OTHER = "throughput-other"


async def finish(db: asyncpg.Connection, project: str, outcome: str, *seconds_ago: int) -> None:
    """Jobs of ``project`` run and ended with ``outcome``, one finished ``s`` seconds ago for each."""
    ids = await enqueue(db, project, *({"name": f"j{i}"} for i in range(len(seconds_ago))))
    claimed = await claim(db, project, len(ids))
    assert len(claimed) == len(ids)
    await end(db, *({"id": r["id"], "attempt": r["attempt"], "outcome": outcome} for r in claimed))
    for job_id, ago in zip(sorted(ids), seconds_ago, strict=True):
        await db.execute(
            "UPDATE jobs SET finished_at = now() - make_interval(secs => $2) WHERE id = $1", job_id, ago
        )


async def recent(
    db: asyncpg.Connection, sample: int, projects: list[int] | None = None
) -> tuple[dict[str, int], float]:
    """Completed jobs by project name, and the seconds the window covers."""
    query = S.dash_completed_recently
    rows = await db.fetch(query.text, *query.args(projects=projects, sample=sample))
    names = dict(await db.fetch("SELECT id, name FROM projects"))
    counts = {names[r["project_id"]]: r["completed"] for r in rows if r["project_id"] is not None}
    return counts, round(rows[0]["seconds"], 3)


async def rows_read(db: asyncpg.Connection, sample: int) -> int:
    """The most rows any scan of ``jobs`` gave in the query's plan (EXPLAIN ANALYZE)."""
    query = S.dash_completed_recently
    plan = json.loads(
        await db.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {query.text}", *query.args(projects=None, sample=sample)
        )
    )

    def scans(node: dict[str, Any]) -> list[int]:
        own = [int(node["Actual Rows"])] if node.get("Relation Name") == "jobs" else []
        return own + [n for child in node.get("Plans", []) for n in scans(child)]

    return max(scans(plan[0]["Plan"]))


async def test_the_last_hour_is_counted_while_it_holds_fewer_than_the_sample(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO projects (name) VALUES ($1)", OTHER)
    assert await recent(db, sample=1000) == ({}, 3600)  # nothing finished: one row all the same
    await finish(db, PROJECT, "COMPLETED", *range(0, 1500, 60))  # 25 in the last 25 minutes
    await finish(db, PROJECT, "COMPLETED", 7200, 3700)  # before the hour
    await finish(db, PROJECT, "FAILED", 30, 90)  # finished, not completed
    await finish(db, OTHER, "COMPLETED", 10, 20, 30)
    assert await recent(db, sample=1000) == ({PROJECT: 25, OTHER: 3}, 3600)
    other = await db.fetchval("SELECT id FROM projects WHERE name = $1", OTHER)
    assert await recent(db, sample=1000, projects=[other]) == ({OTHER: 3}, 3600)


async def test_beyond_the_sample_it_counts_the_time_the_last_jobs_took(db: asyncpg.Connection) -> None:
    await db.execute("INSERT INTO projects (name) VALUES ($1)", OTHER)
    await finish(db, PROJECT, "COMPLETED", *range(0, 1500, 60))  # one a minute
    await finish(db, OTHER, "FAILED", 30, 90, 150)
    # The last 10 finished: PROJECT's 7 from 0 to 360 s ago and OTHER's 3. The oldest of them
    # (360 s ago) starts the window, and whatever finished after it is counted: 6.
    assert await recent(db, sample=10) == ({PROJECT: 6}, 360)
    assert await recent(db, sample=9) == ({PROJECT: 5}, 300)
    assert await rows_read(db, sample=10) <= 10
    assert await rows_read(db, sample=1000) == 28
