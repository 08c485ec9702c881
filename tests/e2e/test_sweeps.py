"""A sweep as docs/sweeps.md walks through it, with the CLI, a real server and a real worker
process: 20 runs (2 failing on purpose) in group hp1 writing their results, an aggregate that
waits for the whole group to finish and reads the 18 results; the same submission again queues
nothing; `groups retry --failed` reruns just the 2."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from conftest import Api, ServerProcess
from helpers import PYTHON, cli

RUN = """
import json, os, sys
seed = int(sys.argv[1])
if seed in (3, 11) and not os.path.exists(sys.argv[2]):
    sys.exit(1)  # fails on purpose until the flag file exists
with open(os.environ["WHATSNEXT_RESULT_FILE"], "w") as fh:
    json.dump({"loss": 1.0 / (seed + 1), "seed": seed}, fh)
"""

AGGREGATE = """
import json, os
with open(os.environ["WHATSNEXT_UPSTREAM"]) as fh:
    upstream = json.load(fh)
results = [u["result"] for u in upstream if u["status"] == "COMPLETED"]
best = min(results, key=lambda r: r["loss"])
with open(os.environ["WHATSNEXT_RESULT_FILE"], "w") as fh:
    json.dump({"runs": len(upstream), "results": len(results), "best_seed": best["seed"]}, fh)
"""


def run_worker(server: ServerProcess, project: str, tmp_path: Path, log: str) -> int:
    """`whatsnext worker` serving the project until its queue is done; its exit status."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "whatsnext",
            "--server",
            server.url,
            "worker",
            "--project",
            project,
            "--cpus",
            "4",
            "--checkpoint-root",
            str(tmp_path / "jobs"),
        ],
        stdout=(tmp_path / log).open("wb"),
        stderr=subprocess.STDOUT,
        timeout=180,
    )
    return proc.returncode


def sweep(server: ServerProcess, project: str) -> Any:
    seeds = ",".join(str(s) for s in range(20))
    return cli(
        server,
        "jobs",
        "sweep",
        "train",
        "--project",
        project,
        "--grid",
        f"seed={seeds}",
        "--group",
        "hp1",
        "--dedupe",
    )


async def test_a_sweep_with_an_aggregate_dedupe_and_retry_of_the_failed(
    server: ServerProcess, api: Api, project: dict[str, Any], tmp_path: Path
) -> None:
    p = project["name"]
    run, aggregate, flag = tmp_path / "run.py", tmp_path / "aggregate.py", tmp_path / "fixed"
    run.write_text(RUN)
    aggregate.write_text(AGGREGATE)
    out = cli(server, "tasks", "add", "train", "--project", p, "--command", f"{PYTHON} {run} {{seed}} {flag}")
    assert out.returncode == 0, out.stderr
    out = cli(server, "tasks", "add", "aggregate", "--project", p, "--command", f"{PYTHON} {aggregate}")
    assert out.returncode == 0, out.stderr

    out = await asyncio.to_thread(sweep, server, p)
    assert out.returncode == 0, out.stderr
    out = cli(server, "jobs", "add", "aggregate", "--project", p, "--depends-group", "hp1:finished", "--json")
    assert out.returncode == 0, out.stderr
    agg_id = json.loads(out.stdout)["id"]

    assert await asyncio.to_thread(run_worker, server, p, tmp_path, "worker1.log") == 0

    members = (await api.ok("GET", f"/projects/{p}/jobs?group=hp1&limit=100"))["jobs"]
    assert len(members) == 20
    by_seed = {m["parameters"]["seed"]: m for m in members}
    failed = sorted(by_seed[s]["id"] for s in (3, 11))
    assert sorted(m["id"] for m in members if m["status"] == "FAILED") == failed
    assert sum(m["status"] == "COMPLETED" for m in members) == 18
    agg = await api.ok("GET", f"/jobs/{agg_id}")
    assert agg["status"] == "COMPLETED" and agg["attempt"] == 1, agg
    assert agg["result"] == {"runs": 20, "results": 18, "best_seed": 19}
    finished = [datetime.fromisoformat(m["finished_at"]) for m in members]
    assert datetime.fromisoformat(agg["started_at"]) >= max(finished)
    # The results and upstream.json went through the jobs' directories, which then went too.
    assert os.listdir(tmp_path / "jobs" / p) == []

    # The same submission again (a notebook cell run twice) queues nothing.
    out = await asyncio.to_thread(sweep, server, p)
    assert out.returncode == 0, out.stderr
    assert len((await api.ok("GET", f"/projects/{p}/jobs?limit=100"))["jobs"]) == 21

    # Rerun just what failed, once it is fixed; the aggregate is left as it ran.
    flag.touch()
    out = cli(server, "groups", "retry", "hp1", "--project", p, "--failed", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["ids"]) == failed
    assert await asyncio.to_thread(run_worker, server, p, tmp_path, "worker2.log") == 0
    members = (await api.ok("GET", f"/projects/{p}/jobs?group=hp1&limit=100"))["jobs"]
    assert all(m["status"] == "COMPLETED" for m in members)
    assert {m["id"]: m["attempt"] for m in members if m["attempt"] > 1} == dict.fromkeys(failed, 2)
    assert (await api.ok("GET", f"/jobs/{agg_id}"))["attempt"] == 1


def sdk_walkthrough(url: str, name: str, tmp_path: Path) -> dict[str, Any]:
    """docs/sweeps.md's Python version, as written there (paths and the connection aside)."""
    from whatsnext.api.client import Client, Job, Server

    run, aggregate, flag = tmp_path / "run.py", tmp_path / "aggregate.py", tmp_path / "fixed"
    project = Server(url).get_project(name)
    project.create_task("train", command=f"{PYTHON} {run} {{seed}} {flag}", exist_ok=True)
    project.create_task("aggregate", command=f"{PYTHON} {aggregate}", exist_ok=True)

    runs = project.sweep("train", {"seed": list(range(20))}, group="hp1", dedupe=True)
    agg = project.append_queue(Job("aggregate", "aggregate", depends_group=("hp1", "finished")))

    Client("train", "laptop", project, checkpoint_root=tmp_path / "jobs").work()
    agg.wait()
    first = {"status": agg.status, "result": agg.result, "runs": [j.id for j in runs]}

    again = project.sweep("train", {"seed": list(range(20))}, group="hp1", dedupe=True)
    flag.touch()
    retried = project.retry_group("hp1", failed=True)
    Client("train", "laptop", project, checkpoint_root=tmp_path / "jobs").work()
    return {**first, "again": [(j.id, j.existing) for j in again], "retried": retried}


async def test_the_sweep_with_the_sdk(
    server: ServerProcess, api: Api, project: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "run.py").write_text(RUN)
    (tmp_path / "aggregate.py").write_text(AGGREGATE)
    out = await asyncio.to_thread(sdk_walkthrough, server.url, project["name"], tmp_path)
    assert out["status"] == "COMPLETED"
    assert out["result"] == {"runs": 20, "results": 18, "best_seed": 19}
    assert out["again"] == [(job_id, True) for job_id in out["runs"]]
    assert sorted(out["retried"]["ids"]) == sorted(out["runs"][s] for s in (3, 11))
    jobs = (await api.ok("GET", f"/projects/{project['name']}/jobs?limit=100"))["jobs"]
    assert len(jobs) == 21 and all(j["status"] == "COMPLETED" for j in jobs)
