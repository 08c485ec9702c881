"""The allocator on a real one-node SLURM: allocations submitted for a queue's pending jobs run
them and end when idle, none is left in squeue; nothing is submitted without work, nor for a queue
whose loop runs elsewhere, nor for a job whose timeout exceeds the time limit (which says why); a
failing sbatch is recorded, reported and retried with backoff, a handful of times in 5 minutes
(on a clock the test moves); a restarted loop adopts the queue's jobs SLURM runs and marks those
SLURM no longer knows; allocations not started are cancelled when the work is gone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from alloc_env import allocations, allocators, make_queue, stop, wait_jobs  # noqa: F401  (fixture)
from conftest import Api, ServerProcess, wait_until

from whatsnext.alloc.pilot import is_ours, new_name

ENDED = ("FINISHED", "FAILED", "CANCELLED")


def ours_in_squeue(queue: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True, check=True).stdout
    return [line.split("|")[0] for line in out.splitlines() if is_ours(line.split("|")[-1], queue)]


def _state(job_id: str) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


def cancel_ours(queue: str) -> None:
    for job_id in ours_in_squeue(queue):
        subprocess.run(["scancel", job_id], check=False)


async def _jobs(api: Api, project: str, out: Path, n: int, **fields: Any) -> list[int]:
    out.mkdir(exist_ok=True)
    body = {"task": "t", "parameters": {"out": str(out), "sleep": 1}, **fields}
    return [
        (await api.ok("POST", f"/projects/{project}/jobs", {"name": f"j{i}", **body}))["id"] for i in range(n)
    ]


async def test_allocations_run_the_jobs_and_end_when_idle(
    slurm: None,
    server: ServerProcess,
    api: Api,
    project: dict[str, Any],
    tmp_path: Path,
    allocators: Any,  # noqa: F811
) -> None:
    p = project["name"]
    q = (await make_queue(api, p, max_workers=2, idle_timeout=3))["name"]
    ids = await _jobs(api, p, tmp_path / "out", 4, timeout=120)
    loop = allocators(server.url, q, tmp_path / "logs")
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stop=stopping))
    try:
        await wait_jobs(api, ids, "COMPLETED", timeout=120)

        async def all_ended() -> bool:
            recent = await allocations(api, q)
            return bool(recent) and all(a["state"] in ENDED for a in recent) and not ours_in_squeue(q)

        await wait_until(all_ended, timeout=60, interval=0.2, what="the allocations to end when idle")
    finally:
        await stop(task, stopping)
        cancel_ours(q)
    recent = await allocations(api, q)
    assert len(recent) == 2, recent  # at most 2 workers: two allocations of one worker, never more
    assert all(a["state"] == "FINISHED" and a["started_at"] and a["external_id"] for a in recent), recent
    assert all(a["shape"]["jobs"] == 1 and a["shape"]["cpu"] == 1 for a in recent)
    assert sorted(int(p.stem) for p in (tmp_path / "out").glob("*.json")) == sorted(ids)
    for a in recent:
        log = (tmp_path / "logs" / q / f"{a['name']}.log").read_text()
        assert "idle: nothing ran or was claimed for the idle timeout; stopping" in log, log
        assert "every worker exited (status 0)" in log
    queue = await api.ok("GET", f"/alloc/queues/{q}")
    assert queue["last_error"] is None and queue["loop_holder"] is None  # the lease was given back
    workers = (await api.ok("GET", f"/workers?project={p}"))["workers"]
    assert sorted(w["name"] for w in workers) == sorted(f"{a['name']}-0" for a in recent)
    assert all(w["status"] == "OFFLINE" for w in workers), workers


async def test_nothing_is_submitted_without_work_or_for_a_queue_run_elsewhere(
    slurm: None,
    server: ServerProcess,
    api: Api,
    project: dict[str, Any],
    tmp_path: Path,
    allocators: Any,  # noqa: F811
) -> None:
    p = project["name"]
    q = (await make_queue(api, p))["name"]
    await allocators(server.url, q, tmp_path).run(once=True)
    assert await allocations(api, q) == [] and not ours_in_squeue(q)
    await _jobs(api, p, tmp_path / "out", 1)
    await api.ok("POST", f"/alloc/queues/{q}/lease", {"holder": "elsewhere:1", "seconds": 60})
    await allocators(server.url, q, tmp_path).run(once=True)
    assert await allocations(api, q) == [] and not ours_in_squeue(q)
    assert (await api.ok("GET", f"/alloc/queues/{q}"))["loop_holder"] == "elsewhere:1"


async def test_a_job_longer_than_the_time_limit_gets_no_allocation_and_says_why(
    slurm: None,
    server: ServerProcess,
    api: Api,
    project: dict[str, Any],
    tmp_path: Path,
    allocators: Any,  # noqa: F811
) -> None:
    p = project["name"]
    q = (await make_queue(api, p, time_limit=600))["name"]
    await _jobs(api, p, tmp_path / "out", 1, timeout=7200)
    await allocators(server.url, q, tmp_path).run(once=True)
    assert await allocations(api, q) == [] and not ours_in_squeue(q)
    error = (await api.ok("GET", f"/alloc/queues/{q}"))["last_error"]
    assert error == (
        f"1 pending job(s) of {p} (1 CPU, 0 GPU, timeout 7200 s) get no allocation: their timeout "
        "(7200 s) does not fit the queue's time limit (600 s, less 60 s for the worker's start)"
    )


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_failing_sbatch_is_reported_and_retried_with_backoff(
    slurm: None,
    server: ServerProcess,
    api: Api,
    project: dict[str, Any],
    tmp_path: Path,
    allocators: Any,  # noqa: F811
) -> None:
    p = project["name"]
    q = (await make_queue(api, p, options={"partition": "no-such-partition"}))["name"]
    await _jobs(api, p, tmp_path / "out", 2)
    clock = Clock()
    loop = allocators(server.url, q, tmp_path, clock=clock)
    for _ in range(30):  # a pass every 10 s for 5 minutes, on the test's clock
        await loop.run_pass()
        clock.now += 10
    recent = await allocations(api, q)
    assert len(recent) == 4, recent  # tries at 0, 30, 90 and 210 s: the next waits 240 s
    for a in recent:
        assert a["state"] == "FAILED" and a["external_id"] is None
        assert a["reason"].startswith(
            "not submitted: sbatch failed: sbatch: error: invalid partition specified"
        )
    error = (await api.ok("GET", f"/alloc/queues/{q}"))["last_error"]
    assert error.startswith("sbatch failed: sbatch: error: invalid partition specified: no-such-partition")
    restarted = allocators(server.url, q, tmp_path, clock=clock)  # the same holder (this process)
    await restarted.run_pass()
    assert len(await allocations(api, q)) == 4, "a restarted loop keeps backing off"
    await restarted.release()
    assert not ours_in_squeue(q)


async def test_a_restarted_loop_adopts_what_slurm_runs_and_marks_what_it_forgot(
    slurm: None,
    server: ServerProcess,
    api: Api,
    project: dict[str, Any],
    tmp_path: Path,
    allocators: Any,  # noqa: F811
) -> None:
    q = (await make_queue(api, project["name"]))["name"]
    ghost = await api.ok(
        "POST",
        f"/alloc/queues/{q}/allocations",
        {"name": new_name(q), "external_id": "99999999", "time_limit": 600, "workers": 1},
    )
    orphan = new_name(q)
    job_id = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--job-name={orphan}",
            "--time=5",
            "--output=/dev/null",
            "--wrap",
            "sleep 300",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        await wait_until(
            lambda: asyncio.to_thread(lambda: _state(job_id) == "RUNNING"), timeout=30, what="the job to run"
        )
        loop = allocators(server.url, q, tmp_path)
        await loop.run_pass()
        by_name = {a["name"]: a for a in await allocations(api, q)}
        assert by_name[ghost["name"]]["state"] == "FINISHED"
        assert by_name[ghost["name"]]["reason"] == "SLURM no longer knows the job"
        adopted = by_name[orphan]
        assert adopted["external_id"] == job_id and adopted["state"] == "RUNNING"
        assert adopted["shape"] == {"adopted": True}
        subprocess.run(["scancel", job_id], check=True)
        await wait_until(
            lambda: asyncio.to_thread(lambda: not ours_in_squeue(q)),
            timeout=30,
            what="the job to leave squeue",
        )
        await loop.run_pass()
        after = {a["name"]: a for a in await allocations(api, q)}[orphan]
        assert after["state"] == "CANCELLED" and after["ended_at"], after
        await loop.release()
    finally:
        cancel_ours(q)


async def test_allocations_not_started_are_cancelled_when_the_work_is_gone(
    slurm: None,
    server: ServerProcess,
    api: Api,
    project: dict[str, Any],
    tmp_path: Path,
    allocators: Any,  # noqa: F811
) -> None:
    p = project["name"]
    q = (await make_queue(api, p, options={"sbatch_args": ["--begin=now+3600"]}))["name"]
    [job] = await _jobs(api, p, tmp_path / "out", 1)
    loop = allocators(server.url, q, tmp_path)
    try:
        await loop.run_pass()
        await loop.run_pass()
        [waiting] = await allocations(api, q)
        assert waiting["state"] == "QUEUED" and waiting["reason"] == "BeginTime", waiting
        assert ours_in_squeue(q) == [waiting["external_id"]]
        await api.ok("POST", f"/jobs/{job}/cancel")
        await loop.run_pass()
        [cancelled] = await allocations(api, q)
        assert cancelled["state"] == "CANCELLED", cancelled
        assert cancelled["reason"] == "cancelled before it started: the work is gone"
        assert not ours_in_squeue(q)
        await loop.release()
    finally:
        cancel_ours(q)


async def test_dry_run_prints_what_it_would_submit_and_why(
    slurm: None, server: ServerProcess, api: Api, project: dict[str, Any], tmp_path: Path
) -> None:
    from helpers import cli

    p = project["name"]
    q = (await make_queue(api, p, options={"partition": "debug", "gpus_per_worker": 1}))["name"]
    await _jobs(api, p, tmp_path / "out", 3, required_accelerators=1, timeout=60)
    await _jobs(api, p, tmp_path / "out", 1, timeout=7200)
    token = tmp_path / "worker-token"
    token.write_text("wnt_x\n")
    token.chmod(0o600)
    out = await asyncio.to_thread(
        cli, server, "alloc", "run", q, "--dry-run", "--log-dir", str(tmp_path / "logs"),
        "--worker-token-file", str(token),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (
        f"queue {q} (slurm): pending 3 (unserved 3) fitting jobs want 3 worker(s); queued 0, running 0, room for 2"
    )
    assert "timeout 7200 s) get no allocation: their timeout (7200 s) does not fit" in lines[1]
    submits = [line for line in lines if line.startswith("    sbatch --parsable ")]
    assert len(submits) == 2 and "--gres=gpu:1 --partition=debug" in submits[0]
    assert f"--worker-token-file {token}" in out.stdout and "wnt_x" not in out.stdout
    assert await allocations(api, q) == [] and not ours_in_squeue(q)
    assert not (tmp_path / "logs").exists(), "a dry run writes nothing"
    missing = await asyncio.to_thread(cli, server, "alloc", "run", "no-such-queue", "--once")
    assert missing.returncode == 4 and "no allocation queue named 'no-such-queue'" in missing.stderr


async def test_an_allocation_of_two_gpu_workers_gives_each_its_own_gpu(
    slurm: None,
    server: ServerProcess,
    api: Api,
    project: dict[str, Any],
    tmp_path: Path,
    allocators: Any,  # noqa: F811
) -> None:
    from helpers import wait_for_file

    p = project["name"]
    options = {"gpus_per_worker": 1, "cpus_per_worker": 1}
    q = (await make_queue(api, p, max_workers=2, workers_per_alloc=2, idle_timeout=2, options=options))[
        "name"
    ]
    out, gate = tmp_path / "out", tmp_path / "gate"
    out.mkdir()
    body = {"task": "t", "required_accelerators": 1, "parameters": {"out": str(out), "wait-for": str(gate)}}
    ids = [(await api.ok("POST", f"/projects/{p}/jobs", {"name": f"g{i}", **body}))["id"] for i in range(2)]
    loop = allocators(server.url, q, tmp_path / "logs")
    stopping = asyncio.Event()
    task = asyncio.create_task(loop.run(stop=stopping))
    try:
        for job_id in ids:  # both run at once: one on each worker, each worker with one GPU
            await wait_for_file(out / f"{job_id}.started", timeout=60)
        gate.touch()
        await wait_jobs(api, ids, "COMPLETED", timeout=60)

        async def ended() -> bool:
            recent = await allocations(api, q)
            return bool(recent) and all(a["state"] in ENDED for a in recent)

        await wait_until(ended, timeout=60, interval=0.2, what="the allocation to end when idle")
    finally:
        await stop(task, stopping)
        cancel_ours(q)
    [allocation] = await allocations(api, q)
    assert allocation["workers"] == 2 and allocation["state"] == "FINISHED", allocation
    assert allocation["shape"]["gpus"] == 1
    cuda = sorted(json.loads((out / f"{job_id}.json").read_text())["cuda"] for job_id in ids)
    assert cuda == ["0", "1"], cuda
    log = (tmp_path / "logs" / q / f"{allocation['name']}.log").read_text()
    assert "2 worker(s) started" in log and log.count("idle: nothing ran") == 2
