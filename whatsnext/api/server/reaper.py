"""The lease reaper: requeues jobs whose worker stopped heartbeating (one at a time cluster-wide).

It sweeps every ``Settings.reap_every`` seconds, and at once when the server receives SIGUSR1
(see :mod:`whatsnext.nudge`): a test that backdated a lease needs no wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web

from ...nudge import nudged_by_signal
from .keys import settings_key, store_key
from .metrics import Metrics, metrics_key
from .store import Store

log = structlog.get_logger("whatsnext.reaper")
BATCH = 1000
LOG_VACUUM_DEAD_ROWS = 50_000
"""Removed output lines past which the server vacuums job_logs itself (a job flooding its output
removes lines faster than autovacuum's naptime would reclaim them)."""
LOG_VACUUM_EVERY = 10.0


async def reap_once(store: Store, metrics: Metrics | None = None) -> int:
    """One sweep; returns how many jobs whose lease ran out it handled (requeued as lost, failed
    after max_lost, or cancelled), counting them in ``metrics`` when given."""
    total = 0
    while True:
        rows = await store.workers.reap(batch=BATCH)
        if metrics is not None:
            metrics.jobs_lost(rows)
        n = sum(r["jobs"] for r in rows)
        total += n
        if n < BATCH:
            return total


async def vacuum_logs_if_needed(store: Store) -> bool:
    """Vacuum job_logs when many removed lines wait for it; returns whether it did."""
    if await store.logs.dead_rows() < LOG_VACUUM_DEAD_ROWS:
        return False
    await store.logs.vacuum()
    return True


async def _loop(app: web.Application) -> None:
    store, every = app[store_key], app[settings_key].reap_every
    loop = asyncio.get_running_loop()
    next_vacuum_check = loop.time() + LOG_VACUUM_EVERY
    with nudged_by_signal() as nudge:
        while True:
            nudged = await nudge.sleep(every)
            try:
                n = await reap_once(store, app.get(metrics_key))
                if loop.time() >= next_vacuum_check:
                    next_vacuum_check = loop.time() + LOG_VACUUM_EVERY
                    if await vacuum_logs_if_needed(store):
                        log.info("vacuumed removed output lines")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("lease sweep failed", error=str(exc))
                continue
            if n:
                log.info("leases expired", jobs=n)
            if nudged:
                log.info("lease sweep on SIGUSR1 done", jobs=n)


async def reaper_context(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(_loop(app))
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
