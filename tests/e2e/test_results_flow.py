"""Results that flow downstream, with a real server and a real worker process running shell jobs:
a job's result file becomes its result (whatever the outcome), a dependent job gets its upstream
results in ``WHATSNEXT_UPSTREAM`` and in ``{upstream.NAME...}`` of its command, an oversized result
is marked and an invalid one too, never failing the job; a reference to an unknown upstream job
fails that job, not the worker. The server marks an oversized result any client reports, and a
claim hands out ``upstream``."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import Api, ServerProcess
from helpers import PYTHON

from whatsnext.limits import MAX_RESULT_BYTES

REPO = Path(__file__).resolve().parents[2]

# Reads what the upstream jobs left with the SDK and reports it, with its argument, as its result.
EVALUATE = """\
import os, sys
from whatsnext.api.client import upstream, write_result

write_result({"ckpt": sys.argv[1], "upstream": upstream(), "file": os.environ["WHATSNEXT_UPSTREAM"]})
"""


async def _task(api: Api, project: str, name: str, command: str, **extra: Any) -> None:
    await api.ok(
        "POST", "/tasks/", {"name": name, "project_id": project, "command": command, "shell": True, **extra}
    )


def _worker(server: ServerProcess, project: str, root: Path, log: Path) -> subprocess.CompletedProcess[bytes]:
    """A `whatsnext worker` process running the tasks' commands, until nothing is left for it."""
    argv = [sys.executable, "-m", "whatsnext", "--server", server.url, "worker", "--project", project]
    argv += ["--cpus", "2", "--gpus", "none", "--checkpoint-root", str(root)]
    with log.open("wb") as out:
        return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, timeout=180, check=False)


async def test_results_flow_from_a_shell_job_to_the_jobs_that_depend_on_it(
    server: ServerProcess, api: Api, project: dict[str, Any], tmp_path: Path
) -> None:
    p = project["name"]
    script = tmp_path / "evaluate.py"
    script.write_text(EVALUATE)
    py = shlex.quote(PYTHON)
    # A template writes a literal brace doubled: {{ and }}.
    to_file = '> "$WHATSNEXT_RESULT_FILE"'
    await _task(api, p, "fit", f"""printf '{{{{"loss": 0.1, "checkpoint": "/x"}}}}' {to_file}""")
    await _task(api, p, "evaluate", f"{py} {shlex.quote(str(script))} {{upstream.train.result.checkpoint}}")
    write = 'import json, os; json.dump({{"a": "x" * 70000}}, open(os.environ["WHATSNEXT_RESULT_FILE"], "w"))'
    await _task(api, p, "big", f"{py} -c {shlex.quote(write)}")
    await _task(api, p, "garbled", f"echo 'loss=0.1' {to_file}")
    await _task(api, p, "partial", f"""echo '{{{{"step": 3}}}}' {to_file}; exit 3""", max_attempts=1)
    await _task(api, p, "typo", "echo {upstream.trian.result.checkpoint}")
    jobs = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        [
            {"name": "train", "task": "fit"},
            {"name": "eval", "task": "evaluate", "depends": ["train"]},
            {"name": "big", "task": "big"},
            {"name": "garbled", "task": "garbled"},
            {"name": "partial", "task": "partial"},
            {"name": "typo", "task": "typo", "depends": ["train"]},
        ],
    )
    ids = dict(zip(["train", "eval", "big", "garbled", "partial", "typo"], jobs["ids"], strict=True))
    log = tmp_path / "worker.log"
    done = await asyncio.to_thread(_worker, server, p, tmp_path / "ck", log)
    assert done.returncode == 0, log.read_text()

    async def job(name: str) -> dict[str, Any]:
        return await api.ok("GET", f"/jobs/{ids[name]}")

    train = await job("train")
    assert train["status"] == "COMPLETED" and train["result"] == {"loss": 0.1, "checkpoint": "/x"}

    # The dependent job: its command rendered the upstream's result, and its upstream file (read
    # with the SDK) holds what train left; it reported its own result with the SDK.
    evaluated = await job("eval")
    assert evaluated["status"] == "COMPLETED", evaluated
    folder = tmp_path / "ck" / p / str(ids["eval"])
    assert evaluated["result"] == {
        "ckpt": "/x",
        "file": str(folder / "upstream.json"),
        "upstream": [
            {
                "id": ids["train"],
                "name": "train",
                "task": "fit",
                "status": "COMPLETED",
                "result": {"loss": 0.1, "checkpoint": "/x"},
                "artifacts": [],
            }
        ],
    }
    # A job without dependencies gets no upstream file.
    assert not (tmp_path / "ck" / p / str(ids["train"]) / "upstream.json").exists()

    big_job = await job("big")
    size = len('{"a":""}') + 70000
    assert big_job["status"] == "COMPLETED"
    assert big_job["result"] == {"$oversized": {"bytes": size, "limit": MAX_RESULT_BYTES}}

    garbled = await job("garbled")
    assert garbled["status"] == "COMPLETED"
    assert garbled["result"]["$invalid"]["head"] == "loss=0.1\n"
    assert garbled["result"]["$invalid"]["error"].startswith("the result file is not valid JSON")
    assert "the job's result file is not valid JSON" in log.read_text()

    partial = await job("partial")  # a failed attempt reports its result too
    assert partial["status"] == "FAILED" and partial["exit_code"] == 3 and partial["result"] == {"step": 3}

    typo = await job("typo")  # the job fails at once, naming what is missing; the worker went on
    assert typo["status"] == "FAILED" and typo["attempts_used"] == 1
    assert "no upstream job is named 'trian' (its upstream jobs: 'train')" in typo["error"]


async def test_the_server_marks_an_oversized_result_and_a_claim_hands_out_upstream(
    api: Api, project: dict[str, Any]
) -> None:
    p = project["name"]
    jobs = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        [{"name": "a", "task": "t"}, {"name": "b", "task": "t", "depends": ["a"]}],
    )
    a, b = jobs["ids"]
    claim = {"worker_name": "w", "free_cpu": 1, "max_jobs": 10}
    (first,) = (await api.ok("POST", f"/projects/{p}/claim", claim))["jobs"]
    assert first["id"] == a and first["upstream"] is None
    big = {"values": list(range(20_000))}
    answer = await api.ok(
        "POST",
        "/jobs/reports",
        [{"id": a, "attempt": first["attempt"], "status": "COMPLETED", "result": big}],
    )
    assert answer["results"][0]["code"] == 200  # marked, not refused
    size = len(str(big["values"]).replace(" ", "")) + len('{"values":}')
    mark = {"$oversized": {"bytes": size, "limit": MAX_RESULT_BYTES}}
    assert (await api.ok("GET", f"/jobs/{a}"))["result"] == mark
    (second,) = (await api.ok("POST", f"/projects/{p}/claim", claim))["jobs"]
    assert second["id"] == b
    assert second["upstream"] == [
        {"id": a, "name": "a", "task": "t", "status": "COMPLETED", "result": mark, "artifacts": []}
    ]
