"""The lease reaper: requeues jobs whose worker stopped heartbeating (one at a time cluster-wide)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web

from .keys import pool_key, settings_key
from .sql import Q

log = structlog.get_logger("whatsnext.reaper")
BATCH = 1000


async def reap_once(pool: asyncpg.Pool) -> int:
    """One sweep; returns how many jobs were requeued, failed or cancelled."""
    total = 0
    while True:
        n = await pool.fetchval(Q.reap, BATCH)
        total += n
        if n < BATCH:
            return total


async def _loop(app: web.Application) -> None:
    pool, every = app[pool_key], app[settings_key].reap_every
    while True:
        await asyncio.sleep(every)
        try:
            n = await reap_once(pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("lease sweep failed", error=str(exc))
            continue
        if n:
            log.info("leases expired", jobs=n)


async def reaper_context(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(_loop(app))
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
