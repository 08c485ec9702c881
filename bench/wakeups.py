"""Wake-ups across several servers: what one job costs when many workers wait for work.

``python -m bench.wakeups [--servers 2] [--waiters 1000] [--rate 10] [--seconds 20]`` starts
``--servers`` WhatsNext servers on one fresh database, holds ``--waiters`` idle long-polling
claims on each, and queues single jobs at ``--rate`` per second through the servers in turn.
A claim that gets a job completes it at once and waits again. It prints, as one JSON object:

* ``claims_per_job``: ``wn_claim`` calls per job, from ``pg_stat_user_functions``;
* ``wake_p50_ms`` / ``wake_p90_ms``: from sending a job's enqueue request to a waiting claim's
  answer carrying it;
* ``unfit_claims``: the ``wn_claim`` calls while one job that no waiting claim can take (it
  needs more CPUs than any of them has) sits in the queue, and ``idle_claims`` the calls over the
  same time (about 11 s) with nothing queued: long-polls that end and start again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.common import fresh_database, percentile, postgres_server, run_async
from bench.whatsnext_bench import _raise_open_files_limit, health, running_server, temp_environ

PROJECT = "wakeups"
WAIT = 300.0
"""Each long-poll's wait: longer than the whole run, so that no claim is a long-poll starting
again (the servers run with ``WHATSNEXT_MAX_WAIT`` at least this)."""
JSON = {"Content-Type": "application/json"}


async def claim_calls(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value = await conn.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = 'wn_claim'"
        )
        return int(value)
    finally:
        await conn.close()


async def settle_stats() -> None:
    # A backend's function statistics reach the shared counters at most once a second while it
    # is busy, and within ten seconds once it is idle (PGSTAT_IDLE_INTERVAL): wait that out.
    await asyncio.sleep(11.0)


class Handed:
    """When each job reached a waiting claim; ``all_in`` is set once ``expected`` jobs did."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.expected = 0
        self.all_in = asyncio.Event()

    def add(self, job_id: int) -> None:
        self.at[job_id] = time.perf_counter()
        if self.expected and len(self.at) >= self.expected:
            self.all_in.set()


async def waiter(
    session: aiohttp.ClientSession, url: str, name: str, got: Handed, stop: asyncio.Event
) -> None:
    body = orjson.dumps({"worker_name": name, "free_cpu": 1, "total_cpu": 1, "max_jobs": 1, "wait": WAIT})
    while not stop.is_set():
        try:
            async with session.post(f"{url}/projects/{PROJECT}/claim", data=body) as resp:
                data = orjson.loads(await resp.read())
        except (TimeoutError, aiohttp.ClientError):
            if stop.is_set():
                return
            await asyncio.sleep(0.1)
            continue
        for job in data.get("jobs", ()):
            got.add(job["id"])
            report = orjson.dumps({"attempt": job["attempt"]})
            async with session.post(f"{url}/jobs/{job['id']}/complete", data=report) as resp:
                await resp.read()


async def run(servers: int, waiters: int, rate: float, seconds: float) -> dict[str, Any]:
    _raise_open_files_limit(4 * servers * waiters + 1024)
    with postgres_server() as pg:
        async with fresh_database(pg.dsn, "wakeups") as dsn:
            admin = await asyncpg.connect(dsn)
            try:
                name = await admin.fetchval("SELECT current_database()")
                await admin.execute(f"ALTER DATABASE \"{name}\" SET track_functions = 'all'")
            finally:
                await admin.close()
            async with AsyncExitStack() as stack:
                stack.enter_context(temp_environ(WHATSNEXT_MAX_WAIT=str(WAIT)))
                procs = [await stack.enter_async_context(running_server(dsn)) for _ in range(servers)]
                urls = [p.url for p in procs]
                connector = aiohttp.TCPConnector(limit=0)
                session = await stack.enter_async_context(
                    aiohttp.ClientSession(connector=connector, headers=JSON)
                )
                async with session.post(f"{urls[0]}/projects", data=orjson.dumps({"name": PROJECT})) as resp:
                    assert resp.status == 201, await resp.text()
                got = Handed()
                stop = asyncio.Event()
                tasks = [
                    asyncio.create_task(waiter(session, url, f"w{i}", got, stop))
                    for url in urls
                    for i in range(waiters)
                ]
                try:
                    for url in urls:
                        deadline = time.monotonic() + 60
                        while int((await health(session, url)).get("waiting_claims", 0)) < waiters:
                            if time.monotonic() > deadline:
                                raise RuntimeError("the waiting claims did not all arrive")
                            await asyncio.sleep(0.05)
                    await settle_stats()
                    before = await claim_calls(dsn)
                    queued: dict[int, float] = {}
                    n = int(rate * seconds)
                    got.expected = n
                    t0 = time.perf_counter()
                    for i in range(n):
                        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                        url = urls[i % len(urls)]
                        body = orjson.dumps({"name": f"j{i}", "task": "t"})
                        sent = time.perf_counter()
                        async with session.post(f"{url}/projects/{PROJECT}/jobs", data=body) as resp:
                            job = orjson.loads(await resp.read())
                        queued[job["id"]] = sent
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(got.all_in.wait(), 30)
                    await settle_stats()
                    after = await claim_calls(dsn)
                    wakes = sorted((got.at[j] - queued[j]) * 1000 for j in queued if j in got.at)

                    # One job no waiting claim can take.
                    await settle_stats()
                    idle_before = await claim_calls(dsn)
                    await settle_stats()
                    before_unfit = await claim_calls(dsn)
                    idle_claims = before_unfit - idle_before
                    body = orjson.dumps({"name": "too-big", "task": "t", "required_cpu": 64})
                    async with session.post(f"{urls[0]}/projects/{PROJECT}/jobs", data=body) as resp:
                        assert resp.status == 201
                    await settle_stats()
                    unfit = await claim_calls(dsn) - before_unfit
                finally:
                    stop.set()
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "servers": servers,
        "waiters_per_server": waiters,
        "jobs": n,
        "handed_out": len(wakes),
        "claims_per_job": round((after - before) / max(n, 1), 2),
        "wake_p50_ms": round(percentile(wakes, 50), 1) if wakes else None,
        "wake_p90_ms": round(percentile(wakes, 90), 1) if wakes else None,
        "unfit_claims": unfit,
        "idle_claims": idle_claims,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeups", description=__doc__)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--waiters", type=int, default=1000, help="idle long-polls per server")
    parser.add_argument("--rate", type=float, default=10.0, help="single jobs queued per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    result = run_async(run(args.servers, args.waiters, args.rate, args.seconds))
    print(json.dumps(result))
    return 0 if result["handed_out"] == result["jobs"] else 1


if __name__ == "__main__":
    sys.exit(main())
