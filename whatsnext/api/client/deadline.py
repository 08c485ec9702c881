"""When a worker's time ends: ``--deadline`` read as a time or a duration, the end of the SLURM
allocation a worker runs in, and what each claim says is left (``time_left``).

A worker that knows its end claims only jobs whose ``timeout`` fits in the time left less its
``grace`` (a job without a timeout fits any worker). Near its end, when no more than its ``grace``
is left (:func:`watch_end`), it claims no more and stops what still runs, handing each attempt back
to the queue (PREEMPTED, no attempt used) to run again elsewhere, from its checkpoint if it wrote
one; what it claimed fits, so only jobs without a timeout are still running then.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import structlog

from ...durations import parse_duration
from ...limits import MAX_TIME_LEFT

log = structlog.get_logger("whatsnext.worker")

NO_DEADLINE = frozenset({"none", "never", "off"})
"""Values of ``--deadline`` that say the worker has no end (not even its SLURM allocation's)."""
SLURM_TIMEOUT = 10.0
"""Seconds ``squeue`` or ``scontrol`` may take to tell a worker its allocation's end."""
END_REASON = "the worker's time ends"
"""Why the attempts still running at a worker's end go back to the queue (their history says so)."""
LOOK_AGAIN = 60.0
"""Seconds between looks at the clock while the end is far (the wall clock may be set meanwhile)."""

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SLURM_NONE = frozenset({"", "n/a", "none", "unknown", "unlimited", "infinite"})


def parse_deadline(text: str, now: datetime | None = None) -> datetime | None:
    """When a worker's time ends, from ``--deadline``: a duration from ``now`` (the forms of
    :func:`whatsnext.durations.parse_duration`) or an ISO time (``2025-06-01T18:00``,
    ``2025-06-01 18:00:00+02:00``; without a zone, local time). ``none`` gives None: no end. ValueError for anything else, and for
    a time already past."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text.lower() in NO_DEADLINE:
        return None
    try:
        seconds: float | None = parse_duration(text)
    except ValueError:
        seconds = None
    if seconds is not None:
        if seconds <= 0:
            raise ValueError(f"deadline {text!r}: a duration must be above 0")
        return now + timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"deadline {text!r}: give an ISO time (2025-06-01T18:00, local unless it has a zone) or a "
            "duration (90m, 2h, 1h30m, 3600, 01:30:00)"
        ) from None
    when = when.astimezone()  # a naive time is local time
    if when <= now:
        raise ValueError(f"deadline {text!r} has already passed")
    return when


def as_deadline(value: datetime | float | str | None, now: datetime | None = None) -> datetime | None:
    """The SDK's ``deadline=``: a datetime (naive: local time), seconds from now, or a string as
    ``--deadline`` takes it. None: none given."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone()
    if isinstance(value, str):
        return parse_deadline(value, now)
    if value <= 0:
        raise ValueError(f"deadline: {value} seconds from now is not in the future")
    return (now or datetime.now(UTC)) + timedelta(seconds=float(value))


def seconds_until(deadline: datetime, now: float | None = None) -> float:
    """Seconds from now (``time.time()``) until ``deadline`` (negative once it passed)."""
    return deadline.timestamp() - (time.time() if now is None else now)


def claim_time_left(deadline: datetime, grace: float, wait: float = 0.0, now: float | None = None) -> float:
    """A claim's ``time_left``: the seconds until ``deadline`` less the worker's ``grace`` (to stop
    what runs) and the claim's ``wait`` (a job handed out at the end of a long-poll must still
    fit), never below 0."""
    return min(MAX_TIME_LEFT, max(0.0, seconds_until(deadline, now) - grace - wait))


def near_end(deadline: datetime, grace: float, now: float | None = None) -> bool:
    """Whether no more than ``grace`` is left until ``deadline``: time to claim no more and hand
    back what runs (it then has ``grace`` to stop)."""
    return seconds_until(deadline, now) <= grace


async def watch_end(deadline: datetime, grace: float, stop_now: Callable[[str], None]) -> None:
    """Sleep until ``grace`` before ``deadline``, then ``stop_now(END_REASON)``: the worker claims
    no more and its running attempts go back to the queue."""
    while True:
        left = seconds_until(deadline) - grace
        if left <= 0:
            break
        await asyncio.sleep(min(LOOK_AGAIN, left))  # looked at again: the wall clock may be set
    log.info(
        "the worker's time ends: claiming no more, handing back what runs",
        deadline=deadline.isoformat(timespec="seconds"),
        grace=grace,
    )
    stop_now(END_REASON)


# ---------------------------------------------------------------- the SLURM allocation's end

Runner = Callable[[list[str]], str]
"""Runs a command and returns its standard output (raises OSError or CalledProcessError)."""


def _run(argv: list[str]) -> str:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=SLURM_TIMEOUT, check=True, stdin=subprocess.DEVNULL
    ).stdout


def slurm_time(text: str, now: datetime | None = None) -> datetime | None:
    """A time as SLURM prints it (``2025-06-01T18:00:00``, local time), None for none or unlimited
    (``N/A``, ``NONE``, ``Unknown``, or further away than a worker may announce)."""
    text = text.strip()
    if text.lower() in _SLURM_NONE:
        return None
    return _within_reach(datetime.fromisoformat(text).astimezone(), now)


def _within_reach(when: datetime, now: datetime | None = None) -> datetime | None:
    """``when``, or None when it is further away than a worker may announce (no end, in effect)."""
    if seconds_until(when, (now or datetime.now(UTC)).timestamp()) > MAX_TIME_LEFT:
        return None
    return when


def slurm_deadline(env: Mapping[str, str] | None = None, run: Runner = _run) -> datetime | None:
    """The end of the SLURM allocation this process runs in (``$SLURM_JOB_ID``), None outside one
    or when it has no end. ``$SLURM_JOB_END_TIME`` when SLURM sets it, else ``squeue -h -j ID -o %e``,
    else ``scontrol -o show job ID``; when SLURM cannot tell, a warning and None."""
    env = os.environ if env is None else env
    job_id = env.get("SLURM_JOB_ID", "").strip()
    if not job_id:
        return None
    epoch = env.get("SLURM_JOB_END_TIME", "").strip()
    if _NUMBER.fullmatch(epoch) and float(epoch) > 0:
        return _within_reach(datetime.fromtimestamp(float(epoch), UTC).astimezone())
    problems: list[str] = []
    for argv, read in (
        (["squeue", "-h", "-j", job_id, "-o", "%e"], lambda out: out.strip().splitlines()[0]),
        (["scontrol", "-o", "show", "job", job_id], _end_time_field),
    ):
        try:
            out = run(argv)
            return slurm_time(read(out))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
            problems.append(f"{argv[0]}: {str(exc).strip() or type(exc).__name__}")
    log.warning(
        "inside a SLURM job whose end could not be read: no deadline (give --deadline)",
        slurm_job=job_id,
        errors="; ".join(problems),
    )
    return None


def _end_time_field(out: str) -> str:
    match = re.search(r"\bEndTime=(\S+)", out)
    if match is None:
        raise ValueError("no EndTime in scontrol's answer")
    return match.group(1)


__all__ = [
    "END_REASON",
    "NO_DEADLINE",
    "as_deadline",
    "claim_time_left",
    "near_end",
    "parse_deadline",
    "seconds_until",
    "slurm_deadline",
    "slurm_time",
    "watch_end",
]
