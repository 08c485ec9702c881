"""WhatsNext worker process for the benchmark.

Started by :mod:`bench.whatsnext_bench` as
``python -m bench.whatsnext_worker --mode {drain,wake} --jobs N --concurrency C``
with the server's URL in ``$WHATSNEXT_SERVER`` (the SDK's own setting) and the project
name in ``$WHATSNEXT_BENCH_PROJECT``.

The worker is what the WhatsNext documentation sets up for Python functions:
``Client(entity, name, project, PythonFormatter(func), available_cpu=C)`` and
``await client.work_async(forever=...)``. Every job needs one CPU (the default), so
``available_cpu=C`` runs at most ``C`` jobs at once. Heartbeats stay on (the default).
Drain mode calls ``work_async(forever=False)``, which returns once the project has
nothing left and every report is delivered; wake mode calls ``work_async(forever=True)``
(long-polling claims, woken by the server's LISTEN/NOTIFY).

Logging is configured at WARNING through ``whatsnext.logs.configure`` (what ``whatsnext
worker --log-level WARNING`` does): the worker's per-job INFO lines are not part of
what is measured, as the peers' workers log nothing per job by default either.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench.common import EventChannel, worker_main

PROJECT_ENV = "WHATSNEXT_BENCH_PROJECT"
LOG_LEVEL_ENV = "WHATSNEXT_BENCH_WORKER_LOG_LEVEL"
NOOP_TASK = "bench_noop"
WAKE_TASK = "bench_wake"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("drain", "wake"), required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=20)
    return parser.parse_args()


async def main(channel: EventChannel) -> None:
    from whatsnext.api.client import AsyncServer, Client, PythonFormatter
    from whatsnext.logs import configure

    args = parse_args()
    configure(os.environ.get(LOG_LEVEL_ENV, "WARNING"))
    project = os.environ.get(PROJECT_ENV)
    if not project:
        raise SystemExit(f"{PROJECT_ENV} is not set; workers are started by `python -m bench`")

    async def noop(**_: Any) -> None:
        return None

    async def wake(seq: int, sent: float) -> None:
        started = time.time()
        channel.emit("wake", seq=seq, sent=sent, started=started)

    server = AsyncServer()  # $WHATSNEXT_SERVER
    # Open the HTTP connection before the clock starts, as the peers open their
    # database connections before their run loop.
    await server.health()
    client = Client(
        "bench",
        f"bench-worker-{os.getpid()}",
        project,
        PythonFormatter(noop if args.mode == "drain" else wake),
        available_cpu=args.concurrency,
        server=server,
    )
    try:
        if args.mode == "drain":
            t_start = time.time()
            summary = await client.work_async(forever=False)
            t_end = time.time()
            channel.emit(
                "drained",
                t_start=t_start,
                t_end=t_end,
                processed=summary.completed,
                failed=summary.failed + summary.cancelled,
            )
        else:
            channel.emit("ready")
            await client.work_async(forever=True, handle_signals=True)
    finally:
        await server.close()


if __name__ == "__main__":
    worker_main(main)
