"""SlurmFormatter: rendering, and running jobs on a real (local, one-node) SLURM cluster.

The tests marked with the ``slurm`` fixture submit real jobs with sbatch; the fixture starts the
cluster with scripts/local-slurm.sh when needed (root on Debian/Ubuntu) and skips the tests, with
the reason, where that is impossible. The state-mapping tests use small stand-in SLURM tools
(real executables written by the test) to produce states a one-node cluster cannot
(PREEMPTED, OUT_OF_MEMORY, ...).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, ServerProcess, expire_lease, wait_until
from helpers import wait_for_condition

from whatsnext.api.client.formatters.base import FormatError, JobSpec, Outcome, RunContext
from whatsnext.api.client.formatters.slurm import SlurmFormatter

ACTIVE_STATES = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED"}


def make_job(job_id: int, parameters: dict[str, Any], **kwargs: Any) -> JobSpec:
    return JobSpec(id=job_id, name=f"test job {job_id}", task="test", parameters=parameters, **kwargs)


def bash_formatter(tmp_path: Path, **kwargs: Any) -> SlurmFormatter:
    options: dict[str, Any] = {
        "log_dir": tmp_path / "slurm-logs",
        "poll_interval": 0.2,
        "max_poll_interval": 1.0,
    }
    options.update(kwargs)
    return SlurmFormatter(command="bash -c {code}", **options)


def submitted_id(lines: list[str]) -> str:
    for line in lines:
        match = re.search(r"submitted to SLURM as job (\d+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"no submission line in {lines!r}")


def is_empty_dir(path: Path) -> bool:
    return not any(path.iterdir())


def squeue_state(slurm_id: str) -> str:
    proc = subprocess.run(
        ["squeue", "-h", "-o", "%T", "-j", slurm_id], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip()


# ------------------------------------------------------------------------------------------
# Rendering (no cluster needed)
# ------------------------------------------------------------------------------------------


def test_format_script_mode_quotes_values() -> None:
    fmt = SlurmFormatter(script="process.py")
    command = fmt.format("train", {"lr": 0.1, "name": "a b", "tags": ["x", "y"]})
    assert command == "python process.py --lr 0.1 --name 'a b' --tags x y"  # as CLIFormatter runs it


def test_format_template_mode_quotes_values() -> None:
    fmt = SlurmFormatter(command="python train.py --lr {lr:.3f} --out {out}")
    assert fmt.format("train", {"lr": 0.5, "out": "x; rm -rf /"}) == (
        "python train.py --lr 0.500 --out 'x; rm -rf /'"
    )


def test_format_missing_parameter_names_it() -> None:
    fmt = SlurmFormatter(command="python train.py --lr {lr} --epochs {epochs}")
    with pytest.raises(FormatError, match=r"missing parameter 'epochs'"):
        fmt.format("train", {"lr": 0.1})


def test_needs_exactly_one_of_script_or_command() -> None:
    with pytest.raises(ValueError):
        SlurmFormatter()
    with pytest.raises(ValueError):
        SlurmFormatter(script="a.py", command="b")
    with pytest.raises(ValueError):
        SlurmFormatter(script="a.py", gres_flag="gpu")  # type: ignore[arg-type]


def test_render_script_has_all_directives(tmp_path: Path) -> None:
    fmt = SlurmFormatter(
        script="process.py",
        partition="gpu",
        account="proj-1",
        mem="8G",
        sbatch_args=("--qos=high", "--constraint=a100"),
        log_dir=tmp_path,
    )
    job = make_job(42, {"lr": 0.1}, attempt=2, required_cpu=4, required_accelerators=2, timeout=90)
    job.name = "my job/1"
    script = fmt.render_script(job, {"CUDA_VISIBLE_DEVICES": "3", "EXTRA": "a b", "bad-name": "x"})
    lines = script.splitlines()

    assert lines[0] == "#!/bin/bash"
    sbatch = [line for line in lines if line.startswith("#SBATCH ")]
    assert sbatch == [
        "#SBATCH --job-name=wn-42-my_job_1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --mem=8G",
        "#SBATCH --time=2",  # 90 s rounded up to whole minutes
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj-1",
        f"#SBATCH --output={tmp_path}/wn-42-2.out",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
    ]
    # every directive comes before the first command (sbatch stops reading at the first one)
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert max(i for i, line in enumerate(lines) if line.startswith("#SBATCH")) < first_command
    assert "export WHATSNEXT_JOB_ID=42" in lines
    assert "export WHATSNEXT_ATTEMPT=2" in lines
    assert "export WHATSNEXT_JOB_NAME='my job/1'" in lines
    assert "export EXTRA='a b'" in lines
    assert not any("CUDA_VISIBLE_DEVICES" in line for line in lines)  # SLURM assigns GPUs
    assert not any("bad-name" in line for line in lines)
    assert lines[-1] == "python process.py --lr 0.1"


def test_render_script_gpus_flag_and_explicit_time(tmp_path: Path) -> None:
    fmt = SlurmFormatter(script="p.py", gres_flag="gpus", time="01:30:00", log_dir=tmp_path)
    gpu_script = fmt.render_script(make_job(1, {}, required_accelerators=1, timeout=30))
    assert "#SBATCH --gpus=1" in gpu_script
    assert "--gres" not in gpu_script
    assert "#SBATCH --time=01:30:00" in gpu_script
    cpu_script = fmt.render_script(make_job(2, {}))
    assert "--gpus" not in cpu_script and "--gres" not in cpu_script
    assert "--partition" not in cpu_script and "--account" not in cpu_script and "--mem" not in cpu_script


async def test_missing_template_parameter_fails_with_clear_message(tmp_path: Path) -> None:
    fmt = SlurmFormatter(command="python train.py --lr {lr}", log_dir=tmp_path)
    outcome = await fmt.run(make_job(1, {"epochs": 3}), RunContext())
    assert outcome.status == "FAILED"
    assert outcome.error is not None
    assert "missing parameter 'lr'" in outcome.error
    assert is_empty_dir(tmp_path)  # nothing was written, nothing submitted


# ------------------------------------------------------------------------------------------
# Real SLURM
# ------------------------------------------------------------------------------------------


async def test_job_completes_with_output(slurm: None, tmp_path: Path) -> None:
    fmt = bash_formatter(tmp_path)
    lines: list[str] = []
    code = 'echo "hello from $WHATSNEXT_JOB_ID"; echo "value=$MY_VALUE"; echo to-stderr >&2'
    outcome = await fmt.run(
        make_job(101, {"code": code}), RunContext(on_output=lines.append, env={"MY_VALUE": "it's 42"})
    )
    assert outcome.status == "COMPLETED", outcome
    assert outcome.exit_code == 0
    assert "hello from 101\nvalue=it's 42\nto-stderr\n" in outcome.log_tail
    assert "hello from 101" in lines and "to-stderr" in lines
    assert outcome.duration is not None and outcome.duration > 0


async def test_exit_code_3_is_failed(slurm: None, tmp_path: Path) -> None:
    fmt = bash_formatter(tmp_path)
    outcome = await fmt.run(make_job(102, {"code": "echo about to fail; exit 3"}), RunContext())
    assert outcome.status == "FAILED"
    assert outcome.exit_code == 3
    assert outcome.error == "exit code 3"
    assert "about to fail" in outcome.log_tail


async def test_gpu_job_sees_cuda_visible_devices(slurm: None, tmp_path: Path) -> None:
    fmt = bash_formatter(tmp_path)
    code = 'echo "CVD=${CUDA_VISIBLE_DEVICES:-unset}"'
    # the worker's own device selection must not leak into a job SLURM places
    ctx = RunContext(env={"CUDA_VISIBLE_DEVICES": "99"})
    outcome = await fmt.run(make_job(103, {"code": code}, required_accelerators=1), ctx)
    assert outcome.status == "COMPLETED", outcome
    match = re.search(r"CVD=(\S+)", outcome.log_tail)
    assert match is not None, outcome.log_tail
    assert re.fullmatch(r"\d+", match.group(1)), f"one GPU index expected, got {match.group(1)!r}"
    assert match.group(1) != "99"


async def test_cancel_stops_the_job(slurm: None, tmp_path: Path) -> None:
    fmt = bash_formatter(tmp_path)
    lines: list[str] = []
    ctx = RunContext(on_output=lines.append, cancel_reason="cancelled by test")
    task = asyncio.create_task(fmt.run(make_job(104, {"code": "echo started; sleep 300"}), ctx))
    await wait_for_condition(lambda: "started" in lines, 30, "the job to start")
    slurm_id = submitted_id(lines)
    assert squeue_state(slurm_id) == "RUNNING"

    ctx.cancel.set()
    outcome = await asyncio.wait_for(task, 60)
    assert outcome.status == "CANCELLED"
    assert outcome.error == "cancelled by test"
    assert "started" in outcome.log_tail
    assert squeue_state(slurm_id) not in ACTIVE_STATES


async def test_timeout_fails_and_stops_the_job(slurm: None, tmp_path: Path) -> None:
    fmt = bash_formatter(tmp_path)
    lines: list[str] = []
    ctx = RunContext(on_output=lines.append, timeout=1.0)
    outcome = await asyncio.wait_for(fmt.run(make_job(105, {"code": "echo begin; sleep 300"}), ctx), 60)
    assert outcome.status == "FAILED"
    assert outcome.error == "timeout"
    assert "begin" in outcome.log_tail
    assert squeue_state(submitted_id(lines)) not in ACTIVE_STATES


async def test_external_handle_is_reported_and_cancel_external_ends_the_job(
    slurm: None, tmp_path: Path
) -> None:
    fmt = bash_formatter(tmp_path)
    lines: list[str] = []
    handles: list[str] = []
    ctx = RunContext(on_output=lines.append, on_external=handles.append)
    task = asyncio.create_task(fmt.run(make_job(107, {"code": "echo started; sleep 300"}), ctx))
    await wait_for_condition(lambda: "started" in lines, 30, "the job to start")
    slurm_id = submitted_id(lines)
    assert handles == [f"slurm:{slurm_id}"]
    assert squeue_state(slurm_id) == "RUNNING"

    # A worker taking over the lost job has its own formatter: it cancels the old SLURM job first.
    takeover = bash_formatter(tmp_path)
    await asyncio.wait_for(takeover.cancel_external(handles[0]), 90)
    assert squeue_state(slurm_id) not in ACTIVE_STATES
    outcome = await asyncio.wait_for(task, 60)
    assert outcome.status == "CANCELLED" and outcome.error == "cancelled in SLURM (scancel)"
    # Handles that are not SLURM's, or malformed, are left alone; a finished job is no error.
    for other in ("runai:wn-1-1", "slurm:1;touch x", "slurm:", "plain", f"slurm:{slurm_id}"):
        await asyncio.wait_for(takeover.cancel_external(other), 30)
    assert not (Path.cwd() / "x").exists()


async def test_a_worker_taking_over_a_lost_job_cancels_its_slurm_job_first(
    slurm: None, server: ServerProcess, api: Api, tmp_path: Path
) -> None:
    srv = server
    p = (await api.ok("POST", "/projects", {"name": f"p-{uuid.uuid4().hex[:10]}"}))["name"]
    code = 'echo "attempt $WHATSNEXT_ATTEMPT"; if [ "$WHATSNEXT_ATTEMPT" = 1 ]; then sleep 300; fi'
    made = await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "takeover", "task": "t", "parameters": {"code": code}}
    )
    root = str(Path(__file__).resolve().parents[2])
    argv = [sys.executable, "-m", "whatsnext", "--server", srv.url, "worker", "--project", p]
    argv += ["--formatter", "slurm", "--command", "bash -c {code}"]
    env = {**os.environ, "PYTHONPATH": root}
    with (tmp_path / "first.log").open("wb") as log:
        first = subprocess.Popen(
            [*argv, "--forever"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:

        async def handle_recorded() -> str | None:
            job = await api.ok("GET", f"/jobs/{made['id']}")
            return job.get("external_id") if job["attempt"] == 1 else None

        handle = await wait_until(
            handle_recorded, timeout=60, interval=0.1, what="the SLURM handle of attempt 1"
        )
        assert handle.startswith("slurm:")
        slurm_id = handle.removeprefix("slurm:")
        assert squeue_state(slurm_id) in ACTIVE_STATES
    finally:
        first.kill()  # the worker alone, as the OOM killer would: its SLURM job runs on
        first.wait()
    assert squeue_state(slurm_id) in ACTIVE_STATES
    # Its lease runs out (backdated, then swept at once): the job is back in the queue.
    await expire_lease(srv.database_url, made["id"])

    async def requeued() -> bool:
        srv.sweep()
        return (await api.ok("GET", f"/jobs/{made['id']}"))["status"] == "PENDING"

    await wait_until(requeued, timeout=30, interval=0.2, what="the lost attempt's job to be requeued")

    try:
        second = await asyncio.to_thread(
            subprocess.run, argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
        )
    finally:
        state_after = squeue_state(slurm_id)
        subprocess.run(["scancel", slurm_id], check=False)  # never leave it behind, whatever happened
    assert second.returncode == 0, second.stderr
    job = await api.ok("GET", f"/jobs/{made['id']}")
    assert job["status"] == "COMPLETED" and job["attempt"] == 2, job
    assert "attempt 2" in job["log_tail"]
    assert state_after not in ACTIVE_STATES, "the lost attempt's SLURM job still runs"
    assert "cancelling the external job of a lost attempt" in second.stderr


async def test_hostile_names_and_values_run_as_data(slurm: None, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    fmt = SlurmFormatter(
        command="printf '<%s>\\n' {a} {b} {c} {d}", log_dir=tmp_path / "logs", poll_interval=0.2
    )
    values = {"a": "$(touch X1)", "b": "; touch X2", "c": "`touch X3`", "d": "l1\n touch X4"}
    job = make_job(108, values)
    job.name = "evil\n touch X5\n#SBATCH --wrap=touch X6"
    outcome = await asyncio.wait_for(fmt.run(job, RunContext(cwd=str(work))), 60)
    assert outcome.status == "COMPLETED", outcome
    for value in values.values():
        assert f"<{value}>" in outcome.log_tail
    assert list(work.iterdir()) == []


async def test_sbatch_failure_reports_its_stderr(slurm: None, tmp_path: Path) -> None:
    fmt = bash_formatter(tmp_path, partition="no-such-partition")
    outcome = await fmt.run(make_job(106, {"code": "true"}), RunContext())
    assert outcome.status == "FAILED"
    assert outcome.error is not None
    assert outcome.error.startswith("sbatch failed:")
    assert "partition" in outcome.error.lower()


async def test_concurrent_jobs_share_one_squeue_call_per_interval(
    slurm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_squeue = shutil.which("squeue")
    assert real_squeue is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "squeue-calls.log"
    wrapper = bin_dir / "squeue"
    wrapper.write_text(
        f'#!/bin/sh\nprintf \'%s\\t%s\\n\' "$(date +%s.%N)" "$*" >> {calls}\nexec {real_squeue} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    interval = 0.3
    fmt = bash_formatter(tmp_path, poll_interval=interval, max_poll_interval=0.6)
    jobs = [make_job(200 + i, {"code": f"sleep 2; echo done-{i}"}) for i in range(4)]
    outputs: list[list[str]] = [[] for _ in jobs]
    started = time.monotonic()
    outcomes: list[Outcome] = await asyncio.wait_for(
        asyncio.gather(
            *(fmt.run(job, RunContext(on_output=out.append)) for job, out in zip(jobs, outputs, strict=True))
        ),
        90,
    )
    elapsed = time.monotonic() - started
    assert [o.status for o in outcomes] == ["COMPLETED"] * 4, outcomes
    for i, outcome in enumerate(outcomes):
        assert f"done-{i}" in outcome.log_tail

    records = [line.split("\t", 1) for line in calls.read_text().splitlines()]
    stamps = [float(stamp) for stamp, _ in records]
    id_lists = [args.split()[-1].split(",") for _, args in records]
    slurm_ids = {submitted_id(out) for out in outputs}
    assert len(slurm_ids) == 4
    # one call covered all four jobs at once ...
    assert any(set(ids) == slurm_ids for ids in id_lists), id_lists
    # ... calls were never closer together than the poll interval ...
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= interval * 0.9 for gap in gaps), gaps
    # ... so there were at most elapsed / interval of them, whatever the number of jobs
    assert len(records) <= elapsed / interval + 1, (len(records), elapsed)


def test_execute_waits_and_returns_the_exit_code(
    slurm: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fmt = SlurmFormatter(script="unused.py", log_dir=tmp_path)
    assert fmt.execute("echo sync-hello; exit 4") == 4
    assert "sync-hello" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# State mapping and polling, with stand-in SLURM tools
# ------------------------------------------------------------------------------------------

FAKE_TOOL = """\
#!{python}
import json, sys, time
from pathlib import Path
here = Path(__file__).resolve().parent
tool = Path(sys.argv[0]).name
with (here / "calls.log").open("a") as fh:
    fh.write(json.dumps([time.monotonic(), tool, *sys.argv[1:]]) + "\\n")
plan = json.loads((here / "plan.json").read_text())
if tool == "sbatch":
    print("777;local")
elif tool == "squeue":
    count = sum(1 for line in (here / "calls.log").read_text().splitlines() if '"squeue"' in line)
    states = plan["squeue"]
    if count <= len(states) and states[count - 1]:
        print("777 " + states[count - 1])
elif tool == "scontrol":
    if plan["scontrol"] is None:
        print("slurm_load_jobs error: Invalid job id specified", file=sys.stderr)
        sys.exit(1)
    print("JobId=777 JobName=x " + plan["scontrol"])
"""


class FakeSlurm:
    def __init__(self, root: Path, squeue: list[str | None], scontrol: str | None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "plan.json").write_text(json.dumps({"squeue": squeue, "scontrol": scontrol}))
        (root / "calls.log").touch()
        for tool in ("sbatch", "squeue", "scontrol", "scancel"):
            path = root / tool
            path.write_text(FAKE_TOOL.format(python=sys.executable))
            path.chmod(0o755)

    def formatter(self, tmp_path: Path, **kwargs: Any) -> SlurmFormatter:
        options: dict[str, Any] = {"poll_interval": 0.05, "max_poll_interval": 0.2}
        options.update(kwargs)
        return SlurmFormatter(
            command="echo {x}",
            log_dir=tmp_path / "logs",
            sbatch=str(self.root / "sbatch"),
            squeue=str(self.root / "squeue"),
            scontrol=str(self.root / "scontrol"),
            scancel=str(self.root / "scancel"),
            **options,
        )

    def calls(self) -> list[list[Any]]:
        return [json.loads(line) for line in (self.root / "calls.log").read_text().splitlines()]


@pytest.mark.parametrize(
    ("scontrol", "status", "exit_code", "error", "requeue"),
    [
        ("JobState=COMPLETED Reason=None ExitCode=0:0", "COMPLETED", 0, None, False),
        ("JobState=FAILED Reason=NonZeroExitCode ExitCode=2:0", "FAILED", 2, "exit code 2", False),
        ("JobState=FAILED Reason=RaisedSignal:9 ExitCode=0:9", "FAILED", -9, "killed by signal 9", False),
        (
            "JobState=CANCELLED Reason=None ExitCode=0:15",
            "CANCELLED",
            0,
            "cancelled in SLURM (scancel)",
            False,
        ),
        ("JobState=TIMEOUT Reason=TimeLimit ExitCode=0:0", "FAILED", 0, "timeout", False),
        ("JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15", "FAILED", -15, "timeout", False),
        ("JobState=OUT_OF_MEMORY Reason=OutOfMemory ExitCode=0:125", "FAILED", 0, "OUT_OF_MEMORY", False),
        ("JobState=NODE_FAIL Reason=NodeDown ExitCode=0:0", "FAILED", 0, "NODE_FAIL", False),
        ("JobState=BOOT_FAIL Reason=None ExitCode=0:0", "FAILED", 0, "BOOT_FAIL", False),
        ("JobState=DEADLINE Reason=None ExitCode=0:0", "FAILED", 0, "DEADLINE", False),
        ("JobState=PREEMPTED Reason=None ExitCode=0:15", "FAILED", 0, "preempted", True),
        (None, "FAILED", None, "SLURM no longer knows job 777", False),
    ],
)
async def test_state_mapping(
    tmp_path: Path, scontrol: str | None, status: str, exit_code: int | None, error: str | None, requeue: bool
) -> None:
    fake = FakeSlurm(tmp_path / "fake", squeue=["PENDING", "RUNNING"], scontrol=scontrol)
    outcome = await asyncio.wait_for(fake.formatter(tmp_path).run(make_job(1, {"x": 1}), RunContext()), 30)
    assert outcome.status == status
    assert outcome.exit_code == exit_code
    if error is None:
        assert outcome.error is None
    else:
        assert outcome.error is not None and error in outcome.error
    assert outcome.requeue is requeue
    tools = [call[1] for call in fake.calls()]
    assert tools[0] == "sbatch"
    assert tools.count("squeue") == 3  # PENDING, RUNNING, then gone
    # a preempted job is cancelled so that SLURM does not requeue it behind WhatsNext's back
    assert ("scancel" in tools) is requeue


@pytest.mark.parametrize(
    "squeue",
    [
        ["PENDING", "RUNNING", "PENDING"],  # scontrol requeue, or a preemption that requeues: waiting again
        ["RUNNING", "COMPLETING", "REQUEUED"],
        ["RUNNING", "REQUEUE_HOLD"],
    ],
)
async def test_a_job_slurm_requeued_goes_back_to_the_whatsnext_queue(
    tmp_path: Path, squeue: list[str | None]
) -> None:
    fake = FakeSlurm(tmp_path / "fake", squeue=squeue, scontrol=None)
    outcome = await asyncio.wait_for(fake.formatter(tmp_path).run(make_job(1, {"x": 1}), RunContext()), 30)
    assert (outcome.status, outcome.error, outcome.requeue) == ("FAILED", "requeued by SLURM", True)
    tools = [call[1] for call in fake.calls()]
    # SLURM would run it again by itself: it is cancelled there, and WhatsNext hands it out again.
    assert tools.count("squeue") == len(squeue) and tools[-1] == "scancel"


async def test_a_job_pending_before_it_ever_ran_only_waits(tmp_path: Path) -> None:
    fake = FakeSlurm(
        tmp_path / "fake",
        squeue=["PENDING", "PENDING", "RUNNING"],
        scontrol="JobState=COMPLETED Reason=None ExitCode=0:0",
    )
    outcome = await asyncio.wait_for(fake.formatter(tmp_path).run(make_job(1, {"x": 1}), RunContext()), 30)
    assert (outcome.status, outcome.requeue) == ("COMPLETED", False)
    assert "scancel" not in [call[1] for call in fake.calls()]


async def test_poll_interval_backs_off_and_resets_on_change(tmp_path: Path) -> None:
    states: list[str | None] = ["RUNNING"] * 8 + ["COMPLETING"] + ["COMPLETING"] * 2
    fake = FakeSlurm(tmp_path / "fake", squeue=states, scontrol="JobState=COMPLETED Reason=None ExitCode=0:0")
    fmt = fake.formatter(tmp_path, poll_interval=0.05, max_poll_interval=0.4)
    outcome = await asyncio.wait_for(fmt.run(make_job(1, {"x": 1}), RunContext()), 30)
    assert outcome.status == "COMPLETED"
    stamps = [call[0] for call in fake.calls() if call[1] == "squeue"]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= 0.05 * 0.9 for gap in gaps), gaps
    # unchanged RUNNING: the interval grows towards the maximum ...
    assert gaps[6] > 3 * gaps[0], gaps
    assert max(gaps) < 0.4 + 0.3, gaps
    # ... and drops back to poll_interval once the state changes (RUNNING -> COMPLETING)
    assert gaps[8] < gaps[7] / 2, gaps
