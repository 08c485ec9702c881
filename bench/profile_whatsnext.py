"""Profile the WhatsNext hot path (claim, report, enqueue) during one drain.

``python -m bench.profile_whatsnext [--jobs N] [--py-spy PATH] [--out DIR]`` starts
a server on a fresh database (``$WHATSNEXT_BENCH_DATABASE_URL``, else the embedded
PostgreSQL), queues ``N`` no-op jobs through the SDK, drains them with the benchmark's
worker process (:mod:`bench.whatsnext_worker`, concurrency 20) and reports (``--dag``:
the same for the DAG workload of :mod:`bench.whatsnext_bench`):

* SQL statements per job: from ``pg_stat_statements`` when the server has it loaded
  (``shared_preload_libraries``, with ``pg_stat_statements.track = all`` to see the
  statements inside the SQL functions too), else the number of calls of each
  ``wn_*`` function from ``pg_stat_user_functions`` and the transactions committed;
* with ``--py-spy`` (a py-spy executable, kept out of the project's environment): a
  sampling profile of the server and of the worker process while they drain, as
  collapsed stacks (``*.txt``, for flame graph tools) plus the functions with the most
  samples, self and inclusive.

Everything goes to ``--out`` (default ``$TMPDIR/whatsnext-profile``) and a summary to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    WORKER_DSN_ENV,
    WorkerProcess,
    analyze,
    fresh_database,
    postgres_server,
    run_async,
)
from bench.whatsnext_bench import (
    PROJECT,
    SERVER_ENV,
    ServerProcess,
    WhatsNextAdapter,
    dag_batches,
    running_server,
    temp_environ,
)
from bench.whatsnext_worker import PROJECT_ENV

DEFAULT_OUT = Path(tempfile.gettempdir()) / "whatsnext-profile"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_whatsnext", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs to drain (default 20000)")
    parser.add_argument(
        "--dag",
        action="store_true",
        help="queue the DAG workload instead (groups of root, 8 children, join; --jobs rounded to groups)",
    )
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--py-spy", default=None, metavar="PATH", help="py-spy executable to sample with")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- statement counts


async def _has_pgss(conn: asyncpg.Connection) -> bool:
    loaded = await conn.fetchval("SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'")
    if "pg_stat_statements" not in (loaded or ""):
        return False
    with contextlib.suppress(asyncpg.PostgresError):
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return True
    return False


async def stats_reset(dsn: str) -> bool:
    """Reset the counters; True when pg_stat_statements is available."""
    conn = await asyncpg.connect(dsn)
    try:
        pgss = await _has_pgss(conn)
        if pgss:
            await conn.execute("SELECT pg_stat_statements_reset()")
        await conn.execute("SELECT pg_stat_reset()")
        return pgss
    finally:
        await conn.close()


async def stats_collect(dsn: str, pgss: bool, jobs: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await asyncio.sleep(0.5)  # the closed sessions' counters reach the views
        db = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, blks_hit, blks_read "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        functions = [
            dict(r)
            for r in await conn.fetch(
                "SELECT funcname, calls, round(total_time::numeric, 1) AS total_ms, "
                "round(self_time::numeric, 1) AS self_ms FROM pg_stat_user_functions "
                "WHERE funcname LIKE 'wn\\_%' ORDER BY total_time DESC"
            )
        ]
        statements: list[dict[str, Any]] = []
        if pgss:
            rows = await conn.fetch(
                "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms, "
                "round(mean_exec_time::numeric, 3) AS mean_ms, rows, toplevel, "
                "regexp_replace(left(query, 160), '\\s+', ' ', 'g') AS query "
                "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 40"
            )
            statements = [dict(r) for r in rows]
    finally:
        await conn.close()
    out: dict[str, Any] = {
        "jobs": jobs,
        "transactions": int(db["xact_commit"]) + int(db["xact_rollback"]),
        "transactions_per_job": round((int(db["xact_commit"]) + int(db["xact_rollback"])) / jobs, 3),
        "tuples_inserted_per_job": round(int(db["tup_inserted"]) / jobs, 3),
        "tuples_updated_per_job": round(int(db["tup_updated"]) / jobs, 3),
        "functions": functions,
        "statements": statements,
    }
    for f in functions:
        f["calls_per_job"] = round(int(f["calls"]) / jobs, 4)
    for s in statements:
        s["calls_per_job"] = round(int(s["calls"]) / jobs, 4)
        s["total_ms"] = float(s["total_ms"])
        s["mean_ms"] = float(s["mean_ms"])
    return out


# --------------------------------------------------------------------------- py-spy


class Sampler:
    """``py-spy record --gil --format raw`` attached to one process until it exits or :meth:`stop`.

    ``--gil`` keeps only the samples of the thread holding the GIL: the event loop waiting
    in epoll (uvloop releases the GIL there) and idle helper threads do not count, so the
    percentages are shares of the CPU time the process spends running Python.
    """

    def __init__(self, exe: str, pid: int, path: Path, rate: int) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--gil",
                "--format",
                "raw",
                "-o",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def summarize_collapsed(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample counts per function from collapsed stacks."""
    if not path.exists():
        return {"samples": 0, "self": [], "inclusive": []}
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = [_short(f) for f in stack.split(";")]
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count

    def pct(items: list[tuple[str, int]]) -> list[dict[str, Any]]:
        return [{"function": f, "samples": n, "pct": round(100.0 * n / total, 1)} for f, n in items]

    return {
        "samples": total,
        "self": pct(self_counts.most_common(top)),
        "inclusive": pct(incl_counts.most_common(top * 2)),
    }


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    filename = where.rsplit(":", 1)[0]
    parts = filename.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    elif "whatsnext" in parts:
        parts = parts[parts.index("whatsnext") :]
    else:
        parts = parts[-2:]
    return f"{name} ({'/'.join(parts)})" if where else name


# --------------------------------------------------------------------------- run


async def profile(args: argparse.Namespace, server_dsn: str) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    async with fresh_database(server_dsn, "profile") as dsn:
        await track_functions(dsn)
        async with running_server(dsn) as server:
            result, pgss = await _profile(args, dsn, server)
        # Collected once the server has stopped: its connections flush their counters
        # when they close (an idle backend may otherwise keep them for seconds).
        result["database"] = await stats_collect(dsn, pgss, args.jobs)
        return result


async def track_functions(dsn: str) -> None:
    """Count calls of the SQL functions in every session of this database (needs a superuser)."""
    conn = await asyncpg.connect(dsn)
    try:
        with contextlib.suppress(asyncpg.PostgresError):
            name = await conn.fetchval("SELECT current_database()")
            await conn.execute(f"ALTER DATABASE \"{name}\" SET track_functions = 'all'")
    finally:
        await conn.close()


async def _profile(args: argparse.Namespace, dsn: str, server: ServerProcess) -> tuple[dict[str, Any], bool]:
    adapter = WhatsNextAdapter(dsn, server.url)
    await adapter.open()
    try:
        t0 = time.perf_counter()
        if args.dag:
            groups = max(1, args.jobs // 10)
            args.jobs = groups * 10
            for batch in dag_batches(groups, 8, 100):
                await adapter.project.extend_queue(batch)
        else:
            for start in range(0, args.jobs, 1000):
                await adapter.enqueue_batch(start, min(1000, args.jobs - start))
        enqueue_s = time.perf_counter() - t0
        await analyze(dsn)
        pgss = await stats_reset(dsn)
        samplers: list[Sampler] = []
        worker_args = ["--mode", "drain", "--jobs", str(args.jobs), "--concurrency", str(args.concurrency)]
        with temp_environ(**{SERVER_ENV: server.url, PROJECT_ENV: PROJECT}):
            async with WorkerProcess("bench.whatsnext_worker", worker_args, {WORKER_DSN_ENV: dsn}) as worker:
                if args.py_spy:
                    assert worker.proc is not None
                    samplers.append(Sampler(args.py_spy, server.pid, args.out / "server.txt", args.rate))
                    samplers.append(Sampler(args.py_spy, worker.proc.pid, args.out / "worker.txt", args.rate))
                event = await worker.expect("drained", 600.0)
                await worker.wait_exit(30.0)
        for sampler in samplers:
            sampler.stop()
        await adapter.check_drained(args.jobs)
    finally:
        await adapter.close()
    seconds = event["t_end"] - event["t_start"]
    result: dict[str, Any] = {
        "jobs": args.jobs,
        "enqueue_jobs_s": round(args.jobs / enqueue_s, 1),
        "drain_jobs_s": round(args.jobs / seconds, 1),
        "drain_seconds": round(seconds, 3),
        "pg_stat_statements": pgss,
    }
    if args.py_spy:
        result["server_profile"] = summarize_collapsed(args.out / "server.txt")
        result["worker_profile"] = summarize_collapsed(args.out / "worker.txt")
    return result, pgss


def print_summary(result: dict[str, Any]) -> None:
    db = result["database"]
    print(
        f"drained {result['jobs']:,} jobs at {result['drain_jobs_s']:,.0f} jobs/s "
        f"({result['drain_seconds']:.2f}s); enqueue {result['enqueue_jobs_s']:,.0f} jobs/s"
    )
    print(
        f"transactions per job: {db['transactions_per_job']}; tuples inserted per job "
        f"{db['tuples_inserted_per_job']}, updated per job {db['tuples_updated_per_job']}"
    )
    print("\nSQL functions (calls per job, total ms, self ms):")
    for f in db["functions"]:
        print(f"  {f['funcname']:<24} {f['calls_per_job']:>8} {f['total_ms']:>10} {f['self_ms']:>10}")
    if db["statements"]:
        print("\nstatements by total time (calls per job, total ms, mean ms, top-level):")
        for s in db["statements"][:15]:
            print(
                f"  {s['calls_per_job']:>8} {s['total_ms']:>9.1f} {s['mean_ms']:>8.3f} "
                f"{'top ' if s['toplevel'] else 'nest'} {s['query'][:90]}"
            )
    for side in ("server", "worker"):
        prof = result.get(f"{side}_profile")
        if not prof:
            continue
        print(f"\n{side}: {prof['samples']} samples; most self time:")
        for item in prof["self"][:12]:
            print(f"  {item['pct']:>5.1f}%  {item['function']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(message: str) -> None:
        print(f"[profile] {message}", flush=True)

    with postgres_server(log) as server:
        result = run_async(profile(args, server.dsn))
    (args.out / "profile.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_summary(result)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
