"""Months of operation: WhatsNext with ten million finished jobs against an empty database.

``python -m bench.horizon [--jobs 10000000] [--repeat 3]`` measures WhatsNext alone, with real
server and worker processes, on two databases of its own on the same PostgreSQL
(``WHATSNEXT_BENCH_DATABASE_URL``, or the embedded one):

* **empty**: a fresh schema, nothing else;
* **full**: the same, plus ``--jobs`` finished jobs in the measured project, inserted with
  ``generate_series`` straight into the tables as real jobs leave them: a ``jobs`` row
  (COMPLETED, attempt 1, its worker, start and finish times spread over the last 90 days, a
  short log tail, a few parameters) and two ``job_events`` rows (RUNNING with the worker,
  COMPLETED), ``--log-lines`` rows of ``job_logs`` each (default 0: jobs that print nothing),
  then ``VACUUM (FREEZE, ANALYZE)`` (what autovacuum leaves a months-old table as). The pages of
  ``jobs`` are packed full, as the jobs of months ago leave them: with the table's fillfactor
  (migration 0020) a page takes new jobs until it has less than a tenth of a page free, and
  never again (``tests/sql/test_job_pages.py``); a seed written at the fillfactor would leave
  a tenth of every page free, room no page of real jobs keeps.

Each figure is measured on both, one after the other in turns (empty, full, then full, empty,
...), so that both see the same load of the machine:

* **enqueue** (jobs/s) and **drain** (jobs/s): the shared workloads of ``python -m bench``
  (20,000 jobs, batches of 1,000; one worker process at concurrency 20), ``--repeat`` times,
  medians; the full database's finished jobs stay, only what a repetition added goes
  (``DELETE`` above the seeded ids, then ``VACUUM``);
* **buffers per drained job**: the shared buffers (hits and reads, ``pg_stat_database``) the
  drain itself reads, divided by its jobs (11 s waits on either side, for the server's sessions
  to report their counters); what drains pay for deeper indexes, free of the machine's noise;
* **WAL bytes and CPU per drained job**: the cluster's WAL (``pg_stat_wal``) and the CPU time
  (``/proc``, user and system) of the server, the worker and PostgreSQL (every process of it,
  when it runs on this machine) while the drain ran, divided by its jobs: which process pays
  for what a full database costs, where the jobs per second alone only say that something does;
* **heap pages of new jobs**: the pages of ``jobs`` that one ``INSERT`` of 1,000 pending jobs
  writes to (rolled back): next to each other, or one old page each;
* **claim p50**: 200 single-job claims, each followed by its ``complete``, with 1,000 jobs
  pending (inserted in SQL), after 10 untimed ones;
* **pages**: the dashboard's project page (``GET /ui/projects/{p}``: counts, board, first page of
  jobs), its overview (``GET /ui/``), ``GET /projects/{p}`` (with counts) and
  ``GET /projects/{p}/jobs?limit=50`` (the newest page): the median of 20 requests after 3;
* **disk**: ``pg_total_relation_size`` of each table the seed filled (heap, indexes, TOAST),
  divided by the finished jobs.

Targets: claim p50 within 1.5x of the empty database, enqueue and drain within 10 %, the
project page under 200 ms, the page of jobs under 50 ms. ``--keep`` keeps the full database
(its name is printed) and ``--database NAME`` measures against a kept one instead of seeding
again. Results go to ``bench/out/horizon.json`` and ``horizon.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.common import (
    DEFAULT_OUT,
    BenchConfig,
    DatabaseServer,
    DrainProbe,
    Progress,
    create_database,
    drop_database,
    dsn_with_database,
    machine_info,
    measure_drain,
    measure_enqueue,
    median,
    percentile,
    postgres_server,
    run_async,
)
from bench.whatsnext_bench import (
    PROJECT,
    PROJECT_ENV,
    SERVER_ENV,
    ServerProcess,
    WhatsNextAdapter,
    noop_task,
    temp_environ,
)
from bench.whatsnext_worker import NOOP_TASK

CLAIM_RATIO_TARGET = 1.5
RATE_TOLERANCE = 0.10
PROJECT_PAGE_TARGET_MS = 200.0
JOBS_PAGE_TARGET_MS = 50.0
SEED_WORKERS = 50
"""Worker rows the finished jobs are spread over (they ran on some workers)."""

# One chunk of finished jobs: ids come from the table's sequence, so new jobs get higher ones.
SEED_JOBS = """
INSERT INTO jobs (project_id, task_id, name, parameters, status, attempt, max_attempts,
                  worker_id, worker_name, created_at, available_at, started_at, finished_at,
                  exit_code, duration, log_tail, last_outcome)
SELECT $1, $2, 'run-' || g, jsonb_build_object('i', g, 'lr', 0.001 * (1 + g % 7), 'seed', g % 10),
       'COMPLETED', 1, 1, w.id, w.name, t.at, t.at, t.at + interval '2 seconds',
       t.at + interval '2 seconds' + (g % 600) * interval '1 second', 0, (g % 600)::float8,
       'epoch 10 loss ' || round((g % 1000) / 1000.0, 3) || E'\\n', 'COMPLETED'
  FROM generate_series($3::bigint, $4::bigint) g
 CROSS JOIN LATERAL (SELECT now() - interval '90 days' + (g::float8 / $5) * interval '89 days' AS at) t
  JOIN (SELECT id, name, row_number() OVER (ORDER BY id) - 1 AS k FROM workers
         WHERE name LIKE 'seed-%') w ON w.k = g % $6
"""
# What the hand-out and the completion of each of those jobs wrote to their history.
SEED_EVENTS = """
INSERT INTO job_events (job_id, project_id, status, attempt, worker_id, reason, actor, at)
SELECT j.id, j.project_id, e.status, 1, j.worker_id,
       CASE WHEN e.status = 'RUNNING' THEN j.worker_name END, j.worker_name,
       CASE WHEN e.status = 'RUNNING' THEN j.started_at ELSE j.finished_at END
  FROM jobs j CROSS JOIN (VALUES ('RUNNING'), ('COMPLETED')) e (status)
 WHERE j.id > $1 AND j.status = 'COMPLETED'
 ORDER BY j.id, e.status DESC
"""
SEED_LOGS = """
INSERT INTO job_logs (job_id, attempt, line, at, seq)
SELECT j.id, 1, 'step ' || s || ' of ' || $2 || ': loss ' || round(random()::numeric, 4), j.finished_at, s
  FROM jobs j CROSS JOIN generate_series(1, $2) s
 WHERE j.id > $1 AND j.status = 'COMPLETED'
"""
SEEDED_TABLES = ("jobs", "job_events", "job_logs", "job_counts")


@dataclasses.dataclass(frozen=True)
class HorizonConfig:
    jobs: int = 10_000_000
    chunk: int = 1_000_000
    log_lines: int = 0
    repeat: int = 3
    claims: int = 200
    claim_warmup: int = 10
    claim_pending: int = 1_000
    page_requests: int = 20
    page_warmup: int = 3
    #: Finished jobs in the database of the counters' cost (``--only counters``).
    ab_seed: int = 100_000


# --------------------------------------------------------------------------- the two databases


class Side(WhatsNextAdapter):
    """One database with its server: what a repetition adds goes, the seeded jobs stay."""

    def __init__(self, label: str, dsn: str, server: ServerProcess) -> None:
        super().__init__(dsn, server.url)
        self.label = label
        self.server = server
        self.watermark = 0
        self.worker_mark = 0

    async def mark(self) -> None:
        """Everything there now stays: resets remove only jobs and workers with higher ids."""
        conn = await asyncpg.connect(self.dsn)
        try:
            self.watermark = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM jobs"))
            self.worker_mark = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM workers"))
        finally:
            await conn.close()

    async def reset(self) -> None:
        """Remove what the last measurement added, then write every page that left dirty
        (``CHECKPOINT``, both sides alike): the next measurement does not pay for flushing the
        cleanup of the one before (on the full side, a vacuum through a gigabyte of indexes)."""
        if self.watermark == 0:
            await super().reset()  # nothing to keep: as ``python -m bench`` resets (TRUNCATE)
        else:
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute("DELETE FROM job_events WHERE job_id > $1", self.watermark)
                await conn.execute("DELETE FROM jobs WHERE id > $1", self.watermark)
                await conn.execute("DELETE FROM workers WHERE id > $1", self.worker_mark)
                await conn.execute("VACUUM jobs, job_events, workers, job_counts")
            finally:
                await conn.close()
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("CHECKPOINT")
        finally:
            await conn.close()

    async def check_drained(self, jobs: int) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT status, count(*) AS n FROM jobs WHERE id > $1 GROUP BY status", self.watermark
            )
        finally:
            await conn.close()
        counts = {r["status"]: int(r["n"]) for r in rows}
        if counts != {"COMPLETED": jobs}:
            raise RuntimeError(f"after the drain the new jobs are {counts} (expected {jobs} COMPLETED)")

    def env(self) -> contextlib.AbstractContextManager[None]:
        return temp_environ(**{SERVER_ENV: self.url, PROJECT_ENV: PROJECT})


async def restore_fillfactor(conn: asyncpg.Connection, options: list[str] | None) -> None:
    """The jobs table's fillfactor as the schema left it (``reloptions`` read before the seed)."""
    given = [o.split("=", 1)[1] for o in options or [] if o.startswith("fillfactor=")]
    if given:
        await conn.execute(f"ALTER TABLE jobs SET (fillfactor = {int(given[0])})")
    else:
        await conn.execute("ALTER TABLE jobs RESET (fillfactor)")


async def seed_finished(dsn: str, cfg: HorizonConfig, progress: Progress) -> dict[str, Any]:
    """``cfg.jobs`` finished jobs of the benchmark's project, with their history."""
    conn = await asyncpg.connect(dsn)
    timings: dict[str, float] = {}
    try:
        project_id, task_id = await noop_task(conn, PROJECT)
        await conn.execute(
            "INSERT INTO workers (name, entity, status, last_seen) "
            "SELECT 'seed-' || k, 'lab', 'OFFLINE', now() - interval '1 day' FROM generate_series(1, $1) k",
            SEED_WORKERS,
        )
        # Pages as jobs that finished long ago leave them: full (the table's fillfactor closes a
        # page once its jobs settled; see migration 0020), so this seed packs them, then the
        # table's own setting is back for what the measurements write.
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = 'jobs'::regclass")
        await conn.execute("ALTER TABLE jobs SET (fillfactor = 100)")
        t_all = time.perf_counter()
        for lo in range(1, cfg.jobs + 1, cfg.chunk):
            hi = min(cfg.jobs, lo + cfg.chunk - 1)
            t0 = time.perf_counter()
            async with conn.transaction():
                before = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM jobs"))
                await conn.execute(SEED_JOBS, project_id, task_id, lo, hi, float(cfg.jobs), SEED_WORKERS)
                await conn.execute(SEED_EVENTS, before)
                if cfg.log_lines:
                    await conn.execute(SEED_LOGS, before, cfg.log_lines)
            progress(f"seeded jobs {lo:,}..{hi:,} in {time.perf_counter() - t0:.1f}s")
        timings["insert_s"] = round(time.perf_counter() - t_all, 1)
        await restore_fillfactor(conn, options)
        t0 = time.perf_counter()
        await conn.execute("VACUUM (FREEZE, ANALYZE)")
        timings["vacuum_s"] = round(time.perf_counter() - t0, 1)
        progress(f"VACUUM (FREEZE, ANALYZE) in {timings['vacuum_s']:.1f}s")
    finally:
        await conn.close()
    return timings


async def disk_use(dsn: str, jobs: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        out: dict[str, Any] = {}
        total = 0
        for table in SEEDED_TABLES:
            row = await conn.fetchrow(
                "SELECT pg_total_relation_size($1::regclass) AS total, pg_relation_size($1::regclass) AS heap, "
                "pg_indexes_size($1::regclass) AS indexes, "
                "(SELECT reltuples FROM pg_class WHERE oid = $1::regclass)::bigint AS rows",
                table,
            )
            total += int(row["total"])
            out[table] = {
                "total_mb": round(row["total"] / 2**20, 1),
                "heap_mb": round(row["heap"] / 2**20, 1),
                "indexes_mb": round(row["indexes"] / 2**20, 1),
                "rows": int(row["rows"]),
                "bytes_per_job": round(row["total"] / jobs, 1) if jobs else None,
            }
        out["all"] = {
            "total_mb": round(total / 2**20, 1),
            "bytes_per_job": round(total / jobs, 1) if jobs else None,
        }
        out["database_mb"] = round(
            int(await conn.fetchval("SELECT pg_database_size(current_database())")) / 2**20, 1
        )
        return out
    finally:
        await conn.close()


# --------------------------------------------------------------------------- measurements


async def insert_pending(conn: asyncpg.Connection, count: int, prefix: str) -> None:
    """``count`` pending no-op jobs of the measured project straight into ``jobs`` (what
    ``wn_enqueue`` would insert), named ``prefix`` and a number."""
    await conn.execute(
        "INSERT INTO jobs (project_id, task_id, name, parameters) "
        "SELECT p.id, t.id, $4 || g, jsonb_build_object('i', g) "
        "FROM projects p JOIN tasks t ON t.project_id = p.id AND t.name = $2, generate_series(1, $3) g "
        "WHERE p.name = $1",
        PROJECT,
        NOOP_TASK,
        count,
        prefix,
    )


async def seed_pending(side: Side, count: int) -> None:
    conn = await asyncpg.connect(side.dsn)
    try:
        await insert_pending(conn, count, "pending-")
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


async def claim_latencies(side: Side, cfg: HorizonConfig) -> list[float]:
    """Single-job claim round trips (ms), each followed by its ``complete``."""
    await side.reset()
    await seed_pending(side, cfg.claim_pending)
    body = orjson.dumps({"worker_name": "horizon", "free_cpu": 1, "max_jobs": 1})
    out: list[float] = []
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        for i in range(cfg.claim_warmup + cfg.claims):
            t0 = time.perf_counter()
            async with session.post(f"{side.url}/projects/{PROJECT}/claim", data=body) as resp:
                raw = await resp.read()
            took = (time.perf_counter() - t0) * 1000.0
            if resp.status != 200:
                raise RuntimeError(f"{side.label}: claim answered HTTP {resp.status}: {raw[:200]!r}")
            job = orjson.loads(raw)["jobs"][0]
            async with session.post(
                f"{side.url}/jobs/{job['id']}/complete", data=orjson.dumps({"attempt": job["attempt"]})
            ) as resp:
                await resp.read()
            if i >= cfg.claim_warmup:
                out.append(took)
    return out


STATS_FLUSH_S = 11.0
"""Seconds for the server's idle sessions to report their counters (PostgreSQL sends an idle
session's statistics within 10 s)."""


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command's name (the state first, then the
    parent's pid, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """A process's own CPU ticks (user and system) and those of its children it has reaped."""
    utime, stime, cutime, cstime = (int(f) for f in _stat(pid)[11:15])
    return utime + stime, cutime + cstime


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(entry.name)[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, ValueError):
                pass  # gone while we looked
    return out


def _postgres_ticks(postmaster: int) -> int:
    """Every tick PostgreSQL spent: the postmaster, its live processes and those it has reaped."""
    own, reaped = _cpu_ticks(postmaster)
    total = own + reaped
    for child in _children(postmaster):
        try:
            total += _cpu_ticks(child)[0]
        except OSError:
            pass  # exited between the listing and the read: counted in ``reaped`` next time
    return total


async def _postmaster(dsn: str) -> int | None:
    """The postmaster's pid when PostgreSQL runs on this machine (``/proc`` shows it), else None."""
    conn = await asyncpg.connect(dsn)
    try:  # (read while the session lives: its process goes with it)
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        if not Path(f"/proc/{backend}/comm").read_text().startswith("postgres"):
            return None
        return int(_stat(backend)[1])
    except OSError:
        return None
    finally:
        await conn.close()


class DrainCost(DrainProbe):
    """What the drain itself costs, free of the machine's noise:

    * the shared buffers it reads (hits and reads in ``pg_stat_database``), waiting for the
      server's sessions to report what came before and what the drain did;
    * the CPU seconds of each process: the server (``/proc``), the worker (this process's reaped
      children) and PostgreSQL (its postmaster, live processes and reaped ones; only when it runs
      on this machine)."""

    def __init__(self, dsn: str, server_pid: int) -> None:
        self.dsn = dsn
        self.server_pid = server_pid
        self.postmaster: int | None = None
        self.start = 0
        self.buffers = 0
        self._wal_start: dict[str, int] = {}
        #: The cluster's WAL while the drain ran (``pg_stat_wal``): records, full-page images,
        #: bytes and syncs.
        self.wal: dict[str, int] = {}
        self._cpu_start: dict[str, int] = {}
        #: CPU seconds of the drain by process: ``server``, ``worker`` and, where seen, ``postgres``.
        self.cpu_s: dict[str, float] = {}

    async def _read(self) -> tuple[int, dict[str, int]]:
        await asyncio.sleep(STATS_FLUSH_S)
        conn = await asyncpg.connect(self.dsn)
        try:
            buffers = await conn.fetchval(
                "SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = current_database()"
            )
            wal = await conn.fetchrow("SELECT wal_records, wal_fpi, wal_bytes, wal_sync FROM pg_stat_wal")
        finally:
            await conn.close()
        return int(buffers), {k: int(v) for k, v in wal.items()}

    def _ticks(self) -> dict[str, int]:
        times = os.times()
        out = {
            "server": _cpu_ticks(self.server_pid)[0],
            "worker": round((times.children_user + times.children_system) * CLOCK_TICKS),
        }
        if self.postmaster is not None:
            out["postgres"] = _postgres_ticks(self.postmaster)
        return out

    async def before(self) -> None:
        self.postmaster = await _postmaster(self.dsn)
        self.start, self._wal_start = await self._read()
        self._cpu_start = self._ticks()

    async def after(self) -> None:
        end = self._ticks()
        self.cpu_s = {k: (end[k] - self._cpu_start[k]) / CLOCK_TICKS for k in end}
        buffers, wal = await self._read()
        self.buffers = buffers - self.start
        self.wal = {k: wal[k] - self._wal_start[k] for k in wal}


NEW_JOBS = 1_000
"""Jobs of the one ``INSERT`` whose heap pages are counted (``new_job_pages``)."""


async def new_job_pages(side: Side) -> int:
    """The heap pages of ``jobs`` that one ``INSERT`` of ``NEW_JOBS`` pending jobs writes to (rolled
    back): about a page per 30 jobs when they go next to each other, one each when the free space
    map scatters them over old pages."""
    conn = await asyncpg.connect(side.dsn)
    tx = conn.transaction()
    await tx.start()
    try:
        before = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM jobs"))
        await insert_pending(conn, NEW_JOBS, "new-")
        return int(
            await conn.fetchval(
                "SELECT count(DISTINCT (ctid::text::point)[0]) FROM jobs WHERE id > $1", before
            )
        )
    finally:
        await tx.rollback()
        await conn.close()


PAGES = {
    "project_page_ms": f"/ui/projects/{PROJECT}",
    "overview_page_ms": "/ui/",
    "project_get_ms": f"/projects/{PROJECT}",
    "jobs_page_ms": f"/projects/{PROJECT}/jobs?limit=50",
}


async def page_times(side: Side, cfg: HorizonConfig) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in PAGES}
    async with aiohttp.ClientSession() as session:
        for key, path in PAGES.items():
            for i in range(cfg.page_warmup + cfg.page_requests):
                t0 = time.perf_counter()
                async with session.get(side.url + path) as resp:
                    raw = await resp.read()
                took = (time.perf_counter() - t0) * 1000.0
                if resp.status != 200:
                    raise RuntimeError(f"{side.label}: GET {path} answered HTTP {resp.status}: {raw[:200]!r}")
                if i >= cfg.page_warmup:
                    out[key].append(took)
    return out


async def in_turns(
    sides: list[Side], reps: int, what: str, measure: Callable[[Side], Awaitable[float]], progress: Progress
) -> dict[str, list[float]]:
    """``measure`` on each side in turns, ``reps`` rounds: both see the same machine. The order
    alternates (empty, full, then full, empty, ...): a machine that slows down (or speeds up)
    over a round weighs on both alike."""
    out: dict[str, list[float]] = {s.label: [] for s in sides}
    for r in range(reps):
        for side in sides if r % 2 == 0 else list(reversed(sides)):
            with side.env():
                value = await measure(side)
            out[side.label].append(value)
            progress(f"{what} rep {r + 1}/{reps} {side.label}: {value:,.1f}")
    return out


# --------------------------------------------------------------------------- the counters' cost

COUNT_TRIGGERS = ("jobs_count_insert", "jobs_count_update", "jobs_count_delete", "jobs_count_truncate")


async def set_counters(dsn: str, on: bool) -> None:
    """Create the triggers that keep ``job_counts`` (from their function file), or drop them."""
    from whatsnext.api.server.schema import functions_dir

    conn = await asyncpg.connect(dsn)
    try:
        if on:
            await conn.execute((functions_dir() / "wn_count_jobs.sql").read_text(encoding="utf-8"))
        else:
            for name in COUNT_TRIGGERS:
                await conn.execute(f"DROP TRIGGER IF EXISTS {name} ON jobs")
    finally:
        await conn.close()


async def set_fillfactor(dsn: str, on: bool, options: list[str] | None) -> None:
    """The jobs table's fillfactor as the schema has it (``options``: its ``reloptions``), or 100."""
    conn = await asyncpg.connect(dsn)
    try:
        if on:
            await restore_fillfactor(conn, options)
        else:
            await conn.execute("ALTER TABLE jobs SET (fillfactor = 100)")
    finally:
        await conn.close()


@dataclasses.dataclass(frozen=True)
class Switch:
    """Something measured off and on in turns (``--only NAME``)."""

    name: str
    off: str
    on: str
    seeded: bool
    """Whether the database holds ``ab_seed`` finished jobs (else it is empty and each repetition
    starts from an empty table, as ``python -m bench`` does)."""


SWITCHES = {
    "counters": Switch("counters", "without counters", "with counters", seeded=True),
    "fillfactor": Switch("fillfactor", "fillfactor 100", "the schema's fillfactor (90)", seeded=False),
}


async def measure_switch(
    pg: DatabaseServer, cfg: HorizonConfig, switch: Switch, progress: Progress
) -> dict[str, Any]:
    """Enqueue and drain with ``switch`` off and on, in turns (off, on, on, off, ...), on one
    database: with ``cfg.ab_seed`` finished jobs when the switch is ``seeded`` (planner statistics
    of a used table; only what a repetition adds is removed between repetitions), else empty.
    The switches: the counters' triggers (dropped, created again), the jobs table's fillfactor
    (100, or the schema's)."""
    bench_cfg = BenchConfig.make(repeat=cfg.repeat)
    raw: dict[str, dict[str, list[float]]] = {"enqueue_jobs_s": {"off": [], "on": []}}
    raw["drain_jobs_s"] = {"off": [], "on": []}
    async with contextlib.AsyncExitStack() as stack:
        dsn, _ = await stack.enter_async_context(side_database(pg, switch.name, None, False, progress))
        server = ServerProcess(dsn)
        await server.start()
        stack.push_async_callback(server.stop)
        side = Side(switch.name, dsn, server)
        await side.open()
        stack.push_async_callback(side.close)
        if switch.seeded:
            await seed_finished(dsn, dataclasses.replace(cfg, jobs=cfg.ab_seed, chunk=cfg.ab_seed), progress)
            await side.mark()
        options = await _value(dsn, "SELECT reloptions FROM pg_class WHERE oid = 'jobs'::regclass")

        async def turn(on: bool) -> None:
            if switch.name == "counters":
                await set_counters(dsn, on)
            else:
                await set_fillfactor(dsn, on, options)

        with side.env():
            for r in range(cfg.repeat):
                # Off, on, then on, off: a machine that slows down (or speeds up) over the run
                # weighs on both alike.
                for state in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    await turn(state == "on")
                    value = await measure_enqueue(side, bench_cfg)
                    raw["enqueue_jobs_s"][state].append(value)
                    progress(f"{switch.name} {state}: enqueue rep {r + 1}/{cfg.repeat}: {value:,.0f} jobs/s")
                    value = (await measure_drain(side, bench_cfg, dsn))["jobs_s"]
                    raw["drain_jobs_s"][state].append(value)
                    progress(f"{switch.name} {state}: drain rep {r + 1}/{cfg.repeat}: {value:,.0f} jobs/s")
            await turn(True)
    out: dict[str, Any] = {"raw": raw, "seeded_finished_jobs": cfg.ab_seed if switch.seeded else 0}
    for key, by in raw.items():
        off, on = median(by["off"]), median(by["on"])
        out[key] = {"off": round(off, 1), "on": round(on, 1), "ratio": round(on / off, 3)}
    return out


# --------------------------------------------------------------------------- run


@contextlib.asynccontextmanager
async def side_database(
    pg: DatabaseServer, label: str, name: str | None, keep: bool, progress: Progress
) -> AsyncIterator[tuple[str, bool]]:
    """A database for one side: (its DSN, whether it already existed)."""
    if name is not None:
        yield dsn_with_database(pg.dsn, name), True
        return
    created = f"bench_horizon_{label}_{os.getpid()}"
    dsn = await create_database(pg.dsn, created)
    try:
        yield dsn, False
    finally:
        if keep:
            progress(f"kept database {created}")
        else:
            await drop_database(pg.dsn, created)


async def run_switch(cfg: HorizonConfig, switch: Switch, progress: Progress) -> dict[str, Any]:
    with postgres_server(progress) as pg:
        result = {"config": dataclasses.asdict(cfg), "machine": await machine_info(pg)}
        result.update(await measure_switch(pg, cfg, switch, progress))
    return result


async def run(cfg: HorizonConfig, database: str | None, keep: bool, progress: Progress) -> dict[str, Any]:
    bench_cfg = dataclasses.replace(BenchConfig.make(repeat=cfg.repeat))
    result: dict[str, Any] = {"config": dataclasses.asdict(cfg)}
    with postgres_server(progress) as pg:
        result["machine"] = await machine_info(pg)
        async with contextlib.AsyncExitStack() as stack:
            empty_dsn, _ = await stack.enter_async_context(side_database(pg, "empty", None, False, progress))
            full_dsn, existed = await stack.enter_async_context(
                side_database(pg, "full", database, keep, progress)
            )
            sides: list[Side] = []
            for label, dsn in (("empty", empty_dsn), ("full", full_dsn)):
                server = ServerProcess(dsn)
                await server.start()
                stack.push_async_callback(server.stop)
                side = Side(label, dsn, server)
                await side.open()
                stack.push_async_callback(side.close)
                sides.append(side)
            empty, full = sides
            await empty.mark()
            finished = int(await _value(full_dsn, "SELECT count(*) FROM jobs WHERE status = 'COMPLETED'"))
            if not existed or finished == 0:
                t0 = time.perf_counter()
                result["seed"] = await seed_finished(full_dsn, cfg, progress)
                result["seed"]["total_s"] = round(time.perf_counter() - t0, 1)
                finished = cfg.jobs
            await full.mark()
            result["finished_jobs"] = finished
            result["disk"] = await disk_use(full_dsn, finished)
            progress(
                f"{finished:,} finished jobs: {result['disk']['all']['total_mb']:,.0f} MiB in "
                f"{', '.join(SEEDED_TABLES)} ({result['disk']['all']['bytes_per_job']:,.0f} bytes per job)"
            )

            async def enqueue(side: Side) -> float:
                return await measure_enqueue(side, bench_cfg)

            buffers: dict[str, list[float]] = {s.label: [] for s in sides}
            cpu: dict[str, dict[str, list[float]]] = {s.label: {} for s in sides}
            wal: dict[str, list[float]] = {s.label: [] for s in sides}

            async def drain(side: Side) -> float:
                probe = DrainCost(side.dsn, side.server.pid)
                jobs_s = (await measure_drain(side, bench_cfg, side.dsn, probe))["jobs_s"]
                buffers[side.label].append(probe.buffers / bench_cfg.drain_jobs)
                for process, seconds in probe.cpu_s.items():
                    cpu[side.label].setdefault(process, []).append(seconds * 1e6 / bench_cfg.drain_jobs)
                wal[side.label].append(probe.wal["wal_bytes"] / bench_cfg.drain_jobs)
                return jobs_s

            claims: dict[str, list[float]] = {s.label: [] for s in sides}

            async def claim(side: Side) -> float:
                lat = await claim_latencies(side, cfg)
                claims[side.label] = lat
                return percentile(lat, 50)

            raw: dict[str, Any] = {}
            raw["enqueue_jobs_s"] = await in_turns(sides, cfg.repeat, "enqueue (jobs/s)", enqueue, progress)
            raw["drain_jobs_s"] = await in_turns(sides, cfg.repeat, "drain (jobs/s)", drain, progress)
            raw["drain_buffers_per_job"] = buffers
            progress(f"shared buffers read per drained job: {buffers}")
            raw["drain_cpu_us_per_job"] = cpu
            progress(f"CPU microseconds per drained job: {cpu}")
            raw["drain_wal_bytes_per_job"] = wal
            progress(f"WAL bytes per drained job: {wal}")
            raw["claim_p50_ms"] = await in_turns(sides, 1, "claim p50 (ms)", claim, progress)
            for side in sides:
                await side.reset()
            pages: dict[str, dict[str, list[float]]] = {}
            for side in sides:
                pages[side.label] = await page_times(side, cfg)
                progress(
                    f"pages {side.label}: "
                    + ", ".join(f"{k} {median(v):.1f}" for k, v in pages[side.label].items())
                )
            result["plans"] = await explain_counts(full_dsn)
            written = {side.label: await new_job_pages(side) for side in sides}
            progress(f"heap pages written by {NEW_JOBS:,} new jobs: {written}")
    result["raw"] = {**raw, "pages_ms": pages, "claim_ms": claims}
    result["summary"] = summarise(raw, pages)
    result["summary"]["new_job_pages"] = written
    result["summary"]["drain_buffers_per_job"] = {
        side: round(median(values), 1) for side, values in raw["drain_buffers_per_job"].items()
    }
    result["summary"]["drain_wal_bytes_per_job"] = {
        side: round(median(values)) for side, values in raw["drain_wal_bytes_per_job"].items()
    }
    result["summary"]["drain_cpu_us_per_job"] = {
        side: {process: round(median(values), 1) for process, values in by_process.items()}
        for side, by_process in raw["drain_cpu_us_per_job"].items()
    }
    return result


async def _value(dsn: str, query: str) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def explain_counts(dsn: str) -> dict[str, str]:
    """How the counts of the project page are read, and what a GROUP BY over jobs would cost."""
    conn = await asyncpg.connect(dsn)
    try:
        pid = await conn.fetchval("SELECT id FROM projects WHERE name = $1", PROJECT)
        out = {}
        for key, query in (
            ("counters", "SELECT * FROM wn_job_counts($1)"),
            ("group_by", "SELECT status, count(*) FROM jobs WHERE project_id = $1 GROUP BY status"),
        ):
            t0 = time.perf_counter()
            await conn.fetch(query, pid)
            out[f"{key}_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
        return out
    finally:
        await conn.close()


def summarise(raw: dict[str, Any], pages: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    def med(key: str, side: str) -> float:
        return median(raw[key][side])

    enqueue = med("enqueue_jobs_s", "full") / med("enqueue_jobs_s", "empty")
    drain = med("drain_jobs_s", "full") / med("drain_jobs_s", "empty")
    claim = med("claim_p50_ms", "full") / med("claim_p50_ms", "empty")
    out: dict[str, Any] = {
        "enqueue_jobs_s": {s: round(med("enqueue_jobs_s", s), 1) for s in ("empty", "full")},
        "drain_jobs_s": {s: round(med("drain_jobs_s", s), 1) for s in ("empty", "full")},
        "claim_p50_ms": {s: round(med("claim_p50_ms", s), 3) for s in ("empty", "full")},
        "enqueue_ratio": round(enqueue, 3),
        "drain_ratio": round(drain, 3),
        "claim_ratio": round(claim, 3),
        "enqueue_met": enqueue >= 1 - RATE_TOLERANCE,
        "drain_met": drain >= 1 - RATE_TOLERANCE,
        "claim_met": claim <= CLAIM_RATIO_TARGET,
    }
    for key in PAGES:
        out[key] = {s: round(median(pages[s][key]), 2) for s in ("empty", "full")}
    out["project_page_met"] = out["project_page_ms"]["full"] < PROJECT_PAGE_TARGET_MS
    out["jobs_page_met"] = out["jobs_page_ms"]["full"] < JOBS_PAGE_TARGET_MS
    return out


def render(result: dict[str, Any]) -> str:
    s = result["summary"]

    def ok(flag: bool) -> str:
        return "met" if flag else "missed"

    n = result["finished_jobs"]
    lines = [
        f"| measure | empty database | {n:,} finished jobs | ratio | target |",
        "|---|---:|---:|---:|---|",
        f"| enqueue (jobs/s, median of {result['config']['repeat']}) | {s['enqueue_jobs_s']['empty']:,.0f} | "
        f"{s['enqueue_jobs_s']['full']:,.0f} | {s['enqueue_ratio']:.2f} | at least 0.90 ({ok(s['enqueue_met'])}) |",
        f"| drain (jobs/s, median of {result['config']['repeat']}) | {s['drain_jobs_s']['empty']:,.0f} | "
        f"{s['drain_jobs_s']['full']:,.0f} | {s['drain_ratio']:.2f} | at least 0.90 ({ok(s['drain_met'])}) |",
        f"| claim p50 (ms) | {s['claim_p50_ms']['empty']:.2f} | {s['claim_p50_ms']['full']:.2f} | "
        f"{s['claim_ratio']:.2f} | at most 1.5 ({ok(s['claim_met'])}) |",
    ]
    targets = {
        "project_page_ms": f"under 200 ms ({ok(s['project_page_met'])})",
        "jobs_page_ms": f"under 50 ms ({ok(s['jobs_page_met'])})",
    }
    names = {
        "project_page_ms": f"dashboard project page `GET {PAGES['project_page_ms']}` (ms)",
        "overview_page_ms": f"dashboard overview `GET {PAGES['overview_page_ms']}` (ms)",
        "project_get_ms": f"`GET {PAGES['project_get_ms']}` (ms)",
        "jobs_page_ms": f"`GET {PAGES['jobs_page_ms']}` (ms)",
    }
    for key, name in names.items():
        e, f = s[key]["empty"], s[key]["full"]
        lines.append(f"| {name} | {e:.1f} | {f:.1f} | {f / e:.2f} | {targets.get(key, '')} |")
    if "drain_buffers_per_job" in s:  # (results of earlier versions lack it)
        e, f = s["drain_buffers_per_job"]["empty"], s["drain_buffers_per_job"]["full"]
        lines.append(f"| shared buffers read per drained job (median) | {e:.1f} | {f:.1f} | {f / e:.2f} | |")
    if "drain_wal_bytes_per_job" in s:  # (results of earlier versions lack it and the CPU)
        e, f = s["drain_wal_bytes_per_job"]["empty"], s["drain_wal_bytes_per_job"]["full"]
        lines.append(f"| WAL bytes per drained job (median) | {e:,} | {f:,} | {f / e:.2f} | |")
    for process, e in s.get("drain_cpu_us_per_job", {}).get("empty", {}).items():
        f = s["drain_cpu_us_per_job"]["full"][process]
        lines.append(f"| CPU µs per drained job: {process} (median) | {e:.0f} | {f:.0f} | {f / e:.2f} | |")
    if "new_job_pages" in s:  # (results of earlier versions lack it)
        e, f = s["new_job_pages"]["empty"], s["new_job_pages"]["full"]
        lines.append(
            f"| heap pages one `INSERT` of {NEW_JOBS:,} jobs writes to | {e:,} | {f:,} | {f / e:.2f} | |"
        )
    lines += [
        "",
        "| table | total MiB | heap MiB | indexes MiB | rows | bytes per finished job |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for table in SEEDED_TABLES:
        d = result["disk"][table]
        lines.append(
            f"| {table} | {d['total_mb']:,.1f} | {d['heap_mb']:,.1f} | {d['indexes_mb']:,.1f} | {d['rows']:,} | "
            f"{d['bytes_per_job']:,.0f} |"
        )
    a = result["disk"]["all"]
    lines.append(f"| all | {a['total_mb']:,.1f} | | | | {a['bytes_per_job']:,.0f} |")
    return "\n".join(lines) + "\n"


def met(result: dict[str, Any]) -> bool:
    s = result["summary"]
    return all(s[k] for k in ("enqueue_met", "drain_met", "claim_met", "project_page_met", "jobs_page_met"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.horizon", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--jobs", type=int, default=HorizonConfig.jobs, help="finished jobs seeded (10,000,000)"
    )
    parser.add_argument("--chunk", type=int, default=HorizonConfig.chunk, help="jobs per seeding transaction")
    parser.add_argument("--log-lines", type=int, default=0, help="job_logs rows per finished job (0)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of enqueue and drain (3)")
    parser.add_argument("--claims", type=int, default=200, help="timed claims on each database (200)")
    parser.add_argument("--keep", action="store_true", help="keep the seeded database (its name is printed)")
    parser.add_argument("--database", help="measure against this kept database instead of seeding a new one")
    parser.add_argument(
        "--only",
        choices=("horizon", *SWITCHES),
        default="horizon",
        help="horizon: empty against full (default); counters: enqueue and drain without and with "
        "the triggers that keep job_counts, in turns; fillfactor: the same on an empty database "
        "with the jobs table's fillfactor at 100 and at the schema's",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results go (bench/out)")
    args = parser.parse_args(argv)
    cfg = HorizonConfig(
        jobs=args.jobs, chunk=args.chunk, log_lines=args.log_lines, repeat=args.repeat, claims=args.claims
    )

    def progress(message: str) -> None:
        print(f"[horizon] {message}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in SWITCHES:
        switch = SWITCHES[args.only]
        measured = run_async(run_switch(cfg, switch, progress))
        path = args.out / f"horizon-{switch.name}.json"
        path.write_text(json.dumps(measured, indent=2) + "\n")
        lines = [f"| measure | {switch.off} | {switch.on} | ratio |", "|---|---:|---:|---:|"]
        for key in ("enqueue_jobs_s", "drain_jobs_s"):
            c = measured[key]
            lines.append(
                f"| {key} (median of {cfg.repeat}) | {c['off']:,.0f} | {c['on']:,.0f} | {c['ratio']:.3f} |"
            )
        print("\n".join(lines))
        print(f"[horizon] wrote {path}")
        return 0

    result = run_async(run(cfg, args.database, args.keep, progress))
    table = render(result)
    (args.out / "horizon.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "horizon.md").write_text("# Ten million finished jobs\n\n" + table)
    print(table, end="")
    print(f"[horizon] wrote {args.out / 'horizon.json'}, {args.out / 'horizon.md'}")
    return 0 if met(result) else 1


if __name__ == "__main__":
    sys.exit(main())
