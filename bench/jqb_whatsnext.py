"""WhatsNext adapter for the JSONL protocol of the PostgreSQL job-queue benchmark.

The protocol is that of hardbyte/postgresql-job-queue-benchmarking, ``CONTRIBUTING_ADAPTERS.md``
as of commit 93677cab92dad89ee9eccb0d6e113893de43cbe6 (its Procrastinate adapter,
``procrastinate-bench/main.py``, at the same commit, is the model): one long-running process,
configured by its environment, that produces and consumes jobs and writes JSONL to stdout (a
``descriptor`` line, then one line per metric every ``SAMPLE_EVERY_S``, clock-aligned); logs go
to stderr; SIGTERM ends it within 5 s.

WhatsNext is an HTTP service in front of PostgreSQL, so the adapter needs a running server
(``WHATSNEXT_SERVER``, started beside the database by ``python -m bench.jqb``, as the benchmark
starts PostgreSQL); ``DATABASE_URL`` is the server's database, read only for the queue depth.

* producer: ``PRODUCER_RATE`` jobs/s (or the rate in ``PRODUCER_RATE_CONTROL_FILE``), credited on
  the wall clock, at most ``PRODUCER_BATCH_MAX`` per ``POST /projects/{p}/jobs/batch`` every
  ``PRODUCER_BATCH_MS``; each job carries its creation time;
* consumer: the SDK's worker (``Client`` with a ``PythonFormatter``, ``WORKER_COUNT`` jobs at
  once, long-polling claims); each job records its pickup latency (creation to start) and sleeps
  ``JOB_WORK_MS``;
* metrics: ``claim_p50_ms``/``claim_p95_ms``/``claim_p99_ms`` over the last 30 s (a bounded ring),
  ``enqueue_rate``, ``completion_rate``, ``queue_depth`` (pending jobs: ``wn_job_counts``),
  ``producer_target_rate``.

``python -m bench.jqb_whatsnext`` (``SCENARIO=long_horizon``, the only lifecycle the harness's
phases drive).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import os
import signal
import sys
import time
from typing import Any
from urllib.parse import urlparse

import aiohttp
import asyncpg
import orjson

SYSTEM = "whatsnext"
PROJECT = "jqb"
TASK = "long_horizon_job"
EVENT_TABLES = ["public.jobs", "public.job_events", "public.job_counts"]


def env_int(key: str, default: int) -> int:
    value = os.environ.get(key)
    return int(value) if value else default


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def emit(record: dict[str, Any]) -> None:
    record.setdefault("instance_id", env_int("BENCH_INSTANCE_ID", 0))
    print(json.dumps(record), flush=True)


def read_rate(default: int) -> int:
    path = os.environ.get("PRODUCER_RATE_CONTROL_FILE")
    if not path:
        return default
    try:
        with open(path) as fh:
            return int(float(fh.read().strip()))
    except (OSError, ValueError):
        return default


def percentiles(events: collections.deque[tuple[float, float]], now: float) -> tuple[float, float, float]:
    values = sorted(v for t, v in events if t >= now - 30.0)
    if not values:
        return 0.0, 0.0, 0.0
    n = len(values)

    def q(p: float) -> float:
        return values[min(n - 1, max(0, round(p * (n - 1))))]

    return q(0.50), q(0.95), q(0.99)


async def long_horizon() -> None:
    from whatsnext.api.client import AsyncServer, Client, PythonFormatter
    from whatsnext.logs import configure

    configure("WARNING")
    url = os.environ["WHATSNEXT_SERVER"]
    database_url = os.environ["DATABASE_URL"]
    sample_every = env_int("SAMPLE_EVERY_S", 10)
    rate = env_int("PRODUCER_RATE", 800)
    batch_max = max(1, env_int("PRODUCER_BATCH_MAX", 128))
    batch_ms = max(1, env_int("PRODUCER_BATCH_MS", 10))
    workers = env_int("WORKER_COUNT", 32)
    work_ms = env_int("JOB_WORK_MS", 1)
    padding = "x" * max(0, env_int("JOB_PAYLOAD_BYTES", 256) - 64)
    emit(
        {
            "kind": "descriptor",
            "system": SYSTEM,
            "event_tables": EVENT_TABLES,
            "extensions": [],
            "version": _version(),
            "schema_version": "0018",
            "db_name": (urlparse(database_url).path or "/").lstrip("/"),
            "started_at": now_iso(),
        }
    )

    latencies: collections.deque[tuple[float, float]] = collections.deque(maxlen=32768)
    counters = {"enqueued": 0, "completed": 0, "depth": 0, "target": float(rate)}
    loop = asyncio.get_running_loop()
    shutdown = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown.set)

    async def job(seq: int, created_at_iso: str, padding: str = "") -> None:
        created = dt.datetime.fromisoformat(created_at_iso.replace("Z", "+00:00"))
        latency = max(0.0, (dt.datetime.now(dt.UTC) - created).total_seconds() * 1000.0)
        latencies.append((loop.time(), latency))
        if work_ms:
            await asyncio.sleep(work_ms / 1000.0)
        counters["completed"] += 1

    server = AsyncServer(url)
    session = aiohttp.ClientSession(headers={"Content-Type": "application/json"})
    async with session.post(f"{url}/projects", data=orjson.dumps({"name": PROJECT})) as resp:
        await resp.read()  # 201, or 409 when a restarted replica finds it
    client = Client(
        "jqb",
        f"jqb-{os.getpid()}",
        PROJECT,
        PythonFormatter(job),
        available_cpu=workers,
        server=server,
    )

    async def producer() -> None:
        seq = 0
        credit = 0.0
        last = loop.time()
        while not shutdown.is_set():
            target = read_rate(rate)
            counters["target"] = float(target)
            await asyncio.sleep(max(0.0, batch_ms / 1000.0 - (loop.time() - last)))
            now = loop.time()
            credit += target * (now - last)  # real elapsed time, not the nominal period
            last = now
            if credit < 1.0:
                continue
            count = min(batch_max, int(credit))
            credit -= count
            created = now_iso()
            batch = [
                {
                    "name": f"j-{os.getpid()}-{seq + i}",
                    "task": TASK,
                    "parameters": {"seq": seq + i, "created_at_iso": created, "padding": padding},
                }
                for i in range(count)
            ]
            try:
                async with session.post(
                    f"{url}/projects/{PROJECT}/jobs/batch", data=orjson.dumps(batch)
                ) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        print(f"[whatsnext] batch answered HTTP {resp.status}", file=sys.stderr)
                        continue
            except aiohttp.ClientError as exc:
                print(f"[whatsnext] producer insert failed: {exc}", file=sys.stderr)
                continue
            counters["enqueued"] += count
            seq += count

    async def depth() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            while not shutdown.is_set():
                counters["depth"] = int(
                    await conn.fetchval(
                        "SELECT coalesce(sum(c.n), 0) FROM wn_job_counts(wn_project_id($1)) c "
                        "WHERE c.status = 'PENDING'",
                        PROJECT,
                    )
                )
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    async def sampler() -> None:
        await asyncio.sleep(sample_every - (time.time() % sample_every))
        last_enq, last_cmp, last_tick = counters["enqueued"], counters["completed"], loop.time()
        while not shutdown.is_set():
            try:
                await asyncio.wait_for(shutdown.wait(), sample_every)
                break
            except TimeoutError:
                pass
            span = max(0.001, loop.time() - last_tick)
            last_tick = loop.time()
            enq = (counters["enqueued"] - last_enq) / span
            cmp_ = (counters["completed"] - last_cmp) / span
            last_enq, last_cmp = counters["enqueued"], counters["completed"]
            p50, p95, p99 = percentiles(latencies, loop.time())
            t = now_iso()
            for metric, value, window in (
                ("claim_p50_ms", p50, 30.0),
                ("claim_p95_ms", p95, 30.0),
                ("claim_p99_ms", p99, 30.0),
                ("enqueue_rate", enq, float(sample_every)),
                ("completion_rate", cmp_, float(sample_every)),
                ("queue_depth", float(counters["depth"]), 0.0),
                ("producer_target_rate", counters["target"], 0.0),
            ):
                emit(
                    {
                        "t": t,
                        "system": SYSTEM,
                        "kind": "adapter",
                        "subject_kind": "adapter",
                        "subject": "",
                        "metric": metric,
                        "value": value,
                        "window_s": window,
                    }
                )

    consumer = asyncio.create_task(client.work_async(forever=True, handle_signals=False))
    tasks = [asyncio.create_task(c()) for c in (producer, depth, sampler)]
    try:
        await shutdown.wait()
    finally:
        for task in tasks:
            task.cancel()
        client.stop()  # drain: finish what runs, claim no more
        await asyncio.wait({consumer, *tasks}, timeout=4.0)
        consumer.cancel()
        await asyncio.gather(consumer, *tasks, return_exceptions=True)
        await session.close()
        await server.close()
        print("[whatsnext] long_horizon: shutdown signal received", file=sys.stderr)


def _version() -> str:
    import whatsnext

    return whatsnext.__version__


def main() -> None:
    scenario = os.environ.get("SCENARIO", "long_horizon")
    if scenario != "long_horizon":
        raise SystemExit(f"SCENARIO {scenario!r}: this adapter implements long_horizon")
    asyncio.run(long_horizon())


if __name__ == "__main__":
    main()
