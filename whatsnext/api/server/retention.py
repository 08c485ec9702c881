"""Retention: what is older than ``--retention`` is deleted in small batches, by one server at a
time (``wn_prune`` under an advisory lock).

With ``--retention`` set, every server runs :func:`retention_context`'s loop: every minute (or
every ``retention`` when that is shorter) it runs batches of ``BATCH`` jobs, each its own short
transaction, until one deletes fewer than a batch of every kind, and logs what went. A server that
finds another one pruning leaves the round to it. ``POST /prune`` runs the same batches for a
while (:func:`prune`) and answers whether it is done; the CLI calls it until it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from ...durations import format_duration
from .config import Settings
from .keys import settings_key, store_key
from .store import Store

log = structlog.get_logger("whatsnext.retention")

BATCH = 500
"""Jobs deleted per transaction (with their history, output and artifact records), and worker
rows and dashboard sessions alike: short transactions, whose dead rows vacuum reclaims as it goes."""
EVERY = 60.0
"""Seconds between rounds of the retention loop (at most ``--retention``)."""
REQUEST_BUDGET = 5.0
"""Seconds of batches one ``POST /prune`` runs before it answers (``done`` false: call again)."""
BUSY_PAUSE = 0.2
"""Seconds a manual prune waits before trying again when another server holds the batch lock."""
KINDS = ("jobs", "events", "logs", "artifacts", "dependencies", "workers", "sessions", "groups")
"""What a prune counts: jobs, their history rows, output lines, artifact records (checkpoints
included), dependency rows, worker rows, expired dashboard sessions, and groups left empty."""


@dataclass
class Pruned:
    """What batches of retention deleted (or, in a dry run, would delete)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    batches: int = 0
    done: bool = False
    """True when the last batch found less than a batch of anything to delete (a dry run is done
    at once): nothing older is left, but what a rule keeps."""
    busy: bool = False
    """True when another server held the batch lock when this stopped (nothing was done then)."""

    def add(self, row: dict[str, Any]) -> None:
        for kind in KINDS:
            self.counts[kind] += int(row[kind])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def prune(
    store: Store,
    *,
    older_than: float,
    project: str | None = None,
    dry_run: bool = False,
    batch: int = BATCH,
    budget: float | None = None,
    wait_busy: bool = False,
) -> Pruned:
    """Run batches until one deletes less than ``batch`` of every kind (``done``), or ``budget``
    seconds have passed (None: no bound). When another server holds the lock, give up at once
    (``busy``), or with ``wait_busy`` try again every ``BUSY_PAUSE`` seconds within the budget.
    A dry run is one statement that counts everything."""
    out = Pruned()
    deadline = None if budget is None else time.monotonic() + budget
    while True:
        row = await store.retention.prune(
            older_than=older_than, project=project, batch=batch, dry_run=dry_run
        )
        out.busy = bool(row["busy"])
        if out.busy:
            if not wait_busy or deadline is None or time.monotonic() + BUSY_PAUSE >= deadline:
                return out
            await asyncio.sleep(BUSY_PAUSE)
            continue
        out.add(row)
        out.batches += 1
        if dry_run or all(int(row[kind]) < batch for kind in ("jobs", "workers", "sessions")):
            out.done = True
            return out
        if deadline is not None and time.monotonic() >= deadline:
            return out


async def retention_pass(store: Store, settings: Settings) -> Pruned:
    """One round of the retention loop: every batch there is to delete now (none when another
    server is pruning), logged when anything went."""
    assert settings.retention is not None
    pruned = await prune(store, older_than=settings.retention)
    if pruned.busy:
        log.debug("another server is pruning: this round is its")
    elif pruned.total:
        log.info(
            f"retention: deleted {pruned.counts['jobs']} jobs finished more than "
            f"{format_duration(settings.retention)} ago",
            batches=pruned.batches,
            **{kind: n for kind, n in pruned.counts.items() if n},
        )
    return pruned


def every(settings: Settings) -> float:
    """Seconds between rounds of the loop."""
    assert settings.retention is not None
    return min(EVERY, settings.retention)


async def _loop(app: web.Application) -> None:
    store, settings = app[store_key], app[settings_key]
    while True:
        await asyncio.sleep(every(settings))
        try:
            await retention_pass(store, settings)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("retention round failed; trying again at the next", error=str(exc))


async def retention_context(app: web.Application) -> AsyncIterator[None]:
    """The retention loop, when ``--retention`` is set."""
    settings = app[settings_key]
    if settings.retention is None:
        yield
        return
    log.info("retention", keep=format_duration(settings.retention), every=every(settings))
    task = asyncio.get_running_loop().create_task(_loop(app))
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
