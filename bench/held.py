"""A steady load with a writing transaction held open in the middle (the xmin horizon pinned).

``python -m bench.held [--minutes 10] [--rate 500] [--hold-minutes 5]`` measures WhatsNext alone,
with real server and worker processes, on a fresh database of its own (embedded, or
``WHATSNEXT_BENCH_DATABASE_URL``):

* a producer queues ``--rate`` jobs per second for ``--minutes``, paced on the wall clock (each
  tick of 50 ms queues what the elapsed time has earned, one ``POST /projects/{p}/jobs/batch``);
  each job carries the time it was sent;
* ``--workers`` worker processes (``bench.whatsnext_worker --mode wake``: the SDK's ``Client``
  at ``--concurrency``, long-polling claims) run them; each job's start is reported back, so
  the latency is from the submission to the job's start;
* in the middle, another connection opens a transaction, takes a transaction id
  (``txid_current()``: a writing transaction, as a migration or a long report would) and holds
  it for ``--hold-minutes``: no row deleted or updated after it started can be removed meanwhile;
* on a PostgreSQL without autovacuum, ``ANALYZE`` once 20 s into the warm-up (as autoanalyze
  would have by then: the tables start empty, and plans made for an empty ``jobs`` would stay);
* every 5 s: each table's live and dead tuples (``pg_stat_user_tables``) and size; at the hold's
  start, its end and the run's end, ``pgstattuple`` of ``jobs``, ``job_events`` and
  ``job_counts`` (dead tuples, free space).

Reported per phase (before, held, after): jobs started per second, latency p50/p99; the held
phase's throughput against the one before (target: at least 80 %); the dead tuples at the hold's
end and at the run's end against before (back to the baseline) and the table sizes (free space
reused: a table grows no further once vacuum freed what the hold kept).
Results go to ``bench/out/held.json`` and ``held.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.common import (
    DEFAULT_OUT,
    Progress,
    WorkerProcess,
    fresh_database,
    machine_info,
    percentile,
    postgres_server,
    run_async,
)
from bench.whatsnext_bench import PROJECT, PROJECT_ENV, SERVER_ENV, ServerProcess
from bench.whatsnext_worker import WAKE_TASK

TABLES = ("jobs", "job_events", "job_counts")
THROUGHPUT_TARGET = 0.80
TICK_S = 0.05
SAMPLE_S = 5.0


@dataclasses.dataclass(frozen=True)
class HeldConfig:
    minutes: float = 10.0
    rate: float = 500.0
    hold_minutes: float = 5.0
    workers: int = 1
    concurrency: int = 20
    #: Seconds after the run before the last look (autovacuum's time to catch up).
    settle_s: float = 90.0

    @property
    def hold_start_s(self) -> float:
        return (self.minutes - self.hold_minutes) * 60.0 / 2

    @property
    def hold_end_s(self) -> float:
        return self.hold_start_s + self.hold_minutes * 60.0


class Run:
    """What the producer sent and the workers started, in seconds from the start."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.sent = 0
        self.send_errors = 0
        self.started: list[tuple[float, float]] = []  # (start, latency ms)

    def now(self) -> float:
        return time.time() - self.t0


async def produce(session: aiohttp.ClientSession, url: str, cfg: HeldConfig, run: Run) -> None:
    loop = asyncio.get_running_loop()
    end = cfg.minutes * 60.0
    credit = 0.0
    last = loop.time()
    path = f"{url}/projects/{PROJECT}/jobs/batch"
    while run.now() < end:
        await asyncio.sleep(max(0.0, TICK_S - (loop.time() - last)))
        now = loop.time()
        credit += cfg.rate * (now - last)  # credited on the wall clock, whatever a call took
        last = now
        count = int(credit)
        if count < 1:
            continue
        credit -= count
        sent = time.time()
        batch = [
            {
                "name": f"s-{run.sent + i}",
                "task": WAKE_TASK,
                "parameters": {"seq": run.sent + i, "sent": sent},
            }
            for i in range(count)
        ]
        try:
            async with session.post(path, data=orjson.dumps(batch)) as resp:
                await resp.read()
                if resp.status >= 300:
                    run.send_errors += 1
                    continue
        except aiohttp.ClientError:
            run.send_errors += 1
            continue
        run.sent += count


async def collect(worker: WorkerProcess, run: Run) -> None:
    while True:
        event = await worker.expect("wake", 3600.0)
        if event["seq"] >= 0:
            started = float(event["started"])
            run.started.append((started - run.t0, (started - float(event["sent"])) * 1000.0))


async def table_stats(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid) AS size, "
        "autovacuum_count, vacuum_count FROM pg_stat_user_tables WHERE relname = ANY ($1::text[])",
        list(TABLES),
    )
    return {
        r["relname"]: {
            "live": int(r["n_live_tup"]),
            "dead": int(r["n_dead_tup"]),
            "size_mb": round(r["size"] / 2**20, 2),
            "autovacuums": int(r["autovacuum_count"]),
        }
        for r in rows
    }


async def tuple_stats(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    out = {}
    for table in TABLES:
        r = await conn.fetchrow(
            "SELECT table_len, tuple_count, dead_tuple_count, dead_tuple_percent, free_space, free_percent "
            "FROM pgstattuple($1::regclass)",
            table,
        )
        out[table] = {
            "size_mb": round(r["table_len"] / 2**20, 2),
            "tuples": int(r["tuple_count"]),
            "dead_tuples": int(r["dead_tuple_count"]),
            "dead_percent": float(r["dead_tuple_percent"]),
            "free_mb": round(r["free_space"] / 2**20, 2),
            "free_percent": float(r["free_percent"]),
        }
    return out


ANALYZE_AT_S = 20.0
"""When the server runs without autovacuum: the run analyzes the tables once, this many seconds
into the warm-up, as autoanalyze would have by then."""


async def analyze_without_autovacuum(dsn: str, run: Run, progress: Progress) -> float | None:
    """On a PostgreSQL with autovacuum off, nothing else would ever analyze the tables, which start
    empty: every plan the server's sessions cache stays the one made for an empty ``jobs`` (a
    sequential scan wherever a join with it is planned), slower as the table grows. Analyze once
    during the warm-up; returns when (None: autovacuum is on, nothing done)."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SHOW autovacuum") == "on":
            return None
        await asyncio.sleep(max(0.0, ANALYZE_AT_S - run.now()))
        await conn.execute("ANALYZE")
        progress(f"autovacuum is off: ANALYZE at {run.now():.0f}s, as autoanalyze would have")
        return round(run.now(), 1)
    finally:
        await conn.close()


async def hold(dsn: str, cfg: HeldConfig, run: Run, looks: dict[str, Any], progress: Progress) -> None:
    await asyncio.sleep(max(0.0, cfg.hold_start_s - run.now()))
    watch = await asyncpg.connect(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        looks["hold_start"] = {"t": round(run.now(), 1), "pgstattuple": await tuple_stats(watch)}
        tx = conn.transaction()
        await tx.start()
        xid = await conn.fetchval("SELECT txid_current()")
        progress(f"holding transaction {xid} open for {cfg.hold_minutes:g} min (at {run.now():.0f}s)")
        await asyncio.sleep(max(0.0, cfg.hold_end_s - run.now()))
        looks["hold_end"] = {"t": round(run.now(), 1), "pgstattuple": await tuple_stats(watch)}
        await tx.commit()
        progress(f"transaction {xid} committed at {run.now():.0f}s")
    finally:
        await conn.close()
        await watch.close()


async def sample(dsn: str, run: Run, samples: list[dict[str, Any]], stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            samples.append(
                {"t": round(run.now(), 1), "started": len(run.started), "tables": await table_stats(conn)}
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)
    finally:
        await conn.close()


def phase(run: Run, start: float, end: float) -> dict[str, Any]:
    lat = [ms for t, ms in run.started if start <= t < end]
    span = end - start
    return {
        "from_s": round(start, 1),
        "to_s": round(end, 1),
        "jobs_s": round(len(lat) / span, 1) if span > 0 else None,
        "p50_ms": round(percentile(lat, 50), 1) if lat else None,
        "p99_ms": round(percentile(lat, 99), 1) if lat else None,
        "max_ms": round(max(lat), 1) if lat else None,
    }


async def measure(dsn: str, cfg: HeldConfig, progress: Progress) -> dict[str, Any]:
    looks: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        server = ServerProcess(dsn)
        await server.start()
        stack.push_async_callback(server.stop)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(headers={"Content-Type": "application/json"})
        )
        async with session.post(f"{server.url}/projects", data=orjson.dumps({"name": PROJECT})) as resp:
            await resp.read()
        conn = await asyncpg.connect(dsn)
        stack.push_async_callback(conn.close)
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        workers = []
        for _ in range(cfg.workers):
            args = ["--mode", "wake", "--jobs", "0", "--concurrency", str(cfg.concurrency)]
            worker = WorkerProcess(
                "bench.whatsnext_worker", args, {SERVER_ENV: server.url, PROJECT_ENV: PROJECT}
            )
            await stack.enter_async_context(worker)
            await worker.expect("ready", 60.0)
            workers.append(worker)
        run = Run()
        looks["start"] = {"t": 0.0, "pgstattuple": await tuple_stats(conn)}
        stop = asyncio.Event()
        collectors = [asyncio.create_task(collect(w, run)) for w in workers]
        sampler = asyncio.create_task(sample(dsn, run, samples, stop))
        holder = asyncio.create_task(hold(dsn, cfg, run, looks, progress))
        analyzer = asyncio.create_task(analyze_without_autovacuum(dsn, run, progress))
        progress(
            f"{cfg.rate:g} jobs/s for {cfg.minutes:g} min, {cfg.workers} worker(s) at concurrency "
            f"{cfg.concurrency}; a transaction held from {cfg.hold_start_s:.0f}s to {cfg.hold_end_s:.0f}s"
        )
        analyzed_at: float | None = None
        try:
            await produce(session, server.url, cfg, run)
            await holder
            analyzed_at = await analyzer
            progress(f"load ended at {run.now():.0f}s; {cfg.settle_s:g}s for the workers and autovacuum")
            await asyncio.sleep(cfg.settle_s)
            looks["end"] = {"t": round(run.now(), 1), "pgstattuple": await tuple_stats(conn)}
        finally:
            stop.set()
            for task in (*collectors, holder, analyzer):
                task.cancel()
            await asyncio.gather(*collectors, holder, analyzer, return_exceptions=True)
            await sampler
        left = int(await conn.fetchval("SELECT count(*) FROM jobs WHERE status <> 'COMPLETED'"))
    end = cfg.minutes * 60.0
    before = phase(run, 30.0, cfg.hold_start_s)  # after 30 s of warm-up
    held = phase(run, cfg.hold_start_s, cfg.hold_end_s)
    after = phase(run, cfg.hold_end_s, end)
    ratio = held["jobs_s"] / before["jobs_s"] if before["jobs_s"] else None
    return {
        "sent": run.sent,
        "send_errors": run.send_errors,
        "analyzed_at_s": analyzed_at,
        "started": len(run.started),
        "not_completed_at_end": left,
        "phases": {"before": before, "held": held, "after": after},
        "held_throughput_ratio": None if ratio is None else round(ratio, 3),
        "throughput_met": ratio is not None and ratio >= THROUGHPUT_TARGET,
        "by_10s": [phase(run, t, t + 10.0) for t in range(0, int(end), 10)],
        "pgstattuple": looks,
        "samples": samples,
    }


def render(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"{cfg['rate']:g} jobs/s offered for {cfg['minutes']:g} min; a writing transaction held "
        f"{cfg['hold_minutes']:g} min in the middle; {result['sent']:,} sent, {result['started']:,} started",
        "",
        "| phase | from-to (s) | jobs started/s | latency p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, p in result["phases"].items():
        lines.append(
            f"| {name} | {p['from_s']:g}-{p['to_s']:g} | {p['jobs_s']:,.1f} | {p['p50_ms']} | {p['p99_ms']} | {p['max_ms']} |"
        )
    met = "met" if result["throughput_met"] else "missed"
    lines += ["", f"held / before: {result['held_throughput_ratio']} (target at least 0.80: {met})", ""]
    if result.get("analyzed_at_s") is not None:
        lines += [
            f"autovacuum off: the run ran ANALYZE at {result['analyzed_at_s']:g} s, as autoanalyze would have",
            "",
        ]
    lines += [
        "| table | look | size MiB | tuples | dead tuples | free MiB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for table in TABLES:
        for look in ("start", "hold_start", "hold_end", "end"):
            if look in result["pgstattuple"]:
                s = result["pgstattuple"][look]["pgstattuple"][table]
                t = result["pgstattuple"][look]["t"]
                lines.append(
                    f"| {table} | {look} ({t:g}s) | {s['size_mb']:,.1f} | {s['tuples']:,} | {s['dead_tuples']:,} | {s['free_mb']:,.1f} |"
                )
    return "\n".join(lines) + "\n"


async def run(cfg: HeldConfig, progress: Progress) -> dict[str, Any]:
    result: dict[str, Any] = {"config": {**dataclasses.asdict(cfg), "hold_start_s": cfg.hold_start_s}}
    with postgres_server(progress) as pg:
        result["machine"] = await machine_info(pg)
        async with fresh_database(pg.dsn, "held") as dsn:
            result.update(await measure(dsn, cfg, progress))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.held", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load (10)")
    parser.add_argument("--rate", type=float, default=500.0, help="jobs queued per second (500)")
    parser.add_argument(
        "--hold-minutes", type=float, default=5.0, help="the transaction held, in the middle (5)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    parser.add_argument("--concurrency", type=int, default=20, help="jobs each worker runs at once (20)")
    parser.add_argument(
        "--settle", type=float, default=90.0, help="seconds after the load before the last look (90)"
    )
    parser.add_argument("--label", default="", help="suffix of the result files (held-LABEL.json)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results go (bench/out)")
    args = parser.parse_args(argv)
    if args.hold_minutes >= args.minutes:
        parser.error("--hold-minutes must be shorter than --minutes")
    cfg = HeldConfig(
        minutes=args.minutes,
        rate=args.rate,
        hold_minutes=args.hold_minutes,
        workers=args.workers,
        concurrency=args.concurrency,
        settle_s=args.settle,
    )

    def progress(message: str) -> None:
        print(f"[held] {message}", flush=True)

    result = run_async(run(cfg, progress))
    table = render(result)
    name = f"held-{args.label}" if args.label else "held"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text("# A held transaction under a steady load\n\n" + table)
    print(table, end="")
    print(f"[held] wrote {args.out / (name + '.json')}, {args.out / (name + '.md')}")
    return 0 if result["throughput_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
