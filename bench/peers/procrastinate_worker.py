"""Procrastinate worker process for the benchmark.

Started by :mod:`bench.peers.procrastinate_bench` as
``python -m bench.peers.procrastinate_worker --mode {drain,wake} --jobs N --concurrency C``
with the DSN in ``$WHATSNEXT_BENCH_WORKER_DSN``.

The worker is ``App.run_worker_async(concurrency=C)`` on a ``PsycopgConnector`` whose
pool holds ``C + 1`` connections (Procrastinate's sizing advice for short jobs; the
LISTEN connection is separate). Drain mode passes ``wait=False``, so the call returns
once no job is left to fetch and the running ones are finished; wake mode keeps the
defaults (``wait=True``, ``listen_notify=True``, 5 s fallback polling).
"""

from __future__ import annotations

import argparse
import time

from bench.common import EventChannel, worker_dsn, worker_main
from bench.peers.procrastinate_app import WorkerHooks, build_app


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("drain", "wake"), required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=20)
    return parser.parse_args()


def pool_size_for(concurrency: int) -> int:
    return concurrency + 1


async def main(channel: EventChannel) -> None:
    args = parse_args()
    processed = 0

    def on_noop() -> None:
        nonlocal processed
        processed += 1

    def on_wake(seq: int, sent: float, started: float) -> None:
        channel.emit("wake", seq=seq, sent=sent, started=started)

    bench_app = build_app(
        worker_dsn(),
        pool_size=pool_size_for(args.concurrency),
        hooks=WorkerHooks(on_noop=on_noop, on_wake=on_wake),
    )
    async with bench_app.app.open_async():
        if args.mode == "drain":
            t_start = time.time()
            await bench_app.app.run_worker_async(concurrency=args.concurrency, wait=False)
            t_end = time.time()
            channel.emit("drained", t_start=t_start, t_end=t_end, processed=processed)
        else:
            channel.emit("ready")
            await bench_app.app.run_worker_async(concurrency=args.concurrency)


if __name__ == "__main__":
    worker_main(main)
