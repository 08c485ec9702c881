"""Artifacts: the routes over HTTP, the worker's scanner on real files, and real workers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, ServerProcess
from helpers import PYTHON, cli, running_job

from whatsnext.api.client import AsyncServer, Client, CLIFormatter, JobSpec, RunContext
from whatsnext.api.client.artifacts import (
    Artifact,
    ArtifactRecorder,
    collect,
    local_path,
    render_template,
    scan,
)
from whatsnext.api.client.formatters.base import FormatError
from whatsnext.api.client.http import Http
from whatsnext.api.client.joblogs import find_artifacts, job_artifacts

SHA_A = hashlib.sha256(b"a").hexdigest()


def art(direction: str, uri: str, **extra: Any) -> dict[str, Any]:
    return {"direction": direction, "uri": uri, **extra}


# ---------------------------------------------------------------- routes


async def test_record_and_list_a_jobs_artifacts(api: Api, project: dict) -> None:
    job = await running_job(api, project)
    jid = job["id"]
    assert await api.ok("GET", f"/jobs/{jid}/artifacts") == {"artifacts": []}
    when = "2024-05-01T12:00:00+00:00"
    out = await api.ok(
        "POST",
        f"/jobs/{jid}/artifacts?attempt=1",
        [
            art("in", "/data/in.csv", size=10, sha256=SHA_A, modified_at=when),
            art("out", "file:///results/model.pt", size=5),
            art("out", "s3://bucket/key"),
            art("out", "/results/missing.txt", missing=True),
        ],
    )
    assert out == {"id": jid, "status": "RUNNING", "recorded": 4}
    listed = (await api.ok("GET", f"/jobs/{jid}/artifacts"))["artifacts"]
    assert [(a["direction"], a["uri"]) for a in listed] == [
        ("in", "/data/in.csv"),
        ("out", "/results/model.pt"),  # file:// URIs are stored as the path they name
        ("out", "s3://bucket/key"),
        ("out", "/results/missing.txt"),
    ]
    first = listed[0]
    assert first["size"] == 10 and first["sha256"] == SHA_A and first["missing"] is False
    assert datetime.fromisoformat(first["modified_at"]) == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert listed[2]["size"] is None and listed[3]["missing"] is True
    # Recording the same (direction, uri) again refreshes it; the last of duplicates in a batch wins.
    await api.ok(
        "POST",
        f"/jobs/{jid}/artifacts",
        [art("out", "/results/model.pt", size=6), art("out", "/results/model.pt", size=7)],
    )
    again = (await api.ok("GET", f"/jobs/{jid}/artifacts"))["artifacts"]
    assert len(again) == 4
    model = next(a for a in again if a["uri"] == "/results/model.pt")
    assert model["size"] == 7 and model["id"] == listed[1]["id"]
    assert model["recorded_at"] >= listed[1]["recorded_at"]
    assert (await api.ok("POST", f"/jobs/{jid}/artifacts", []))["recorded"] == 0


async def test_record_refuses_stale_attempts_unknown_jobs_and_bad_entries(api: Api, project: dict) -> None:
    job = await running_job(api, project)
    jid = job["id"]
    status, body = await api.post(f"/jobs/{jid}/artifacts?attempt=2", [art("out", "/x")])
    assert status == 409 and body["error"]["code"] == "stale_attempt"
    assert body["error"]["details"]["field"] == "attempt"
    status, body = await api.post("/jobs/987654321/artifacts", [art("out", "/x")])
    assert status == 404 and body["error"]["details"]["field"] == "job_id"
    status, body = await api.get("/jobs/987654321/artifacts")
    assert status == 404
    for bad, field in [
        ([art("sideways", "/x")], "0.direction"),
        ([art("out", "")], "0.uri"),
        ([art("out", "/x" * 3000)], "0.uri"),
        ([art("out", "/x", size=-1)], "0.size"),
        ([art("out", "/x", sha256="abc")], "0.sha256"),
        ([art("out", "/x", modified_at="yesterday")], "0.modified_at"),
        ([art("out", "/x", colour="red")], "0.colour"),
        ({"direction": "out", "uri": "/x"}, "body"),
    ]:
        status, body = await api.post(f"/jobs/{jid}/artifacts", bad)
        assert status == 422, (bad, body)
        assert body["error"]["details"][0]["field"] == field, body
    status, body = await api.post(f"/jobs/{jid}/artifacts?attempt=zero", [art("out", "/x")])
    assert status == 422 and body["error"]["details"]["field"] == "attempt"
    assert (await api.ok("GET", f"/jobs/{jid}/artifacts"))["artifacts"] == []


async def test_find_the_jobs_that_produced_a_file(api: Api, project: dict) -> None:
    p = project["name"]
    first = await running_job(api, project, "first")
    second = await running_job(api, project, "second")
    reader = await running_job(api, project, "reader")
    await api.ok("POST", f"/jobs/{first['id']}/artifacts", [art("out", "/shared/out.csv", size=1)])
    await api.ok("POST", f"/jobs/{second['id']}/artifacts", [art("out", "/shared/out.csv", size=2)])
    await api.ok("POST", f"/jobs/{reader['id']}/artifacts", [art("in", "/shared/out.csv", size=2)])
    found = (await api.ok("GET", f"/projects/{p}/artifacts?uri=/shared/out.csv"))["artifacts"]
    assert [(a["job_id"], a["job_name"], a["size"]) for a in found] == [
        (second["id"], "second", 2),
        (first["id"], "first", 1),
    ]
    assert found[0]["task"] == "t" and found[0]["job_status"] == "RUNNING"
    by_url = await api.ok("GET", f"/projects/{project['id']}/artifacts?uri=file:///shared/out.csv")
    assert [a["job_id"] for a in by_url["artifacts"]] == [second["id"], first["id"]]
    readers = await api.ok("GET", f"/projects/{p}/artifacts?uri=/shared/out.csv&direction=in")
    assert [a["job_id"] for a in readers["artifacts"]] == [reader["id"]]
    both = await api.ok("GET", f"/projects/{p}/artifacts?uri=/shared/out.csv&direction=any")
    assert len(both["artifacts"]) == 3
    newest = await api.ok("GET", f"/projects/{p}/artifacts?uri=/shared/out.csv&limit=1")
    assert [a["job_id"] for a in newest["artifacts"]] == [second["id"]]
    assert (await api.ok("GET", f"/projects/{p}/artifacts?uri=/nothing"))["artifacts"] == []
    # Without ?uri=: the project's latest artifacts, a page at a time.
    page = await api.ok("GET", f"/projects/{p}/artifacts?limit=2")
    assert [a["job_id"] for a in page["artifacts"]] == [reader["id"], second["id"]]
    rest = await api.ok("GET", f"/projects/{p}/artifacts?limit=2&before={page['next_before']}")
    assert [a["job_id"] for a in rest["artifacts"]] == [first["id"]] and rest["next_before"] is None
    status, body = await api.get(f"/projects/{p}/artifacts?uri=/x&direction=up")
    assert status == 422 and body["error"]["details"]["field"] == "direction"
    status, body = await api.get("/projects/no-such-project-here/artifacts?uri=/x")
    assert status == 404


# ---------------------------------------------------------------- the worker's scanner


def spec(job_id: int = 7, attempt: int = 1, **parameters: Any) -> JobSpec:
    return JobSpec(id=job_id, name="train-a", task="train", parameters=parameters, attempt=attempt)


def test_render_templates() -> None:
    assert render_template("out/{name}-{lr}.pt", {"name": "a", "lr": 0.1}) == "out/a-0.1.pt"
    extra = {"job_id": 7, "attempt": 2}
    assert render_template("{job_id}/{attempt}/{{literal}}", {}, extra) == "7/2/{literal}"
    assert render_template("{job_id}", {"job_id": "mine"}, extra) == "mine"  # parameters first
    with pytest.raises(FormatError, match="missing parameter 'nope'"):
        render_template("out/{nope}", {})
    with pytest.raises(FormatError, match="bad template"):
        render_template("out/{", {})


def test_local_paths(tmp_path: Path) -> None:
    cwd = str(tmp_path)
    assert local_path("a/b.txt", cwd) == str(tmp_path / "a" / "b.txt")
    assert local_path("/abs/../x.txt", cwd) == "/x.txt"
    assert local_path("file:///data/my%20file.csv", cwd) == "/data/my file.csv"
    assert local_path("file://localhost/data/x", cwd) == "/data/x"
    assert local_path("~/x", cwd) == os.path.expanduser("~/x")
    for remote in ("s3://bucket/key", "https://example.org/x", "file://otherhost/x"):
        assert local_path(remote, cwd) is None


def test_scan_files_directories_globs_and_missing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"a")
    os.utime(tmp_path / "a.txt", (1_700_000_000, 1_700_000_000))
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "one").write_bytes(b"12345")
    (tmp_path / "d" / "sub" / "two").write_bytes(b"123")
    (tmp_path / "r1.csv").write_text("x")
    (tmp_path / "r2.csv").write_text("yy")
    cwd = str(tmp_path)
    [a] = scan("out", "a.txt", cwd)
    assert a == Artifact(
        "out",
        str(tmp_path / "a.txt"),
        size=1,
        sha256=SHA_A,
        modified_at=datetime.fromtimestamp(1_700_000_000, UTC),
    )
    [d] = scan("out", "d", cwd)
    assert d.size == 8 and d.sha256 is None and not d.missing
    assert [(x.uri, x.size) for x in scan("out", "r*.csv", cwd)] == [
        (str(tmp_path / "r1.csv"), 1),
        (str(tmp_path / "r2.csv"), 2),
    ]
    assert scan("out", "z*.csv", cwd) == [Artifact("out", str(tmp_path / "z*.csv"), missing=True)]
    assert scan("in", "gone.txt", cwd) == [Artifact("in", str(tmp_path / "gone.txt"), missing=True)]
    assert scan("in", "s3://b/k", cwd) == [Artifact("in", "s3://b/k")]
    [big] = scan("out", "a.txt", cwd, hash_max_bytes=0)
    assert big.size == 1 and big.sha256 is None


def test_collect_renders_every_declared_path(tmp_path: Path) -> None:
    (tmp_path / "in-x.csv").write_text("data")
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "model-0.1.pt").write_text("weights")
    found = collect(
        spec(lr=0.1, name="x"),
        inputs=["in-{name}.csv"],
        outputs=["{job_id}/model-{lr}.pt", "{job_id}/log-{missing_param}.txt", "never-{name}.txt"],
        cwd=str(tmp_path),
    )
    assert [(a.direction, a.uri, a.missing) for a in found] == [
        ("in", str(tmp_path / "in-x.csv"), False),
        ("out", str(tmp_path / "7" / "model-0.1.pt"), False),
        ("out", "{job_id}/log-{missing_param}.txt", True),
        ("out", str(tmp_path / "never-x.txt"), True),
    ]
    assert found[1].sha256 == hashlib.sha256(b"weights").hexdigest()


async def test_recorder_posts_what_it_found(
    api: Api, server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    job = await running_job(api, project)
    (tmp_path / "result.json").write_text("{}")
    lines: list[str] = []
    ctx = RunContext(on_output=lines.append, cwd=str(tmp_path))
    http = Http(server.url)
    try:
        recorder = ArtifactRecorder(http)
        job_spec = spec(job["id"], job["attempt"], run="r1")
        found = await recorder.record(job_spec, ctx, inputs=[], outputs=["result.json", "{run}/missing.bin"])
        assert [a.missing for a in found] == [False, True]
        assert lines == [f"[whatsnext] declared output missing: {tmp_path / 'r1' / 'missing.bin'}"]
        recorded = await job_artifacts(http, job["id"])
        assert [(a["uri"], a["size"], a["missing"]) for a in recorded] == [
            (str(tmp_path / "result.json"), 2, False),
            (str(tmp_path / "r1" / "missing.bin"), None, True),
        ]
        producers = await find_artifacts(http, project["name"], str(tmp_path / "result.json"))
        assert [p["job_id"] for p in producers] == [job["id"]]
        assert await recorder.record(job_spec, ctx, inputs=[], outputs=[]) == []
        # A stale attempt is refused by the server: nothing changes, nothing is raised.
        assert not await recorder.post(job["id"], job["attempt"] + 1, [Artifact("out", "/stale")])
        assert len(await job_artifacts(http, job["id"])) == 2
    finally:
        await http.close()


async def test_recorder_gives_up_on_an_unreachable_server(tmp_path: Path) -> None:
    http = Http("http://127.0.0.1:1")
    try:
        recorder = ArtifactRecorder(http, retries=1)
        assert not await recorder.post(1, 1, [Artifact("out", "/x")])
    finally:
        await http.close()


# ---------------------------------------------------------------- real workers


WRITE = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"


async def test_worker_records_declared_outputs(
    api: Api, server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    p = project["name"]
    await api.ok(
        "POST",
        "/tasks/",
        {"name": "write", "project_id": p, "inputs": ["{src}"], "outputs": [str(tmp_path / "{name}.txt")]},
    )
    (tmp_path / "src.txt").write_text("source")
    made = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {
            "name": "w1",
            "task": "write",
            "parameters": {"name": "one", "text": "hello", "src": str(tmp_path / "src.txt")},
        },
    )
    own = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {
            "name": "w2",
            "task": "write",
            "parameters": {"name": "two", "text": "hi"},
            "inputs": [],
            "outputs": [str(tmp_path / "{name}.txt"), str(tmp_path / "{name}.extra")],
        },
    )
    shown = await api.ok("GET", f"/jobs/{made['id']}")
    assert shown["inputs"] == ["{src}"] and shown["outputs"] == [str(tmp_path / "{name}.txt")]
    fmt = CLIFormatter(template=f"{PYTHON} -c '{WRITE}' {tmp_path}/{{name}}.txt {{text}}")
    srv = AsyncServer(server.url)
    try:
        # The files lie outside this process's working directory: the operator allows them.
        worker = Client("t", "arts", await srv.get_project(p), fmt, artifact_roots=[str(tmp_path)])
        summary = await asyncio.wait_for(worker.work_async(), 60)
    finally:
        await srv.close()
    assert summary.completed == 2
    one = (await api.ok("GET", f"/jobs/{made['id']}/artifacts"))["artifacts"]
    assert [(a["direction"], a["uri"], a["size"], a["missing"]) for a in one] == [
        ("in", str(tmp_path / "src.txt"), 6, False),
        ("out", str(tmp_path / "one.txt"), 5, False),
    ]
    assert one[1]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    two = (await api.ok("GET", f"/jobs/{own['id']}/artifacts"))["artifacts"]
    assert [(a["uri"], a["missing"]) for a in two] == [
        (str(tmp_path / "two.txt"), False),
        (str(tmp_path / "two.extra"), True),
    ]
    logs = await api.ok("GET", f"/jobs/{own['id']}/logs")
    assert f"[whatsnext] declared output missing: {tmp_path / 'two.extra'}" in [
        x["line"] for x in logs["lines"]
    ]
    found = await api.ok("GET", f"/projects/{p}/artifacts?uri={tmp_path / 'one.txt'}")
    assert [a["job_id"] for a in found["artifacts"]] == [made["id"]]


async def test_cli_artifacts(api: Api, server: ServerProcess, project: dict, tmp_path: Path) -> None:
    job = await running_job(api, project)
    jid = str(job["id"])
    out = str(tmp_path / "out.bin")
    await api.ok(
        "POST",
        f"/jobs/{jid}/artifacts",
        [art("out", out, size=2048, sha256=SHA_A), art("in", "/gone", missing=True)],
    )
    r = await asyncio.to_thread(cli, server, "jobs", "artifacts", jid)
    assert r.returncode == 0, r.stderr
    assert (
        "out.bin" in r.stdout and "2.0 KiB" in r.stdout and SHA_A[:12] in r.stdout and "MISSING" in r.stdout
    )
    r = await asyncio.to_thread(cli, server, "jobs", "artifacts", jid, "--json")
    assert {a["uri"] for a in json.loads(r.stdout)["artifacts"]} == {out, "/gone"}
    r = await asyncio.to_thread(
        cli, server, "artifacts", "find", "out.bin", "--project", project["name"], "--json", cwd=tmp_path
    )
    assert [a["job_id"] for a in json.loads(r.stdout)["artifacts"]] == [job["id"]], r.stderr
    r = await asyncio.to_thread(cli, server, "jobs", "artifacts", "987654321")
    assert r.returncode == 4 and "not found" in r.stderr


# ---------------------------------------------------------------- what the worker may open


def test_only_regular_files_under_the_roots_are_opened(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "ok.txt").write_bytes(b"a")
    os.mkfifo(work / "fifo")
    (work / "to-passwd").symlink_to("/etc/passwd")
    (work / "to-ok").symlink_to(work / "ok.txt")
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.bin").write_bytes(b"a")
    found = collect(
        spec(),
        inputs=[],
        outputs=[
            "ok.txt",
            "to-ok",
            "fifo",
            "/dev/zero",
            "/etc/shadow",
            "to-passwd",
            "sub/../../other/data.bin",
            "/etc/*sswd",
        ],
        cwd=str(work),
    )
    by_uri = {a.uri: a for a in found}
    assert by_uri[str(work / "ok.txt")].sha256 == SHA_A
    assert by_uri[str(work / "to-ok")].sha256 == SHA_A  # a link that stays inside is followed
    refused = {a.uri: a.reason for a in found if a.refused}
    assert refused == {
        str(work / "fifo"): "refused: a FIFO, not a regular file",
        "/dev/zero": "refused: outside the job's working directory and the worker's artifact roots",
        "/etc/shadow": "refused: outside the job's working directory and the worker's artifact roots",
        str(work / "to-passwd"): "refused: it resolves to /etc/passwd, outside the job's working "
        "directory and the worker's artifact roots",
        str(
            other / "data.bin"
        ): "refused: outside the job's working directory and the worker's artifact roots",
        "/etc/passwd": "refused: outside the job's working directory and the worker's artifact roots",
    }
    for a in found:
        if a.refused:
            assert a.size is None and a.sha256 is None and a.modified_at is None and not a.missing
    # An operator's root admits more; devices stay refused even inside a root.
    again = collect(spec(), [], ["/dev/zero", str(other / "data.bin")], str(work), roots=["/dev", str(other)])
    assert [(a.refused, a.reason, a.sha256) for a in again] == [
        (True, "refused: a character device, not a regular file", None),
        (False, None, SHA_A),
    ]


def test_the_hashing_budget_is_per_job(tmp_path: Path) -> None:
    for name in ("one", "two", "three"):
        (tmp_path / name).write_bytes(b"x" * 100)
    found = collect(spec(), [], ["one", "two", "three"], str(tmp_path), hash_max_bytes=250)
    assert [a.sha256 is not None for a in found] == [True, True, False]
    assert [a.size for a in found] == [100, 100, 100]
    assert found[2].reason == (
        "not hashed: 100 bytes is more than is left of the job's hashing budget (50 of 250 bytes)"
    )
    timed = collect(spec(), [], ["one", "."], str(tmp_path), hash_max_seconds=0)
    assert timed[0].size == 100 and timed[0].sha256 is None
    assert timed[0].reason == "not hashed: the job's hashing time budget (0 s) ran out"
    assert timed[1].size is None and timed[1].reason is not None and "time budget" in timed[1].reason


async def test_a_worker_refuses_devices_fifos_and_files_outside_its_roots(
    api: Api, server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    p = project["name"]
    work = tmp_path / "work"
    work.mkdir()
    os.mkfifo(work / "fifo")
    extra = tmp_path / "extra"
    extra.mkdir()
    outputs = ["/dev/zero", "fifo", "/etc/shadow", "result.txt", str(extra / "copy.txt")]
    made = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "hostile-outputs", "task": "t", "parameters": {"text": "done"}, "outputs": outputs},
    )
    code = f"import pathlib; [pathlib.Path(p).write_text('done') for p in ('result.txt', {str(extra / 'copy.txt')!r})]"
    root = str(Path(__file__).resolve().parents[2])
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "whatsnext",
            "worker",
            "--project",
            p,
            "--command",
            f"{PYTHON} -c {shlex.quote(code)}",
            "--artifact-root",
            str(extra),
        ],
        cwd=work,
        env={**os.environ, "WHATSNEXT_SERVER": server.url, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    job = await api.ok("GET", f"/jobs/{made['id']}")
    assert job["status"] == "COMPLETED", job
    listed = {a["uri"]: a for a in (await api.ok("GET", f"/jobs/{made['id']}/artifacts"))["artifacts"]}
    assert listed[str(work / "result.txt")]["sha256"] == hashlib.sha256(b"done").hexdigest()
    assert listed[str(extra / "copy.txt")]["size"] == 4
    reasons = {
        "/dev/zero": "refused: outside the job's working directory and the worker's artifact roots",
        str(work / "fifo"): "refused: a FIFO, not a regular file",
        "/etc/shadow": "refused: outside the job's working directory and the worker's artifact roots",
    }
    for uri, reason in reasons.items():
        entry = listed[uri]
        assert entry["size"] is None and entry["sha256"] is None and entry["missing"] is False, entry
        assert entry["refused"] is True and entry["reason"] == reason, entry
    lines = [x["line"] for x in (await api.ok("GET", f"/jobs/{made['id']}/logs"))["lines"]]
    for uri, reason in reasons.items():
        assert f"[whatsnext] artifact {uri}: {reason}" in lines
