"""A job's lifetime on the worker, without a server: fenced leases (when an attempt is suspended,
resumed, lost), how the worker stops (drain, requeue, a second signal, the drain timeout), the job
signal, and each job's checkpoint directory and file."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from helpers import wait_for_condition

from whatsnext.api.client.checkpoint import Checkpoints, default_checkpoint_root, path_part
from whatsnext.api.client.fence import Fences, LeaseGuard, fence_margin, held_attempts, judge
from whatsnext.api.client.formatters.base import JobSpec, RunContext
from whatsnext.api.client.shutdown import Shutdown, default_on_sigterm, parse_signal

# ---------------------------------------------------------------- fence timing


def test_the_fence_margin_is_announced_or_a_quarter_of_the_lease_and_at_least_a_second() -> None:
    assert fence_margin(60) == 15
    assert fence_margin(3) == 1
    assert fence_margin(8) == 2
    assert fence_margin(60, 5) == 5
    assert fence_margin(60, 0) == 15  # nothing announced
    assert fence_margin(1) == pytest.approx(0.9)  # never the whole lease
    assert fence_margin(10, 30) == 9


def test_a_lease_counts_from_the_claim_not_from_a_late_answer() -> None:
    """A claim answered late (its server paused after handing the job out) leaves less of the
    lease: the attempt's fence counts from the claim's send time plus the server's own wait."""
    now = [100.0]
    guard = LeaseGuard(
        lease=3,
        margin=1,
        suspend=lambda a: True,
        resume=lambda a: None,
        lose=lambda a: None,
        clock=lambda: now[0],
    )
    guard.started((7, 1), leased_at=90.0)  # sent at 90 with no wait, answered at 100
    assert guard.fences.fence((7, 1)) == 92.0 and guard.fences.plan(now[0]).suspend == [(7, 1)]
    guard.started((8, 1), leased_at=99.5)
    assert guard.fences.fence((8, 1)) == 101.5
    guard.started((9, 1), leased_at=150.0)  # never later than now
    assert guard.fences.fence((9, 1)) == 102.0


def test_an_attempt_reaches_its_fence_a_margin_before_its_lease_would_end() -> None:
    fences = Fences(lease=3, margin=1)
    fences.add((7, 1), now=100.0)
    assert fences.fence((7, 1)) == 102.0
    plan = fences.plan(101.9)
    assert plan.suspend == [] and plan.next_check == 102.0
    assert fences.plan(102.0).suspend == [(7, 1)]


def test_a_heartbeat_confirms_from_when_it_was_sent_never_backwards() -> None:
    fences = Fences(lease=3, margin=1)
    fences.add((7, 1), now=100.0)
    fences.confirm([(7, 1)], sent_at=101.5)
    assert fences.fence((7, 1)) == 103.5
    fences.confirm([(7, 1)], sent_at=100.5)  # an answer to an older heartbeat, arriving late
    assert fences.fence((7, 1)) == 103.5
    fences.confirm([(8, 1)], sent_at=105)  # not running here: nothing to confirm
    assert (8, 1) not in fences.confirmed


def test_suspended_attempts_are_resumable_once_confirmed_again() -> None:
    fences = Fences(lease=3, margin=1)
    fences.add((7, 1), now=0.0)
    fences.suspended.add((7, 1))
    assert fences.resumable(5.0) == []
    assert fences.plan(5.0).suspend == []  # already suspended: not again
    fences.confirm([(7, 1)], sent_at=4.5)
    assert fences.resumable(5.0) == [(7, 1)]


def test_a_heartbeat_answer_sorts_the_attempts_it_was_sent_for() -> None:
    assert held_attempts({"cancel": []}) is None
    assert held_attempts({"leases": [{"id": 7, "attempt": 2}]}) == {(7, 2)}
    sent = [(7, 1), (8, 1), (9, 1)]
    running = [(7, 1), (8, 1), (10, 1)]  # 9 ended meanwhile; 10 started after the heartbeat left
    assert judge(sent, None, running).confirmed == [(7, 1), (8, 1)]
    verdict = judge(sent, {(7, 1), (8, 2)}, running)  # job 8 is at attempt 2 now: not ours
    assert verdict.confirmed == [(7, 1)] and verdict.lost == [(8, 1)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _guard(clock: Clock, actions: list[tuple[str, tuple[int, int]]], can_suspend: bool = True) -> LeaseGuard:
    def suspend(a: tuple[int, int]) -> bool:
        actions.append(("suspend", a))
        return can_suspend

    return LeaseGuard(
        lease=3,
        margin=1,
        suspend=suspend,
        resume=lambda a: actions.append(("resume", a)),
        lose=lambda a: actions.append(("lose", a)),
        clock=clock,
    )


async def test_the_guard_suspends_past_the_fence_and_resumes_when_a_heartbeat_confirms() -> None:
    clock, actions = Clock(), []
    guard = _guard(clock, actions)
    guard.started((7, 1))
    assert guard.check() == 2.0 and actions == []
    clock.now = 2.5  # no heartbeat got through
    guard.check()
    assert actions == [("suspend", (7, 1))] and guard.suspended()
    guard.check()
    assert actions == [("suspend", (7, 1))]  # once
    sent = guard.running()
    guard.answered(3.0, sent, {(7, 1)})  # sent at 3.0, answered now
    assert actions[-1] == ("resume", (7, 1)) and not guard.suspended()
    assert guard.check() == 5.0


async def test_an_answer_sent_before_the_fence_passed_long_ago_does_not_resume() -> None:
    clock, actions = Clock(), []
    guard = _guard(clock, actions)
    guard.started((7, 1))
    clock.now = 10.0
    guard.check()
    guard.answered(0.5, [(7, 1)], {(7, 1)})  # a heartbeat that hung through the outage
    assert actions == [("suspend", (7, 1))] and guard.suspended()


async def test_the_guard_loses_what_the_server_no_longer_leases_to_this_worker() -> None:
    clock, actions = Clock(), []
    guard = _guard(clock, actions)
    guard.started((7, 1))
    guard.started((8, 1))
    clock.now = 2.5
    guard.check()
    guard.answered(2.6, [(7, 1), (8, 1)], {(8, 1)})
    assert ("lose", (7, 1)) in actions and ("resume", (8, 1)) in actions
    assert guard.running() == [(8, 1)]
    guard.lost((7, 1), "again")  # once only
    assert actions.count(("lose", (7, 1))) == 1


async def test_the_guard_wakes_at_the_fence() -> None:
    loop = asyncio.get_running_loop()
    actions: list[tuple[str, tuple[int, int]]] = []
    guard = LeaseGuard(
        lease=0.3,
        margin=0.1,
        suspend=lambda a: actions.append(("suspend", a)) is None,
        resume=lambda a: None,
        lose=lambda a: None,
        clock=loop.time,
    )
    task = asyncio.create_task(guard.run())
    try:
        guard.started((1, 1))
        await wait_for_condition(lambda: bool(actions), 5, "the fence")
        assert actions == [("suspend", (1, 1))]
    finally:
        task.cancel()


def test_a_run_context_suspends_resumes_and_kills_its_process_group() -> None:
    sent: list[int] = []
    ctx = RunContext()
    assert not ctx.suspend()  # no process group yet: it will start stopped
    assert ctx.suspended
    ctx.resume()
    assert not ctx.suspended
    ctx.signal_job = sent.append
    assert ctx.suspend() and ctx.suspend()
    ctx.resume()
    ctx.resume()
    assert sent == [signal.SIGSTOP, signal.SIGCONT]
    ctx.kill_lost()
    assert sent[-1] == signal.SIGKILL and ctx.lost and ctx.cancel.is_set()


def test_a_stop_that_requeues_is_told_from_a_cancel() -> None:
    ctx = RunContext()
    ctx.request_stop("worker stopped (SIGTERM)")
    assert ctx.requeue and ctx.cancel_reason == "worker stopped (SIGTERM)"
    ctx.request_stop("again", requeue=False)  # the first stop decides
    assert ctx.requeue
    cancelled = RunContext()
    cancelled.request_cancel("cancelled")
    cancelled.request_stop("worker stopped")
    assert not cancelled.requeue and cancelled.cancel_reason == "cancelled"


# ---------------------------------------------------------------- stopping


def test_the_job_signal_is_given_by_name_or_number() -> None:
    assert parse_signal("SIGTERM") == signal.SIGTERM
    assert parse_signal("usr1") == signal.SIGUSR1
    assert parse_signal("2") == signal.SIGINT
    assert parse_signal(signal.SIGHUP) == signal.SIGHUP
    for bad in ("SIGNOPE", "999", "KILL", "SIGSTOP"):
        with pytest.raises(ValueError):
            parse_signal(bad)


def test_sigterm_requeues_inside_a_slurm_allocation_and_drains_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert default_on_sigterm({"SLURM_JOB_ID": "12"}) == "requeue"
    assert default_on_sigterm({}) == "drain"
    from whatsnext.api.client import Client

    monkeypatch.setenv("SLURM_JOB_ID", "12")
    assert Client(project="p").on_sigterm == "requeue"
    assert Client(project="p", on_sigterm="drain").on_sigterm == "drain"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert Client(project="p").on_sigterm == "drain"
    with pytest.raises(ValueError, match="on_sigterm"):
        Client(project="p", on_sigterm="later")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="job signal"):
        Client(project="p", job_signal="SIGSTOP")


def _shutdown(on_sigterm: str, drain_timeout: float | None = None) -> tuple[Shutdown, list[str]]:
    calls: list[str] = []
    shutdown = Shutdown(
        on_sigterm=on_sigterm,  # type: ignore[arg-type]
        drain_timeout=drain_timeout,
        stop_claiming=lambda: calls.append("stop claiming"),
        stop_jobs=lambda reason: calls.append(f"stop jobs: {reason}"),
    )
    return shutdown, calls


async def test_drain_then_a_second_signal_stops_the_jobs() -> None:
    shutdown, calls = _shutdown("drain")
    shutdown.on_signal(signal.SIGTERM)
    assert calls == ["stop claiming"]
    shutdown.on_signal(signal.SIGINT)
    assert calls[-1] == "stop jobs: worker stopped (SIGINT again)"
    assert not shutdown.abandoned.is_set(), "reports still go out while the server is away"
    shutdown.on_signal(signal.SIGTERM)
    assert shutdown.abandoned.is_set(), "a third signal leaves the undelivered reports"
    assert calls.count("stop jobs: worker stopped (SIGINT again)") == 1
    shutdown.close()


async def test_requeue_stops_the_jobs_at_the_first_sigterm_but_ctrl_c_drains() -> None:
    shutdown, calls = _shutdown("requeue")
    shutdown.on_signal(signal.SIGINT)
    assert calls == ["stop claiming"]
    shutdown, calls = _shutdown("requeue")
    shutdown.on_signal(signal.SIGTERM)
    assert calls == ["stop claiming", "stop jobs: worker stopped (SIGTERM)"]
    with pytest.raises(ValueError):
        _shutdown("later")


async def test_the_drain_timeout_stops_the_jobs() -> None:
    shutdown, calls = _shutdown("drain", drain_timeout=0.01)
    shutdown.drain()
    await wait_for_condition(lambda: len(calls) > 1, 5, "the drain timeout")
    assert calls[0] == "stop claiming" and calls[-1] == "stop jobs: drain timeout reached"
    shutdown.close()


# ---------------------------------------------------------------- checkpoints


def test_each_job_has_one_checkpoint_directory_and_a_file_per_attempt(tmp_path: Path) -> None:
    store = Checkpoints(tmp_path)
    spec = JobSpec(41, "train", "t", {}, attempt=3, checkpoint="/ckpt/step-100", resume=True)
    env = store.prepare(spec, "my/project")
    folder = tmp_path / "my_project" / "41"
    assert folder.is_dir() and spec.checkpoint_dir == str(folder)
    assert env == {
        "WHATSNEXT_CHECKPOINT": "/ckpt/step-100",
        "WHATSNEXT_RESUME": "1",
        "WHATSNEXT_CHECKPOINT_DIR": str(folder),
        "WHATSNEXT_CHECKPOINT_FILE": str(folder / ".checkpoint-attempt-3"),
        "WHATSNEXT_RESULT_FILE": str(folder / ".result-attempt-3.json"),
    }
    assert store.read(spec) is None  # the job named none
    Path(spec.checkpoint_file or "").write_text("step-200.pt\n")
    assert store.read(spec) == str(folder / "step-200.pt")  # relative: in the directory
    Path(spec.checkpoint_file or "").write_text("/elsewhere/step-300.pt")
    assert store.read(spec) == "/elsewhere/step-300.pt"
    Path(spec.checkpoint_file or "").write_text("s3://bucket/run/step-400.pt\n")
    assert store.read(spec) == "s3://bucket/run/step-400.pt"  # a URI as it is
    Path(spec.checkpoint_file or "").write_text("  \n")
    assert store.read(spec) is None
    first = JobSpec(41, "train", "t", {}, attempt=1)
    assert "WHATSNEXT_RESUME" not in store.prepare(first, "my/project")


def test_the_checkpoint_root_defaults_beside_the_workers_other_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WHATSNEXT_CHECKPOINT_ROOT", raising=False)
    assert default_checkpoint_root() == Path.home() / ".whatsnext" / "checkpoints"
    monkeypatch.setenv("WHATSNEXT_CHECKPOINT_ROOT", "/shared/ckpt")
    assert default_checkpoint_root() == Path("/shared/ckpt")
    assert path_part("..") == "_" and path_part("a b/c") == "a_b_c"


# ---------------------------------------------------------------- the worker's options


def test_the_worker_command_takes_how_it_stops_and_where_checkpoints_go() -> None:
    from whatsnext.cli import build_parser
    from whatsnext.cli.worker import stopping_options

    parse = build_parser().parse_args
    args = parse(["worker", "--on-sigterm", "requeue", "--drain-timeout", "30", "--job-signal", "USR1"])
    assert stopping_options(args) == {
        "on_sigterm": "requeue",
        "drain_timeout": 30.0,
        "job_signal": signal.SIGUSR1,
        "checkpoint_root": None,
    }
    defaults = stopping_options(parse(["worker", "--checkpoint-root", "/shared/ckpt"]))
    assert defaults["on_sigterm"] is None and defaults["drain_timeout"] is None  # None: the Client decides
    assert defaults["job_signal"] == signal.SIGTERM and defaults["checkpoint_root"] == "/shared/ckpt"
    with pytest.raises(ValueError, match="SIGKILL cannot be the job signal"):
        stopping_options(parse(["worker", "--job-signal", "KILL"]))
    with pytest.raises(SystemExit):  # not a duration: a usage error
        parse(["worker", "--drain-timeout", "-1"])
