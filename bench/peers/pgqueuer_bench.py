"""PgQueuer side of the benchmark (harness process).

APIs used (PgQueuer 1.x):

* schema: ``Queries(AsyncpgDriver(conn)).install()`` (what ``pgq install`` runs);
* enqueue: ``Queries.enqueue(entrypoints, payloads, priorities)`` with lists of
  ``enqueue_batch`` elements, i.e. one multi-row INSERT per batch;
* wake-up submissions: ``Queries.enqueue(entrypoint, payload)``, one job per call;
* worker: :mod:`bench.peers.pgqueuer_worker` (``QueueManager.run``).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from bench.common import BenchConfig, Progress, fetch_value, run_suite, truncate_tables
from bench.peers.pgqueuer_worker import BATCH_SIZE, NOOP_ENTRYPOINT, WAKE_ENTRYPOINT, batch_size_for


class PgQueuerAdapter:
    worker_module = "bench.peers.pgqueuer_worker"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._queries: Any = None

    async def open(self) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        self._conn = await asyncpg.connect(self.dsn)
        self._queries = Queries(AsyncpgDriver(self._conn))
        await self._queries.install()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def reset(self) -> None:
        await truncate_tables(self.dsn)

    async def enqueue_batch(self, start: int, count: int) -> None:
        await self._queries.enqueue(
            [NOOP_ENTRYPOINT] * count,
            [b'{"i": %d}' % i for i in range(start, start + count)],
            [0] * count,
        )

    async def submit_wake(self, seq: int, sent: float) -> None:
        await self._queries.enqueue(WAKE_ENTRYPOINT, json.dumps({"seq": seq, "sent": sent}).encode())

    async def check_drained(self, jobs: int) -> None:
        left = await fetch_value(self.dsn, "SELECT count(*) FROM pgqueuer")
        if left:
            raise RuntimeError(f"{left} jobs still in the pgqueuer table after the drain")


async def run(dsn: str, cfg: BenchConfig, progress: Progress) -> dict[str, Any]:
    import pgqueuer

    adapter = PgQueuerAdapter(dsn)
    await adapter.open()
    try:
        result = await run_suite(adapter, dsn, cfg, progress)
    finally:
        await adapter.close()
    result["version"] = pgqueuer.__version__
    result["settings"] = {
        "driver": "AsyncpgDriver (one asyncpg connection per process)",
        "enqueue": "Queries.enqueue(list[str], list[bytes], list[int])",
        "worker": "QueueManager.run",
        "batch_size": batch_size_for(cfg.concurrency),
        "default_batch_size": BATCH_SIZE,
        "max_concurrent_tasks": cfg.concurrency,
        "drain_mode": "QueueExecutionMode.drain",
        "durability": "default (durable: all tables logged)",
    }
    return result
