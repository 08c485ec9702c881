"""Schedules: a job the server submits itself at each tick of a cron expression or every N seconds.

Every server runs the tick loop (:func:`schedules_context`). A pass locks the due schedules that
no other server holds (``FOR UPDATE SKIP LOCKED``) and, for each, queues the tick's job through
``wn_enqueue`` and moves ``next_run_at`` to the following tick in one transaction
(``wn_schedule_fire``): a tick makes one job however many servers run, and a crash either makes
the job and moves on or does neither. A job records its schedule and tick (unique together), so
a tick is never made twice, even by a change racing it.

The following tick is the first after *now*: ticks missed while no server ran (or while the
database was away) are not made one by one; the first of them runs once when a server comes back.

Between passes the loop sleeps until the earliest ``next_run_at`` (at most
:data:`LONGEST_SLEEP`); a new or changed schedule and every tick notify ``whatsnext_schedules``,
which wakes the loop of every server to read it again, and so does SIGUSR1 (a test that
backdated a tick needs no wait).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import structlog
from aiohttp import web

from ...cron import Cron, CronError, load_zone, parse
from ...nudge import Nudge, nudged_by_signal
from .background import while_serving
from .batch import Entry, entries_json
from .errors import ApiError, found, is_unavailable
from .keys import hub_key, store_key
from .schemas.schedules import ScheduleCreate, ScheduleUpdate
from .store import Store
from .store.base import Row
from .store.schedules import Transaction

log = structlog.get_logger("whatsnext.schedules")

CHANNEL = "whatsnext_schedules"
"""Notified by a new or changed schedule and by every tick: the loops read the next tick again."""
BATCH = 100
"""Due schedules one pass takes (a fuller pass is followed by another at once)."""
LONGEST_SLEEP = 60.0
"""The longest a loop sleeps without looking (should a notification be lost)."""
HELD_WAIT = (0.05, 1.0)
"""The first and the longest wait while a due schedule is held by another server (its commit
notifies, so the wait is rarely served out)."""
ERROR_WAIT = 5.0
"""The wait after a pass that could not reach the database."""
TIMING_RETRY = timedelta(minutes=1)
"""When a schedule whose timing this server cannot read (its time zone unknown here) is tried again."""


@dataclass(frozen=True)
class Timing:
    """When a schedule ticks: a cron expression in a time zone, or every N seconds."""

    cron: Cron | None
    every: timedelta | None
    zone: ZoneInfo

    @classmethod
    def of(cls, *, cron: str | None, every: int | None, timezone: str) -> Timing:
        """:class:`CronError` for an expression or time zone that is not valid (here)."""
        if (cron is None) == (every is None):
            raise CronError("a schedule has a cron expression or a period (every), not both")
        return cls(
            parse(cron) if cron is not None else None,
            timedelta(seconds=every) if every is not None else None,
            load_zone(timezone),
        )

    def first(self, now: datetime) -> datetime:
        """The first tick of a schedule made (or retimed) at ``now``."""
        if self.every is not None:
            return now + self.every
        assert self.cron is not None
        return self.cron.after(now, self.zone)

    def following(self, tick: datetime, now: datetime) -> datetime:
        """The first tick after ``now``: for a period, on the grid of ``tick`` (``tick`` itself
        when it is still ahead); for a cron expression, its first time after ``now``."""
        if self.every is not None:
            if tick > now:
                return tick
            return tick + ((now - tick) // self.every + 1) * self.every
        assert self.cron is not None
        return self.cron.after(now, self.zone)


def job_entry(schedule: str, job: dict[str, Any]) -> Entry:
    """The submitted job of a schedule's tick: its stored job, named after the schedule unless it
    names itself."""
    return {"name": schedule, **job}


async def jobs_json(tx: Transaction, project: str, entry: Entry) -> str:
    """The tick's job as ``wn_enqueue`` reads it, its group made on first use (as a submission)."""
    group = entry.get("group")
    groups = await tx.groups(project=project, names=[group] if group else [])
    return entries_json([entry], groups)


# ---------------------------------------------------------------- making and changing schedules


def _in_job(error: ApiError) -> ApiError:
    """An error about the job's fields, naming them inside ``job``."""
    details = dict(error.details) if isinstance(error.details, dict) else {}
    where = details.get("field")
    details["field"] = f"job.{where}" if where else "job"
    return ApiError(error.status, error.code, f"job: {error.message}", details)


async def check_job(store: Store, project: str, name: str, job: dict[str, Any], actor: str | None) -> None:
    """Queue the schedule's job as a tick would, and undo it: what the project refuses (an unknown
    task in a strict project, a parameter its command needs, an unknown dependency) is a 422 (or
    409) naming the field inside ``job`` now rather than an error at every tick."""
    try:
        async with store.schedules.trial() as tx:
            await tx.enqueue(
                project=project, jobs_json=await jobs_json(tx, project, job_entry(name, job)), actor=actor
            )
    except ApiError as exc:
        raise _in_job(exc) from None
    except asyncpg.PostgresError as exc:
        if exc.sqlstate not in ("WN409", "WN422") or exc.detail == "project":
            raise
        status = 409 if exc.sqlstate == "WN409" else 422
        code = "conflict" if status == 409 else "invalid"
        message = exc.args[0] if exc.args else str(exc)
        raise _in_job(ApiError(status, code, message, {"field": exc.detail})) from None


def _job_json(job: dict[str, Any]) -> str:
    return orjson.dumps(job).decode()


def _stored_job(body: ScheduleCreate | ScheduleUpdate) -> dict[str, Any] | None:
    """The job as a schedule keeps it: the fields it gave (a null is a field left out: the task's
    value, or the schedule's name)."""
    return (
        None if body.job is None else body.job.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    )


async def create(store: Store, project: str, body: ScheduleCreate, actor: str | None) -> Row:
    """Make a schedule (409 naming ``name`` when the project has one of that name)."""
    timing = Timing.of(cron=body.cron, every=body.every, timezone=body.timezone)
    job = _stored_job(body) or {}
    await check_job(store, project, body.name, job, actor)
    made = await store.schedules.create(
        project=project,
        name=body.name,
        cron=body.cron,
        every=body.every,
        timezone=body.timezone,
        job=_job_json(job),
        overlap=body.overlap,
        paused=body.paused,
        next_run_at=timing.first(datetime.now(UTC)),
        actor=actor,
    )
    if made is None:
        raise ApiError(
            409, "conflict", f"project {project} has a schedule named {body.name!r}", {"field": "name"}
        )
    return found(await store.schedules.get(project=project, schedule=str(made)), "schedule", body.name)


async def update(store: Store, project: str, key: str, body: ScheduleUpdate, actor: str | None) -> Row:
    """Change a schedule: a new cron expression, period or time zone (of a cron schedule) starts
    from the first tick after now, and so does a resume when the tick it stopped at has passed."""
    current = found(await store.schedules.timing(project=project, schedule=key), "schedule", key, "schedule")
    retimed = body.cron is not None or body.every is not None
    cron, every = (body.cron, body.every) if retimed else (current["cron"], current["every"])
    timezone = body.timezone or current["timezone"]
    timing = Timing.of(cron=cron, every=every, timezone=timezone)
    now = datetime.now(UTC)
    next_run_at = None
    if retimed or (body.timezone is not None and cron is not None):
        next_run_at = timing.first(now)
    elif body.paused is False and current["paused"]:
        next_run_at = timing.following(current["next_run_at"], now)
    job = _stored_job(body)
    if job is not None:
        await check_job(store, project, current["name"], job, actor)
    changed = await store.schedules.update(
        id=current["id"],
        timing=retimed,
        cron=cron,
        every=every,
        timezone=body.timezone,
        job=None if job is None else _job_json(job),
        overlap=body.overlap,
        paused=body.paused,
        next_run_at=next_run_at,
    )
    found(changed, "schedule", key, "schedule")
    return found(await store.schedules.get(project=project, schedule=str(current["id"])), "schedule", key)


async def delete(store: Store, project: str, key: str) -> Row:
    """Remove a schedule (its jobs stay); the schedule as it was."""
    row = found(await store.schedules.get(project=project, schedule=key), "schedule", key, "schedule")
    if not await store.schedules.delete(id=row["id"]):
        raise ApiError(404, "not_found", f"schedule {key} not found", {"field": "schedule"})
    return row


# ---------------------------------------------------------------- ticks


@dataclass
class Pass:
    """What one pass of the tick loop did, by outcome (see ``wn_schedule_fire``; ``failed``: the
    job could not be queued), with the ids of the jobs it made."""

    outcomes: dict[str, int] = field(default_factory=dict)
    jobs: list[int] = field(default_factory=list)
    taken: int = 0
    """Due schedules this pass locked."""
    full: bool = False
    """It took as many as it may: more may be due."""

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


async def _tick(tx: Transaction, row: Row, now: datetime, done: Pass) -> None:
    """One due schedule: its job and the following tick, or the reason it made none."""
    try:
        following = Timing.of(cron=row["cron"], every=row["every"], timezone=row["timezone"]).following(
            row["next_run_at"], now
        )
    except CronError as exc:
        log.warning("schedule cannot tick here", schedule=row["name"], error=str(exc))
        await tx.failed(schedule_id=row["id"], next_run_at=now + TIMING_RETRY, error=str(exc))
        done.count("failed")
        return
    project = str(row["project_id"])
    try:
        async with tx.savepoint():
            entry = job_entry(row["name"], row["job"])
            fired = await tx.fire(
                schedule_id=row["id"],
                tick=row["next_run_at"],
                next_run_at=following,
                jobs_json=await jobs_json(tx, project, entry),
                actor=row["created_by"],
            )
    except (asyncpg.PostgresError, ApiError) as exc:
        if isinstance(exc, asyncpg.PostgresError) and is_unavailable(exc):
            raise
        error = exc.message if isinstance(exc, ApiError) else (exc.args[0] if exc.args else str(exc))
        log.warning("schedule could not submit its job", schedule=row["name"], error=error)
        await tx.failed(schedule_id=row["id"], next_run_at=following, error=str(error))
        done.count("failed")
        return
    done.count(fired["outcome"])
    if fired["outcome"] in ("created", "existing"):
        done.jobs.append(fired["job_id"])
    log.debug("schedule ticked", schedule=row["name"], tick=row["next_run_at"].isoformat(), **fired)


async def tick_once(store: Store, *, limit: int = BATCH) -> Pass:
    """One pass of the tick loop: every due schedule no other server holds (at most ``limit``)
    ticks once, in one transaction."""
    done = Pass()
    async with store.schedules.due(limit=limit) as due:
        done.taken = len(due.rows)
        done.full = done.taken >= limit
        for row in due.rows:
            assert due.now is not None
            await _tick(due.tx, row, due.now, done)
    return done


class _Waits:
    """How long the loop sleeps after a pass."""

    def __init__(self) -> None:
        self.held = HELD_WAIT[0]

    def after(self, done: Pass, seconds: float | None) -> float:
        """``seconds``: until the earliest tick, read after the pass (None: no schedule)."""
        if done.full:
            return 0.0
        if seconds is not None and seconds <= 0:
            # Due, yet not taken by this pass: another server holds it (its commit notifies), or it
            # fell due just after the pass.
            wait, self.held = self.held, min(self.held * 2, HELD_WAIT[1])
            return wait
        self.held = HELD_WAIT[0]
        return LONGEST_SLEEP if seconds is None else min(seconds, LONGEST_SLEEP)


async def _subscribe(app: web.Application, nudge: Nudge) -> Callable[[], None] | None:
    """Wake the loop at each notification of ``whatsnext_schedules``; None when the LISTEN
    connection could not take it now (tried again after the next pass)."""
    hub = app[hub_key]
    if hub.closing:
        return None
    try:
        return await hub.subscribe(CHANNEL, lambda _payload: nudge.set())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
        log.warning("cannot listen for schedule changes now", error=str(exc))
        return None


async def _loop(app: web.Application) -> None:
    store = app[store_key]
    waits = _Waits()
    unsubscribe: Callable[[], None] | None = None
    with nudged_by_signal() as nudge:
        try:
            while True:
                if unsubscribe is None:
                    unsubscribe = await _subscribe(app, nudge)
                try:
                    done = await tick_once(store)
                    wait = waits.after(done, await store.schedules.seconds_to_next())
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("schedule ticks failed", error=str(exc))
                    wait = ERROR_WAIT
                if unsubscribe is None:
                    wait = min(wait, ERROR_WAIT)
                if wait > 0:
                    await nudge.sleep(wait)
        finally:
            if unsubscribe is not None:
                unsubscribe()


async def schedules_context(app: web.Application) -> AsyncIterator[None]:
    """Run the tick loop while the application runs."""
    async for _ in while_serving(_loop(app), "schedules"):
        yield
