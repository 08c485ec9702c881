"""Cron expressions: five fields and the instants they name in a time zone.

An expression has five fields separated by spaces: ``minute hour day-of-month month day-of-week``.

========  =======  ==========================================
field     values   names
========  =======  ==========================================
minute    0-59
hour      0-23
day       1-31
month     1-12     JAN-DEC (any case)
weekday   0-7      SUN-SAT (0 and 7 are both Sunday)
========  =======  ==========================================

A field is ``*`` (every value), a value, a range ``a-b``, a step over either (``*/15``, ``8-18/2``,
``5/10``: from 5 to the end in steps of 10), or a comma-separated list of these. ``@hourly``,
``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly`` (``@annually``) stand for
their usual expressions.

The day rule is cron's: when both day-of-month and day-of-week are restricted, a day matches when
*either* does (``0 0 1 * MON``: the 1st of each month and every Monday); when either field starts
with ``*`` (``*``, ``*/2``), a day must match both, which for ``*`` is the other field alone.

Times are wall-clock times in the expression's time zone (``zoneinfo``); daylight saving time:

* A schedule with a fixed hour (the hour field does not start with ``*``: ``30 2 * * *``) runs
  once per matching wall-clock time: a time that a spring-forward change skips runs at the end of
  the gap (03:00 instead of the missing 02:30), a time that a fall-back change repeats runs at its
  first occurrence only.
* A schedule whose hour field starts with ``*`` (``*/15 * * * *``, ``0 */2 * * *``) follows
  elapsed time: a skipped wall-clock time does not run, a repeated one runs at both occurrences.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["Cron", "CronError", "load_zone", "parse"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
MAX_LENGTH = 200
"""Characters of an expression."""
SEARCH_YEARS = 60
"""How far ahead a next time is looked for (29 February on a given weekday recurs within 40 years);
an expression that names no time in that span (``0 0 30 2 *``) is refused."""
_DST_MARGIN = timedelta(hours=3)
"""More than any daylight saving change of a zone's offset (at most two hours): the wall-clock
times looked at before a given instant, and past the best found, when repeated times may run twice."""
_FAST_SPAN = timedelta(days=1)
"""A next time no further than this, with one offset from before the instant to after that time,
is taken as the wall-clock time shifted by the offset (no zone changes its offset twice in a day)."""
_MINUTE = timedelta(minutes=1)


class CronError(ValueError):
    """An expression that is not valid, or that names no time; the message says which field."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    """Names for low, low + 1, ... (months from 1, weekdays from 0)."""


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, MONTHS),
    _Field("day-of-week", 0, 7, WEEKDAYS),
)
_ITEM = re.compile(r"^(?:(\*)|([0-9A-Za-z]+)(?:-([0-9A-Za-z]+))?)(?:/([0-9]+))?$")


def _value(field: _Field, text: str) -> int:
    if text.isdigit():
        value = int(text)
    elif text.upper() in field.names:
        value = field.names.index(text.upper()) + (1 if field.name == "month" else 0)
    else:
        allowed = f" or a name ({field.names[0]}-{field.names[-1]})" if field.names else ""
        raise CronError(f"{field.name}: {text!r} is not a number{allowed}")
    if not field.low <= value <= field.high:
        raise CronError(f"{field.name}: {value} is out of range {field.low}-{field.high}")
    return value


def _parse_field(field: _Field, text: str) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        m = _ITEM.match(item)
        if m is None:
            raise CronError(f"{field.name}: {item!r} is not *, a value, a range a-b or a step (*/n, a-b/n)")
        star, first, last, step_text = m.groups()
        if star:
            low, high = field.low, field.high
        else:
            low = _value(field, first)
            high = _value(field, last) if last is not None else (field.high if step_text else low)
            if low > high:
                raise CronError(f"{field.name}: the range {item!r} runs backwards")
        step = 1
        if step_text is not None:
            step = int(step_text)
            if step < 1:
                raise CronError(f"{field.name}: the step in {item!r} must be at least 1")
        values.update(range(low, high + 1, step))
    return values


@dataclass(frozen=True)
class Cron:
    """A parsed expression (:func:`parse`)."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    """0 is Sunday (a 7 in the expression is stored as 0)."""
    any_day: bool
    """The day-of-month field starts with ``*``."""
    any_weekday: bool
    """The day-of-week field starts with ``*``."""
    any_hour: bool
    """The hour field starts with ``*``: the schedule follows elapsed time across DST changes."""

    def matches_day(self, day: date) -> bool:
        """Whether ``day`` is one of the expression's days (the day-of-month/day-of-week rule)."""
        in_month = day.day in self.days
        in_week = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def matches(self, wall: datetime) -> bool:
        """Whether the wall-clock time ``wall`` (its minute) is one of the expression's times."""
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
            and self.matches_day(wall.date())
        )

    def next_wall(self, start: datetime) -> datetime:
        """The first wall-clock time (naive, whole minute) at or after ``start`` that matches."""
        t = start.replace(tzinfo=None, second=0, microsecond=0, fold=0)
        if t < start.replace(tzinfo=None, fold=0):
            t += _MINUTE
        limit = t.year + SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                i = bisect.bisect_right(self.months, t.month)
                year, month = (
                    (t.year, self.months[i]) if i < len(self.months) else (t.year + 1, self.months[0])
                )
                t = datetime(year, month, 1)
                continue
            if not self.matches_day(t.date()):
                t = datetime.combine(t.date() + timedelta(days=1), datetime.min.time())
                continue
            if t.hour not in self.hours:
                i = bisect.bisect_right(self.hours, t.hour)
                if i == len(self.hours):
                    t = datetime.combine(t.date() + timedelta(days=1), datetime.min.time())
                else:
                    t = t.replace(hour=self.hours[i], minute=0)
                continue
            if t.minute not in self.minutes:
                i = bisect.bisect_right(self.minutes, t.minute)
                if i == len(self.minutes):
                    t = t.replace(minute=0) + timedelta(hours=1)
                else:
                    t = t.replace(minute=self.minutes[i])
                continue
            return t
        raise CronError(f"{self.expression!r} names no time within {SEARCH_YEARS} years")

    def instants(self, wall: datetime, zone: ZoneInfo) -> list[datetime]:
        """The instants (UTC) at which the wall-clock time ``wall`` runs in ``zone``: one, none
        or two around a daylight saving change (see the module's rules)."""
        first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        exists = first.astimezone(zone).replace(tzinfo=None) == wall
        if not exists:  # skipped by a spring-forward change
            return [] if self.any_hour else [_transition(second, first, zone)]
        if first != second and self.any_hour:  # repeated by a fall-back change
            return [first, second]
        return [first]

    def after(self, instant: datetime, zone: ZoneInfo) -> datetime:
        """The first instant strictly after ``instant`` (aware) at which the expression runs in
        ``zone``, in UTC."""
        local = instant.astimezone(zone)
        offset = local.utcoffset()
        assert offset is not None
        # Away from any change of offset (the usual case), wall-clock times are instants shifted.
        at = self.next_wall(local.replace(tzinfo=None) + timedelta(microseconds=1)) - offset
        at = at.replace(tzinfo=UTC)
        if (
            at - instant <= _FAST_SPAN
            and (instant - _DST_MARGIN).astimezone(zone).utcoffset() == offset
            and (at + _DST_MARGIN).astimezone(zone).utcoffset() == offset
        ):
            return at
        wall = local.replace(tzinfo=None, fold=0) - _DST_MARGIN
        best: datetime | None = None
        best_wall = wall
        candidate = self.next_wall(wall)
        while True:
            for at in self.instants(candidate, zone):
                if at > instant and (best is None or at < best):
                    best, best_wall = at, candidate
            if best is not None and (not self.any_hour or candidate > best_wall + _DST_MARGIN):
                # Without repeated times, instants grow with wall-clock times: the first is the best.
                return best
            candidate = self.next_wall(candidate + _MINUTE)


def _transition(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant (a whole second) between ``before`` and ``after`` at which ``zone`` changes from
    the offset it has at ``before`` to the one it has at ``after``: the end of a skipped interval."""
    offset = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def parse(expression: str) -> Cron:
    """Parse a five-field expression (or a macro such as ``@daily``); :class:`CronError` naming
    the field that is wrong."""
    if not isinstance(expression, str):
        raise CronError("a cron expression is text")
    text = expression.strip()
    if len(text) > MAX_LENGTH:
        raise CronError(f"a cron expression has at most {MAX_LENGTH} characters")
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CronError(f"unknown macro {text!r}: one of {', '.join(MACROS)}")
        text = MACROS[text.lower()]
    parts = text.split()
    if len(parts) != len(_FIELDS):
        raise CronError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    minutes, hours, days, months, weekdays = (_parse_field(f, p) for f, p in zip(_FIELDS, parts, strict=True))
    cron = Cron(
        expression=expression,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=tuple(sorted(months)),
        weekdays=frozenset(d % 7 for d in weekdays),
        any_day=parts[2].startswith("*"),
        any_weekday=parts[4].startswith("*"),
        any_hour=parts[1].startswith("*"),
    )
    cron.next_wall(datetime(2000, 1, 1))  # refuses an expression that names no time (30 February)
    return cron


def load_zone(key: str) -> ZoneInfo:
    """The IANA time zone ``key`` (``Europe/Berlin``, ``UTC``); :class:`CronError` for a name the
    time zone database does not have (``localtime``, this machine's zone, is refused: a schedule
    means the same wherever its server runs)."""
    if not isinstance(key, str) or not 1 <= len(key) <= 100 or key == "localtime":
        raise CronError(f"unknown time zone {key!r}: give an IANA name such as UTC or Europe/Berlin")
    try:
        return ZoneInfo(key)
    except (ValueError, LookupError, OSError, UnicodeError):
        raise CronError(
            f"unknown time zone {key!r}: give an IANA name such as UTC or Europe/Berlin"
        ) from None
