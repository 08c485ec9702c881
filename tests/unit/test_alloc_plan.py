"""The allocator's pure decisions: what fits a queue, how many allocations a demand calls for
(never past max_workers, never twice for the same jobs), which not yet started to cancel, the
submission rate and the backoff after failures (a handful of tries in 5 minutes), the pilot's
names and script, and the SLURM and RUN:AI states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from whatsnext.alloc.pilot import Pilot, is_ours, log_path, name_prefix, new_name, queue_slug
from whatsnext.alloc.plan import (
    QueueSpec,
    Shape,
    SubmitGate,
    backoff_delay,
    jobs_per_worker,
    misfit,
    plan,
    worker_tags,
)
from whatsnext.alloc.runai import allocation_state as runai_state
from whatsnext.alloc.slurm import SlurmBackend, allocation_state, slurm_time


def queue(**kw: Any) -> QueueSpec:
    options = kw.pop("options", {})
    fields: dict[str, Any] = {
        "name": "q",
        "backend": "slurm",
        "projects": ("p",),
        "time_limit": 3600,
        "max_workers": 2,
    }
    fields.update(kw)
    return QueueSpec(options=options, **fields)


def shape(pending: int = 4, unserved: int | None = None, **kw: Any) -> Shape:
    fields: dict[str, Any] = {"project": "p", "cpu": 1, "gpus": 0, "tags": (), "timeout": None}
    fields.update(kw)
    return Shape(pending=pending, unserved=pending if unserved is None else unserved, **fields)


def alloc(state: str, workers: int = 1, id: int = 1) -> dict[str, Any]:
    return {"id": id, "name": f"a{id}", "state": state, "workers": workers, "external_id": str(100 + id)}


# ---------------------------------------------------------------- fit


def test_what_fits() -> None:
    q = queue(
        options={"cpus_per_worker": 4, "gpus_per_worker": 1}, worker_args="--tags a100,fast --max-jobs 2"
    )
    assert q.tags == {"a100", "fast"} and q.cpus == 4 and q.gpus == 1
    assert misfit(shape(cpu=4, gpus=1, tags=("a100",), timeout=3540), q) is None
    assert "timeout (3541 s) does not fit the queue's time limit (3600 s" in (
        misfit(shape(timeout=3541), q) or ""
    )
    assert "need 2 GPUs, a worker of the queue has 1" in (misfit(shape(gpus=2), q) or "")
    assert "need 5 CPUs" in (misfit(shape(cpu=5), q) or "")
    assert "need tags v100" in (misfit(shape(tags=("v100",)), q) or "")
    assert "has 0 (gpus_per_worker)" in (misfit(shape(gpus=1), queue()) or "")  # no GPUs unless asked for


def test_worker_tags() -> None:
    assert worker_tags("--tags a,b --cpus 2") == ["a", "b"]
    assert worker_tags("--tags=x --tags=y") == ["y"]
    assert worker_tags("--cpus 2") == [] and worker_tags("'unbalanced") == []


def test_jobs_per_worker() -> None:
    q = queue(options={"cpus_per_worker": 8, "gpus_per_worker": 2})
    assert jobs_per_worker(shape(cpu=2), q) == 4
    assert jobs_per_worker(shape(cpu=1, gpus=1), q) == 2
    assert jobs_per_worker(shape(cpu=16), q) == 1


# ---------------------------------------------------------------- how many


def test_four_jobs_two_workers_at_most() -> None:
    decided = plan(queue(), [shape(4)], [])
    assert [s.workers for s in decided.submit] == [1, 1]
    assert decided.wanted == 4 and decided.room == 2 and not decided.cancel
    assert (
        "pending 4 (unserved 4) fitting jobs want 4 worker(s); queued 0, running 0, room for 2"
        == decided.why()
    )


def test_queued_and_running_workers_count() -> None:
    assert plan(queue(), [shape(4)], [alloc("QUEUED"), alloc("RUNNING", id=2)]).submit == []
    one = plan(queue(), [shape(4)], [alloc("RUNNING")])
    assert [s.workers for s in one.submit] == [1]
    assert plan(queue(max_workers=10), [shape(3)], [alloc("QUEUED", workers=3)]).submit == [], (
        "workers on their way serve those jobs: not submitted twice"
    )


def test_jobs_waiting_behind_busy_workers_call_for_more_up_to_the_maximum() -> None:
    busy = plan(queue(), [shape(4, unserved=0)], [alloc("RUNNING")])
    assert [s.workers for s in busy.submit] == [1] and busy.cancel == []
    full = plan(queue(), [shape(4, unserved=0)], [alloc("RUNNING"), alloc("RUNNING", id=2)])
    assert full.submit == [] and full.room == 0


def test_workers_starting_count_as_on_their_way() -> None:
    from datetime import UTC, datetime

    started = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    just = {**alloc("RUNNING"), "started_at": started.isoformat()}
    now = started.timestamp()
    assert plan(queue(), [shape(1)], [just], now + 30).submit == [], "its worker will take the job"
    assert len(plan(queue(), [shape(1)], [just], now + 61).submit) == 1, "running a minute: busy"


def test_jobs_no_live_worker_could_take_come_first() -> None:
    gpu = shape(1, gpus=1, unserved=1)
    decided = plan(queue(max_workers=1, options={"gpus_per_worker": 1}), [shape(5, unserved=0), gpu], [])
    assert [s.shape for s in decided.submit] == [gpu]


def test_workers_per_allocation() -> None:
    q = queue(max_workers=5, workers_per_alloc=2)
    decided = plan(q, [shape(10)], [])
    assert [s.workers for s in decided.submit] == [2, 2], "never past max_workers (5): two of two"
    assert [s.jobs for s in decided.submit] == [2, 2]


def test_no_demand_nothing_submitted_and_waiting_ones_cancelled() -> None:
    empty = plan(queue(), [], [])
    assert empty.submit == [] and empty.cancel == []
    gone = plan(queue(), [], [alloc("QUEUED", id=1), alloc("QUEUED", id=3), alloc("RUNNING", id=2)])
    assert [a["id"] for a in gone.cancel] == [3, 1], "the waiting ones, newest first; the running one stays"
    kept = plan(queue(), [shape(1, unserved=0)], [alloc("QUEUED"), alloc("RUNNING", id=2)])
    assert kept.cancel == [], "pending work left: a waiting allocation may still serve it"


def test_unfit_jobs_get_no_allocation_and_say_why() -> None:
    decided = plan(queue(time_limit=600), [shape(2, timeout=3600), shape(1, timeout=60)], [])
    assert [s.shape.timeout for s in decided.submit] == [60]
    message = decided.unfit_message() or ""
    assert message.startswith("2 pending job(s) of p (1 CPU, 0 GPU, timeout 3600 s) get no allocation")
    assert "does not fit the queue's time limit (600 s" in message
    only_unfit = plan(queue(time_limit=600), [shape(2, timeout=3600)], [alloc("QUEUED")])
    assert only_unfit.submit == [] and [a["id"] for a in only_unfit.cancel] == [1]


def test_recorded_shape_is_what_the_workers_offer() -> None:
    q = queue(options={"cpus_per_worker": 4, "gpus_per_worker": 1}, worker_args="--tags a100")
    [sub] = plan(q, [shape(1, cpu=2, gpus=1, timeout=60)], []).submit
    assert sub.shape.record(q, sub.jobs) == {
        "project": "p", "cpu": 4, "gpus": 1, "tags": ["a100"], "timeout": 60.0, "jobs": 1,
    }  # fmt: skip


# ---------------------------------------------------------------- pace


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_schedule() -> None:
    assert [backoff_delay(n) for n in range(6)] == [0, 30, 60, 120, 240, 480]
    assert backoff_delay(7) == 600 and backoff_delay(100) == 600
    assert backoff_delay(3, first=0.5, cap=1.0) == 1.0


def test_failing_submissions_a_handful_in_five_minutes() -> None:
    clock = Clock()
    gate = SubmitGate(4, clock=clock)
    tries = 0
    while clock.now < 1000 + 300:  # a pass every 5 s for 5 minutes, every submission failing
        allowed, why = gate.allowed()
        if allowed:
            assert allowed == 1 or gate.failures == 0
            tries += 1
            gate.submitted(False)
        else:
            assert why is not None and "backing off after" in why
        clock.now += 5
    assert tries == 4  # at 0, 30, 90 and 210 s
    clock.now += 600
    assert gate.allowed()[0] == 1
    gate.submitted(True)
    assert gate.failures == 0 and gate.allowed() == (3, None)


def test_submissions_a_minute() -> None:
    clock = Clock()
    gate = SubmitGate(2, clock=clock)
    assert gate.allowed() == (2, None)
    gate.submitted(True)
    gate.submitted(True)
    allowed, why = gate.allowed()
    assert allowed == 0 and "2 submission(s) in the last minute" in (why or "")
    clock.now += 60.5
    assert gate.allowed() == (2, None)


def test_a_restarted_loop_keeps_the_pace() -> None:
    clock = Clock()
    gate = SubmitGate(4, clock=clock)
    gate.seed([(clock.now - 40, False), (clock.now - 100, False), (clock.now - 500, True)])
    assert gate.failures == 2 and gate.allowed()[0] == 0  # the second failure, 40 s ago, waits 60 s
    clock.now += 20
    assert gate.allowed()[0] == 1


# ---------------------------------------------------------------- names, script, states


def test_names() -> None:
    assert queue_slug("gpu") == "gpu"
    odd = queue_slug("GPU a100/Big")
    assert odd.startswith("gpu-a100-big-") and odd != queue_slug("gpu a100 big")
    name = new_name("gpu")
    assert name.startswith("whatsnext-alloc-gpu-") and len(name) == len("whatsnext-alloc-gpu-") + 8
    assert (
        is_ours(name, "gpu")
        and not is_ours(name, "gpu-big")
        and not is_ours("whatsnext-alloc-gpu-big-1234abcd", "gpu")
    )
    assert name_prefix("gpu", "lab-") == "lab-gpu-"
    assert log_path(Path("/l"), "my queue", name) == Path(f"/l/my_queue/{name}.log")


def test_pilot_script_hands_on_a_token_file_never_a_token() -> None:
    pilot = Pilot(
        queue="gpu",
        name="whatsnext-alloc-gpu-0123abcd",
        projects=["a", "b c"],
        workers=2,
        time_limit=7200,
        idle_timeout=300,
        server="http://queue:8000",
        worker_command=["/venv/bin/python", "-m", "whatsnext"],
        cpus_per_worker=4,
        gpus_per_worker=1,
        worker_args="--tags a100 --max-jobs '2'",
        setup="module load cuda",
        token_file="/home/u/.wn-token",
    )
    script = pilot.script(scheduler_end=True)
    assert "unset WHATSNEXT_TOKEN" in script and "module load cuda" in script
    assert "end=${SLURM_JOB_END_TIME:-$((start + limit))}" in script and "limit=7200" in script
    first = (
        "/venv/bin/python -m whatsnext --server http://queue:8000 worker --forever --idle-timeout 300 "
        "--name whatsnext-alloc-gpu-0123abcd-0 --project a --project 'b c' --cpus 4 "
        '--worker-token-file /home/u/.wn-token --gpus "$(IFS=,; echo "${gpus[*]:0:1}")" '
        '--deadline "$((end - $(date +%s)))" --tags a100 --max-jobs 2 &'
    )
    assert first in script.splitlines()
    assert "${gpus[*]:1:1}" in script and script.count("pids+=($!)") == 2


def test_sbatch_command() -> None:
    q = queue(
        time_limit=5400,
        options={
            "partition": "gpu",
            "account": "lab",
            "gpus_per_worker": 1,
            "cpus_per_worker": 4,
            "sbatch_args": ["--qos=low"],
        },
    )
    pilot = Pilot("q", "whatsnext-alloc-q-0123abcd", ["p"], 2, 5400, 60, "http://s", ["whatsnext"])
    command = SlurmBackend(user="u").command(pilot, q, Path("/logs/q/whatsnext-alloc-q-0123abcd.log"))
    assert command.argv == [
        "sbatch", "--parsable", "--job-name=whatsnext-alloc-q-0123abcd", "--time=0-01:30:00",
        "--output=/logs/q/whatsnext-alloc-q-0123abcd.log", "--nodes=1", "--ntasks=1", "--cpus-per-task=8",
        "--gres=gpu:2", "--partition=gpu", "--account=lab", "--qos=low", "/logs/q/whatsnext-alloc-q-0123abcd.sbatch",
    ]  # fmt: skip
    assert command.script.startswith("#!/bin/bash\n")
    assert SlurmBackend(user="u", gres_flag="gpus").directives(pilot, q, Path("/l"))[6] == "--gpus=2"
    assert slurm_time(59) == "0-00:01:00" and slurm_time(90061) == "1-01:02:00"


@pytest.mark.parametrize(
    ("state", "reason", "code", "expected"),
    [
        ("PENDING", "Priority", None, ("QUEUED", "Priority")),
        ("PENDING", "None", None, ("QUEUED", None)),
        ("RUNNING", "None", None, ("RUNNING", None)),
        ("COMPLETING", "None", None, ("RUNNING", None)),
        ("COMPLETED", "None", "0:0", ("FINISHED", None)),
        ("TIMEOUT", "None", "0:15", ("FINISHED", "TIMEOUT: it used its whole time limit")),
        ("CANCELLED by 0", "None", "0:15", ("CANCELLED", None)),
        ("PREEMPTED", "None", None, ("CANCELLED", "PREEMPTED")),
        ("FAILED", "NonZeroExitCode", "2:0", ("FAILED", "FAILED: exit code 2:0 (see the allocation's log)")),
        ("NODE_FAIL", "None", None, ("FAILED", "NODE_FAIL")),
    ],
)
def test_slurm_states(state: str, reason: str, code: str | None, expected: tuple[str, str | None]) -> None:
    seen = allocation_state(state, reason, code)
    assert (seen.state, seen.reason) == expected


def test_runai_states() -> None:
    assert runai_state("Pending").state == "QUEUED" and runai_state("Pending").reason == "Pending"
    assert runai_state("Running").state == "RUNNING"
    assert runai_state("Completed").state == "FINISHED" and runai_state("SUCCEEDED").state == "FINISHED"
    assert (runai_state("Failed", 3).state, runai_state("Failed", 3).reason) == (
        "FAILED",
        "workload Failed, exit code 3",
    )
    assert runai_state("Deleted").state == "CANCELLED"
