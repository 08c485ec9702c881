"""RUNAIFormatter: command rendering (CLI v1 and v2, Kubernetes manifest) and the run/poll/cancel
cycle against a stand-in ``runai`` executable that records its arguments and answers ``describe``
from a state file the test controls."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for_condition

from whatsnext.api.client import CLIFormatter
from whatsnext.api.client.formatters.base import FormatError, JobSpec, RunContext
from whatsnext.api.client.formatters.runai import RUNAIFormatter, parse_describe, parse_reasons, to_yaml


def make_job(**kwargs: Any) -> JobSpec:
    options: dict[str, Any] = {
        "id": 7,
        "name": "resnet sweep",
        "task": "train",
        "parameters": {"lr": 0.1, "note": "a b"},
        "attempt": 2,
        "required_cpu": 2,
        "required_accelerators": 1,
    }
    options.update(kwargs)
    return JobSpec(**options)


ENV_ARGS = [
    "-e", "HF_HOME=/data/hf",
    "-e", "WHATSNEXT_JOB_ID=7",
    "-e", "WHATSNEXT_JOB_NAME=resnet sweep",
    "-e", "WHATSNEXT_TASK=train",
    "-e", "WHATSNEXT_ATTEMPT=2",
    "-e", "WHATSNEXT_WORKER=w1",
]  # fmt: skip
COMMAND_ARGS = ["--command", "--", "python", "train.py", "--lr", "0.1", "--note", "a b"]
CTX_ENV = {"WHATSNEXT_WORKER": "w1", "CUDA_VISIBLE_DEVICES": "0"}


def formatter(cli_version: int, **kwargs: Any) -> RUNAIFormatter:
    options: dict[str, Any] = {
        "project": "team-a",
        "image": "registry.example/train:1.2",
        "cli_version": cli_version,
        "script": "train.py",
        "memory": "4G",
        "environment": {"HF_HOME": "/data/hf"},
        "extra_args": ("--large-shm",),
    }
    options.update(kwargs)
    return RUNAIFormatter(**options)


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------


def test_render_submit_v1() -> None:
    argv = formatter(1).render_submit(make_job(), CTX_ENV)
    assert argv == [
        "runai", "submit", "--name", "wn-7-2", "-p", "team-a", "-i", "registry.example/train:1.2",
        "-g", "1", "--cpu", "2", "--memory", "4G",
        *ENV_ARGS,
        "--backoff-limit", "0", "--large-shm",
        *COMMAND_ARGS,
    ]  # fmt: skip


def test_render_submit_v2() -> None:
    argv = formatter(2).render_submit(make_job(), CTX_ENV)
    assert argv == [
        "runai", "training", "submit", "wn-7-2", "-p", "team-a", "-i", "registry.example/train:1.2",
        "--gpu-devices-request", "1", "--cpu-core-request", "2", "--cpu-memory-request", "4G",
        *ENV_ARGS,
        "--backoff-limit", "0", "--large-shm",
        *COMMAND_ARGS,
    ]  # fmt: skip


def test_render_submit_resources_override_and_fractions() -> None:
    job = make_job(required_accelerators=0)
    v2 = formatter(2, gpu=0.5, cpu=0.5, memory=None, environment={}, extra_args=()).render_submit(job)
    assert v2[:12] == [
        "runai", "training", "submit", "wn-7-2", "-p", "team-a", "-i", "registry.example/train:1.2",
        "--gpu-portion-request", "0.5", "--cpu-core-request", "0.5",
    ]  # fmt: skip
    assert "--cpu-memory-request" not in v2
    v1 = formatter(1, gpu=0.5, memory=None).render_submit(job)
    assert v1[8:12] == ["-g", "0.5", "--cpu", "2"]
    cpu_only = formatter(1).render_submit(job)
    assert "-g" not in cpu_only


def test_template_command_is_split_into_argv() -> None:
    fmt = formatter(2, script=None, command="bash -c {code}")
    argv = fmt.render_submit(make_job(parameters={"code": "echo hi && exit 3"}))
    assert argv[-5:] == ["--command", "--", "bash", "-c", "echo hi && exit 3"]
    assert fmt.format("train", {"code": "echo hi"}) == "bash -c 'echo hi'"


def test_status_and_log_commands() -> None:
    v1, v2 = formatter(1), formatter(2)
    assert v1.describe_argv("wn-7-2") == ["runai", "describe", "job", "wn-7-2", "-p", "team-a", "-o", "json"]
    assert v1.logs_argv("wn-7-2") == ["runai", "logs", "wn-7-2", "-p", "team-a"]
    assert v1.delete_argv("wn-7-2") == ["runai", "delete", "job", "wn-7-2", "-p", "team-a"]
    assert v2.describe_argv("wn-7-2") == [
        "runai", "training", "describe", "wn-7-2", "-p", "team-a", "-o", "json",
    ]  # fmt: skip
    assert v2.logs_argv("wn-7-2") == ["runai", "training", "logs", "wn-7-2", "-p", "team-a"]
    assert v2.delete_argv("wn-7-2") == ["runai", "training", "delete", "wn-7-2", "-p", "team-a"]


def test_job_names_are_rfc1123_labels() -> None:
    for job_id, attempt in [(1, 1), (123456789, 12), (0, 3)]:
        name = RUNAIFormatter.job_name(make_job(id=job_id, attempt=attempt))
        assert name == f"wn-{job_id}-{attempt}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63


def test_k8s_manifest() -> None:
    manifest = formatter(2).render_k8s_manifest(make_job(required_accelerators=2, timeout=3600.5), CTX_ENV)
    assert manifest["apiVersion"] == "batch/v1"
    assert manifest["kind"] == "Job"
    assert manifest["metadata"]["name"] == "wn-7-2"
    assert manifest["metadata"]["namespace"] == "runai-team-a"
    assert manifest["metadata"]["labels"]["project"] == "team-a"
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 3601
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["schedulerName"] == "runai-scheduler"
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/train:1.2"
    assert container["command"] == ["python"]
    assert container["args"] == ["train.py", "--lr", "0.1", "--note", "a b"]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "4G"},
        "limits": {"cpu": "2", "memory": "4G", "nvidia.com/gpu": 2},
    }
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["WHATSNEXT_JOB_ID"] == "7"
    assert env["HF_HOME"] == "/data/hf"
    assert "CUDA_VISIBLE_DEVICES" not in env

    custom = formatter(1, namespace="ml", gpu=0.25).render_k8s_manifest(make_job())
    assert custom["metadata"]["namespace"] == "ml"
    assert "nvidia.com/gpu" not in custom["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert custom["spec"]["template"]["metadata"]["annotations"] == {"gpu-fraction": "0.25"}


def test_k8s_yaml() -> None:
    fmt = formatter(2)
    text = fmt.render_k8s_yaml(make_job())
    assert text.startswith('apiVersion: "batch/v1"\nkind: "Job"\nmetadata:\n  name: "wn-7-2"\n')
    assert '      restartPolicy: "Never"\n' in text
    assert "          nvidia.com/gpu: 1\n" in text


def test_k8s_yaml_round_trips_through_a_yaml_parser() -> None:
    import yaml  # dev dependency: checks that the hand-written YAML parses back

    fmt = formatter(2)
    assert yaml.safe_load(fmt.render_k8s_yaml(make_job())) == fmt.render_k8s_manifest(make_job())


def test_to_yaml_shapes() -> None:
    data = {"a": [{"b": 1, "c": ["x", "y: z"]}, [], {}], "true": None, "d": {}, "e": False}
    assert to_yaml(data) == (
        'a:\n  - b: 1\n    c:\n      - "x"\n      - "y: z"\n  - []\n  - {}\n"true": null\nd: {}\ne: false\n'
    )


def test_parse_describe() -> None:
    v1 = json.dumps({"name": "wn-1-1", "status": "RUNNING", "instances": [{"status": "PENDING"}]})
    assert parse_describe(v1) == ("RUNNING", None)
    v2 = {"general": {"name": "wn-1-1", "status": "Failed"}, "pods": [{"containers": [{"exitCode": 3}]}]}
    assert parse_describe("a warning line\n" + json.dumps(v2)) == ("Failed", 3)
    with pytest.raises(ValueError):
        parse_describe("Error: unauthorized")


# ------------------------------------------------------------------------------------------
# Running against a stand-in runai
# ------------------------------------------------------------------------------------------

FAKE_RUNAI = """\
#!{python}
import json, sys
from pathlib import Path
here = Path(__file__).resolve().parent
with (here / "calls.log").open("a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
state = json.loads((here / "state.json").read_text())
args = sys.argv[1:]
verb = args[1] if args[0] == "training" else args[0]
if verb == "submit":
    if state.get("submit_error"):
        print(state["submit_error"], file=sys.stderr)
        sys.exit(1)
    print("The job has been submitted successfully")
elif verb == "describe":
    if state.get("deleted"):
        print("workload not found", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(state["describe"], indent=2))
elif verb == "logs":
    sys.stdout.write(state.get("logs", ""))
elif verb == "delete":
    state["deleted"] = True
    (here / "state.json").write_text(json.dumps(state))
    print("deleted")
"""


class FakeRunai:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.bin = root / "runai"
        self.bin.write_text(FAKE_RUNAI.format(python=sys.executable))
        self.bin.chmod(0o755)
        (root / "calls.log").touch()
        self.set_state(describe={"status": "Pending"}, logs="line one\nline two\n")

    def set_state(self, **state: Any) -> None:
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.root / "state.json")  # atomic: the stand-in never reads half a file

    def update(self, **changes: Any) -> None:
        state = json.loads((self.root / "state.json").read_text())
        state.update(changes)
        self.set_state(**state)

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in (self.root / "calls.log").read_text().splitlines()]

    def count(self, verb: str) -> int:
        return sum(1 for call in self.calls() if verb in call[:2])


def describe_doc(cli_version: int, status: str, exit_code: int | None = None) -> dict[str, Any]:
    if cli_version == 1:  # `runai describe job -o json` of the v1 CLI
        return {"name": "wn-7-2", "namespace": "runai-team-a", "status": status.upper(), "instances": []}
    pods: list[dict[str, Any]] = [{"name": "wn-7-2-0-0", "status": "Running"}]
    if exit_code is not None:
        pods[0]["containers"] = [{"name": "main", "exitCode": exit_code}]
    return {"general": {"name": "wn-7-2", "project": "team-a", "status": status}, "pods": pods}


def fake_formatter(fake: FakeRunai, cli_version: int, **kwargs: Any) -> RUNAIFormatter:
    return formatter(
        cli_version, runai_bin=str(fake.bin), poll_interval=0.02, max_poll_interval=0.1, **kwargs
    )


@pytest.mark.parametrize("cli_version", [1, 2])
async def test_run_polls_until_completed(tmp_path: Path, cli_version: int) -> None:
    fake = FakeRunai(tmp_path / "fake")
    fake.update(describe=describe_doc(cli_version, "Pending"))
    fmt = fake_formatter(fake, cli_version)
    lines: list[str] = []
    task = asyncio.create_task(fmt.run(make_job(), RunContext(env=CTX_ENV, on_output=lines.append)))

    await wait_for_condition(lambda: fake.count("describe") >= 1, 10, "a first describe")
    fake.update(describe=describe_doc(cli_version, "Running"))
    seen = fake.count("describe")
    await wait_for_condition(lambda: fake.count("describe") > seen + 1, 10, "describe while running")
    fake.update(describe=describe_doc(cli_version, "Succeeded" if cli_version == 1 else "Completed"))
    outcome = await asyncio.wait_for(task, 10)

    assert outcome.status == "COMPLETED"
    assert outcome.exit_code == 0
    assert outcome.log_tail == "line one\nline two\n"
    assert lines[-2:] == ["line one", "line two"]
    calls = fake.calls()
    assert calls[0] == fmt.render_submit(make_job(), CTX_ENV)[1:]
    assert all(call == fmt.describe_argv("wn-7-2")[1:] for call in calls[1:-1])
    assert len(calls) >= 5
    assert calls[-1] == fmt.logs_argv("wn-7-2")[1:]


@pytest.mark.parametrize(
    ("cli_version", "exit_code", "error"),
    [(1, None, "workload FAILED"), (2, 3, "exit code 3"), (2, None, "workload Failed")],
)
async def test_run_failed(tmp_path: Path, cli_version: int, exit_code: int | None, error: str) -> None:
    fake = FakeRunai(tmp_path / "fake")
    fake.update(describe=describe_doc(cli_version, "Failed", exit_code))
    fmt = fake_formatter(fake, cli_version)
    outcome = await asyncio.wait_for(fmt.run(make_job(), RunContext()), 10)
    assert outcome.status == "FAILED"
    assert outcome.exit_code == exit_code
    assert outcome.error == error
    assert outcome.log_tail == "line one\nline two\n"
    verbs = [call[1] if call[0] == "training" else call[0] for call in fake.calls()]
    assert verbs == ["submit", "describe", "logs"]


@pytest.mark.parametrize("cli_version", [1, 2])
async def test_cancel_fetches_logs_then_deletes(tmp_path: Path, cli_version: int) -> None:
    fake = FakeRunai(tmp_path / "fake")
    fake.update(describe=describe_doc(cli_version, "Running"), logs="epoch 1\nepoch 2\n")
    fmt = fake_formatter(fake, cli_version)
    ctx = RunContext(cancel_reason="cancelled by user")
    task = asyncio.create_task(fmt.run(make_job(), ctx))
    await wait_for_condition(lambda: fake.count("describe") >= 2, 10, "describe calls")
    ctx.cancel.set()
    outcome = await asyncio.wait_for(task, 10)

    assert outcome.status == "CANCELLED"
    assert outcome.error == "cancelled by user"
    assert outcome.log_tail == "epoch 1\nepoch 2\n"
    calls = fake.calls()
    assert calls[0] == fmt.render_submit(make_job())[1:]
    describes = calls[1:-2]
    assert len(describes) >= 2
    assert all(call == fmt.describe_argv("wn-7-2")[1:] for call in describes)
    assert calls[-2:] == [fmt.logs_argv("wn-7-2")[1:], fmt.delete_argv("wn-7-2")[1:]]


async def test_timeout_fetches_logs_then_deletes(tmp_path: Path) -> None:
    fake = FakeRunai(tmp_path / "fake")
    fake.update(describe=describe_doc(2, "Running"))
    fmt = fake_formatter(fake, 2)
    outcome = await asyncio.wait_for(fmt.run(make_job(), RunContext(timeout=0.3)), 10)
    assert outcome.status == "FAILED"
    assert outcome.error == "timeout"
    calls = fake.calls()
    assert calls[-2:] == [fmt.logs_argv("wn-7-2")[1:], fmt.delete_argv("wn-7-2")[1:]]


async def test_workload_deleted_elsewhere_is_cancelled(tmp_path: Path) -> None:
    fake = FakeRunai(tmp_path / "fake")
    fake.update(describe=describe_doc(2, "Running"))
    fmt = fake_formatter(fake, 2)
    task = asyncio.create_task(fmt.run(make_job(), RunContext()))
    await wait_for_condition(lambda: fake.count("describe") >= 1, 10, "a first describe")
    fake.update(deleted=True)
    outcome = await asyncio.wait_for(task, 10)
    assert outcome.status == "CANCELLED"
    assert outcome.error == "workload deleted in RUN:AI"


async def test_stopped_workload_is_cancelled(tmp_path: Path) -> None:
    fake = FakeRunai(tmp_path / "fake")
    fake.update(describe=describe_doc(2, "Stopped"))
    outcome = await asyncio.wait_for(fake_formatter(fake, 2).run(make_job(), RunContext()), 10)
    assert outcome.status == "CANCELLED"


@pytest.mark.parametrize("cli_version", [1, 2])
async def test_a_preempted_workload_goes_back_to_the_whatsnext_queue(
    tmp_path: Path, cli_version: int
) -> None:
    # RUN:AI puts a preempted training workload back to Pending: WhatsNext requeues it instead.
    fake = FakeRunai(tmp_path / "fake")
    fake.update(describe=describe_doc(cli_version, "Running"), logs="epoch 1\n")
    fmt = fake_formatter(fake, cli_version)
    task = asyncio.create_task(fmt.run(make_job(), RunContext()))
    await wait_for_condition(lambda: fake.count("describe") >= 2, 10, "the workload seen running")
    fake.update(describe=describe_doc(cli_version, "Pending"))
    outcome = await asyncio.wait_for(task, 10)
    assert (outcome.status, outcome.requeue) == ("FAILED", True)
    assert outcome.error is not None and outcome.error.startswith("preempted in RUN:AI")
    assert outcome.log_tail == "epoch 1\n"
    assert fake.calls()[-2:] == [fmt.logs_argv("wn-7-2")[1:], fmt.delete_argv("wn-7-2")[1:]]


@pytest.mark.parametrize(
    ("status", "reason", "error", "requeue"),
    [
        ("Preempted", None, "preempted in RUN:AI (workload Preempted)", True),
        ("Evicted", None, "preempted in RUN:AI (workload Evicted)", True),
        ("Failed", "Evicted", "preempted in RUN:AI (workload Failed)", True),
        ("Failed", "Preempted", "preempted in RUN:AI (workload Failed)", True),
        ("Failed", "DeadlineExceeded", "timeout", False),
        ("TimedOut", None, "timeout", False),
        ("Failed", "BackoffLimitExceeded", "workload Failed", False),
    ],
)
async def test_preemption_and_time_limit_states(
    tmp_path: Path, status: str, reason: str | None, error: str, requeue: bool
) -> None:
    fake = FakeRunai(tmp_path / "fake")
    doc = describe_doc(2, status)
    if reason is not None:
        doc["pods"][0]["reason"] = reason
    fake.update(describe=doc)
    outcome = await asyncio.wait_for(fake_formatter(fake, 2).run(make_job(), RunContext()), 10)
    assert (outcome.status, outcome.error, outcome.requeue) == ("FAILED", error, requeue)
    assert (fake.count("delete") == 1) is requeue  # a preempted workload is deleted: RUN:AI would rerun it


def test_parse_reasons() -> None:
    doc = {"general": {"status": "Failed"}, "pods": [{"reason": "Evicted", "conditions": [{"reason": "X"}]}]}
    assert parse_reasons("noise\n" + json.dumps(doc)) == {"evicted", "x"}
    assert parse_reasons("no json") == set() and parse_reasons("{broken") == set()


async def test_submit_failure_reports_stderr(tmp_path: Path) -> None:
    fake = FakeRunai(tmp_path / "fake")
    fake.update(submit_error="project team-a not found")
    outcome = await asyncio.wait_for(fake_formatter(fake, 2).run(make_job(), RunContext()), 10)
    assert outcome.status == "FAILED"
    assert outcome.error == "runai submit failed: project team-a not found"
    assert len(fake.calls()) == 1


async def test_missing_parameter_fails_without_submitting(tmp_path: Path) -> None:
    fake = FakeRunai(tmp_path / "fake")
    fmt = fake_formatter(fake, 2, script=None, command="python train.py --lr {lr} --bs {batch_size}")
    outcome = await fmt.run(make_job(parameters={"lr": 0.1}), RunContext())
    assert outcome.status == "FAILED"
    assert outcome.error is not None and "missing parameter 'batch_size'" in outcome.error
    assert fake.calls() == []


@pytest.mark.parametrize("cli_version", [1, 2])
async def test_external_handle_is_reported_and_cancel_external_deletes_it(
    tmp_path: Path, cli_version: int
) -> None:
    fake = FakeRunai(tmp_path / "fake")
    fake.update(describe=describe_doc(cli_version, "Completed" if cli_version == 2 else "Succeeded"))
    fmt = fake_formatter(fake, cli_version)
    handles: list[str] = []
    outcome = await asyncio.wait_for(fmt.run(make_job(), RunContext(on_external=handles.append)), 10)
    assert outcome.status == "COMPLETED" and handles == ["runai:wn-7-2"]

    takeover = fake_formatter(fake, cli_version)  # the worker that takes a lost job over
    for other in ("slurm:12", "runai:Bad_Name", "runai:", "runai:x;y", "plain"):
        await takeover.cancel_external(other)
    assert fake.count("delete") == 0
    await takeover.cancel_external(handles[0])
    assert fake.calls()[-1] == fmt.delete_argv("wn-7-2")[1:]
    await takeover.cancel_external(handles[0])  # already gone: no error


def test_same_argv_as_the_cli_formatter() -> None:
    params = {"lr": 0.1, "flag": True, "off": False, "none": None, "tags": ["a", "b c"], "cfg": {"k": 1}}
    runai = formatter(2).container_argv(make_job(parameters=params))
    assert runai == CLIFormatter(executable="python", script="train.py").argv("train", params)
    assert runai == ["python", "train.py", "--lr", "0.1", "--flag", "--tags", "a", "b c", "--cfg", '{"k":1}']
    shell = formatter(2, script=None, command="python train.py --lr {lr} | tee {out}", shell=True)
    assert shell.container_argv(make_job(parameters={"lr": 0.1, "out": "a b"})) == [
        "/bin/sh",
        "-c",
        "python train.py --lr 0.1 | tee 'a b'",
    ]
    with pytest.raises(FormatError, match="inside single quotes"):
        formatter(2, script=None, command="echo '{m}'", shell=True)
