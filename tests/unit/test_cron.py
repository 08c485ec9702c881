"""Cron expressions: parsing (fields, ranges, lists, steps, names, macros, clear errors) and the
instants they name in a time zone, across daylight saving changes, held to a brute-force scan."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from whatsnext.cron import CronError, load_zone, parse

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # a DST change of 30 minutes
SYDNEY = ZoneInfo("Australia/Sydney")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def ticks(expression: str, start: datetime, n: int, zone: ZoneInfo = ZoneInfo("UTC")) -> list[datetime]:
    cron, out, t = parse(expression), [], start
    for _ in range(n):
        t = cron.after(t, zone)
        out.append(t)
    return out


def local(times: list[datetime], zone: ZoneInfo) -> list[str]:
    return [t.astimezone(zone).strftime("%m-%d %H:%M%z") for t in times]


# ---------------------------------------------------------------- parsing


def test_fields_take_values_ranges_lists_steps_and_names() -> None:
    c = parse("0,30 8-18/2 1,15 JAN-mar,dec mon-FRI")
    assert c.minutes == (0, 30)
    assert c.hours == (8, 10, 12, 14, 16, 18)
    assert c.days == {1, 15}
    assert c.months == (1, 2, 3, 12)
    assert c.weekdays == {1, 2, 3, 4, 5}
    assert parse("*/20 * * * *").minutes == (0, 20, 40)
    assert parse("5/20 * * * *").minutes == (5, 25, 45)  # a/n: from a to the end
    assert parse("0 0 * * 7").weekdays == {0}  # 7 is Sunday too
    assert parse("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert parse("0 0 * * SUN").weekdays == {0}


@pytest.mark.parametrize(
    ("macro", "same_as"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_macros(macro: str, same_as: str) -> None:
    start = utc(2024, 5, 17, 13, 7)
    assert ticks(macro, start, 3) == ticks(same_as, start, 3)


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("* * * *", "5 fields"),
        ("* * * * * *", "5 fields"),
        ("", "5 fields"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("* 24 * * *", "hour: 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month: 0 is out of range 1-31"),
        ("* * * 13 *", "month: 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week: 8 is out of range 0-7"),
        ("* * * FOO *", "month: 'FOO' is not a number or a name (JAN-DEC)"),
        ("* * * * MONDAY", "day-of-week: 'MONDAY' is not a number"),
        ("* 5-3 * * *", "hour: the range '5-3' runs backwards"),
        ("*/0 * * * *", "minute: the step in '*/0' must be at least 1"),
        ("1,,2 * * * *", "minute: '' is not *"),
        ("* * * * 1-", "day-of-week: '1-' is not *"),
        ("-1 * * * *", "minute: '-1' is not *"),
        ("@reboot", "unknown macro '@reboot'"),
        ("0 0 30 2 *", "names no time"),
        ("0 0 31 4,6,9,11 *", "names no time"),
        ("x" * 201, "at most 200 characters"),
    ],
)
def test_errors_name_the_field(expression: str, names: str) -> None:
    with pytest.raises(CronError) as error:
        parse(expression)
    assert names in str(error.value)


def test_time_zones_are_iana_names() -> None:
    assert load_zone("Europe/Berlin") == BERLIN
    assert str(load_zone("UTC")) == "UTC"
    for bad in (
        "",
        "Mars/Olympus",
        "utc",
        "../etc/passwd",
        "/etc/localtime",
        "localtime",
        "Europe",
        "zone.tab",
    ):
        with pytest.raises(CronError, match="unknown time zone"):
            load_zone(bad)


# ---------------------------------------------------------------- next times (UTC)


def test_next_times_are_strictly_after() -> None:
    assert ticks("*/15 * * * *", utc(2024, 1, 1, 10, 0), 3) == [
        utc(2024, 1, 1, 10, 15),
        utc(2024, 1, 1, 10, 30),
        utc(2024, 1, 1, 10, 45),
    ]
    assert ticks("*/15 * * * *", utc(2024, 1, 1, 10, 0, 0, 1), 1) == [utc(2024, 1, 1, 10, 15)]
    assert ticks("0 2 * * *", utc(2024, 1, 31, 3), 2) == [utc(2024, 2, 1, 2), utc(2024, 2, 2, 2)]
    # New Year, month ends, weekdays only
    assert ticks("59 23 31 12 *", utc(2024, 6, 1), 2) == [
        utc(2024, 12, 31, 23, 59),
        utc(2025, 12, 31, 23, 59),
    ]
    assert ticks("0 9 * * MON-FRI", utc(2024, 5, 17, 12), 2) == [utc(2024, 5, 20, 9), utc(2024, 5, 21, 9)]
    assert ticks("0 0 29 2 *", utc(2024, 3, 1), 2) == [utc(2028, 2, 29), utc(2032, 2, 29)]
    assert ticks("0 0 29 2 *", utc(2096, 3, 1), 1) == [utc(2104, 2, 29)]  # 2100 is no leap year


def test_either_day_field_matches_when_both_are_restricted() -> None:
    # the 1st of each month or any Monday: June 2024 starts on a Saturday
    assert [t.day for t in ticks("0 0 1 * MON", utc(2024, 5, 31), 4)] == [1, 3, 10, 17]
    # Friday the 13th, cron style: every 13th and every Friday
    assert [t.day for t in ticks("0 0 13 * FRI", utc(2024, 9, 1), 4)] == [6, 13, 20, 27]
    # a field starting with * restricts nothing alone: both must match
    assert [t.day for t in ticks("0 0 * * MON", utc(2024, 5, 31), 2)] == [3, 10]
    assert [t.day for t in ticks("0 0 1 * *", utc(2024, 5, 31), 2)] == [1, 1]
    # "*/2" starts with *: odd days that are Mondays (as cron reads it)
    assert [t.day for t in ticks("0 0 */2 * MON", utc(2024, 5, 31), 3)] == [3, 17, 1]


# ---------------------------------------------------------------- daylight saving time


def test_a_fixed_time_skipped_in_spring_runs_at_the_end_of_the_gap_once() -> None:
    # Berlin, 31 March 2024: 02:00 CET becomes 03:00 CEST
    assert local(ticks("30 2 * * *", utc(2024, 3, 29, 12), 4, BERLIN), BERLIN) == [
        "03-30 02:30+0100",
        "03-31 03:00+0200",
        "04-01 02:30+0200",
        "04-02 02:30+0200",
    ]
    assert local(ticks("0 2 * * *", utc(2024, 3, 30, 12), 2, BERLIN), BERLIN) == [
        "03-31 03:00+0200",
        "04-01 02:00+0200",
    ]
    # a 30-minute change: 02:00 becomes 02:30
    assert local(ticks("15 2 * * *", utc(2024, 10, 5, 12), 2, LORD_HOWE), LORD_HOWE) == [
        "10-06 02:30+1100",
        "10-07 02:15+1100",
    ]


def test_a_fixed_time_repeated_in_autumn_runs_once() -> None:
    # Berlin, 27 October 2024: 03:00 CEST becomes 02:00 CET (02:00-03:00 happens twice)
    assert local(ticks("30 2 * * *", utc(2024, 10, 26, 12), 3, BERLIN), BERLIN) == [
        "10-27 02:30+0200",
        "10-28 02:30+0100",
        "10-29 02:30+0100",
    ]
    # New York, 3 November 2024: 02:00 EDT becomes 01:00 EST
    assert local(ticks("30 1 * * *", utc(2024, 11, 2, 12), 2, NEW_YORK), NEW_YORK) == [
        "11-03 01:30-0400",
        "11-04 01:30-0500",
    ]


def test_a_schedule_over_every_hour_follows_elapsed_time() -> None:
    spring = ticks("*/30 * * * *", utc(2024, 3, 31, 0, 10), 4, BERLIN)
    assert local(spring, BERLIN) == [
        "03-31 01:30+0100",
        "03-31 03:00+0200",
        "03-31 03:30+0200",
        "03-31 04:00+0200",
    ]
    autumn = ticks("*/30 * * * *", utc(2024, 10, 26, 23, 45), 6, BERLIN)
    assert local(autumn, BERLIN) == [
        "10-27 02:00+0200",
        "10-27 02:30+0200",
        "10-27 02:00+0100",
        "10-27 02:30+0100",
        "10-27 03:00+0100",
        "10-27 03:30+0100",
    ]
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(autumn))
    # hourly at :30 keeps an hour between runs through both changes
    for start in (utc(2024, 3, 30, 22), utc(2024, 10, 26, 22)):
        hourly = ticks("30 * * * *", start, 8, BERLIN)
        assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hourly))


def _reference(expression: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Every instant in (start, end] at which the expression runs, by scanning minute by minute."""
    cron = parse(expression)
    found: set[datetime] = set()
    if cron.any_hour:
        u = start.replace(second=0, microsecond=0)
        while u <= end:
            if u > start and cron.matches(u.astimezone(zone)):
                found.add(u)
            u += timedelta(minutes=1)
    else:
        wall = start.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0) - timedelta(hours=4)
        last = end.astimezone(zone).replace(tzinfo=None) + timedelta(hours=4)
        while wall <= last:
            if cron.matches(wall):
                found.update(at for at in cron.instants(wall, zone) if start < at <= end)
            wall += timedelta(minutes=1)
    return sorted(found)


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK, LORD_HOWE, SYDNEY, ZoneInfo("Asia/Kolkata")])
@pytest.mark.parametrize(
    "expression", ["*/7 * * * *", "30 * * * *", "0 */2 * * *", "0,45 1-3 * * *", "15 2 * * *", "0 0 * * *"]
)
def test_next_times_match_a_scan_around_each_change(zone: ZoneInfo, expression: str) -> None:
    for year in (2024, 2025):
        for month in range(1, 13):
            start = datetime(year, month, 1, tzinfo=UTC)
            # only the days around a change of offset are worth scanning
            if (
                start.astimezone(zone).utcoffset()
                == (start + timedelta(days=31)).astimezone(zone).utcoffset()
            ):
                continue
            day = start
            while day.astimezone(zone).utcoffset() == start.astimezone(zone).utcoffset():
                day += timedelta(days=1)
            lo, hi = day - timedelta(days=2), day + timedelta(days=1)
            expected = _reference(expression, zone, lo, hi)
            got, t = [], lo
            while True:
                t = parse(expression).after(t, zone)
                if t > hi:
                    break
                got.append(t)
            assert got == expected, (expression, zone, day)
