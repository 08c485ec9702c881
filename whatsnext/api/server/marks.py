"""Claim marks: every server moves each project's claim mark forward every ``EVERY`` seconds
(``wn_advance_marks``, see migration 0019).

A claim reads the pending jobs of its project from the mark on. While a transaction holds back
the xmin horizon, the index entries of every job handed out since it began stay, and a claim
without a mark would read them all before finding a job; with the mark it reads those of the
last ``EVERY`` seconds at most. The sweep is a few index reads per project and writes a mark only
when it moved. Servers sweep side by side: one that finds a project's mark being moved, or its
jobs being made eligible, leaves that project to the next sweep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import structlog
from aiohttp import web

from .background import while_serving
from .keys import store_key

log = structlog.get_logger("whatsnext.server")

EVERY = 1.0
"""Seconds between sweeps of the claim marks."""
FROM_START_EVERY = 10
"""Every this many sweeps, one reads each project from the start of hand-out order and moves a
mark back if a job that can be handed out lies before it (none should: a safety net)."""


async def _loop(app: web.Application) -> None:
    store = app[store_key]
    failing = False
    rounds = 0
    while True:
        await asyncio.sleep(EVERY)
        rounds += 1
        try:
            await store.jobs.advance_claim_marks(from_start=rounds % FROM_START_EVERY == 0)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not failing:  # once per outage, not once a second
                log.warning("claim mark sweep failed; trying again every second", error=str(exc))
            failing = True
            continue
        if failing:
            log.info("claim mark sweep works again")
            failing = False


async def marks_context(app: web.Application) -> AsyncIterator[None]:
    async for _ in while_serving(_loop(app), "claim marks"):
        yield
