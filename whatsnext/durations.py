"""Durations as people write them: one parser for every duration option of the CLI, the server and
the worker (``--lease-seconds``, ``--idle-timeout``, ``--deadline``, ``--time-limit`` ...).

``90`` and ``1.5`` are seconds (so plain seconds keep working everywhere); ``45s``, ``5m``, ``2h``,
``1d`` and their sums (``1h30m``, ``2d12h``) have units; ``HH:MM:SS`` and ``MM:SS`` are clock
forms, and SLURM's ``D-HH``, ``D-HH:MM`` and ``D-HH:MM:SS`` are read as SLURM reads ``--time``.
"""

from __future__ import annotations

import argparse
import re

UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
"""Seconds per unit."""
FORMS = "seconds (90, 1.5), a number with a unit (45s, 5m, 2h, 1h30m, 1d) or a clock time (HH:MM:SS, MM:SS)"
"""What a duration may look like, for messages and help texts."""

_NUMBER = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?")
"""Plain seconds, as ``float`` reads them (``90``, ``1.5``, ``.5``, ``1e3``), never negative."""
_UNIT_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT_FORM = re.compile(r"(?:\d+(?:\.\d+)?[dhms])+")
_CLOCK_FORM = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def parse_duration(text: str) -> float:
    """Seconds of the duration ``text`` (see the module's forms); ValueError naming ``text`` when it
    is not one. Never negative; ``0`` is a duration (whether it is allowed is the caller's call)."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration: give {FORMS}")
    value = text.strip().lower()
    if _NUMBER.fullmatch(value):
        seconds = float(value)
        if seconds == float("inf"):
            raise ValueError(f"{text!r} is not a duration: it is too large")
        return seconds
    if _UNIT_FORM.fullmatch(value):
        units = [unit for _, unit in _UNIT_PART.findall(value)]
        if len(set(units)) != len(units):
            raise ValueError(f"{text!r} is not a duration: each unit may appear once (1h30m)")
        return sum(float(n) * UNITS[unit] for n, unit in _UNIT_PART.findall(value))
    clock = _CLOCK_FORM.fullmatch(value)
    if clock is None or (clock.group(1) is None and clock.group(3) is None):
        raise ValueError(f"{text!r} is not a duration: give {FORMS}")
    days, first, second, third = (int(g) if g is not None else None for g in clock.groups())
    for part in (second, third):
        if part is not None and part >= 60:
            raise ValueError(f"{text!r} is not a duration: minutes and seconds of a clock time are below 60")
    if days is not None:  # D-H, D-H:M, D-H:M:S
        return days * 86400.0 + first * 3600.0 + (second or 0) * 60.0 + (third or 0)
    if third is not None:  # H:M:S
        return first * 3600.0 + (second or 0) * 60.0 + third
    return first * 60.0 + (second or 0)  # M:S


def duration(text: str) -> float:
    """``parse_duration`` as an argparse ``type=``: a bad value is a usage error saying why."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_duration(text: str) -> float:
    """A duration above 0, as an argparse ``type=``."""
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the duration must be above 0")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400`` as ``1h30m``, ``45`` as ``45s``, ``0.5`` as ``0.5s`` (what :func:`parse_duration` reads back)."""
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"{seconds!r} is not a duration")
    if not float(seconds).is_integer():
        return f"{seconds:g}s"
    left = int(seconds)
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = int(UNITS[unit])
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


__all__ = ["FORMS", "UNITS", "duration", "format_duration", "parse_duration", "positive_duration"]
