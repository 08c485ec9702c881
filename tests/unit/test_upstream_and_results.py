"""Results that flow downstream, piece by piece: upstream references in the one template engine
(parsed, left out of a task's parameters, filled from a claim's ``upstream``, failing with the
name of what is missing), the result file and ``upstream.json`` of the job's directory, the size
bound applied by the worker and by the server's report models, the SLURM and RUN:AI formatters
passing the variables on, the Python formatter's ``upstream`` keyword, and the SDK helpers."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from whatsnext import limits
from whatsnext.api.client import CLIFormatter, PythonFormatter, upstream, write_result
from whatsnext.api.client.checkpoint import RESULT_FILE_BYTES, Checkpoints
from whatsnext.api.client.formatters.base import FormatError, JobSpec, RunContext
from whatsnext.api.client.formatters.runai import RUNAIFormatter
from whatsnext.api.client.formatters.slurm import SlurmFormatter
from whatsnext.api.client.template import CommandTemplate, render_text
from whatsnext.api.server.schemas import CompleteRequest, Report, ReportBatch
from whatsnext.template import TemplateError, UpstreamRef, check_template, placeholders, upstream_refs
from whatsnext.wire import bounded_result

DOCS = Path(__file__).resolve().parents[2] / "docs"

TRAIN: dict[str, Any] = {
    "id": 11,
    "name": "train",
    "task": "fit",
    "status": "COMPLETED",
    "result": {"loss": 0.1, "checkpoint": "/ck/11/best.pt", "scores": [0.5, 0.75], "best.lr": 0.01},
    "artifacts": [{"uri": "/ck/11/best.pt", "direction": "out", "kind": "checkpoint"}],
}
PREP: dict[str, Any] = {
    "id": 10,
    "name": "prep.v2",
    "task": "prep",
    "status": "FAILED",
    "result": None,
    "artifacts": [],
}


def spec(upstream: list[dict[str, Any]] | None = None, **kwargs: Any) -> JobSpec:
    return JobSpec(
        id=12, name="eval", task="evaluate", parameters={"split": "test"}, upstream=upstream, **kwargs
    )  # type: ignore[arg-type]


# ---------------------------------------------------------------- the template engine


def test_upstream_references_parse_and_are_not_parameters() -> None:
    template = "eval.py --ckpt {upstream.train.result.checkpoint} --split {split} --lr {upstream.train.result[best.lr]}"
    assert placeholders(template) == ["split"]
    refs = upstream_refs(template)
    assert [(r.job, r.field, r.keys) for r in refs] == [
        ("train", "result", ("checkpoint",)),
        ("train", "result", ("best.lr",)),
    ]
    (ref,) = upstream_refs("{upstream[prep.v2].status!r:>10}")
    assert (ref.job, ref.field, ref.keys, ref.spec, ref.conversion) == ("prep.v2", "status", (), ">10", "r")
    assert str(ref) == "{upstream[prep.v2].status!r:>10}"
    # A parameter named upstream stays a parameter.
    assert placeholders("run {upstream}") == ["upstream"]
    assert not isinstance(check_template("{upstream}")[0], UpstreamRef)


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{upstream.train}", "write {upstream.NAME.FIELD}"),
        ("{upstream.train.loss}", "'loss' is not one of id, name, task, status, result"),
        ("{upstream.train.status.x}", "only result has keys"),
        ("{upstream..result}", "write {upstream.NAME.FIELD}"),
        ("{upstream.train.result!x}", "bad conversion"),
    ],
)
def test_a_malformed_upstream_reference_is_refused_when_the_template_is_given(
    template: str, says: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(template)
    assert says in str(caught.value)
    with pytest.raises(FormatError):
        CommandTemplate(template=f"prog {template}")


def test_a_shell_template_refuses_an_upstream_reference_inside_quotes() -> None:
    with pytest.raises(TemplateError, match="inside double quotes"):
        check_template('echo "{upstream.train.result.checkpoint}"', shell=True)
    check_template("echo {upstream.train.result.checkpoint} | tee out", shell=True)


def test_upstream_references_are_filled_from_the_claim() -> None:
    up = [PREP, TRAIN]
    argv_template = CommandTemplate(
        template="eval --ckpt {upstream.train.result.checkpoint} --loss {upstream.train.result.loss:.2f} "
        "--s {upstream.train.result.scores.1} --all {upstream.train.result} --id {upstream.train.id} "
        "--prep {upstream[prep.v2].status} --none {upstream[prep.v2].result} --split {split}"
    )
    assert argv_template.argv({"split": "test"}, up) == [
        "eval", "--ckpt", "/ck/11/best.pt", "--loss", "0.10", "--s", "0.75",
        "--all", json.dumps(TRAIN["result"], separators=(",", ":")), "--id", "11",
        "--prep", "FAILED", "--none", "", "--split", "test",
    ]  # fmt: skip
    # In a shell line the value is quoted like any parameter's.
    shell = CommandTemplate(template="echo {upstream.train.result.checkpoint} {x}", shell=True)
    evil = [{**TRAIN, "result": {"checkpoint": "a b; touch x"}}]
    assert shell.shell_line({"x": 1}, upstream=evil) == "echo 'a b; touch x' 1"
    assert shell.argv({"x": 1}, evil) == ["/bin/sh", "-c", "echo 'a b; touch x' 1"]
    assert render_text("{upstream.train.result.checkpoint}.log", {}, up) == "/ck/11/best.pt.log"


@pytest.mark.parametrize(
    ("template", "upstream", "says"),
    [
        ("{upstream.train.result.loss}", None, "the job has no upstream jobs"),
        (
            "{upstream.trian.result.loss}",
            [TRAIN, PREP],
            "no upstream job is named 'trian' (its upstream jobs: 'prep.v2', 'train')",
        ),
        (
            "{upstream.train.result.step}",
            [TRAIN],
            "upstream job 'train' (id 11, COMPLETED): its result has no result['step']",
        ),
        ("{upstream.train.result.scores.5}", [TRAIN], "its result has no result['scores']['5']"),
        (
            "{upstream[prep.v2].result.loss}",
            [PREP],
            "upstream job 'prep.v2' (id 10, FAILED): it reported no result",
        ),
        (
            "{upstream.train.id}",
            [TRAIN, {**TRAIN, "id": 13}],
            "2 upstream jobs are named 'train' (ids 11, 13)",
        ),
    ],
)
def test_what_an_upstream_reference_cannot_find_is_named(
    template: str, upstream: list[dict[str, Any]] | None, says: str
) -> None:
    with pytest.raises(FormatError) as caught:
        CommandTemplate(template=f"prog {template}").argv({}, upstream)
    assert says in str(caught.value) and template in str(caught.value)


async def test_a_job_whose_upstream_reference_fails_fails_without_retries(tmp_path: Path) -> None:
    fmt = CLIFormatter(template="true {upstream.train.result.nothing}")
    outcome = await fmt.run(spec([TRAIN]), RunContext(cwd=str(tmp_path)))
    assert outcome.status == "FAILED" and outcome.retryable is False
    assert "its result has no result['nothing']" in (outcome.error or "")


# ---------------------------------------------------------------- the job's directory


def test_each_attempt_gets_a_result_file_and_a_job_with_upstream_its_upstream_file(tmp_path: Path) -> None:
    checkpoints = Checkpoints(tmp_path)
    alone = spec(None)
    env = checkpoints.prepare(alone, "p")
    folder = tmp_path / "p" / "12"
    assert env["WHATSNEXT_RESULT_FILE"] == str(folder / ".result-attempt-1.json") == alone.result_file
    assert "WHATSNEXT_UPSTREAM" not in env and alone.upstream_file is None
    assert os.listdir(folder) == []  # nothing written for a job without dependencies

    # A stale result file of the same attempt number is removed before the attempt starts.
    stale = folder / ".result-attempt-2.json"
    stale.write_text('{"old": true}')
    child = spec([PREP, TRAIN], attempt=2)
    env = checkpoints.prepare(child, "p")
    assert not stale.exists() and env["WHATSNEXT_RESULT_FILE"] == str(stale)
    assert env["WHATSNEXT_UPSTREAM"] == str(folder / "upstream.json") == child.upstream_file
    assert json.loads((folder / "upstream.json").read_text()) == [PREP, TRAIN]
    assert sorted(p.name for p in folder.iterdir()) == ["upstream.json"]  # no partial file left


def test_when_the_attempt_ends_only_what_the_job_wrote_is_left(tmp_path: Path) -> None:
    checkpoints = Checkpoints(tmp_path)
    quiet = spec([PREP])  # a job that writes nothing: its directory goes
    checkpoints.prepare(quiet, "p")
    folder = tmp_path / "p" / "12"
    Path(quiet.result_file or "").write_text('{"loss": 0.1}')
    Path(quiet.checkpoint_file or "").write_text("")
    assert checkpoints.read_result(quiet) == {"loss": 0.1}
    checkpoints.finish(quiet)
    assert not folder.exists() and (tmp_path / "p").is_dir()

    kept = spec([PREP], attempt=2)  # a job that wrote a checkpoint: only that stays
    checkpoints.prepare(kept, "p")
    (folder / "step-9.pt").write_text("state")
    Path(kept.checkpoint_file or "").write_text("step-9.pt")
    assert checkpoints.read(kept) == str(folder / "step-9.pt")
    checkpoints.finish(kept)
    checkpoints.finish(kept)  # twice: nothing to remove, no error
    assert os.listdir(folder) == ["step-9.pt"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"loss": 0.1, "checkpoint": "/x"}', {"loss": 0.1, "checkpoint": "/x"}),
        (b"[1, 2]\n", [1, 2]),
        (b"42", 42),
        (b"", None),
        (b"  \n", None),
    ],
)
def test_the_result_file_is_any_json_value(tmp_path: Path, content: bytes, expected: Any) -> None:
    job = spec()
    Checkpoints(tmp_path).prepare(job, "p")
    assert Checkpoints(tmp_path).read_result(job) is None  # not written: no result
    Path(str(job.result_file)).write_bytes(content)
    assert Checkpoints(tmp_path).read_result(job) == expected


def test_a_result_file_that_is_not_json_or_too_large_is_marked(tmp_path: Path) -> None:
    job = spec()
    checkpoints = Checkpoints(tmp_path)
    checkpoints.prepare(job, "p")
    file = Path(str(job.result_file))
    file.write_text("loss=0.1\n")
    mark = checkpoints.read_result(job)
    assert list(mark) == ["$invalid"]
    assert mark["$invalid"]["error"].startswith("the result file is not valid JSON: ")
    assert mark["$invalid"]["bytes"] == 9 and mark["$invalid"]["head"] == "loss=0.1\n"
    file.write_bytes(b" " * (RESULT_FILE_BYTES + 1))
    assert checkpoints.read_result(job) == {"$oversized": {"bytes": RESULT_FILE_BYTES + 1, "limit": 65536}}


def test_the_bound_marks_a_result_larger_than_the_limit() -> None:
    assert limits.MAX_RESULT_BYTES == 64 * 1024
    small = {"a": "x" * 100}
    assert bounded_result(small) is small and bounded_result(None) is None and bounded_result(3) == 3
    big = {"a": "x" * limits.MAX_RESULT_BYTES}
    size = len(json.dumps(big, separators=(",", ":")))
    assert bounded_result(big) == {"$oversized": {"bytes": size, "limit": limits.MAX_RESULT_BYTES}}
    # The server marks what a client sent over the limit, in every report model, instead of a 422.
    entry = {"id": 1, "attempt": 1, "status": "COMPLETED", "result": big}
    assert Report.model_validate(entry).result == bounded_result(big)
    assert ReportBatch.model_validate_json(json.dumps([entry])).root[0].result == bounded_result(big)
    assert CompleteRequest.model_validate({"attempt": 1, "result": big}).result == bounded_result(big)
    assert Report.model_validate({**entry, "result": small}).result == small


def test_the_docs_quote_the_result_bound() -> None:
    api = (DOCS / "api.md").read_text()
    assert f"| a report's `result` | {limits.MAX_RESULT_BYTES // 1024} KiB of JSON |" in api


# ---------------------------------------------------------------- formatters


def test_slurm_and_runai_pass_the_variables_on_and_fill_upstream_references(tmp_path: Path) -> None:
    job = spec([TRAIN])
    env = Checkpoints(tmp_path / "ck").prepare(job, "p")
    command = "python eval.py --ckpt {upstream.train.result.checkpoint}"
    slurm = SlurmFormatter(command=command, log_dir=tmp_path / "slurm")
    script = slurm.render_script(job, env)
    for key in ("WHATSNEXT_RESULT_FILE", "WHATSNEXT_UPSTREAM", "WHATSNEXT_CHECKPOINT_DIR"):
        assert f"export {key}={shlex.quote(env[key])}\n" in script
    assert script.endswith("\npython eval.py --ckpt /ck/11/best.pt\n")
    runai = RUNAIFormatter(project="team", image="img", command=command)
    submit = runai.render_submit(job, env)
    assert f"WHATSNEXT_RESULT_FILE={env['WHATSNEXT_RESULT_FILE']}" in submit
    assert f"WHATSNEXT_UPSTREAM={env['WHATSNEXT_UPSTREAM']}" in submit
    assert submit[submit.index("--") + 1 :][:4] == ["python", "eval.py", "--ckpt", "/ck/11/best.pt"]
    assert runai.render_k8s_manifest(job, env)["spec"]["template"]["spec"]["containers"][0]["args"][-1] == (
        "/ck/11/best.pt"
    )
    with pytest.raises(FormatError, match="no upstream job is named 'train'"):
        slurm.render_script(spec([PREP]), env)


async def test_a_cluster_job_whose_command_cannot_be_filled_fails_without_retries(tmp_path: Path) -> None:
    command = "python eval.py --ckpt {upstream.train.result.checkpoint}"
    slurm = SlurmFormatter(command=command, log_dir=tmp_path, sbatch=str(tmp_path / "no-sbatch"))
    runai = RUNAIFormatter(project="team", image="img", command=command, runai_bin=str(tmp_path / "no-runai"))
    for fmt in (slurm, runai):
        outcome = await fmt.run(spec([PREP]), RunContext())
        assert outcome.status == "FAILED" and outcome.retryable is False
        assert "no upstream job is named 'train'" in (outcome.error or "")
    assert list(tmp_path.iterdir()) == []  # nothing was written or submitted


async def test_a_python_function_that_declares_upstream_receives_it() -> None:
    seen: list[Any] = []

    def evaluate(split: str, upstream: list[dict[str, Any]]) -> dict[str, Any]:
        seen.append(upstream)
        return {"n": len(upstream)}

    def plain(split: str, **rest: Any) -> None:
        seen.append(rest)

    outcome = await PythonFormatter(evaluate).run(spec([TRAIN]), RunContext())
    assert outcome.status == "COMPLETED" and outcome.result == {"n": 1} and seen == [[TRAIN]]
    outcome = await PythonFormatter(evaluate).run(spec(None), RunContext())
    assert outcome.result == {"n": 0} and seen[-1] == []  # no dependencies: an empty list
    outcome = await PythonFormatter(plain).run(spec([TRAIN]), RunContext())
    assert outcome.status == "COMPLETED" and seen[-1] == {}  # **kwargs does not ask for it
    # A parameter of that name wins.
    job = spec([TRAIN])
    job.parameters["upstream"] = ["mine"]
    await PythonFormatter(evaluate).run(job, RunContext())
    assert seen[-1] == ["mine"]


# ---------------------------------------------------------------- the SDK helpers


def test_write_result_and_upstream_use_the_jobs_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WHATSNEXT_RESULT_FILE", raising=False)
    monkeypatch.delenv("WHATSNEXT_UPSTREAM", raising=False)
    with pytest.raises(RuntimeError, match="WHATSNEXT_RESULT_FILE is not set"):
        write_result({"a": 1})
    assert upstream() == []
    job = spec([TRAIN])
    env = Checkpoints(tmp_path).prepare(job, "p")
    monkeypatch.setenv("WHATSNEXT_RESULT_FILE", env["WHATSNEXT_RESULT_FILE"])
    monkeypatch.setenv("WHATSNEXT_UPSTREAM", env["WHATSNEXT_UPSTREAM"])
    assert upstream() == [TRAIN]
    assert write_result({"accuracy": 0.9}) == Path(env["WHATSNEXT_RESULT_FILE"])
    write_result({"accuracy": 0.95})  # again: replaces it
    assert Checkpoints(tmp_path).read_result(job) == {"accuracy": 0.95}
    with pytest.raises(TypeError):
        write_result({"a": object()})
    assert Checkpoints(tmp_path).read_result(job) == {"accuracy": 0.95}
    assert [p.name for p in Path(env["WHATSNEXT_RESULT_FILE"]).parent.iterdir() if ".tmp" in p.name] == []
