"""PgQueuer worker process for the benchmark.

Started by :mod:`bench.peers.pgqueuer_bench` as
``python -m bench.peers.pgqueuer_worker --mode {drain,wake} --jobs N --concurrency C``
with the DSN in ``$WHATSNEXT_BENCH_WORKER_DSN``.

The worker is what PgQueuer's documentation sets up: one asyncpg connection wrapped
in ``AsyncpgDriver`` and ``Queries``, a ``QueueManager`` with async entrypoints, and
``QueueManager.run(batch_size=..., max_concurrent_tasks=...)``; in drain mode with
``mode=QueueExecutionMode.drain``, which returns once the queue is empty and every
picked job is finished and acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from datetime import timedelta

from bench.common import EventChannel, worker_dsn, worker_main

NOOP_ENTRYPOINT = "bench_noop"
WAKE_ENTRYPOINT = "bench_wake"
#: Jobs fetched per dequeue round-trip: PgQueuer's default.
BATCH_SIZE = 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("drain", "wake"), required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=20)
    return parser.parse_args()


def batch_size_for(concurrency: int) -> int:
    # QueueManager.run requires max_concurrent_tasks >= 2 * batch_size.
    return max(1, min(BATCH_SIZE, concurrency // 2))


async def main(channel: EventChannel) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    args = parse_args()
    connection = await asyncpg.connect(worker_dsn())
    qm = QueueManager(Queries(AsyncpgDriver(connection)))
    processed = 0

    @qm.entrypoint(NOOP_ENTRYPOINT)
    async def noop(job: Job) -> None:
        nonlocal processed
        processed += 1

    @qm.entrypoint(WAKE_ENTRYPOINT)
    async def wake(job: Job) -> None:
        started = time.time()
        data = json.loads(job.payload or b"{}")
        channel.emit("wake", seq=data["seq"], sent=data["sent"], started=started)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, qm.shutdown.set)
    try:
        if args.mode == "drain":
            t_start = time.time()
            await qm.run(
                batch_size=batch_size_for(args.concurrency),
                max_concurrent_tasks=args.concurrency,
                mode=QueueExecutionMode.drain,
            )
            t_end = time.time()
            channel.emit("drained", t_start=t_start, t_end=t_end, processed=processed)
        else:
            channel.emit("ready")
            await qm.run(
                batch_size=batch_size_for(args.concurrency),
                max_concurrent_tasks=args.concurrency,
                dequeue_timeout=timedelta(seconds=30),
            )
    finally:
        await connection.close()


if __name__ == "__main__":
    worker_main(main)
