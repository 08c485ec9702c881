"""The PostgreSQL job-queue benchmark's phase driver, ported to run natively on one machine.

hardbyte/postgresql-job-queue-benchmarking (commit 93677cab92dad89ee9eccb0d6e113893de43cbe6)
drives each queue's adapter (a process speaking its JSONL protocol) through phases against a
PostgreSQL in Docker. ``python -m bench.jqb`` does the same against the system's PostgreSQL
(``WHATSNEXT_BENCH_DATABASE_URL``), without Docker, for WhatsNext (``bench.jqb_whatsnext``) and
for the benchmark's own Procrastinate adapter (its ``procrastinate-bench/main.py``, run unchanged
from ``--procrastinate-main`` with the Python of a virtual environment that has procrastinate,
``--procrastinate-python``), one system after the other, each on a database of its own:

* the adapter runs with ``SCENARIO=long_horizon`` and the benchmark's variables
  (``PRODUCER_RATE``, ``PRODUCER_BATCH_MAX`` 128, ``PRODUCER_BATCH_MS`` 25, ``WORKER_COUNT``,
  ``JOB_WORK_MS`` 1, ``JOB_PAYLOAD_BYTES`` 256, ``SAMPLE_EVERY_S``); its samples are kept with the
  phase they fell in;
* phases, as the benchmark's ``phases.py`` names them, shortened (``--scale``) to fit a small
  machine: ``long_horizon`` is warmup, clean, idle-in-tx, recovery, idle-in-tx (10, 60, 60, 120,
  120 minutes there; 20, 60, 60, 60, 60 seconds here at scale 1); ``chaos_crash_recovery`` is
  warmup, baseline, kill-worker (SIGKILL of the adapter), start-worker (started again), recovery
  (30, 60, 60, 60, 60 s there; 15, 30, 30, 30, 30 s here);
* ``idle-in-tx``: one connection holds ``BEGIN; SELECT txid_current()`` for the phase;
* every ``SAMPLE_EVERY_S``: live and dead tuples and size of the adapter's event tables
  (``pg_stat_user_tables``); at each phase's end, ``pgstattuple`` of each.

Per phase: the medians of ``completion_rate``, ``enqueue_rate`` and ``claim_p99_ms``, the
largest ``queue_depth``, the dead tuples at its end. After the run (SIGTERM, then
``--settle`` seconds) the jobs by state: in ``chaos_crash_recovery``, jobs still running (held by
the killed process) are the lost ones. Results: ``bench/out/jqb-<scenario>.json`` (and
``.jsonl``, every record) and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    DEFAULT_OUT,
    Progress,
    create_database,
    drop_database,
    machine_info,
    median,
    postgres_server,
    run_async,
)
from bench.whatsnext_bench import ServerProcess

COMMIT = "93677cab92dad89ee9eccb0d6e113893de43cbe6"
SCENARIOS: dict[str, list[tuple[str, str, float]]] = {
    "long_horizon": [
        ("warmup", "warmup", 20),
        ("clean_1", "clean", 60),
        ("idle_1", "idle-in-tx", 60),
        ("recovery_1", "recovery", 60),
        ("idle_2", "idle-in-tx", 60),
    ],
    "chaos_crash_recovery": [
        ("warmup", "warmup", 15),
        ("baseline", "clean", 30),
        ("kill", "kill-worker", 30),
        ("restart", "start-worker", 30),
        ("recovery", "clean", 30),
    ],
}
EVENT_TABLES = {
    "whatsnext": ["jobs", "job_events", "job_counts"],
    "procrastinate": ["procrastinate_jobs", "procrastinate_events"],
}
STATES = {
    "whatsnext": "SELECT status, count(*) AS n FROM jobs GROUP BY status",
    "procrastinate": "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs GROUP BY status",
}
RUNNING_STATE = {"whatsnext": "RUNNING", "procrastinate": "doing"}


@dataclasses.dataclass(frozen=True)
class JqbConfig:
    scenario: str = "long_horizon"
    scale: float = 1.0
    rate: int = 200
    workers: int = 20
    sample_every: int = 5
    settle: float = 10.0
    procrastinate_python: str = ""
    procrastinate_main: str = ""


class Adapter:
    """One adapter process: its JSONL lines on stdout go to ``records``, stderr to a log."""

    def __init__(
        self, argv: list[str], env: dict[str, str], log: Path, records: list[dict[str, Any]]
    ) -> None:
        self.argv, self.env, self.log, self.records = argv, env, log, records
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.phase = ""
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        err = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            stdin=asyncio.subprocess.DEVNULL,
        )
        err.close()
        self.reader = asyncio.create_task(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                record["phase"] = self.phase
                record["received"] = time.time()
                self.records.append(record)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self, grace: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


async def table_stats(conn: asyncpg.Connection, tables: list[str]) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid) AS size "
        "FROM pg_stat_user_tables WHERE relname = ANY ($1::text[])",
        tables,
    )
    return {
        r["relname"]: {
            "live": int(r["n_live_tup"]),
            "dead": int(r["n_dead_tup"]),
            "size_mb": round(r["size"] / 2**20, 2),
        }
        for r in rows
    }


async def tuple_stats(conn: asyncpg.Connection, tables: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for table in tables:
        r = await conn.fetchrow(
            "SELECT table_len, tuple_count, dead_tuple_count, free_percent FROM pgstattuple($1::regclass)",
            table,
        )
        out[table] = {
            "size_mb": round(r["table_len"] / 2**20, 2),
            "tuples": int(r["tuple_count"]),
            "dead_tuples": int(r["dead_tuple_count"]),
            "free_percent": float(r["free_percent"]),
        }
    return out


def adapter_command(system: str, cfg: JqbConfig) -> list[str]:
    if system == "whatsnext":
        return [sys.executable, "-m", "bench.jqb_whatsnext"]
    return [cfg.procrastinate_python, cfg.procrastinate_main]


async def run_system(
    system: str, server_dsn: str, cfg: JqbConfig, out: Path, progress: Progress
) -> dict[str, Any]:
    name = f"{system}_bench_{os.getpid()}"
    dsn = await create_database(server_dsn, name)
    records: list[dict[str, Any]] = []
    stats: list[dict[str, Any]] = []
    phases: list[dict[str, Any]] = []
    tables = EVENT_TABLES[system]
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(drop_database, server_dsn, name)
        conn = await asyncpg.connect(dsn)
        stack.push_async_callback(conn.close)
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        env = {
            "DATABASE_URL": dsn,
            "SCENARIO": "long_horizon",
            "PRODUCER_MODE": "fixed",
            "PRODUCER_RATE": str(cfg.rate),
            "PRODUCER_BATCH_MAX": "128",
            "PRODUCER_BATCH_MS": "25",
            "WORKER_COUNT": str(cfg.workers),
            "JOB_WORK_MS": "1",
            "JOB_PAYLOAD_BYTES": "256",
            "SAMPLE_EVERY_S": str(cfg.sample_every),
        }
        if system == "whatsnext":
            server = ServerProcess(dsn)
            await server.start()
            stack.push_async_callback(server.stop)
            env["WHATSNEXT_SERVER"] = server.url
        log = out / f"jqb-{cfg.scenario}-{system}.log"
        log.unlink(missing_ok=True)
        adapter = Adapter(adapter_command(system, cfg), env, log, records)
        await adapter.start()
        stack.push_async_callback(adapter.stop)
        deadline = time.monotonic() + 60
        while not any(r.get("kind") == "descriptor" for r in records):
            if time.monotonic() > deadline or (adapter.proc and adapter.proc.returncode is not None):
                raise RuntimeError(f"{system}: no descriptor line (see {log})")
            await asyncio.sleep(0.1)
        await conn.fetch("SELECT 1")  # the adapter installed its schema by now
        stop = asyncio.Event()

        async def sample() -> None:
            c = await asyncpg.connect(dsn)
            try:
                while not stop.is_set():
                    stats.append(
                        {"t": time.time(), "phase": adapter.phase, "tables": await table_stats(c, tables)}
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), cfg.sample_every)
            finally:
                await c.close()

        sampler = asyncio.create_task(sample())
        t0 = time.time()
        for label, kind, seconds in SCENARIOS[cfg.scenario]:
            duration = seconds * cfg.scale
            adapter.phase = label
            started = time.time()
            holder: asyncpg.Connection | None = None
            if kind == "idle-in-tx":
                holder = await asyncpg.connect(dsn)
                await holder.execute("BEGIN")
                await holder.fetchval("SELECT txid_current()")
            elif kind == "kill-worker":
                adapter.kill()
            elif kind == "start-worker":
                await adapter.start()
            progress(f"{system}: phase {label} ({kind}, {duration:g}s) at {started - t0:.0f}s")
            await asyncio.sleep(duration)
            if holder is not None:
                await holder.execute("COMMIT")
                await holder.close()
            phases.append(
                {
                    "label": label,
                    "type": kind,
                    "from_s": round(started - t0, 1),
                    "to_s": round(time.time() - t0, 1),
                    "pgstattuple_end": await tuple_stats(conn, tables),
                }
            )
        adapter.phase = "shutdown"
        await adapter.stop()
        await asyncio.sleep(cfg.settle)
        stop.set()
        await sampler
        states = {r["status"]: int(r["n"]) for r in await conn.fetch(STATES[system])}
    summary = summarise(system, phases, records, stats, states, cfg)
    return {
        "summary": summary,
        "phases": phases,
        "states": states,
        "records": records,
        "table_samples": stats,
    }


def summarise(
    system: str,
    phases: list[dict[str, Any]],
    records: list[dict[str, Any]],
    stats: list[dict[str, Any]],
    states: dict[str, int],
    cfg: JqbConfig,
) -> dict[str, Any]:
    out: dict[str, Any] = {"phases": {}}
    for p in phases:

        def values(metric: str, label: str = p["label"]) -> list[float]:
            return [float(r["value"]) for r in records if r.get("metric") == metric and r["phase"] == label]

        dead = [sum(t["dead"] for t in s["tables"].values()) for s in stats if s["phase"] == p["label"]]
        size = [sum(t["size_mb"] for t in s["tables"].values()) for s in stats if s["phase"] == p["label"]]
        comp, enq, p99 = values("completion_rate"), values("enqueue_rate"), values("claim_p99_ms")
        depth = values("queue_depth")
        out["phases"][p["label"]] = {
            "type": p["type"],
            "completion_rate": round(median(comp), 1) if comp else None,
            "enqueue_rate": round(median(enq), 1) if enq else None,
            "claim_p99_ms": round(median(p99), 1) if p99 else None,
            "queue_depth_max": max(depth) if depth else None,
            "dead_tuples_end": dead[-1] if dead else None,
            "event_tables_mb_end": round(size[-1], 1) if size else None,
            "pgstattuple_dead_end": sum(t["dead_tuples"] for t in p["pgstattuple_end"].values()),
        }
    out["states_after"] = states
    out["running_after"] = states.get(RUNNING_STATE[system], 0)
    return out


def render(results: dict[str, Any], cfg: JqbConfig) -> str:
    lines = [
        f"Scenario `{cfg.scenario}` (shortened, scale {cfg.scale:g}), {cfg.rate} jobs/s offered, "
        f"{cfg.workers} workers; PostgreSQL: {results['machine'].get('postgresql', '?')[:40]}",
        "",
        "| system | phase | type | completion/s | enqueue/s | pickup p99 (ms) | max depth | dead tuples at end | event tables MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for system, res in results["systems"].items():
        if "error" in res:
            lines.append(f"| {system} | error: {res['error'][:80]} | | | | | | | |")
            continue
        for label, p in res["summary"]["phases"].items():
            lines.append(
                f"| {system} | {label} | {p['type']} | {p['completion_rate']} | {p['enqueue_rate']} | "
                f"{p['claim_p99_ms']} | {p['queue_depth_max']} | {p['dead_tuples_end']} | {p['event_tables_mb_end']} |"
            )
    lines += ["", "| system | jobs by state after the run |", "|---|---|"]
    for system, res in results["systems"].items():
        if "error" not in res:
            lines.append(f"| {system} | {res['summary']['states_after']} |")
    return "\n".join(lines) + "\n"


async def run(cfg: JqbConfig, systems: list[str], out: Path, progress: Progress) -> dict[str, Any]:
    results: dict[str, Any] = {"config": dataclasses.asdict(cfg), "commit": COMMIT, "systems": {}}
    with postgres_server(progress) as pg:
        results["machine"] = await machine_info(pg)
        for system in systems:
            try:
                results["systems"][system] = await run_system(system, pg.dsn, cfg, out, progress)
            except Exception as exc:  # one system failing leaves the others' results
                results["systems"][system] = {"error": f"{type(exc).__name__}: {exc}"}
                progress(f"{system} failed: {exc}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jqb", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="long_horizon")
    parser.add_argument(
        "--systems", default="whatsnext,procrastinate", help="whatsnext, procrastinate or both"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every phase's length (1)")
    parser.add_argument("--rate", type=int, default=200, help="PRODUCER_RATE, jobs/s (200)")
    parser.add_argument("--workers", type=int, default=20, help="WORKER_COUNT (20)")
    parser.add_argument("--sample-every", type=int, default=5, help="SAMPLE_EVERY_S (5)")
    parser.add_argument("--procrastinate-python", default="", help="a Python that has procrastinate")
    parser.add_argument(
        "--procrastinate-main", default="", help="the benchmark's procrastinate-bench/main.py"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results go (bench/out)")
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if set(systems) - set(EVENT_TABLES):
        parser.error("--systems takes whatsnext, procrastinate")
    if "procrastinate" in systems and not (args.procrastinate_python and args.procrastinate_main):
        parser.error("procrastinate needs --procrastinate-python and --procrastinate-main")
    cfg = JqbConfig(
        scenario=args.scenario,
        scale=args.scale,
        rate=args.rate,
        workers=args.workers,
        sample_every=args.sample_every,
        procrastinate_python=args.procrastinate_python,
        procrastinate_main=args.procrastinate_main,
    )

    def progress(message: str) -> None:
        print(f"[jqb] {message}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    results = run_async(run(cfg, systems, args.out, progress))
    base = args.out / f"jqb-{cfg.scenario}"
    with base.with_suffix(".jsonl").open("w") as fh:
        for system, res in results["systems"].items():
            for record in res.get("records", []):
                fh.write(json.dumps({"system_run": system, **record}) + "\n")
    slim = {
        **results,
        "systems": {s: {k: v for k, v in r.items() if k != "records"} for s, r in results["systems"].items()},
    }
    base.with_suffix(".json").write_text(json.dumps(slim, indent=2) + "\n")
    table = render(results, cfg)
    base.with_suffix(".md").write_text(f"# {cfg.scenario}\n\n" + table)
    print(table, end="")
    print(f"[jqb] wrote {base}.json, .jsonl, .md")
    return 0 if all("error" not in r for r in results["systems"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
