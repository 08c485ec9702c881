"""Focused checks of WhatsNext behaviours that the benchmark numbers depend on.

``python -m bench.whatsnext_checks [CHECK ...]`` runs each check against a fresh
database and server (``$WHATSNEXT_BENCH_DATABASE_URL``, else the embedded PostgreSQL)
and prints one line per check, ``ok`` or ``FAIL``, with what it measured.
Each is small and takes a few seconds, so a change to the claim, report or enqueue
path can be checked without the whole benchmark.

Checks:

``claim-scale``
    single-job claim latency with 1,000 and 200,000 pending jobs (must stay within 2x);
``claim-contention``
    10 connections calling ``wn_claim`` in a loop over 2,000 pending jobs: how often a
    claim comes back empty although jobs are pending (each such answer can put a
    long-polling claim back to sleep with work left);
``woken-all``
    500 long-polling claims woken at once by a batch of 500 jobs: every job must be
    handed out within 2 s (a claim that finds nothing under contention and goes back to
    sleep strands jobs until its ``wait`` runs out);
``dropped-long-poll``
    a long-polling claim whose client disconnects, then a live one: a job queued next
    must reach the live claim at once (not after its ``wait``);
``enqueue-after-truncate``
    twice, 20 batches of 1,000 jobs into an emptied jobs table: the last batch must not
    take more than 3x the fastest of the first three (plans cached while the table
    looked empty must not make each batch scan the whole table);
``drain-tail``
    10 small drains (1,000 jobs, worker at concurrency 20): none may take more than 2 s
    (the worker must notice the end of the queue without sitting out a long-poll).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.common import WORKER_DSN_ENV, WorkerProcess, analyze, fresh_database, postgres_server, run_async
from bench.whatsnext_bench import (
    PROJECT,
    SERVER_ENV,
    ServerProcess,
    WhatsNextAdapter,
    health,
    measure_claims,
    running_server,
    seed_pending,
    temp_environ,
    wait_for_waiting,
)
from bench.whatsnext_worker import NOOP_TASK, PROJECT_ENV

Outcome = tuple[bool, str]
Check = Callable[[WhatsNextAdapter, ServerProcess], Awaitable[Outcome]]
JSON = {"Content-Type": "application/json"}


async def check_claim_scale(adapter: WhatsNextAdapter, server: ServerProcess) -> Outcome:
    small = await measure_claims(adapter, 1_000, 100)
    large = await measure_claims(adapter, 200_000, 100)
    ratio = large["claim_p50_ms"] / small["claim_p50_ms"]
    return ratio <= 2.0, (
        f"claim p50 {small['claim_p50_ms']:.2f} ms with 1,000 pending, "
        f"{large['claim_p50_ms']:.2f} ms with 200,000 ({ratio:.1f}x)"
    )


async def check_claim_contention(adapter: WhatsNextAdapter, server: ServerProcess) -> Outcome:
    await adapter.reset()
    await seed_pending(adapter.dsn, PROJECT, 2_000)
    conns = [await asyncpg.connect(adapter.dsn) for _ in range(10)]
    claimed = empty = 0
    query = "SELECT * FROM wn_claim($1, NULL, 'c', 1, 0, 1, 0, '{}', 1, 60, 300)"

    async def loop(conn: asyncpg.Connection) -> None:
        nonlocal claimed, empty
        while True:
            if await conn.fetch(query, PROJECT):
                claimed += 1
                continue
            left = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'PENDING'")
            if not left:
                return
            empty += 1

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(c) for c in conns))
        seconds = time.perf_counter() - t0
    finally:
        for conn in conns:
            await conn.close()
    return empty <= claimed // 100, (
        f"{empty} empty answers while jobs were pending, {claimed} claims ({claimed / seconds:,.0f}/s)"
    )


async def _long_poll(session: aiohttp.ClientSession, url: str, name: str, wait: float) -> dict[str, Any]:
    body = orjson.dumps({"worker_name": name, "free_cpu": 1, "max_jobs": 1, "wait": wait})
    async with session.post(f"{url}/projects/{PROJECT}/claim", data=body) as resp:
        data: dict[str, Any] = orjson.loads(await resp.read())
        return data


async def check_woken_all(adapter: WhatsNextAdapter, server: ServerProcess) -> Outcome:
    from whatsnext.api.client import Job

    await adapter.reset()
    n = 500
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=JSON) as session:
        polls = [asyncio.create_task(_long_poll(session, server.url, f"w{i}", 20.0)) for i in range(n)]
        try:
            await wait_for_waiting(session, server.url, n, 30.0)
            t0 = time.perf_counter()
            await adapter.project.extend_queue([Job(f"j{i}", NOOP_TASK) for i in range(n)])
            done, _ = await asyncio.wait(polls, timeout=2.0)
            seconds = time.perf_counter() - t0
            handed = sum(1 for t in done if not t.exception() and t.result()["jobs"])
        finally:
            for task in polls:
                task.cancel()
            await asyncio.gather(*polls, return_exceptions=True)
    return handed == n, f"{handed}/{n} jobs handed out {seconds:.2f}s after they were queued"


async def check_dropped_long_poll(adapter: WhatsNextAdapter, server: ServerProcess) -> Outcome:
    await adapter.reset()
    async with aiohttp.ClientSession(headers=JSON) as session:
        gone = asyncio.create_task(_long_poll(session, server.url, "gone", 10.0))
        await wait_for_waiting(session, server.url, 1, 10.0)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        await asyncio.sleep(0.2)
        live = asyncio.create_task(_long_poll(session, server.url, "live", 5.0))
        await asyncio.sleep(0.3)
        waiting = (await health(session, server.url)).get("waiting_claims")
        t0 = time.perf_counter()
        await adapter.enqueue_batch(0, 1)
        answer = await live
        seconds = time.perf_counter() - t0
    got = bool(answer["jobs"])
    return got and seconds < 1.0, (
        f"the live claim got {'a job' if got else 'nothing'} after {seconds:.2f}s "
        f"({waiting} claims were waiting on the server, 1 of them disconnected)"
    )


async def check_enqueue_after_truncate(adapter: WhatsNextAdapter, server: ServerProcess) -> Outcome:
    timings: list[float] = []
    for _rep in range(2):
        await adapter.reset()
        timings = []
        for b in range(20):
            t0 = time.perf_counter()
            await adapter.enqueue_batch(b * 1000, 1000)
            timings.append((time.perf_counter() - t0) * 1000.0)
    first = min(timings[:3])
    last = timings[-1]
    return last <= 3 * first, (
        f"batch of 1,000 after TRUNCATE: {first:.0f} ms early, {last:.0f} ms for the 20th "
        f"({20_000 / (sum(timings) / 1000):,.0f} jobs/s overall)"
    )


async def check_drain_tail(adapter: WhatsNextAdapter, server: ServerProcess) -> Outcome:
    seconds: list[float] = []
    args = ["--mode", "drain", "--jobs", "1000", "--concurrency", "20"]
    for _ in range(10):
        await adapter.reset()
        await adapter.enqueue_batch(0, 1000)
        await analyze(adapter.dsn)
        async with WorkerProcess(adapter.worker_module, args, {WORKER_DSN_ENV: adapter.dsn}) as worker:
            event = await worker.expect("drained", 120.0)
            await worker.wait_exit(30.0)
        seconds.append(event["t_end"] - event["t_start"])
    slow = [s for s in seconds if s > 2.0]
    return not slow, f"drains of 1,000 jobs took {', '.join(f'{s:.2f}' for s in seconds)} s"


CHECKS: dict[str, Check] = {
    "claim-scale": check_claim_scale,
    "claim-contention": check_claim_contention,
    "woken-all": check_woken_all,
    "dropped-long-poll": check_dropped_long_poll,
    "enqueue-after-truncate": check_enqueue_after_truncate,
    "drain-tail": check_drain_tail,
}


async def run_checks(server_dsn: str, names: list[str]) -> bool:
    ok_all = True
    for name in names:
        async with fresh_database(server_dsn, "checks") as dsn, running_server(dsn) as server:
            adapter = WhatsNextAdapter(dsn, server.url)
            await adapter.open()
            try:
                with temp_environ(**{SERVER_ENV: server.url, PROJECT_ENV: PROJECT}):
                    ok, detail = await CHECKS[name](adapter, server)
            except Exception as exc:
                ok, detail = False, f"error: {type(exc).__name__}: {exc}"
            finally:
                await adapter.close()
        ok_all = ok_all and ok
        print(f"{name:<24} {'ok  ' if ok else 'FAIL'}  {detail}", flush=True)
    return ok_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.whatsnext_checks", description=__doc__)
    parser.add_argument("checks", nargs="*", metavar="CHECK", help=f"any of: {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        parser.error(f"unknown check(s): {', '.join(unknown)}")
    names = args.checks or list(CHECKS)
    with postgres_server() as server:
        ok = run_async(run_checks(server.dsn, names))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
