"""The lease reaper: requeues jobs whose worker stopped heartbeating (one at a time cluster-wide).

It sweeps every ``Settings.reap_every`` seconds, and at once when the server receives SIGUSR1
(see :mod:`whatsnext.nudge`): a test that backdated a lease needs no wait.

Each sweep first reads and sets the reaper's clock in the database (``wn_reap_sweep``): when the
last sweep of any server is older than its interval plus a lease, the queue was away (PostgreSQL
down, every server down, or this one paused) and workers could not renew their leases, so every
running lease is extended by the time away plus ``--recovery-grace`` before anything is reaped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web

from ...nudge import nudged_by_signal
from .background import while_serving
from .config import Settings
from .keys import settings_key, store_key
from .metrics import Metrics, metrics_key
from .store import Store

log = structlog.get_logger("whatsnext.reaper")
BATCH = 1000
LOG_VACUUM_DEAD_ROWS = 50_000
"""Removed output lines past which the server vacuums job_logs itself (a job flooding its output
removes lines faster than autovacuum's naptime would reclaim them)."""
LOG_VACUUM_EVERY = 10.0


async def reap_once(store: Store, settings: Settings, metrics: Metrics | None = None) -> int:
    """One sweep; returns how many jobs whose lease ran out it handled (requeued as lost, failed
    after max_lost, or cancelled), counting them in ``metrics`` when given."""
    total = 0
    while True:
        sweep = await store.workers.reap(
            batch=BATCH,
            lease=settings.lease_seconds,
            grace=settings.recovery_grace_seconds,
            every=settings.reap_every,
        )
        if sweep.away is not None:
            log.warning(
                f"queue was away for {sweep.away:.1f} s: leases extended",
                away_seconds=round(sweep.away, 3),
                jobs=sweep.extended,
                extended_by=round(sweep.away + settings.recovery_grace_seconds, 3),
            )
        if metrics is not None:
            metrics.jobs_lost(sweep.handled)
        n = sum(r["jobs"] for r in sweep.handled)
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
    store, settings = app[store_key], app[settings_key]
    every = settings.reap_every
    loop = asyncio.get_running_loop()
    next_vacuum_check = loop.time() + LOG_VACUUM_EVERY
    with nudged_by_signal() as nudge:
        while True:
            nudged = await nudge.sleep(every)
            try:
                n = await reap_once(store, settings, app.get(metrics_key))
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
    async for _ in while_serving(_loop(app), "reaper"):
        yield
