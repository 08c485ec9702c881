"""The sharing benchmark's arithmetic: GPU-seconds each project held inside a window, from attempts
given as (project, GPUs, start, end), per step, and the ratio and tolerance it is judged by."""

from __future__ import annotations

import pytest

from bench.sharing import Interval, held_by_step, held_in_window, share_ratio, within

ATTEMPTS: list[Interval] = [
    ("a", 1, 0.0, 10.0),  # wholly inside [0, 10]
    ("a", 2, 5.0, 15.0),  # half inside: 2 GPUs x 5 s
    ("b", 1, -5.0, 5.0),  # started before the window: 5 s count
    ("b", 4, 10.0, 20.0),  # starts as the window ends: nothing
    ("c", 0, 0.0, 10.0),  # no GPU: nothing
    ("c", 1, -10.0, -1.0),  # ended before the window: nothing
]


def test_held_in_window_counts_each_attempts_gpus_times_its_overlap() -> None:
    assert held_in_window(ATTEMPTS, 0.0, 10.0) == {"a": 20.0, "b": 5.0}


def test_an_attempt_spanning_the_whole_window_counts_the_window() -> None:
    assert held_in_window([("a", 3, -100.0, 100.0)], 10.0, 12.5) == {"a": 7.5}


def test_an_empty_window_holds_nothing() -> None:
    assert held_in_window(ATTEMPTS, 3.0, 3.0) == {}
    assert held_in_window([], 0.0, 10.0) == {}


def test_steps_are_whole_windows_that_add_up() -> None:
    steps = held_by_step(ATTEMPTS, 0.0, 20.0, 7.0)
    assert len(steps) == 2  # [0, 7), [7, 14); the rest [14, 20) is shorter than a step
    assert steps[0] == {"a": 7.0 + 2 * 2.0, "b": 5.0}
    assert steps[1] == {"a": 3.0 + 2 * 7.0, "b": 4 * 4.0}
    whole = held_in_window(ATTEMPTS, 0.0, 14.0)
    for project, seconds in whole.items():
        assert sum(s.get(project, 0.0) for s in steps) == pytest.approx(seconds)
    assert len(held_by_step(ATTEMPTS, 0.0, 21.0, 7.0)) == 3


def test_steps_must_move_forward() -> None:
    with pytest.raises(ValueError, match="step"):
        held_by_step(ATTEMPTS, 0.0, 10.0, 0.0)


def test_ratio_and_tolerance() -> None:
    assert share_ratio({"a": 200.0, "b": 100.0}, "a", "b") == 2.0
    assert share_ratio({"a": 200.0}, "a", "b") is None
    assert within(2.19, 2.0, 0.10) and within(1.81, 2.0, 0.10)
    assert not within(2.21, 2.0, 0.10) and not within(1.79, 2.0, 0.10)
    assert not within(None, 2.0, 0.10)
