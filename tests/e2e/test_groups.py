"""Sweeps and named batches are groups: progress counts, cancel and retry as one, and `jobs ls`
filters (group, several statuses, name pattern, parameters), chosen columns and --watch."""

from __future__ import annotations

import json
from typing import Any

from helpers import PYTHON, RECORD, cli


def _srv(api: Any) -> Any:
    class _S:
        url = api.base

    return _S()


async def test_named_batch_and_group_progress(api: Any, project: dict[str, Any]) -> None:
    p = project["name"]
    out = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        {
            "group": "sweep-1",
            "jobs": [{"name": f"t{i}", "task": "train", "parameters": {"lr": i}} for i in range(3)],
        },
    )
    assert out["group"] == "sweep-1" and out["count"] == 3
    assert [t["name"] for t in out["created_tasks"]] == ["train"]
    # A bare list still works, and a job may name its own group.
    await api.ok("POST", f"/projects/{p}/jobs/batch", [{"name": "other", "task": "train", "group": "adhoc"}])
    job = await api.ok("GET", f"/jobs/{out['ids'][0]}")
    assert job["group"] == "sweep-1" and job["group_id"] == out["group_id"]
    groups = (await api.ok("GET", f"/projects/{p}/groups"))["groups"]
    assert [(g["name"], g["total"]) for g in groups] == [("adhoc", 1), ("sweep-1", 3)]
    # Progress: one job runs, one completes.
    claim = await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "w", "max_jobs": 2, "free_cpu": 2})
    first = claim["jobs"][0]
    await api.ok("POST", f"/jobs/{first['id']}/complete", {"attempt": first["attempt"]})
    g = await api.ok("GET", f"/projects/{p}/groups/sweep-1")
    assert g["total"] == 3 and g["finished"] == 1
    assert g["counts"] == {"COMPLETED": 1, "RUNNING": 1, "PENDING": 1}
    by_id = await api.ok("GET", f"/projects/{p}/groups/{g['id']}")
    assert by_id["name"] == "sweep-1"
    status, body = await api.get(f"/projects/{p}/groups/nope")
    assert status == 404 and body["error"]["details"]["field"] == "group"

    # Cancel the group: the pending one at once, the running one through its worker.
    cancelled = await api.ok("POST", f"/projects/{p}/groups/sweep-1/cancel")
    assert cancelled["count"] == 2
    second = claim["jobs"][1]
    await api.ok("POST", f"/jobs/{second['id']}/fail", {"attempt": second["attempt"], "error": "stopped"})
    g = await api.ok("GET", f"/projects/{p}/groups/sweep-1")
    assert g["finished"] == 3 and g["counts"].get("COMPLETED") == 1
    # Retry puts the failed and cancelled ones back; the other group is untouched.
    retried = await api.ok("POST", f"/projects/{p}/groups/sweep-1/retry")
    assert retried["count"] == 2
    g = await api.ok("GET", f"/projects/{p}/groups/sweep-1")
    assert g["counts"] == {"COMPLETED": 1, "PENDING": 2}
    adhoc = await api.ok("GET", f"/projects/{p}/groups/adhoc")
    assert adhoc["counts"] == {"PENDING": 1}


async def test_jobs_ls_filters(api: Any, project: dict[str, Any]) -> None:
    p = project["name"]
    await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        {
            "group": "grid",
            "jobs": [
                {"name": f"train[lr={lr},bs={bs}]", "task": "train", "parameters": {"lr": lr, "bs": bs}}
                for lr in (0.1, 0.01)
                for bs in (32, 64)
            ],
        },
    )
    await api.ok("POST", f"/projects/{p}/jobs", {"name": "prep_1", "task": "prepare"})
    q = f"/projects/{p}/jobs"
    names = lambda d: sorted(j["name"] for j in d["jobs"])  # noqa: E731
    assert len((await api.ok("GET", f"{q}?group=grid"))["jobs"]) == 4
    got = await api.ok("GET", f"{q}?where=" + json.dumps({"lr": 0.1}))
    assert names(got) == ["train[lr=0.1,bs=32]", "train[lr=0.1,bs=64]"]
    got = await api.ok("GET", f"{q}?name=train*bs=64*")
    assert names(got) == ["train[lr=0.01,bs=64]", "train[lr=0.1,bs=64]"]
    assert names(await api.ok("GET", f"{q}?name=prep_1")) == ["prep_1"]
    assert names(await api.ok("GET", f"{q}?name=prep%1")) == []  # % and _ are literal
    claim = await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "w", "max_jobs": 1})
    got = await api.ok("GET", f"{q}?status=running,completed")
    assert [j["id"] for j in got["jobs"]] == [claim["jobs"][0]["id"]]
    status, body = await api.get(f"{q}?status=running,done")
    assert status == 422 and body["error"]["details"]["field"] == "status"
    status, body = await api.get(f"{q}?where=[1]")
    assert status == 422 and body["error"]["details"]["field"] == "where"


async def test_cli_sweep_groups_and_watch(api: Any, project: dict[str, Any], tmp_path: Any) -> None:
    srv, p = _srv(api), project["name"]
    made = cli(
        srv, "tasks", "add", "train", "--project", p, "--command",
        f"{PYTHON} {RECORD} --out {tmp_path} --lr {{lr}} --bs {{bs}}",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    swept = cli(
        srv, "jobs", "sweep", "train", "--project", p, "--grid", "lr=0.1,0.01", "--grid", "bs=32,64",
        "--group", "sweep-a",
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert "queued 4 jobs in group sweep-a" in swept.stdout and "new task" not in swept.stderr
    ls = cli(srv, "groups", "ls", "--project", p)
    assert "sweep-a" in ls.stdout and "0/4" in ls.stdout
    worked = cli(srv, "worker", "--project", p, "--cpus", "4", "--gpus", "none")
    assert worked.returncode == 0, worked.stderr
    shown = cli(srv, "groups", "show", "sweep-a", "--project", p)
    assert "4/4 done (completed 4)" in shown.stdout
    listed = cli(
        srv, "jobs", "ls", "--project", p, "--group", "sweep-a", "--where", "lr=0.1",
        "--columns", "params,result,duration", "--status", "completed",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("group sweep-a  [") and "4/4 done" in lines[0]
    header = lines[2].split()
    assert header[:7] == ["ID", "NAME", "TASK", "STATUS", "PARAMS", "RESULT", "DURATION"]
    assert len(lines) == 5 and all('"lr":0.1' in line for line in lines[3:])
    watched = cli(srv, "jobs", "ls", "--project", p, "--group", "sweep-a", "--watch", "--every", "0.2")
    assert watched.returncode == 0 and watched.stdout.rstrip().endswith("all done")
    # A failure, retried as a group.
    cli(
        srv,
        "jobs",
        "add",
        "train",
        "--project",
        p,
        "--group",
        "sweep-b",
        "--param",
        "lr=1",
        "--param",
        "bs=x",
    )
    cancelled = cli(srv, "groups", "cancel", "sweep-b", "--project", p)
    assert "cancelled 1" in cancelled.stdout
    retried = cli(srv, "groups", "retry", "sweep-b", "--project", p)
    assert "1 job(s) back in the queue" in retried.stdout


async def test_sdk_sweep_is_a_group(api: Any, project: dict[str, Any]) -> None:
    from whatsnext.api.client import AsyncServer

    async with AsyncServer(api.base) as server:
        pr = await server.get_project(project["name"])
        jobs = await pr.sweep("train", {"lr": [0.1, 0.01], "bs": [32]})
        named = await pr.sweep("train", {"lr": [0.5]}, group="hot")
        groups = await pr.groups()
        assert groups[0]["name"] == "hot" and groups[1]["name"].startswith("train-sweep-")
        assert groups[1]["total"] == len(jobs) == 2 and (await pr.group("hot"))["total"] == len(named)
        found = await pr.list_jobs(status=["pending", "running"], where={"lr": 0.01}, group=groups[1]["name"])
        assert [j.name for j in found] == ["train[lr=0.01,bs=32]"]
        assert (await server.get_job(jobs[0].id)).data["group"] == groups[1]["name"]


def test_runai_worker_options() -> None:
    from whatsnext.api.client.formatters.runai import RUNAIFormatter
    from whatsnext.cli import build_parser
    from whatsnext.cli.worker import build_formatter

    args = build_parser().parse_args(
        ["worker", "--formatter", "runai", "--runai-project", "team", "--image", "img:1",
         "--command", "python train.py --lr {lr}", "--runai-gpu", "0.5", "--mem", "8G"]
    )  # fmt: skip
    formatter = build_formatter(args)
    assert isinstance(formatter, RUNAIFormatter)
    assert (formatter.project, formatter.image, formatter.gpu) == ("team", "img:1", 0.5)
