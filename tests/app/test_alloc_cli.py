"""``whatsnext alloc add|ls|show|rm|pause|resume`` against the application in this process."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any

from conftest import Api
from helpers import cli


async def run_cli(app_url: str, *args: str) -> Any:
    """``whatsnext ARGS`` in a thread: the application answers on this loop while it waits."""
    return await asyncio.to_thread(cli, SimpleNamespace(url=app_url), *args)


async def test_alloc_commands(app_url: str, app_api: Api) -> None:
    a, b = f"ca-{uuid.uuid4().hex[:8]}", f"cb-{uuid.uuid4().hex[:8]}"
    for p in (a, b):
        await app_api.ok("POST", "/projects", {"name": p})
    name = f"gpu-{uuid.uuid4().hex[:6]}"
    made = await run_cli(
        app_url,
        "alloc",
        "add",
        name,
        "--project",
        a,
        "--project",
        b,
        "--backend",
        "slurm",
        "--worker-args",
        "--cpus 8 --tags a100",
        "--time-limit",
        "1h30m",
        "--max-workers",
        "4",
        "--workers-per-alloc",
        "2",
        "--idle-timeout",
        "5m",
        "--partition",
        "gpu",
        "--account",
        "lab",
        "--gpus-per-worker",
        "1",
        "--cpus-per-worker",
        "8",
        "--sbatch-arg=--qos=low",
        "--sbatch-arg=--mem=32G",
        "--setup",
        "module load cuda",
        "--max-submits-per-minute",
        "2",
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == (
        f"created allocation queue {name} (slurm, projects {a}, {b}: at most 4 workers, 2 per allocation, "
        "time limit 1h30m, idle timeout 5m)"
    )
    queue = await app_api.ok("GET", f"/alloc/queues/{name}")
    assert (
        queue["time_limit"] == 5400 and queue["idle_timeout"] == 300 and queue["max_submits_per_minute"] == 2
    )
    assert queue["worker_args"] == "--cpus 8 --tags a100"
    assert queue["options"] == {
        "partition": "gpu",
        "account": "lab",
        "gpus_per_worker": 1,
        "cpus_per_worker": 8,
        "sbatch_args": ["--qos=low", "--mem=32G"],
        "setup": "module load cuda",
    }
    aid = (
        await app_api.ok(
            "POST",
            f"/alloc/queues/{name}/allocations",
            {"name": f"{name}-1", "time_limit": 5400, "reason": "Priority"},
        )
    )["id"]
    await app_api.ok(
        "PATCH", f"/alloc/queues/{name}", {"last_error": "sbatch: error: Batch job submission failed"}
    )

    listed = await run_cli(app_url, "alloc", "ls")
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(name))
    assert line.split()[:10] == [name, "slurm", f"{a},{b}", "active", "4", "1h30m", "1", "0", "0", "0"]
    assert "Batch job submission failed" in line
    as_json = json.loads((await run_cli(app_url, "alloc", "ls", "--json")).stdout)
    assert name in {q["name"] for q in as_json["queues"]}

    shown = await run_cli(app_url, "alloc", "show", name)
    assert shown.returncode == 0, shown.stderr
    assert "queued 1, running 0, finished 0, failed 0, cancelled 0" in shown.stdout
    assert "sbatch: error: Batch job submission failed" in shown.stdout
    row = next(ln for ln in shown.stdout.splitlines() if ln.startswith(str(aid)))
    assert row.split()[:4] == [str(aid), f"{name}-1", "-", "QUEUED"] and "Priority" in row

    paused = await run_cli(app_url, "alloc", "pause", name)
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert (await app_api.ok("GET", f"/alloc/queues/{name}"))["paused"] is True
    assert "paused" in (await run_cli(app_url, "alloc", "ls")).stdout
    resumed = await run_cli(app_url, "alloc", "resume", name)
    assert resumed.returncode == 0 and (await app_api.ok("GET", f"/alloc/queues/{name}"))["paused"] is False

    removed = await run_cli(app_url, "alloc", "rm", name)
    assert removed.returncode == 0 and f"deleted allocation queue {name}" in removed.stdout
    gone = await run_cli(app_url, "alloc", "show", name)
    assert gone.returncode == 4 and "not found" in gone.stderr


async def test_alloc_add_refuses_what_is_wrong(app_url: str, app_api: Api) -> None:
    p = f"cp-{uuid.uuid4().hex[:8]}"
    await app_api.ok("POST", "/projects", {"name": p})
    base = ("alloc", "add", f"q-{uuid.uuid4().hex[:6]}", "--project", p, "--backend", "slurm")
    bad = await run_cli(app_url, *base, "--time-limit", "2 hours", "--max-workers", "1")
    assert (
        bad.returncode == 2 and "--time-limit" in bad.stderr and "'2 hours' is not a duration" in bad.stderr
    )
    zero = await run_cli(app_url, *base, "--time-limit", "0", "--max-workers", "1")
    assert zero.returncode == 2 and "above 0" in zero.stderr
    missing = await run_cli(app_url, *base, "--time-limit", "2h")
    assert missing.returncode == 2 and "--max-workers" in missing.stderr
    refused = await run_cli(
        app_url, *base, "--time-limit", "2h", "--max-workers", "1", "--workers-per-alloc", "2"
    )
    assert refused.returncode == 1 and "workers_per_alloc" in refused.stderr
    plain = await run_cli(app_url, *base, "--time-limit", "90", "--max-workers", "1", "--json")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["time_limit"] == 90


def test_every_alloc_command_has_help_with_an_example() -> None:
    for command in ("add", "ls", "show", "rm", "pause", "resume"):
        r = cli(None, "alloc", command, "--help")
        assert r.returncode == 0 and f"example:\n  whatsnext alloc {command}" in r.stdout, r.stdout
