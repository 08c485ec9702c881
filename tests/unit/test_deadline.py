"""A worker's end, without a server: --deadline read as a time or a duration, the end of a SLURM
allocation read from SLURM (stand-in commands), what each claim says is left (time_left), the
watch that hands back what runs near the end, and a worker whose jobs run on a cluster, bounded by
its number of jobs rather than by its host's CPUs and GPUs."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog.testing

from whatsnext import limits
from whatsnext.api.client import Client
from whatsnext.api.client.deadline import (
    END_REASON,
    as_deadline,
    claim_time_left,
    near_end,
    parse_deadline,
    slurm_deadline,
    slurm_time,
    watch_end,
)
from whatsnext.api.client.formatters.external import DEFAULT_MAX_JOBS
from whatsnext.api.client.formatters.runai import RUNAIFormatter
from whatsnext.api.client.formatters.slurm import SlurmFormatter
from whatsnext.api.client.resources import UNBOUNDED, Capacity, worker_capacity
from whatsnext.api.client.worker import unfit_reason
from whatsnext.cli import build_parser
from whatsnext.cli.workers import worker_row
from whatsnext.durations import parse_duration

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

# ---------------------------------------------------------------- --deadline


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600),
        ("90.5", 90.5),
        ("90m", 5400),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1d", 86400),
        ("45s", 45),
        ("1H30M", 5400),
        ("01:30:00", 5400),
        ("30:00", 1800),
        ("1-12", 129600),
        ("1-12:30", 131400),
        ("1-12:30:15", 131415),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_deadline(text, NOW) == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "m", "1x", "1h 30m", "5-", "1:2:3:4", "-5", "tomorrow"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_iso_times_with_and_without_a_zone() -> None:
    later = parse_deadline("2025-06-01T20:30:00+02:00", NOW)
    assert later == datetime(2025, 6, 1, 18, 30, tzinfo=UTC)
    assert parse_deadline("2025-06-01T18:30:00Z", NOW) == later
    local = parse_deadline("2999-01-01 08:00")  # no zone: local time
    assert local == datetime(2999, 1, 1, 8, 0).astimezone()
    assert local.utcoffset() is not None


def test_none_means_no_end() -> None:
    for text in ("none", "None", "never", " off "):
        assert parse_deadline(text, NOW) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2025-06-01T11:00:00+00:00", "already passed"),
        ("2025-06-01T12:00:00+00:00", "already passed"),
        ("0", "above 0"),
        ("0m", "above 0"),
        ("soon", "ISO time"),
    ],
)
def test_bad_deadlines_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_deadline(text, NOW)


def test_the_sdk_takes_a_datetime_seconds_or_text() -> None:
    assert as_deadline(None) is None
    assert as_deadline(NOW) == NOW
    assert as_deadline(600, NOW) == NOW + timedelta(minutes=10)
    assert as_deadline("10m", NOW) == NOW + timedelta(minutes=10)
    assert as_deadline(datetime(2999, 1, 1, 8, 0)) == datetime(2999, 1, 1, 8, 0).astimezone()
    with pytest.raises(ValueError, match="not in the future"):
        as_deadline(0)


# ---------------------------------------------------------------- time_left


def test_time_left_is_the_deadline_less_grace_and_wait() -> None:
    now = NOW.timestamp()
    end = NOW + timedelta(seconds=600)
    assert claim_time_left(end, grace=10, now=now) == 590
    assert claim_time_left(end, grace=10, wait=30, now=now) == 560
    assert claim_time_left(end, grace=700, now=now) == 0  # never below 0
    far = NOW + timedelta(days=365 * 20)
    assert claim_time_left(far, grace=0, now=now) == limits.MAX_TIME_LEFT
    assert near_end(end, grace=600, now=now) and not near_end(end, grace=599, now=now)


def _client(**kwargs: Any) -> Client:
    return Client("team", "w", project="p", server="http://localhost:1", available_cpu=4, **kwargs)


def test_a_worker_with_a_deadline_claims_with_its_time_left() -> None:
    client = _client(deadline=600, grace=10)
    body = client._claim_body(30.0, False)
    assert list(body)[-1] == "time_left"
    assert 600 - 10 - 30 - 5 < body["time_left"] <= 600 - 10 - 30
    assert "time_left" not in _client()._claim_body(30.0, False)
    # Given "none", it has no end, not even a SLURM allocation's (it does not look).
    assert _client(deadline="none").deadline is None and not _client(deadline="none")._find_deadline
    assert _client()._find_deadline


async def test_the_deadline_of_a_slurm_allocation_is_read_when_work_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    end = datetime.now(UTC) + timedelta(hours=2)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(end.timestamp())))
    client = _client()
    assert client.deadline is None  # nothing read yet: Client() stays cheap
    await client._find_end()
    assert client.deadline is not None
    assert abs(client.deadline.timestamp() - int(end.timestamp())) < 1
    given = _client(deadline="10m")
    await given._find_end()
    assert given.deadline is not None and given.deadline < end  # what is given wins


def test_unfit_reason_names_a_timeout_longer_than_the_time_left() -> None:
    unfit = {"id": 3, "task": "t", "cpu": 1, "gpus": 0, "tags": [], "timeout": 3600.0}
    cap = Capacity(4, [])
    assert unfit_reason(unfit, cap, [], None, 590.0) == (
        "its timeout (3600 s) is longer than this worker's time left (590 s)"
    )
    assert unfit_reason(unfit, cap, [], None, None) == "it does not fit this worker"
    assert unfit_reason({**unfit, "timeout": 60.0}, cap, [], None, 590.0) == "it does not fit this worker"


def test_the_cli_passes_deadline_to_the_worker() -> None:
    args = build_parser().parse_args(["worker", "--project", "p", "--deadline", "10m"])
    assert args.deadline == "10m"
    assert build_parser().parse_args(["worker", "--project", "p"]).deadline is None


# ---------------------------------------------------------------- the SLURM allocation's end


class Slurm:
    """Stand-in squeue and scontrol: each answers what it is told, or fails."""

    def __init__(self, squeue: str | None, scontrol: str | None) -> None:
        self.answers = {"squeue": squeue, "scontrol": scontrol}
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> str:
        self.calls.append(argv)
        answer = self.answers[argv[0]]
        if answer is None:
            raise subprocess.CalledProcessError(1, argv, "", "slurm_load_jobs error")
        return answer


def test_outside_slurm_there_is_no_deadline_and_no_question() -> None:
    slurm = Slurm("2025-06-01T18:00:00", None)
    assert slurm_deadline({}, slurm) is None
    assert slurm.calls == []


def test_slurm_job_end_time_is_read_first() -> None:
    slurm = Slurm(None, None)
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_END_TIME": str(int(end.timestamp()))}
    assert slurm_deadline(env, slurm) == end
    assert slurm.calls == []


def test_squeue_gives_the_end_then_scontrol() -> None:
    env = {"SLURM_JOB_ID": "7"}
    # Further away than a worker may announce: no end, in effect.
    assert slurm_deadline(env, Slurm("2999-06-01T18:00:00\n", None)) is None
    soon = (datetime.now() + timedelta(hours=3)).replace(microsecond=0)
    slurm = Slurm(soon.isoformat(), None)
    assert slurm_deadline(env, slurm) == soon.astimezone()
    assert slurm.calls == [["squeue", "-h", "-j", "7", "-o", "%e"]]
    slurm = Slurm(None, f"JobId=7 JobName=x TimeLimit=03:00:00 EndTime={soon.isoformat()} Deadline=N/A")
    assert slurm_deadline(env, slurm) == soon.astimezone()
    assert [call[0] for call in slurm.calls] == ["squeue", "scontrol"]


def test_an_allocation_without_an_end_or_a_slurm_that_cannot_tell() -> None:
    env = {"SLURM_JOB_ID": "7"}
    assert slurm_deadline(env, Slurm("NONE", None)) is None
    assert slurm_deadline(env, Slurm("N/A", "EndTime=Unknown")) is None
    with structlog.testing.capture_logs() as logs:
        assert slurm_deadline(env, Slurm(None, None)) is None
        assert slurm_deadline(env, Slurm("garbage", "no end here")) is None
    assert [e["event"] for e in logs] == [
        "inside a SLURM job whose end could not be read: no deadline (give --deadline)"
    ] * 2
    assert slurm_time("Unknown") is None and slurm_time("unlimited") is None


# ---------------------------------------------------------------- the end


async def test_the_end_stops_claiming_and_hands_back_what_runs() -> None:
    stopped: list[tuple[str, float]] = []
    end = datetime.now(UTC) + timedelta(seconds=0.3)
    started = time.monotonic()
    await asyncio.wait_for(watch_end(end, 0.1, lambda why: stopped.append((why, time.monotonic()))), 5)
    [(why, at)] = stopped
    assert why == END_REASON
    assert 0.15 <= at - started < 2.0  # at the deadline less the grace
    already = datetime.now(UTC)  # past already: at once
    await asyncio.wait_for(watch_end(already, 10, lambda why: stopped.append((why, 0.0))), 1)
    assert len(stopped) == 2


# ---------------------------------------------------------------- jobs that run elsewhere


def test_a_worker_of_cluster_jobs_is_bounded_by_its_number_of_jobs() -> None:
    for fmt in (SlurmFormatter(command="echo {x}"), RUNAIFormatter(project="p", image="i", command="x")):
        assert fmt.runs_elsewhere and fmt.max_concurrency == DEFAULT_MAX_JOBS
        client = Client("t", "w", project="p", formatter=fmt, server="http://localhost:1")
        body = client._claim_body(0.0, False)
        assert body["free_cpu"] == body["total_cpu"] == UNBOUNDED == limits.MAX_COUNT
        assert body["free_accelerators"] == body["total_accelerators"] == UNBOUNDED
        assert body["max_jobs"] == DEFAULT_MAX_JOBS
        assert client.capacity.take(64, 8) == [] and client.capacity.free_cpu == UNBOUNDED
        assert not client._full()
        several = Client("t", "w", project="p", formatter=fmt, server="http://localhost:1", max_jobs=7)
        assert several._claim_body(0.0, False)["max_jobs"] == 7
    # What is given still bounds it.
    given = Client(
        "t", "w", project="p", formatter=SlurmFormatter(command="x"), server="http://localhost:1",
        available_cpu=32, available_accelerators=0,
    )  # fmt: skip
    assert given._claim_body(0.0, False)["free_cpu"] == 32
    assert given._claim_body(0.0, False)["free_accelerators"] == 0


def test_capacity_of_a_host() -> None:
    cap = worker_capacity(4, [])
    assert (cap.total_cpu, cap.total_accelerators) == (4, 0)
    assert cap.take(3, 0) == [] and cap.free_cpu == 1 and not cap.fits(2, 0)
    cap.give(3, [])
    assert cap.free_cpu == 4
    gpus = worker_capacity(2, ["0", "1"], runs_elsewhere=True)  # given: bounded
    assert gpus.take(1, 2) == ["0", "1"] and gpus.free_accelerators == 0 and gpus.free_cpu == 1


def test_workers_ls_shows_when_a_worker_ends_and_an_unbounded_capacity() -> None:
    w = {"used_cpu": 3, "cpu": limits.MAX_COUNT, "used_accelerators": 1, "accelerators": 2}
    row = worker_row({**w, "deadline": "2025-06-01T18:00:00+00:00"})
    assert (row["cpu_use"], row["gpu_use"], row["ends"]) == ("3/any", "1/2", "2025-06-01T18:00:00+00:00")
    assert worker_row({**w, "deadline": None})["ends"] is None
