"""Retention: what is older than ``--retention`` is deleted in small batches, by one server at a
time (``wn_prune`` under an advisory lock).

With ``--retention`` set, every server runs :func:`retention_context`'s loop: every minute (or
every ``retention`` when that is shorter) it runs batches of ``BATCH`` jobs, each its own short
transaction, in the order the jobs finished, each batch going on from where the one before
stopped, until no job is left to look at and fewer than a batch of worker rows and sessions went;
it logs what went. A server that finds another one pruning leaves the round to it. ``POST
/prune`` runs the same batches for a few seconds (:func:`prune`) and answers whether it is done,
and where to go on from when it is not; the CLI calls it until it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from ...durations import format_duration
from .background import while_serving
from .config import Settings
from .keys import settings_key, store_key
from .store import Store

log = structlog.get_logger("whatsnext.retention")

BATCH = 500
"""Jobs deleted per transaction (with their history, output and artifact records), and worker
rows and dashboard sessions alike: short transactions, whose dead rows vacuum reclaims as it goes."""
EVERY = 60.0
"""Seconds between rounds of the retention loop (at most ``--retention``)."""
DRY_BATCH = 10 * BATCH
"""Jobs one batch of a dry run looks at (it locks and deletes nothing)."""
REQUEST_BUDGET = 5.0
"""Seconds of batches one ``POST /prune`` runs before it answers (``done`` false: call again)."""
BUSY_PAUSE = 0.2
"""Seconds a manual prune waits before trying again when another server holds the batch lock."""
KINDS = (
    "jobs",
    "events",
    "logs",
    "artifacts",
    "dependencies",
    "workers",
    "sessions",
    "groups",
    "allocations",
)
"""What a prune counts: jobs, their history rows, output lines, artifact records (checkpoints
included), dependency rows, worker rows, expired dashboard sessions, groups left empty, and
allocations (workers started on SLURM or RUN:AI) that ended."""


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
    after: tuple[datetime, int] | None = None
    """Where the last batch stopped (the finish time and id of the last job it looked at), to go
    on from when not done; None when no job is left to look at."""

    def add(self, row: dict[str, Any]) -> None:
        for kind in KINDS:
            self.counts[kind] += int(row[kind])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def format_position(after: tuple[datetime, int]) -> str:
    """Where a prune stopped, as ``POST /prune`` answers it (``next``): ``<finished_at>/<id>``."""
    return f"{after[0].isoformat()}/{after[1]}"


def parse_position(text: str) -> tuple[datetime, int]:
    """:func:`format_position`'s text back (ValueError when it is not one)."""
    at, sep, job = text.rpartition("/")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        when = None
    if not sep or when is None or when.tzinfo is None or not job.isascii() or not job.isdigit():
        raise ValueError(f"{text!r} is not where a prune stopped: give the next of its answer")
    if not 0 < int(job) < 2**63:
        raise ValueError(f"{text!r}: the job id is out of range")
    return when, int(job)


async def prune(
    store: Store,
    *,
    older_than: float,
    project: str | None = None,
    dry_run: bool = False,
    after: tuple[datetime, int] | None = None,
    batch: int | None = None,
    budget: float | None = None,
    wait_busy: bool = False,
) -> Pruned:
    """Run batches from ``after`` (None: from the oldest job) until no job is left to look at and
    fewer than ``batch`` worker rows, sessions and allocations went (``done``), or ``budget`` seconds have passed
    (None: no bound; ``after`` in the answer says where to go on from). When another server holds
    the lock, give up at once (``busy``), or with ``wait_busy`` try again every ``BUSY_PAUSE``
    seconds within the budget. ``batch``: jobs per batch (default ``BATCH``, ``DRY_BATCH`` for a
    dry run)."""
    size = batch or (DRY_BATCH if dry_run else BATCH)
    out = Pruned(after=after)
    deadline = None if budget is None else time.monotonic() + budget
    while True:
        row = await store.retention.prune(
            older_than=older_than, project=project, batch=size, dry_run=dry_run, after=out.after
        )
        out.busy = bool(row["busy"])
        if out.busy:
            if not wait_busy or deadline is None or time.monotonic() + BUSY_PAUSE >= deadline:
                return out
            await asyncio.sleep(BUSY_PAUSE)
            continue
        out.add(row)
        out.batches += 1
        out.after = None if row["next_id"] is None else (row["next_at"], int(row["next_id"]))
        if out.after is None and all(
            int(row[kind]) < size for kind in ("workers", "sessions", "allocations")
        ):
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
    async for _ in while_serving(_loop(app), "retention"):
        yield
