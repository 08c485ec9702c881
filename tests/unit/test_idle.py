"""The worker's idle clock, on a clock the test moves: idle since the last job ended, its whole
length left while busy, a claim's wait bounded by what is left, and the values refused."""

from __future__ import annotations

import pytest

from whatsnext.api.client.idle import IdleClock, check_idle_timeout


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_idle_since_start_then_since_the_last_job() -> None:
    clock = Clock()
    idle = IdleClock(5.0, clock)
    clock.now += 3
    assert idle.left() == 2 and not idle.expired()
    assert idle.bound(30) == 2 and idle.bound(1) == 1
    idle.busy()
    clock.now += 60
    assert idle.left() == 5 and not idle.expired(), "busy: never expires, a claim comes back within 5 s"
    idle.idle(since=clock.now - 4)  # the last job ended 4 s ago
    assert idle.left() == 1
    idle.idle()  # already idle: still since then
    clock.now += 1
    assert idle.left() == 0 and idle.expired()


def test_no_timeout() -> None:
    idle = IdleClock(None)
    assert idle.left() is None and not idle.expired() and idle.bound(30) == 30


@pytest.mark.parametrize("value", [0, -1.0])
def test_refused(value: float) -> None:
    with pytest.raises(ValueError, match="above 0"):
        check_idle_timeout(value)
    assert check_idle_timeout(None) is None and check_idle_timeout(2) == 2.0
