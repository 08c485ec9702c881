"""``python -m bench``: run WhatsNext, PgQueuer and Procrastinate one after another.

Each system gets its own fresh database on the same PostgreSQL server (embedded by
default, ``WHATSNEXT_BENCH_DATABASE_URL`` when set). A system that fails is recorded
with its error and the others still run; the exit code is non-zero only when every
selected system failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import (
    DATABASE_URL_ENV,
    DEFAULT_OUT,
    METRICS,
    SYSTEMS,
    BenchConfig,
    DatabaseServer,
    Progress,
    fresh_database,
    machine_info,
    postgres_server,
    render_markdown,
    run_async,
    write_results,
)

RunFn = Callable[[str, BenchConfig, Progress], Awaitable[dict[str, Any]]]

#: System name -> module exposing ``async def run(dsn, cfg, progress) -> dict``.
REGISTRY: dict[str, str] = {
    "whatsnext": "bench.whatsnext_bench",
    "pgqueuer": "bench.peers.pgqueuer_bench",
    "procrastinate": "bench.peers.procrastinate_bench",
}


def progress_for(name: str) -> Progress:
    def emit(message: str) -> None:
        print(f"[{name}] {message}", flush=True)

    return emit


def parse_systems(value: str | None) -> list[str]:
    if not value:
        return list(SYSTEMS)
    chosen = [s.strip().lower() for s in value.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in REGISTRY]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown system(s): {', '.join(unknown)} (choose from {', '.join(SYSTEMS)})"
        )
    return [s for s in SYSTEMS if s in chosen]


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark WhatsNext against PgQueuer and Procrastinate on the same PostgreSQL.",
        epilog=f"Set {DATABASE_URL_ENV} to use an existing server instead of the embedded one.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts and one repetition, for development"
    )
    parser.add_argument(
        "--only",
        type=parse_systems,
        default=list(SYSTEMS),
        metavar="SYSTEM[,SYSTEM]",
        help=f"run only these systems ({', '.join(SYSTEMS)})",
    )
    parser.add_argument(
        "--repeat", type=positive_int, default=None, metavar="N", help="repetitions per workload (default 3)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="where latest.json/.md/.png go (default bench/out, ignored by git)",
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="run WhatsNext's server with --auth: the harness and the workers send tokens",
    )
    return parser.parse_args(argv)


async def run_system(name: str, server: DatabaseServer, cfg: BenchConfig) -> dict[str, Any]:
    progress = progress_for(name)
    started = time.perf_counter()
    try:
        module = importlib.import_module(REGISTRY[name])
        run: RunFn = module.run
        async with fresh_database(server.dsn, name) as dsn:
            result = await run(dsn, cfg, progress)
        missing = [m for m in METRICS if m not in result]
        if missing:
            raise RuntimeError(f"result lacks {', '.join(missing)}")
    except NotImplementedError as exc:
        progress(f"not measured: {exc}")
        result = {"error": f"NotImplementedError: {exc}"}
    except Exception as exc:
        progress(f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        traceback.print_exc(file=sys.stderr)
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    if "error" not in result:
        progress(f"done in {result['elapsed_s']:.0f}s")
    return result


async def run_all(server: DatabaseServer, systems: list[str], cfg: BenchConfig) -> dict[str, Any]:
    # SIGTERM gets the same orderly shutdown as Ctrl-C: the running task is cancelled,
    # so worker processes are stopped and the benchmark databases dropped.
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    results: dict[str, Any] = {}
    for name in SYSTEMS:
        if name in systems:
            results[name] = await run_system(name, server, cfg)
        else:
            results[name] = {"skipped": "not selected (--only)"}
    results["machine"] = await machine_info(server)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = BenchConfig.make(quick=args.quick, repeat=args.repeat, auth=args.auth)
    log = progress_for("bench")
    log(
        f"{'quick' if cfg.quick else 'full'} run: {', '.join(args.only)}; {cfg.repeat} repetition(s); "
        f"{'WhatsNext with --auth; ' if cfg.auth else ''}"
        f"enqueue {cfg.enqueue_jobs:,}, drain {cfg.drain_jobs:,}, wake {cfg.wake_jobs} jobs"
    )
    started = time.perf_counter()
    try:
        with postgres_server(log) as server:
            log(f"database: {server.source}")
            results = run_async(run_all(server, args.only, cfg))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; worker processes stopped, nothing written")
        return 130
    written = write_results(args.out, results, cfg)
    # The comparison table and, when measured, the WhatsNext-only table.
    sections = render_markdown(results, cfg).split("\n## ")
    shown = [sections[0].rstrip()]
    shown += ["## " + s.rstrip() for s in sections[1:] if s.startswith("WhatsNext-only")]
    print()
    print("\n\n".join(shown))
    print()
    log(f"finished in {time.perf_counter() - started:.0f}s; wrote {', '.join(str(p) for p in written)}")
    failed = [s for s in args.only if "error" in results[s]]
    return 1 if len(failed) == len(args.only) else 0


if __name__ == "__main__":
    sys.exit(main())
