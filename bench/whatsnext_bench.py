"""WhatsNext side of the benchmark (harness process).

Contract, shared with :mod:`bench.peers.pgqueuer_bench` and
:mod:`bench.peers.procrastinate_bench`: ``run`` gets a DSN to a fresh, empty database
of its own and returns the medians ``enqueue_jobs_s``, ``drain_jobs_s``,
``wake_p50_ms`` and ``wake_p99_ms`` plus ``raw`` repetition values. The simplest way
to measure exactly what the peers are measured on is a
:class:`bench.common.SuiteAdapter` passed to :func:`bench.common.run_suite`, with the
worker in its own module (see ``bench/peers/*_worker.py``).
"""

from __future__ import annotations

from typing import Any

from bench.common import BenchConfig, Progress


async def run(dsn: str, cfg: BenchConfig, progress: Progress) -> dict[str, Any]:
    raise NotImplementedError("the WhatsNext benchmark adapter is not written yet")
