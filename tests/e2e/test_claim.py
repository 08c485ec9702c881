"""Claiming: order, exclusivity under concurrency, long-poll wake-ups through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from conftest import Api, ServerProcess, wait_until


async def test_priority_then_fifo(api: Api, project: dict) -> None:
    p = project["name"]
    spec = [("low1", 0), ("high1", 5), ("low2", 0), ("mid", 2), ("high2", 5), ("neg", -1)]
    await api.ok(
        "POST", f"/projects/{p}/jobs/batch", [{"name": n, "task": "t", "priority": pr} for n, pr in spec]
    )
    order = []
    for _ in spec:
        [job] = (await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "w"}))["jobs"]
        order.append(job["name"])
    assert order == ["high1", "high2", "mid", "low1", "low2", "neg"]


async def test_claim_several_fitting_capacity(api: Api, project: dict) -> None:
    p = project["name"]
    await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        [
            {"name": "big", "task": "t", "required_cpu": 4, "priority": 9},
            *[{"name": f"s{i}", "task": "t", "required_cpu": 1} for i in range(5)],
        ],
    )
    jobs = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 3, "max_jobs": 10}))["jobs"]
    # The 4-CPU job does not fit a 3-CPU worker; three 1-CPU jobs fill it.
    assert [j["name"] for j in jobs] == ["s0", "s1", "s2"]
    jobs = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 8, "max_jobs": 10}))["jobs"]
    assert [j["name"] for j in jobs] == ["big", "s3", "s4"]


async def test_concurrent_claimers_get_disjoint_sets(api: Api, project: dict) -> None:
    p = project["name"]
    total = 2000
    for start in range(0, total, 1000):
        await api.ok(
            "POST",
            f"/projects/{p}/jobs/batch",
            [{"name": f"j{i}", "task": "t"} for i in range(start, start + 1000)],
        )

    async def claimer(n: int) -> list[int]:
        got: list[int] = []
        while True:
            jobs = (
                await api.ok(
                    "POST", f"/projects/{p}/claim", {"worker_name": f"w{n}", "free_cpu": 10, "max_jobs": 10}
                )
            )["jobs"]
            if not jobs:
                return got
            got.extend(j["id"] for j in jobs)

    results = await asyncio.gather(*(claimer(n) for n in range(8)))
    flat = [i for r in results for i in r]
    assert len(flat) == total
    assert len(set(flat)) == total
    assert all(results), "every claimer got some jobs"


async def test_long_poll_wakes_on_new_job(api: Api, project: dict) -> None:
    p = project["name"]
    started = time.monotonic()
    claim = asyncio.create_task(api.post(f"/projects/{p}/claim", {"worker_name": "w", "wait": 30}))
    await _waiting(api, p)
    assert not claim.done()
    added = time.monotonic()
    job = await api.ok("POST", f"/projects/{p}/jobs", {"name": "late", "task": "t"})
    status, body = await asyncio.wait_for(claim, 10)
    woke = time.monotonic()
    assert status == 200 and [j["id"] for j in body["jobs"]] == [job["id"]]
    assert woke - started < 10, "returned long before its 30 s timeout"
    assert woke - added < 2


async def _waiting(api: Api, project: str, n: int = 1) -> None:
    """Wait until the server holds ``n`` long-polling claims (they looked, found nothing, and sleep)."""

    async def check() -> bool:
        return (await api.ok("GET", "/health"))["waiting_claims"] >= n

    await wait_until(check, what=f"{n} claim(s) waiting on the server")


async def test_long_poll_times_out_empty(api: Api, project: dict) -> None:
    started = time.monotonic()
    body = await api.ok("POST", f"/projects/{project['name']}/claim", {"wait": 0.5})
    assert body == {"jobs": []}
    assert 0.4 <= time.monotonic() - started < 5


async def test_wake_across_two_servers(server: ServerProcess, server_factory, http, project: dict) -> None:
    other = await server_factory()
    a, b = Api(server.url, http), Api(other.url, http)
    p = project["name"]
    claim = asyncio.create_task(b.post(f"/projects/{p}/claim", {"worker_name": "w", "wait": 30}))
    await _waiting(b, p)
    job = await a.ok("POST", f"/projects/{p}/jobs", {"name": "x", "task": "t"})
    status, body = await asyncio.wait_for(claim, 10)
    assert status == 200 and [j["id"] for j in body["jobs"]] == [job["id"]]


async def test_listen_connection_killed_then_claim_still_wakes(
    server_factory, http, database_url: str, project: dict
) -> None:
    srv = await server_factory()
    api = Api(srv.url, http)
    p = project["name"]
    conn = await asyncpg.connect(database_url)
    try:

        async def listen_pids() -> list[int]:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'whatsnext-listen'"
                " AND datname = current_database()"
            )
            return [r["pid"] for r in rows]

        before = set(await listen_pids())
        assert before
        for pid in before:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)

        async def reconnected() -> bool:
            pids = set(await listen_pids())
            return len(pids) >= len(before) and not (pids & before)

        await wait_until(reconnected, timeout=15, what="LISTEN connections to come back")
        claim = asyncio.create_task(api.post(f"/projects/{p}/claim", {"worker_name": "w", "wait": 30}))
        await _waiting(api, p)
        job = await api.ok("POST", f"/projects/{p}/jobs", {"name": "after-kill", "task": "t"})
        status, body = await asyncio.wait_for(claim, 10)
        assert status == 200 and [j["id"] for j in body["jobs"]] == [job["id"]]
    finally:
        await conn.close()


async def test_shutdown_answers_waiting_claims(server_factory, http, project: dict) -> None:
    srv = await server_factory()
    api = Api(srv.url, http)
    claim = asyncio.create_task(api.post(f"/projects/{project['name']}/claim", {"wait": 60}))
    await _waiting(api, project["name"])
    started = time.monotonic()
    code = await srv.stop()
    status, body = await asyncio.wait_for(claim, 10)
    assert status == 200 and body == {"jobs": []}
    assert code == 0
    assert time.monotonic() - started < 10
