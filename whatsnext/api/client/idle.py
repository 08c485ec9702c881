"""A worker's idle timeout (``--idle-timeout``, ``Client(idle_timeout=)``): a worker that has had
nothing running and claimed nothing for that long stops and deregisters.

A worker started for an allocation (``whatsnext alloc run``) exits that way when the demand it
was started for is gone, which ends the allocation and hands its CPUs and GPUs back to the
cluster. The clock runs whenever nothing runs: a server that cannot be reached meanwhile gives no
work either, so it counts as idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def check_idle_timeout(value: float | None) -> float | None:
    """``value`` when it is None (no idle timeout) or above 0 seconds; ValueError otherwise."""
    if value is None:
        return None
    value = float(value)
    if not value > 0:
        raise ValueError(f"idle_timeout must be above 0 seconds (None: no idle timeout), not {value!r}")
    return value


class IdleClock:
    """How long a worker has had nothing to do: ``busy()`` while something runs, ``idle()`` when
    nothing does; ``left()`` is what remains of the timeout (None: no timeout)."""

    def __init__(self, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = check_idle_timeout(timeout)
        self.clock = clock
        self.since: float | None = clock()
        """When the worker last became idle (None: it is busy)."""

    def busy(self) -> None:
        self.since = None

    def idle(self, since: float | None = None) -> None:
        """Nothing runs: idle since ``since`` (when the last job ended), else since now, unless
        already idle."""
        if self.since is None:
            self.since = self.clock() if since is None else since

    def left(self) -> float | None:
        """Seconds until the idle timeout (its whole length while busy: a claim made while jobs
        run comes back by then too; None: no timeout)."""
        if self.timeout is None:
            return None
        if self.since is None:
            return self.timeout
        return max(0.0, self.since + self.timeout - self.clock())

    def expired(self) -> bool:
        left = self.left()
        return left is not None and left <= 0 and self.since is not None

    def bound(self, wait: float) -> float:
        """A claim's wait, no longer than what is left of the idle timeout."""
        left = self.left()
        return wait if left is None else min(wait, left)
