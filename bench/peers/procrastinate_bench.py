"""Procrastinate side of the benchmark (harness process).

APIs used (Procrastinate 3.x):

* schema: ``App.schema_manager.apply_schema_async()`` (what ``procrastinate schema
  --apply`` runs);
* enqueue: ``Task.batch_defer_async(*kwargs)`` with ``enqueue_batch`` job argument
  dicts, i.e. one ``procrastinate_defer_jobs_v1`` call per batch;
* wake-up submissions: ``Task.defer_async(**kwargs)``, one job per call;
* worker: :mod:`bench.peers.procrastinate_worker` (``App.run_worker_async``).
"""

from __future__ import annotations

from typing import Any

from bench.common import BenchConfig, Progress, fetch_value, run_suite, truncate_tables
from bench.peers.procrastinate_app import BenchApp, build_app
from bench.peers.procrastinate_worker import pool_size_for


class ProcrastinateAdapter:
    worker_module = "bench.peers.procrastinate_worker"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._bench_app: BenchApp = build_app(dsn)

    async def open(self) -> None:
        await self._bench_app.app.open_async()
        await self._bench_app.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        await self._bench_app.app.close_async()

    async def reset(self) -> None:
        await truncate_tables(self.dsn)

    async def enqueue_batch(self, start: int, count: int) -> None:
        if not hasattr(self._bench_app.noop, "batch_defer_async"):
            raise RuntimeError("the installed Procrastinate has no Task.batch_defer_async; upgrade it")
        await self._bench_app.noop.batch_defer_async(*({"i": i} for i in range(start, start + count)))

    async def submit_wake(self, seq: int, sent: float) -> None:
        await self._bench_app.wake.defer_async(seq=seq, sent=sent)

    async def check_drained(self, jobs: int) -> None:
        left = await fetch_value(
            self.dsn, "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
        )
        done = await fetch_value(
            self.dsn, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
        if left or done != jobs:
            raise RuntimeError(f"after the drain: {done} jobs succeeded, {left} not (expected {jobs})")


async def run(dsn: str, cfg: BenchConfig, progress: Progress) -> dict[str, Any]:
    from importlib.metadata import version

    adapter = ProcrastinateAdapter(dsn)
    await adapter.open()
    try:
        result = await run_suite(adapter, dsn, cfg, progress)
    finally:
        await adapter.close()
    result["version"] = version("procrastinate")
    result["settings"] = {
        "connector": "PsycopgConnector (psycopg 3 async pool)",
        "enqueue": "Task.batch_defer_async(*list[dict])",
        "worker": "App.run_worker_async",
        "concurrency": cfg.concurrency,
        "worker_pool_size": pool_size_for(cfg.concurrency),
        "drain_mode": "wait=False",
        "listen_notify": True,
        "delete_jobs": "never (default)",
    }
    return result
