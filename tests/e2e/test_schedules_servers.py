"""Schedules on real servers sharing one database: each tick makes exactly one job however many
servers run (ticks driven by backdating ``next_run_at`` and nudging every server's loop at once,
SIGUSR1), a crash in the middle of a tick and a restart never make a tick twice, ticks missed
while no server ran run once, and with nobody nudging the loops an ``every: 1`` schedule ticks
on time."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from conftest import Api, ServerProcess, create_database, drop_database, wait_until

pytestmark = pytest.mark.timeout(240)
TICKS = 25


@pytest.fixture
async def database(pg_root_url: str) -> AsyncIterator[str]:
    """A database of this test's own: no other server ticks its schedules."""
    url = await create_database(pg_root_url, "wn_sched")
    yield url
    await drop_database(pg_root_url, url)


@pytest.fixture
async def servers(database: str) -> AsyncIterator[Callable[[], Any]]:
    """Start servers on the test's database (debug logs: each tick is a line); all are stopped."""
    started: list[ServerProcess] = []

    async def start() -> ServerProcess:
        srv = await ServerProcess(database, "--log-level", "DEBUG").start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.stop()


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


def ticked(srv: ServerProcess) -> list[dict[str, Any]]:
    """The ticks a server's log says it took (``schedule ticked`` lines)."""
    out = []
    for line in srv.log().splitlines():
        if '"schedule ticked"' in line:
            out.append(json.loads(line))
    return out


def problems(srv: ServerProcess) -> list[str]:
    return [
        line
        for line in srv.log().splitlines()
        if '"level": "error"' in line or ("schedule" in line and '"warning"' in line)
    ]


async def new_schedule(
    srv: ServerProcess, http: aiohttp.ClientSession, **body: Any
) -> tuple[str, dict[str, Any]]:
    api = Api(srv.url, http)
    p = f"sched-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": p})
    made = await api.ok(
        "POST", f"/projects/{p}/schedules", {"name": "tick", "job": {"task": "t"}} | body, expect=201
    )
    return p, made


async def job_ticks(db: asyncpg.Connection, schedule_id: int) -> list[datetime]:
    """The tick of each job the schedule made, in order (one entry per job)."""
    return [
        r["scheduled_for"]
        for r in await db.fetch(
            "SELECT scheduled_for FROM jobs WHERE schedule_id = $1 ORDER BY scheduled_for, id", schedule_id
        )
    ]


async def has_job_for(db: asyncpg.Connection, schedule_id: int, tick: datetime) -> bool:
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM jobs WHERE schedule_id = $1 AND scheduled_for = $2", schedule_id, tick
        )
    )


async def test_two_servers_make_exactly_one_job_per_tick(
    servers: Callable[[], Any], db: asyncpg.Connection, http: aiohttp.ClientSession
) -> None:
    a, b = await servers(), await servers()
    _, made = await new_schedule(a, http, every=1, overlap="allow")
    # TICKS consecutive ticks of the schedule's grid, long past: each is made due in turn, and both
    # servers are told to look at once; whichever takes it, the other must not make it again.
    grid = datetime.fromisoformat(made["next_run_at"])
    first = grid - timedelta(seconds=1000)
    window = [first + timedelta(seconds=i) for i in range(TICKS)]
    for tick in window:
        await db.execute("UPDATE schedules SET next_run_at = $2 WHERE id = $1", made["id"], tick)
        a.sweep()
        b.sweep()

        async def made_it(tick: datetime = tick) -> bool:
            return await has_job_for(db, made["id"], tick)

        await wait_until(made_it, what=f"the job of tick {tick}")

    made_ticks = [t for t in await job_ticks(db, made["id"]) if t <= window[-1]]
    assert made_ticks == window  # one job per tick: none twice, none missing between first and last
    # Each tick was taken once: no server ran into the job another had made for it ("done").
    logged = ticked(a) + ticked(b)
    in_window = [e for e in logged if datetime.fromisoformat(e["tick"]) <= window[-1]]
    assert sorted(datetime.fromisoformat(e["tick"]) for e in in_window) == window
    assert {e["outcome"] for e in logged} == {"created"}
    # ... and both servers took ticks of the window: they did race for them.
    took = {
        srv.url: sum(datetime.fromisoformat(e["tick"]) <= window[-1] for e in ticked(srv)) for srv in (a, b)
    }
    assert all(took.values()), took
    assert problems(a) == [] and problems(b) == []
    # Meanwhile the schedule kept its own time: the ticks after the window are on its grid too.
    later = [t for t in await job_ticks(db, made["id"]) if t > window[-1]]
    assert all((t - first) % timedelta(seconds=1) == timedelta(0) for t in later)
    assert len(later) == len(set(later))


async def test_a_crash_inside_a_tick_and_a_restart_never_make_it_twice(
    servers: Callable[[], Any], db: asyncpg.Connection, http: aiohttp.ClientSession, database: str
) -> None:
    a = await servers()
    p, made = await new_schedule(a, http, every=3600)
    tick = datetime.fromisoformat(made["next_run_at"]) - timedelta(hours=3)
    await db.execute("UPDATE schedules SET next_run_at = $2 WHERE id = $1", made["id"], tick)

    # A server that dies in the middle of the tick: it locked the schedule, queued the job and moved
    # next_run_at, and its connection is gone before it committed.
    dying = await asyncpg.connect(database)
    tx = dying.transaction()
    await tx.start()
    locked = await dying.fetchrow("SELECT id FROM schedules WHERE id = $1 FOR UPDATE SKIP LOCKED", made["id"])
    assert locked is not None
    fired = await dying.fetchrow(
        "SELECT * FROM wn_schedule_fire($1, $2, now() + interval '1 hour', $3::jsonb, NULL)",
        made["id"],
        tick,
        json.dumps([{"name": "tick", "task": "t"}]),
    )
    assert fired["outcome"] == "created"
    a.sweep()  # the live server looks while the tick is held: it must not take it
    await db.execute("SELECT pg_terminate_backend($1)", dying.get_server_pid())
    dying.terminate()  # its server end is gone: drop the socket (a polite close may hit a broken pipe)
    assert await job_ticks(db, made["id"]) == []
    assert await db.fetchval("SELECT next_run_at FROM schedules WHERE id = $1", made["id"]) == tick

    # Once the lock is gone, the tick is made: once.
    async def made_it() -> bool:
        a.sweep()
        return await has_job_for(db, made["id"], tick)

    await wait_until(made_it, interval=0.2, what="the tick after the crash")
    assert await job_ticks(db, made["id"]) == [tick]

    # A restart: the server is killed, another starts on the database and runs a pass at once. A
    # second schedule due now shows that its pass ran; the first is not made again.
    await a.stop(signal.SIGKILL)
    marker_id = await db.fetchval(
        "INSERT INTO schedules (project_id, name, every, job, next_run_at) "
        "SELECT project_id, 'marker', 3600, '{\"task\": \"t\"}', now() - interval '1 second' FROM schedules "
        "WHERE id = $1 RETURNING id",
        made["id"],
    )
    b = await servers()

    async def marker_made() -> bool:
        return bool(await job_ticks(db, marker_id))

    await wait_until(marker_made, what="the restarted server's first pass")
    assert await job_ticks(db, made["id"]) == [tick]
    assert [e["schedule"] for e in ticked(b)] == ["marker"]
    status, body = await Api(b.url, http).get(f"/projects/{p}/schedules/tick")
    assert status == 200 and body["runs"] == 1 and datetime.fromisoformat(body["last_run_at"]) == tick


async def test_ticks_missed_while_no_server_ran_run_once(
    servers: Callable[[], Any], db: asyncpg.Connection, http: aiohttp.ClientSession
) -> None:
    a = await servers()
    p, made = await new_schedule(a, http, cron="* * * * *", paused=True)
    await a.stop()
    # Every server was down for ten minutes: ten ticks of a schedule that runs every minute.
    missed = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    await db.execute(
        "UPDATE schedules SET next_run_at = $2, paused = false WHERE id = $1", made["id"], missed
    )

    b = await servers()

    async def caught_up() -> list[datetime]:
        return await job_ticks(db, made["id"])

    ticks = await wait_until(caught_up, what="the missed tick")
    after = datetime.now(UTC)
    assert ticks[0] == missed
    status, body = await Api(b.url, http).get(f"/projects/{p}/schedules/tick")
    assert status == 200
    following = datetime.fromisoformat(body["next_run_at"])
    # the following tick is the first minute after recovery, not the next missed one
    assert following > missed + timedelta(minutes=9) and following.second == 0
    assert following <= after + timedelta(minutes=1)
    assert [t for t in await job_ticks(db, made["id"]) if t < following - timedelta(minutes=1)] == [missed]


async def test_every_second_ticks_on_time_without_anyone_nudging(
    servers: Callable[[], Any], db: asyncpg.Connection, http: aiohttp.ClientSession
) -> None:
    a, b = await servers(), await servers()
    _, made = await new_schedule(a, http, every=1, overlap="allow")

    async def three() -> list[dict[str, Any]]:
        rows = await db.fetch(
            "SELECT scheduled_for, created_at FROM jobs WHERE schedule_id = $1 ORDER BY scheduled_for",
            made["id"],
        )
        return [dict(r) for r in rows] if len(rows) >= 3 else []

    rows = await wait_until(three, timeout=30, what="three ticks")
    first = datetime.fromisoformat(made["next_run_at"])
    ticks = [r["scheduled_for"] for r in rows]
    assert len(ticks) == len(set(ticks))
    assert all((t - first) % timedelta(seconds=1) == timedelta(0) for t in ticks)
    # made when due (a server sleeps until the next tick rather than polling every few seconds)
    assert all(timedelta(0) <= r["created_at"] - r["scheduled_for"] < timedelta(seconds=2) for r in rows)
    assert problems(a) == [] and problems(b) == []
