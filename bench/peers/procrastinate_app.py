"""The Procrastinate app used by both sides of the benchmark.

The harness process (deferring jobs) and the worker process (running them) build the
same app with the same task names; only the worker passes :class:`WorkerHooks`, so
only there do the tasks report anything. The app lives in an importable module, as
Procrastinate recommends, rather than in a ``__main__`` module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import procrastinate

NOOP_TASK = "bench_noop"
WAKE_TASK = "bench_wake"


@dataclass
class WorkerHooks:
    """Callbacks the worker process attaches to the tasks."""

    on_noop: Any  # Callable[[], None]
    on_wake: Any  # Callable[[int, float, float], None]: seq, sent, started


@dataclass
class BenchApp:
    app: procrastinate.App
    noop: Any  # procrastinate.tasks.Task
    wake: Any


def build_app(dsn: str, *, pool_size: int | None = None, hooks: WorkerHooks | None = None) -> BenchApp:
    """``pool_size`` sets the psycopg pool's ``min_size`` and ``max_size`` (``None``: psycopg's default)."""
    pool_args: dict[str, Any] = {}
    if pool_size is not None:
        pool_args = {"min_size": pool_size, "max_size": pool_size}
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn, **pool_args))

    @app.task(name=NOOP_TASK)
    async def noop(i: int) -> None:
        if hooks is not None:
            hooks.on_noop()

    @app.task(name=WAKE_TASK)
    async def wake(seq: int, sent: float) -> None:
        started = time.time()
        if hooks is not None:
            hooks.on_wake(seq, sent, started)

    return BenchApp(app=app, noop=noop, wake=wake)
