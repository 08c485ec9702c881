"""Running the allocation loop from the command line: its backends, its settings, signals."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Literal
from urllib.parse import urlsplit

import structlog

from ..api.client.http import Http
from .api import AllocApi
from .backend import Backend
from .loop import Allocator, Settings
from .runai import RunaiBackend
from .slurm import SlurmBackend

log = structlog.get_logger("whatsnext.alloc")
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def backends(
    *, gres_flag: Literal["gres", "gpus"] = "gres", runai_bin: str = "runai", runai_cli: Literal[1, 2] = 2
) -> dict[str, Backend]:
    return {
        "slurm": SlurmBackend(gres_flag=gres_flag),
        "runai": RunaiBackend(runai=runai_bin, cli_version=runai_cli),
    }


def warn_about(settings: Settings, has_own_token: bool) -> None:
    """Say what would keep the workers from reaching the server."""
    host = urlsplit(settings.server).hostname or ""
    if host in LOOPBACK:
        log.warning(
            "workers reach the server at a loopback address: only allocations on this host can",
            server=settings.server,
        )
    if settings.token_file is None and has_own_token:
        log.warning(
            "no --worker-token-file: the workers start without a token (the allocator never hands on its own)"
        )


async def run_loop(
    http: Http,
    settings: Settings,
    names: Sequence[str],
    kinds: dict[str, Backend],
    once: bool,
) -> None:
    """Run the loop until SIGINT or SIGTERM (one pass with ``once``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (RuntimeError, ValueError):  # not the main thread: the caller stops it
            break
    allocator = Allocator(AllocApi(http), kinds, settings, names)
    log.info(
        "allocator started",
        queues=list(names) or "all",
        server=settings.server,
        interval=settings.interval,
        dry_run=settings.dry_run,
        log_dir=str(settings.log_dir),
        holder=settings.holder,
    )
    try:
        await allocator.run(once=once, stop=stop)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await http.close()
    log.info("allocator stopped", passes=allocator.passes)


__all__ = ["backends", "run_loop", "warn_about"]
