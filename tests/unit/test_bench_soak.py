"""The fault soak's counting: job bodies read from their records, when they ran (a gap in their
lines is a pause), overlapping and repeated bodies with their causes, DAG order, expected final
states, and the servers' log lines; and that its workload and faults follow from the seed."""

from __future__ import annotations

import json

from bench.soak_count import (
    Body,
    count_log,
    dag_violations,
    expected_states,
    overlaps,
    parse_body,
    repeats,
    segments,
    state_table,
)
from bench.soak_plan import FAULT_MIX, make_faults, make_workload


def body(
    job: int, attempt: int, pid: int, start: float, last: float, *, end: bool = True, worker: int = 100
) -> Body:
    """A body that wrote a line every 0.1 s from ``start`` to ``last`` (and its end there)."""
    ticks = tuple(round(start + 0.1 * i, 3) for i in range(1, round((last - start) / 0.1) + 1))
    return Body(job, attempt, pid, worker, start, ticks, last if end else None, 0 if end else None)


def test_a_record_is_read_line_by_line_and_a_cut_last_line_is_ignored() -> None:
    head = {"job": 7, "attempt": 2, "pid": 42, "ppid": 41, "gppid": 40, "start": 10.0}
    text = json.dumps(head) + "\n10.0200\n10.0400\nend 10.0500 3\n"
    assert parse_body(text) == Body(7, 2, 42, 40, 10.0, (10.02, 10.04), 10.05, 3)
    killed = parse_body(json.dumps(head) + "\n10.0200\n10.04")
    assert killed is not None and killed.end is None and killed.last == 10.04 and not killed.completed
    assert parse_body('{"job": 7, "att') is None


def test_a_gap_in_the_lines_splits_the_time_a_body_ran() -> None:
    paused = Body(1, 1, 1, 9, 0.0, (0.1, 0.2, 5.0, 5.1), 5.2, 0)
    assert segments(paused) == [(0.0, 0.2), (5.0, 5.2)]
    assert segments(Body(1, 1, 1, 9, 3.0)) == [(3.0, 3.0)]


def test_two_attempts_running_at_once_overlap_but_not_one_paused_meanwhile() -> None:
    first = body(1, 1, 10, 0.0, 6.0, end=False, worker=100)
    second = body(1, 2, 20, 5.0, 8.0, worker=200)
    [found] = overlaps([first, second])
    assert (found.job, found.attempts, found.pids, found.same_worker) == (1, (1, 2), (10, 20), False)
    assert abs(found.seconds - 1.0) < 1e-6
    # The first attempt stopped writing at 2.0 (suspended), resumed after the second ended, at 9.0.
    suspended = Body(1, 1, 10, 100, 0.0, (1.0, 2.0, 9.0), 9.5, 0)
    assert overlaps([suspended, second]) == []
    # One after the other, and bodies of other jobs, never overlap.
    assert overlaps([body(1, 1, 10, 0.0, 1.0), body(1, 2, 20, 1.05, 2.0), body(2, 1, 30, 0.0, 2.0)]) == []


def test_one_worker_running_two_attempts_of_one_job_is_told_apart() -> None:
    [found] = overlaps([body(3, 1, 10, 0.0, 2.0, worker=7), body(3, 2, 11, 1.0, 3.0, worker=7)])
    assert found.same_worker


def test_a_completed_body_that_runs_again_is_a_repeat_with_its_cause() -> None:
    done = body(1, 1, 10, 0.0, 1.0, worker=100)
    again = body(1, 2, 20, 6.0, 7.0, worker=200)
    [other] = repeats([done, again])
    assert (other.job, other.completed_attempt, other.again_attempt, other.cause) == (1, 1, 2, "other")
    # Its worker was killed after the body ended, or just before (the body finished alone), and
    # before the job ran again.
    assert repeats([done, again], killed_workers={100: 2.0})[0].cause == "worker_killed"
    assert repeats([done, again], killed_workers={100: 0.99})[0].cause == "worker_killed"
    # ... but a kill before the body started or after the new start explains nothing.
    assert repeats([done, again], killed_workers={100: -1.0})[0].cause == "other"
    assert repeats([done, again], killed_workers={100: 6.5})[0].cause == "other"
    # Its worker's server was away between the two.
    assert repeats([done, again], cut_off={100: [(0.5, 5.0)]})[0].cause == "server_away"
    assert repeats([done, again], cut_off={100: [(7.5, 9.0)]})[0].cause == "other"


def test_a_body_killed_before_it_completed_is_no_repeat() -> None:
    killed = body(1, 1, 10, 0.0, 1.0, end=False)
    failed = Body(2, 1, 11, 100, 0.0, (0.1,), 0.2, 3)
    assert repeats([killed, body(1, 2, 20, 6.0, 7.0), failed, body(2, 2, 21, 6.0, 7.0)]) == []


def test_a_downstream_body_may_start_only_after_an_upstream_body_completed() -> None:
    up = body(1, 1, 10, 0.0, 1.0)
    assert dag_violations([up, body(2, 1, 20, 1.5, 2.0)], [(1, 2)]) == []
    assert dag_violations([up, body(2, 1, 20, 0.5, 2.0)], [(1, 2)]) == [(1, 2)]
    # An upstream body that never completed releases nothing; a job that never ran breaks nothing.
    unfinished = body(1, 1, 10, 0.0, 1.0, end=False)
    assert dag_violations([unfinished, body(2, 1, 20, 5.0, 6.0)], [(1, 2)]) == [(1, 2)]
    assert dag_violations([up], [(1, 2)]) == []


def test_a_failing_job_fails_and_blocks_what_depends_on_it_transitively() -> None:
    fails = {"a": False, "b": True, "c": False, "d": False, "e": True}
    depends = {"c": ["b"], "d": ["c", "a"], "e": ["b"]}
    assert expected_states(fails, depends) == {
        "a": "COMPLETED",
        "b": "FAILED",
        "c": "BLOCKED",
        "d": "BLOCKED",
        "e": "BLOCKED",
    }


def test_the_state_table_counts_wrong_and_unended_jobs() -> None:
    table = state_table({"a": "COMPLETED", "b": "FAILED"}, {"a": "RUNNING", "b": "FAILED"})
    assert table["states"]["COMPLETED"] == {"expected": 1, "actual": 0}
    assert table["states"]["RUNNING"] == {"expected": 0, "actual": 1}
    assert (table["wrong"], table["stuck"], table["stuck_jobs"]) == (1, 1, ["a"])


def test_a_server_log_counts_lines_that_are_not_json_and_errors_that_answer_500() -> None:
    log = "\n".join(
        [
            '{"event": "serving", "level": "info"}',
            "Traceback (most recent call last):",
            '  File "pool.py", line 1',
            '{"event": "unhandled error", "level": "error", "path": "/claim"}',
            '{"event": "lease sweep failed", "level": "error"}',
            "[1, 2]",
            "",
        ]
    )
    count = count_log(log)
    assert (count.lines, count.non_json, count.errors, count.http_500) == (6, 3, 2, 1)


def test_the_workload_and_the_faults_follow_from_the_seed() -> None:
    one = make_workload(1, 300, 5, "soak")
    assert one == make_workload(1, 300, 5, "soak") and one != make_workload(2, 300, 5, "soak")
    assert 300 <= one.jobs < 320 and len(one.waves) >= 5
    names = {j["name"] for wave in one.waves for j in wave}
    assert len(names) == one.jobs
    for wave in one.waves:  # dependencies stay inside their batch, upstream first
        seen: set[str] = set()
        for job in wave:
            assert set(job.get("depends", [])) <= seen
            seen.add(job["name"])
    faults = make_faults(1, 150.0, 4.0, 4, 2)
    assert faults == make_faults(1, 150.0, 4.0, 4, 2)
    assert len(faults) == sum(FAULT_MIX.values())
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    assert all(f.hold > 4.0 for f in faults if f.kind in ("server_stop", "db_restart"))
    assert all(0 <= f.target < (4 if f.kind.startswith("worker") else 2) for f in faults)
