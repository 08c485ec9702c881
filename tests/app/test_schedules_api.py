"""Schedules through the application in this process: making, listing, changing and removing them,
their refusals (422 naming the field), and their ticks run by calling the loop's pass directly
after backdating a tick: the job, the history, overlap skip, pause and resume, a failing tick."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from conftest import wait_until
from helpers import call

from whatsnext.api.server.keys import store_key
from whatsnext.api.server.schedules import tick_once
from whatsnext.cron import load_zone, parse


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def new_project(client: TestClient, **extra: Any) -> str:
    name = f"sch-{uuid.uuid4().hex[:10]}"
    status, body = await call(client, "POST", "/projects", {"name": name, **extra})
    assert status == 201, body
    return name


async def make(client: TestClient, project: str, **body: Any) -> dict[str, Any]:
    body = {"name": "nightly", "every": 3600, "job": {"task": "eval"}} | body
    status, out = await call(client, "POST", f"/projects/{project}/schedules", body)
    assert status == 201, out
    return out


async def schedule(client: TestClient, project: str, name: str = "nightly") -> dict[str, Any]:
    status, out = await call(client, "GET", f"/projects/{project}/schedules/{name}")
    assert status == 200, out
    return out


async def backdate(db: asyncpg.Connection, schedule_id: int, tick: datetime) -> None:
    """Make ``tick`` the schedule's next tick (in the past: due now)."""
    await db.execute("UPDATE schedules SET next_run_at = $2 WHERE id = $1", schedule_id, tick)


async def tick(client: TestClient, db: asyncpg.Connection, schedule_id: int) -> None:
    """Run a pass of the tick loop, and wait until the due tick was taken (by this pass, or by
    another server's loop that reached it first)."""
    await tick_once(client.app[store_key])

    async def taken() -> bool:
        return bool(await db.fetchval("SELECT next_run_at > now() FROM schedules WHERE id = $1", schedule_id))

    await wait_until(taken, what="the tick taken")


async def jobs_of(db: asyncpg.Connection, schedule_id: int) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT id, name, status, scheduled_for, created_by, group_id FROM jobs WHERE schedule_id = $1 "
        "ORDER BY scheduled_for",
        schedule_id,
    )
    return [dict(r) for r in rows]


def past(seconds: float) -> datetime:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).replace(microsecond=0)


# ---------------------------------------------------------------- making and reading


async def test_a_schedule_is_made_listed_shown_and_removed(client: TestClient) -> None:
    p = await new_project(client)
    before = datetime.now(UTC)
    made = await make(
        client, p, name="hourly", every=3600, job={"task": "eval", "parameters": {"split": "val"}}
    )
    assert made["name"] == "hourly" and made["project"] == p
    assert (made["every"], made["cron"], made["timezone"], made["overlap"]) == (3600, None, "UTC", "skip")
    assert made["job"] == {"task": "eval", "parameters": {"split": "val"}}
    first = datetime.fromisoformat(made["next_run_at"])
    assert before + timedelta(seconds=3599) <= first <= datetime.now(UTC) + timedelta(seconds=3601)
    assert made["last_job_id"] is None and made["last_job_status"] is None and made["runs"] == 0

    nightly = await make(client, p, name="nightly", every=None, cron="0 2 * * *", timezone="Europe/Berlin")
    expected = parse("0 2 * * *").after(datetime.now(UTC), load_zone("Europe/Berlin"))
    assert datetime.fromisoformat(nightly["next_run_at"]) == expected
    assert datetime.fromisoformat(nightly["next_run_at"]).astimezone(load_zone("Europe/Berlin")).hour == 2

    unnamed = await make(client, p, name="unnamed", job={"task": "eval", "name": None, "group": None})
    assert unnamed["job"] == {"task": "eval"}  # a null is a field left out

    status, listed = await call(client, "GET", f"/projects/{p}/schedules")
    assert status == 200 and [s["name"] for s in listed["schedules"]] == ["hourly", "nightly", "unnamed"]
    assert await schedule(client, p, str(made["id"])) == await schedule(client, p, "hourly")

    status, gone = await call(client, "DELETE", f"/projects/{p}/schedules/hourly")
    assert status == 200 and gone["id"] == made["id"]
    status, body = await call(client, "GET", f"/projects/{p}/schedules/hourly")
    assert status == 404 and body["error"]["details"]["field"] == "schedule"
    status, body = await call(client, "DELETE", f"/projects/{p}/schedules/hourly")
    assert status == 404


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"name": "s", "job": {"task": "t"}}, "cron", "give cron (an expression) or every"),
        ({"name": "s", "cron": "* * * * *", "every": 5, "job": {"task": "t"}}, "every", "not both"),
        (
            {"name": "s", "cron": "61 * * * *", "job": {"task": "t"}},
            "cron",
            "minute: 61 is out of range 0-59",
        ),
        ({"name": "s", "cron": "0 2 * *", "job": {"task": "t"}}, "cron", "5 fields"),
        ({"name": "s", "cron": "0 0 30 2 *", "job": {"task": "t"}}, "cron", "names no time"),
        ({"name": "s", "cron": 5, "job": {"task": "t"}}, "cron", "string"),
        ({"name": "s", "every": 0, "job": {"task": "t"}}, "every", "greater than or equal to 1"),
        ({"name": "s", "every": 1.5, "job": {"task": "t"}}, "every", "integer"),
        ({"name": "s", "every": 10**12, "job": {"task": "t"}}, "every", "less than or equal"),
        (
            {"name": "s", "every": 5, "timezone": "Mars/Olympus", "job": {"task": "t"}},
            "timezone",
            "unknown time zone",
        ),
        ({"name": "s", "every": 5, "overlap": "sometimes", "job": {"task": "t"}}, "overlap", "skip"),
        ({"name": "s", "every": 5}, "job", "required"),
        ({"name": "s", "every": 5, "job": {}}, "job.task", "required"),
        ({"name": "s", "every": 5, "job": {"task": "t", "bogus": 1}}, "job.bogus", "not permitted"),
        ({"name": "s", "every": 5, "job": {"task": "t", "priority": 2**40}}, "job.priority", "less than"),
        (
            {"name": "s", "every": 5, "job": {"task": "t", "concurrency_key": "k"}},
            "job.concurrency_limit",
            "too",
        ),
        (
            {"name": "s", "every": 5, "job": {"task": "t", "depends": ["nope"]}},
            "job.depends",
            "unknown dependency",
        ),
        ({"name": "123", "every": 5, "job": {"task": "t"}}, "name", "digits"),
        ({"name": "s", "every": 5, "job": {"task": "t"}, "when": "now"}, "when", "not permitted"),
    ],
)
async def test_bad_schedules_are_refused_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str, says: str
) -> None:
    p = await new_project(client)
    status, out = await call(client, "POST", f"/projects/{p}/schedules", body)
    assert status == 422, out
    assert (
        out["error"]["details"][0]["field"] == field
        if isinstance(out["error"]["details"], list)
        else (out["error"]["details"]["field"] == field)
    ), out
    assert says in out["error"]["message"], out


async def test_what_the_project_refuses_is_refused_when_the_schedule_is_made(client: TestClient) -> None:
    strict = await new_project(client, strict_tasks=True)
    status, out = await call(
        client, "POST", f"/projects/{strict}/schedules", {"name": "s", "every": 60, "job": {"task": "nope"}}
    )
    assert status == 422 and out["error"]["details"]["field"] == "job.task", out
    assert "unknown task" in out["error"]["message"]

    p = await new_project(client)
    status, _ = await call(
        client, "POST", "/tasks/", {"name": "echo", "project_id": p, "command": "echo {x}"}
    )
    assert status == 201
    status, out = await call(
        client, "POST", f"/projects/{p}/schedules", {"name": "s", "every": 60, "job": {"task": "echo"}}
    )
    assert status == 422 and out["error"]["details"]["field"] == "job.parameters", out
    assert "x" in out["error"]["message"]
    # the trial made nothing: no task, no job
    status, jobs = await call(client, "GET", f"/projects/{p}/jobs")
    assert jobs["jobs"] == []
    status, out = await call(
        client, "POST", f"/projects/{strict}/schedules", {"name": "s", "every": 60, "job": {"task": "nope"}}
    )
    assert status == 422

    made = await make(client, p, name="s", job={"task": "echo", "parameters": {"x": 1}})
    status, out = await call(
        client, "POST", f"/projects/{p}/schedules", {"name": "s", "every": 5, "job": {"task": "t"}}
    )
    assert status == 409 and out["error"]["details"]["field"] == "name", out
    status, out = await call(
        client, "POST", "/projects/no-such-project/schedules", {"name": "s", "every": 5, "job": {"task": "t"}}
    )
    assert status == 404 and out["error"]["details"]["field"] == "project", out

    for patch, field in (
        ({}, "body"),
        ({"cron": "* * * * *", "every": 5}, "every"),
        ({"cron": "nope"}, "cron"),
        ({"timezone": "Nowhere/Else"}, "timezone"),
        ({"job": {"task": "echo"}}, "job.parameters"),
        ({"paused": "maybe"}, "paused"),
    ):
        status, out = await call(client, "PATCH", f"/projects/{p}/schedules/s", patch)
        assert status == 422, (patch, out)
        details = out["error"]["details"]
        assert (details[0] if isinstance(details, list) else details)["field"] == field, (patch, out)
    status, out = await call(client, "PATCH", f"/projects/{p}/schedules/other", {"paused": True})
    assert status == 404 and out["error"]["details"]["field"] == "schedule"
    assert await schedule(client, p, "s") == await schedule(client, p, str(made["id"]))


# ---------------------------------------------------------------- ticks


async def test_a_tick_queues_the_job_once_and_moves_to_the_next(
    client: TestClient, db: asyncpg.Connection
) -> None:
    p = await new_project(client)
    made = await make(
        client,
        p,
        every=3600,
        job={"task": "eval", "parameters": {"split": "val"}, "group": "nightly-runs", "priority": 3},
    )
    grid = datetime.fromisoformat(made["next_run_at"])
    missed = grid - timedelta(hours=5)  # five periods ago, on the schedule's grid
    await backdate(db, made["id"], missed)
    await tick(client, db, made["id"])

    jobs = await jobs_of(db, made["id"])
    assert [(j["name"], j["status"], j["scheduled_for"]) for j in jobs] == [("nightly", "PENDING", missed)]
    _, job = await call(client, "GET", f"/jobs/{jobs[0]['id']}")
    assert (job["task"], job["parameters"], job["priority"], job["group"]) == (
        "eval",
        {"split": "val"},
        3,
        "nightly-runs",
    )
    _status, history = await call(client, "GET", f"/jobs/{jobs[0]['id']}/events")
    assert [(e["status"], e["reason"]) for e in history["events"]] == [("PENDING", "scheduled by nightly")]

    s = await schedule(client, p)
    assert s["last_job_id"] == jobs[0]["id"] and s["last_job_status"] == "PENDING" and s["runs"] == 1
    assert datetime.fromisoformat(s["last_run_at"]) == missed
    # the five missed ticks ran once; the next is the first of the grid after now
    assert datetime.fromisoformat(s["next_run_at"]) == grid

    await tick_once(client.app[store_key])  # nothing due: nothing more
    assert len(await jobs_of(db, made["id"])) == 1


async def test_overlap_skip_waits_for_the_last_job_and_allow_does_not(
    client: TestClient, db: asyncpg.Connection
) -> None:
    p = await new_project(client)
    skip = await make(client, p, name="skip", overlap="skip")
    allow = await make(client, p, name="allow", overlap="allow", job={"task": "other"})
    for s in (skip, allow):
        await backdate(db, s["id"], past(7200))
        await tick(client, db, s["id"])
    status, claimed = await call(
        client, "POST", f"/projects/{p}/claim", {"worker_name": "w", "max_jobs": 2, "free_cpu": 2}
    )
    assert status == 200 and len(claimed["jobs"]) == 2
    running = {j["name"]: j for j in claimed["jobs"]}

    second = past(3600)
    for s in (skip, allow):
        await backdate(db, s["id"], second)
        await tick(client, db, s["id"])
    assert len(await jobs_of(db, skip["id"])) == 1  # its job is RUNNING: this tick made none
    assert len(await jobs_of(db, allow["id"])) == 2
    after = await schedule(client, p, "skip")
    assert after["skipped"] == 1 and after["runs"] == 1 and after["last_job_status"] == "RUNNING"
    assert datetime.fromisoformat(after["last_skipped_at"]) == second

    job = running["skip"]
    status, _ = await call(client, "POST", f"/jobs/{job['id']}/complete", {"attempt": job["attempt"]})
    assert status == 200
    await backdate(db, skip["id"], past(60))
    await tick(client, db, skip["id"])
    jobs = await jobs_of(db, skip["id"])
    assert [j["status"] for j in jobs] == ["COMPLETED", "PENDING"]
    # a PENDING last job holds the next tick back as a RUNNING one does
    await backdate(db, skip["id"], past(30))
    await tick(client, db, skip["id"])
    assert len(await jobs_of(db, skip["id"])) == 2
    assert (await schedule(client, p, "skip"))["skipped"] == 2


async def test_a_paused_schedule_makes_no_job_and_resumes_at_its_next_tick(
    client: TestClient, db: asyncpg.Connection
) -> None:
    p = await new_project(client)
    made = await make(client, p, every=60)
    grid = datetime.fromisoformat(made["next_run_at"])
    status, paused = await call(client, "PATCH", f"/projects/{p}/schedules/nightly", {"paused": True})
    assert status == 200 and paused["paused"] is True and paused["next_run_at"] is None

    await backdate(db, made["id"], grid - timedelta(minutes=30))
    await tick_once(client.app[store_key])
    assert await jobs_of(db, made["id"]) == []
    assert await db.fetchval(
        "SELECT next_run_at FROM schedules WHERE id = $1", made["id"]
    ) == grid - timedelta(minutes=30)

    status, resumed = await call(client, "PATCH", f"/projects/{p}/schedules/nightly", {"paused": False})
    assert status == 200 and resumed["paused"] is False
    following = datetime.fromisoformat(resumed["next_run_at"])
    # not the ticks missed while paused: the first one after now, on the same grid
    assert datetime.now(UTC) < following <= datetime.now(UTC) + timedelta(seconds=61)
    assert (following - grid) % timedelta(seconds=60) == timedelta(0)
    await tick_once(client.app[store_key])
    assert await jobs_of(db, made["id"]) == []


async def test_a_new_timing_starts_from_now(client: TestClient, db: asyncpg.Connection) -> None:
    p = await new_project(client)
    await make(client, p, every=60)
    status, out = await call(
        client, "PATCH", f"/projects/{p}/schedules/nightly", {"cron": "0 2 * * *", "timezone": "Asia/Tokyo"}
    )
    assert status == 200 and (out["cron"], out["every"], out["timezone"]) == ("0 2 * * *", None, "Asia/Tokyo")
    nxt = datetime.fromisoformat(out["next_run_at"])
    assert nxt == parse("0 2 * * *").after(datetime.now(UTC), load_zone("Asia/Tokyo"))
    status, out = await call(
        client, "PATCH", f"/projects/{p}/schedules/nightly", {"overlap": "allow", "job": {"task": "b"}}
    )
    assert status == 200 and out["overlap"] == "allow" and out["job"] == {"task": "b"}
    assert datetime.fromisoformat(out["next_run_at"]) == nxt  # timing unchanged: same next tick
    status, out = await call(client, "PATCH", f"/projects/{p}/schedules/nightly", {"every": 5})
    assert status == 200 and (out["cron"], out["every"]) == (None, 5)
    assert datetime.fromisoformat(out["next_run_at"]) <= datetime.now(UTC) + timedelta(seconds=5)


async def test_a_tick_that_cannot_submit_records_why_and_moves_on(
    client: TestClient, db: asyncpg.Connection
) -> None:
    p = await new_project(client)
    made = await make(client, p)
    status, _ = await call(client, "PATCH", f"/projects/{p}", {"status": "ARCHIVED"})
    assert status == 200
    await backdate(db, made["id"], past(10))
    await tick(client, db, made["id"])
    s = await schedule(client, p)
    assert "archived" in s["last_error"] and s["last_error_at"] and s["runs"] == 0
    assert await jobs_of(db, made["id"]) == []

    status, _ = await call(client, "PATCH", f"/projects/{p}", {"status": "ACTIVE"})
    await backdate(db, made["id"], past(5))
    await tick(client, db, made["id"])
    s = await schedule(client, p)
    assert s["last_error"] is None and s["runs"] == 1 and len(await jobs_of(db, made["id"])) == 1


async def test_removing_a_schedule_keeps_its_jobs(client: TestClient, db: asyncpg.Connection) -> None:
    p = await new_project(client)
    made = await make(client, p)
    await backdate(db, made["id"], past(10))
    await tick(client, db, made["id"])
    (job,) = await jobs_of(db, made["id"])
    status, _ = await call(client, "DELETE", f"/projects/{p}/schedules/nightly")
    assert status == 200
    kept = await db.fetchrow("SELECT schedule_id, scheduled_for FROM jobs WHERE id = $1", job["id"])
    assert kept["schedule_id"] is None and kept["scheduled_for"] == job["scheduled_for"]
    status, history = await call(client, "GET", f"/jobs/{job['id']}/events")
    assert history["events"][0]["reason"] == "created"


async def test_the_dashboard_lists_schedules_with_their_next_run(
    client: TestClient, db: asyncpg.Connection
) -> None:
    p = await new_project(client)
    nightly = await make(
        client,
        p,
        every=None,
        cron="0 2 * * *",
        timezone="Europe/Berlin",
        job={"task": "eval", "parameters": {"split": "val"}},
    )
    await make(client, p, name="hourly", every=3600)
    await call(client, "PATCH", f"/projects/{p}/schedules/hourly", {"paused": True})
    await backdate(db, nightly["id"], past(60))
    await tick(client, db, nightly["id"])
    s = await schedule(client, p)

    async with client.get(f"/ui/projects/{p}/schedules") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert f'href="/ui/projects/{p}/schedules"' in text  # in the navigation
    row = text.split('data-schedule="nightly"')[1].split("</tr>")[0]
    assert "0 2 * * *" in row and "Europe/Berlin" in row and "eval" in row and "split" in row
    next_run = datetime.fromisoformat(s["next_run_at"]).strftime("%Y-%m-%d %H:%M:%S")
    assert next_run in row
    assert f'href="/ui/jobs/{s["last_job_id"]}"' in row and "pending" in row
    hourly = text.split('data-schedule="hourly"')[1].split("</tr>")[0]
    assert "paused" in hourly and "every 1h 00m" in hourly


async def test_a_unique_key_makes_every_tick_the_same_job(client: TestClient, db: asyncpg.Connection) -> None:
    p = await new_project(client)
    made = await make(client, p, overlap="allow", job={"task": "eval", "unique_key": "eval-latest"})
    await backdate(db, made["id"], past(7200))
    await tick(client, db, made["id"])
    (first,) = await jobs_of(db, made["id"])
    second = past(3600)
    await backdate(db, made["id"], second)
    await tick(client, db, made["id"])
    # the second tick found the job of the key: it is the tick's job, and nothing else was made
    assert await jobs_of(db, made["id"]) == [first]
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE project_id = $1", made["project_id"]) == 1
    s = await schedule(client, p)
    assert (
        s["runs"] == 2
        and s["last_job_id"] == first["id"]
        and datetime.fromisoformat(s["last_run_at"]) == second
    )
