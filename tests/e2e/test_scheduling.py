"""Scheduling semantics: dependencies, resources and GPUs, leases, cancellation, retries, timeouts."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import Api, ServerProcess, expire_lease, wait_until
from helpers import PYTHON, RECORD, max_overlap, records, spawn_worker, wait_for_condition, wait_for_file

from whatsnext.api.client import AsyncServer, Client, CLIFormatter, Job, JobSpec, PythonFormatter, Server


def recorder() -> CLIFormatter:
    return CLIFormatter(executable=PYTHON, script=RECORD)


async def aproject(server: ServerProcess, project: dict) -> Any:
    return await AsyncServer(server.url).get_project(project["name"])


def seed_dependency_example(url: str, name: str) -> tuple[Job, Job]:
    """The dependency example of the reference docs, as written (plus the connection lines)."""
    server = Server(url)
    project = server.get_project(name)
    # Job B depends on Job A
    job_a = Job(name="job-a", task="step1", parameters={})
    project.append_queue(job_a)
    job_b = Job(
        name="job-b",
        task="step2",
        parameters={},
        depends={job_a.id: "job-a"},  # Wait for job_a
    )
    project.append_queue(job_b)
    return job_a, job_b


async def test_seed_dependency_example(server: ServerProcess, api: Api, project: dict) -> None:
    job_a, job_b = await asyncio.to_thread(seed_dependency_example, server.url, project["name"])
    b = await api.ok("GET", f"/jobs/{job_b.id}")
    assert b["depends"] == [job_a.id] and b["unmet_deps"] == 1
    p = project["name"]
    [first] = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 4, "max_jobs": 4}))["jobs"]
    assert first["id"] == job_a.id  # job B is not handed out while A is unfinished
    assert (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 4, "max_jobs": 4}))["jobs"] == []
    await api.ok("POST", f"/jobs/{job_a.id}/complete", {"attempt": 1})
    [second] = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 4}))["jobs"]
    assert second["id"] == job_b.id
    deps = await api.ok("GET", f"/jobs/{job_b.id}/dependencies")
    assert deps["upstream"] == [{"id": job_a.id, "name": "job-a", "status": "COMPLETED", "on": "success"}]
    deps = await api.ok("GET", f"/jobs/{job_a.id}/dependencies")
    assert deps["downstream"] == [{"id": job_b.id, "name": "job-b", "status": "RUNNING", "on": "success"}]


async def test_diamond_dag_two_workers(
    server: ServerProcess, api: Api, project: dict, tmp_path: Path
) -> None:
    p = await aproject(server, project)
    out = {"out": str(tmp_path), "sleep": 0.3}
    jobs = [
        Job("a", "t", out),
        Job("b", "t", out, depends=["a"]),
        Job("c", "t", out, depends=["a"]),
        Job("d", "t", out, depends=["b", "c"]),
    ]
    await p.extend_queue(jobs)
    graph = await api.ok("GET", f"/projects/{project['name']}/graph")
    ids = {j.name: j.id for j in jobs}
    assert sorted((e["source"], e["target"]) for e in graph["edges"]) == sorted(
        [(ids["a"], ids["b"]), (ids["a"], ids["c"]), (ids["b"], ids["d"]), (ids["c"], ids["d"])]
    )
    workers = [Client("t", f"w{i}", p, recorder(), available_cpu=1) for i in range(2)]
    summaries = await asyncio.wait_for(asyncio.gather(*(w.work_async() for w in workers)), 60)
    assert sum(s.completed for s in summaries) == 4
    recs = {name: records(tmp_path)[ids[name]] for name in ids}
    assert recs["b"]["start"] >= recs["a"]["end"] and recs["c"]["start"] >= recs["a"]["end"]
    assert recs["d"]["start"] >= max(recs["b"]["end"], recs["c"]["end"])
    assert max_overlap([(recs[n]["start"], recs[n]["end"]) for n in ("b", "c")]) == 2, (
        "b and c ran in parallel"
    )


async def test_failure_blocks_downstream_and_retry_releases(
    server: ServerProcess, api: Api, project: dict, tmp_path: Path
) -> None:
    p = await aproject(server, project)
    flag = tmp_path / "fixed"
    fmt = CLIFormatter(
        template=f'{PYTHON} -c "import os,sys; sys.exit(0 if os.path.exists({str(flag)!r}) else 3)"'
    )
    jobs = [
        Job("root", "t"),
        Job("l1", "t", depends=["root"]),
        Job("l2", "t", depends=["l1"]),
        Job("l3", "t", depends=["l2"]),
        Job("side", "t"),
    ]
    await p.extend_queue(jobs)
    summary = await asyncio.wait_for(Client("t", "w", p, fmt, available_cpu=2).work_async(), 60)
    assert (summary.completed, summary.failed) == (0, 2)
    root = await api.ok("GET", f"/jobs/{jobs[0].id}")
    assert root["status"] == "FAILED" and root["exit_code"] == 3
    for job in jobs[1:4]:
        data = await api.ok("GET", f"/jobs/{job.id}")
        assert data["status"] == "BLOCKED", data
        assert data["blocked_by"] == root["id"] and f"dependency {root['id']} (root) failed" in data["error"]
    # Retrying a blocked job retries what blocks it.
    flag.touch()
    out = await api.ok("POST", f"/jobs/{jobs[3].id}/retry")
    assert out["requeued"] == 4
    assert (await api.ok("GET", f"/jobs/{jobs[1].id}"))["status"] == "PENDING"
    summary = await asyncio.wait_for(Client("t", "w", p, fmt, available_cpu=2).work_async(), 60)
    statuses = [(await api.ok("GET", f"/jobs/{j.id}"))["status"] for j in jobs]
    assert statuses[:4] == ["COMPLETED"] * 4 and statuses[4] == "FAILED"
    status, body = await api.post(f"/jobs/{jobs[0].id}/retry")
    assert status == 409 and "COMPLETED" in body["error"]["message"]


async def test_dependency_cycle_and_unknown(api: Api, project: dict) -> None:
    p = project["name"]
    status, body = await api.post(
        f"/projects/{p}/jobs/batch",
        [
            {"name": "a", "task": "t", "depends": ["c"]},
            {"name": "b", "task": "t", "depends": ["a"]},
            {"name": "c", "task": "t", "depends": ["b"]},
            {"name": "free", "task": "t"},
        ],
    )
    assert status == 422 and body["error"]["code"] == "dependency_cycle"
    assert body["error"]["message"] in ("dependency cycle: a -> c -> b -> a",)
    assert body["error"]["details"]["cycle"] == ["a", "c", "b", "a"]
    status, body = await api.post(
        f"/projects/{p}/jobs/batch", [{"name": "self", "task": "t", "depends": ["self"]}]
    )
    assert status == 422 and "self -> self" in body["error"]["message"]
    status, body = await api.post(
        f"/projects/{p}/jobs", {"name": "x", "task": "t", "depends": {"999999999": "x"}}
    )
    assert (
        status == 422
        and "999999999" in body["error"]["message"]
        and body["error"]["details"]["field"] == "depends"
    )
    assert (await api.ok("GET", f"/projects/{p}/jobs"))["jobs"] == []  # nothing was kept


async def test_gpu_job_goes_only_to_a_worker_with_enough_gpus(api: Api, project: dict) -> None:
    p = project["name"]
    await api.ok(
        "POST", "/tasks/", {"name": "train", "project_id": project["id"], "required_accelerators": 2}
    )
    job = await api.ok("POST", f"/projects/{p}/jobs", {"name": "big", "task": "train"})
    one = {"worker_name": "one-gpu", "free_cpu": 8, "free_accelerators": 1, "max_jobs": 4}
    assert (await api.ok("POST", f"/projects/{p}/claim", one))["jobs"] == []
    two = {**one, "worker_name": "two-gpu", "free_accelerators": 2}
    assert [j["id"] for j in (await api.ok("POST", f"/projects/{p}/claim", two))["jobs"]] == [job["id"]]


async def test_tags_must_match(api: Api, project: dict) -> None:
    p = project["name"]
    job = await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "a100", "task": "t", "required_tags": ["a100"]}
    )
    assert (await api.ok("POST", f"/projects/{p}/claim", {"tags": ["v100"]}))["jobs"] == []
    got = (await api.ok("POST", f"/projects/{p}/claim", {"tags": ["a100", "big-mem"]}))["jobs"]
    assert [j["id"] for j in got] == [job["id"]]


async def test_backfill_and_anti_starvation(server_factory, http, api: Api, project: dict) -> None:
    # Default rule: a small job may go ahead of a large one that does not fit the free capacity now.
    p = project["name"]
    big = await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "big", "task": "t", "required_cpu": 2, "priority": 5}
    )
    small = await api.ok("POST", f"/projects/{p}/jobs", {"name": "small", "task": "t", "required_cpu": 1})
    half_free = {"free_cpu": 1, "total_cpu": 2}
    got = (await api.ok("POST", f"/projects/{p}/claim", half_free))["jobs"]
    assert [j["id"] for j in got] == [small["id"]]
    await api.ok("POST", f"/jobs/{small['id']}/complete", {"attempt": 1})
    # Once a large job has waited longer than --starvation-seconds (0 here), a worker that could run
    # it stops backfilling: it drains and takes the large job next.
    strict = Api((await server_factory("--starvation-seconds", "0")).url, http)
    small2 = await strict.ok(
        "POST", f"/projects/{p}/jobs", {"name": "small2", "task": "t", "required_cpu": 1}
    )
    assert (await strict.ok("POST", f"/projects/{p}/claim", half_free))["jobs"] == []
    # A worker that can never run the large job is not held back by it.
    got = (await strict.ok("POST", f"/projects/{p}/claim", {"free_cpu": 1, "total_cpu": 1}))["jobs"]
    assert [j["id"] for j in got] == [small2["id"]]
    got = (await strict.ok("POST", f"/projects/{p}/claim", {"free_cpu": 2, "total_cpu": 2}))["jobs"]
    assert [j["id"] for j in got] == [big["id"]]


async def test_concurrent_jobs_get_disjoint_gpus(
    server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    p = await aproject(server, project)
    out = {"out": str(tmp_path), "sleep": 0.8}
    jobs = [Job(f"g{i}", "t", out, required_accelerators=1) for i in range(4)]
    jobs += [Job("g2x", "t", out, required_accelerators=2), Job("cpu", "t", out)]
    await p.extend_queue(jobs)
    client = Client("t", "gpus", p, recorder(), available_cpu=8, available_accelerators="0,1,3")
    assert client.capacity.gpu_ids == ["0", "1", "3"]
    await asyncio.wait_for(client.work_async(), 60)
    recs = records(tmp_path)
    assert len(recs) == 6
    for r in recs.values():
        assert r["order"] == "PCI_BUS_ID"
    by_id = {j.id: j for j in jobs}
    for jid, r in recs.items():
        want = by_id[jid].required_accelerators or 0
        gpus = [g for g in (r["cuda"] or "").split(",") if g]
        assert len(gpus) == want and set(gpus) <= {"0", "1", "3"}
    items = list(recs.values())
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            overlap = a["start"] < b["end"] and b["start"] < a["end"]
            if overlap:
                ga = {g for g in (a["cuda"] or "").split(",") if g}
                gb = {g for g in (b["cuda"] or "").split(",") if g}
                assert not (ga & gb), f"jobs {a['job']} and {b['job']} shared GPUs {ga & gb}"
    # Each attempt's GPU ids are recorded on the server (the worker says so when the job starts).
    srv = AsyncServer(server.url)
    for job in jobs:
        data = (await srv.get_job(job.id)).data
        got = [int(g) for g in (records(tmp_path)[job.id]["cuda"] or "").split(",") if g]
        assert (data.get("gpus") or []) == got


def test_gpu_ids_come_from_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from whatsnext.api.client.resources import resolve_gpu_ids

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert resolve_gpu_ids("0,1,3") == ["0", "1", "3"]
    assert resolve_gpu_ids(None) == ["2", "5"]
    assert resolve_gpu_ids(1) == ["2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_gpu_ids(None) == []


def _kill_job(tmp: Path, job_id: int) -> None:
    import json

    started = tmp / f"{job_id}.started"
    if started.exists():
        pid = json.loads(started.read_text())["pid"]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


LEASE = 4


async def test_killed_worker_costs_one_lease(server_factory, http, project: dict, tmp_path: Path) -> None:
    """kill -9 of a worker mid-job, default settings: its job's processes die with it, the job
    goes back to the queue when the lease runs out (without using its one attempt), another
    worker completes it as attempt 2, and the dead worker's late report is refused. The lease
    is backdated once the test saw that it ends within one lease of the kill; the server's own
    sweep (every second with this lease) finds it."""
    srv = await server_factory("--lease-seconds", str(LEASE))
    api = Api(srv.url, http)
    p = project["name"]
    go = tmp_path / "go"
    job = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "survivor", "task": "t", "parameters": {"out": str(tmp_path), "wait-for": str(go)}},
    )
    assert (job["max_attempts"], job["max_lost"]) == (1, 3)
    first = spawn_worker(srv.url, p, tmp_path / "doomed.log", "--name", "doomed", "--cpus", "1", "--forever")
    try:
        started = tmp_path / f"{job['id']}.started"
        await wait_for_file(started)
        pid = json.loads(started.read_text())["pid"]
        first.send_signal(signal.SIGKILL)  # the worker process alone, as the OOM killer does
        await asyncio.to_thread(first.wait, 10)
        killed_at = time.time()
        started.unlink()

        def job_process_gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        await wait_for_condition(job_process_gone, 10, "the job's process to die with its worker")

        async def requeued() -> bool:
            data = await api.ok("GET", f"/jobs/{job['id']}")
            return data["status"] == "PENDING"

        held = await api.ok("GET", f"/jobs/{job['id']}")
        assert held["status"] == "RUNNING"
        assert datetime.fromisoformat(held["lease_expires_at"]).timestamp() <= killed_at + LEASE
        await expire_lease(srv.database_url, job["id"])
        expired_at = time.monotonic()
        await wait_until(requeued, timeout=15, what="the next sweep to requeue the job")
        assert time.monotonic() - expired_at < 1 + 3  # the sweep interval (lease / 4), slack
        go.touch()
        second = Client(
            "t", "rescuer", await AsyncServer(srv.url).get_project(p), recorder(), available_cpu=1
        )
        summary = await asyncio.wait_for(second.work_async(), 60)
        assert summary.completed == 1
    finally:
        if first.poll() is None:
            first.kill()
        _kill_job(tmp_path, job["id"])
    final = await api.ok("GET", f"/jobs/{job['id']}")
    assert final["status"] == "COMPLETED" and final["attempt"] == 2 and final["worker_name"] == "rescuer"
    assert final["lost"] == 1
    events = (await api.ok("GET", f"/jobs/{job['id']}/events"))["events"]
    assert [e["status"] for e in events].count("COMPLETED") == 1
    lost = [e for e in events if (e["reason"] or "").startswith("worker lost")]
    assert [(e["status"], e["attempt"]) for e in lost] == [("PENDING", 1)], events
    status, body = await api.post(f"/jobs/{job['id']}/complete", {"attempt": 1})
    assert status == 409 and body["error"]["code"] == "stale_attempt"


async def test_lost_past_max_lost_fails_and_blocks(
    server: ServerProcess, api: Api, project: dict, database_url: str
) -> None:
    """The reaper, run directly on a backdated lease: a job that may not be lost (max_lost 0)
    fails with "worker lost", and what depends on it is blocked."""
    p = project["name"]
    root = await api.ok("POST", f"/projects/{p}/jobs", {"name": "lost", "task": "t", "max_lost": 0})
    child = await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "child", "task": "t", "depends": [root["id"]]}
    )
    await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "ghost"})
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", root["id"]
        )
        assert await conn.fetchval("SELECT wn_reap(1000)") >= 1
    finally:
        await conn.close()
    data = await api.ok("GET", f"/jobs/{root['id']}")
    assert data["status"] == "FAILED" and data["error"] == "worker lost: lease expired"
    assert (await api.ok("GET", f"/jobs/{child['id']}"))["status"] == "BLOCKED"
    events = (await api.ok("GET", f"/jobs/{root['id']}/events"))["events"]
    assert events[-1]["actor"] == "reaper"


async def test_heartbeat_extends_leases_and_requeues_unreceived_jobs(api: Api, project: dict) -> None:
    p = project["name"]
    worker = await api.ok("POST", "/workers", {"name": "hb", "project": p, "cpu": 4})
    assert worker["lease_seconds"] == pytest.approx(60.0)  # the default
    assert worker["heartbeat_interval"] == pytest.approx(20.0)  # a third of the lease
    a = await api.ok("POST", f"/projects/{p}/jobs", {"name": "held", "task": "t"})
    b = await api.ok("POST", f"/projects/{p}/jobs", {"name": "lost-answer", "task": "t"})
    got = await api.ok(
        "POST", f"/projects/{p}/claim", {"worker_id": worker["id"], "free_cpu": 2, "max_jobs": 2}
    )
    assert {j["id"] for j in got["jobs"]} == {a["id"], b["id"]}
    before = (await api.ok("GET", f"/jobs/{a['id']}"))["lease_expires_at"]

    # grace 0: the worker knows no claim of its is in flight, so b is lost at once.
    out = await api.ok("POST", f"/workers/{worker['id']}/heartbeat", {"running": [a["id"]], "grace": 0})
    assert out["cancel"] == []
    assert (await api.ok("GET", f"/jobs/{b['id']}"))["status"] == "PENDING"
    held = await api.ok("GET", f"/jobs/{a['id']}")
    assert held["status"] == "RUNNING" and held["lease_expires_at"] > before
    listed = (await api.ok("GET", f"/workers?project={p}"))["workers"]
    assert listed[0]["running"] == [a["id"]] and listed[0]["used_cpu"] == 1
    assert (await api.ok("DELETE", f"/workers/{worker['id']}"))["released"] == 1
    assert (await api.ok("GET", f"/jobs/{a['id']}"))["status"] == "PENDING"


async def test_cancel_running_job_stops_its_process(
    server_factory, http, project: dict, tmp_path: Path
) -> None:
    srv = await server_factory("--lease-seconds", "3")
    api = Api(srv.url, http)
    p = project["name"]
    job = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "endless", "task": "t", "parameters": {"out": str(tmp_path), "sleep": 600}},
    )
    pending = await api.ok("POST", f"/projects/{p}/jobs", {"name": "never", "task": "t", "priority": -1})
    assert (await api.ok("POST", f"/jobs/{pending['id']}/cancel"))["status"] == "CANCELLED"
    worker = spawn_worker(
        srv.url, p, tmp_path / "cancelme.log", "--name", "cancelme", "--cpus", "1", "--grace", "2"
    )
    try:
        await wait_for_file(tmp_path / f"{job['id']}.started")
        pid = json.loads((tmp_path / f"{job['id']}.started").read_text())["pid"]
        cancelled_at = time.monotonic()
        assert (await api.ok("POST", f"/jobs/{job['id']}/cancel"))["status"] == "RUNNING"

        async def cancelled() -> bool:
            return (await api.ok("GET", f"/jobs/{job['id']}"))["status"] == "CANCELLED"

        await wait_until(cancelled, timeout=15, what="the worker to stop the job")
        assert time.monotonic() - cancelled_at < 1.0 + 2 + 3  # a heartbeat, the grace, slack
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        code = await asyncio.to_thread(worker.wait, 30)
        assert code == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    events = [e["status"] for e in (await api.ok("GET", f"/jobs/{job['id']}/events"))["events"]]
    assert events[-1] == "CANCELLED"
    status, _ = await api.post(f"/jobs/{job['id']}/cancel")
    assert status == 409


async def test_timeout_kills_and_fails(
    server: ServerProcess, api: Api, project: dict, tmp_path: Path
) -> None:
    p = await aproject(server, project)
    job = await p.append_queue(Job("slow", "t", {"out": str(tmp_path), "sleep": 300}, timeout=0.5))
    started = time.monotonic()
    summary = await asyncio.wait_for(Client("t", "w", p, recorder(), grace=1).work_async(), 60)
    assert summary.failed == 1 and time.monotonic() - started < 15
    data = await api.ok("GET", f"/jobs/{job.id}")
    assert data["status"] == "FAILED" and data["error"] == "timeout"
    assert not records(tmp_path), "the job was killed before it finished"


async def test_retries_with_delay(server: ServerProcess, api: Api, project: dict) -> None:
    p = await aproject(server, project)
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(time.monotonic())
        raise RuntimeError(f"attempt {len(starts)} failed")

    job = await p.append_queue(Job("flaky", "t", max_attempts=3, retry_delay=0.4))
    summary = await asyncio.wait_for(Client("t", "w", p, PythonFormatter(flaky)).work_async(), 60)
    assert summary.failed == 3 and len(starts) == 3
    assert starts[1] - starts[0] >= 0.4 and starts[2] - starts[1] >= 0.8  # backoff doubles the delay
    data = await api.ok("GET", f"/jobs/{job.id}")
    assert data["status"] == "FAILED" and data["attempt"] == 3 and "attempt 3 failed" in data["error"]
    events = (await api.ok("GET", f"/jobs/{job.id}/events"))["events"]
    assert [e["status"] for e in events] == [
        "PENDING",
        "RUNNING",
        "PENDING",
        "RUNNING",
        "PENDING",
        "RUNNING",
        "FAILED",
    ]
    assert "retry in 0.4s" in events[2]["reason"] and "retry in 0.8s" in events[4]["reason"]
    # A manual retry gives the job a fresh set of attempts.
    await api.ok("POST", f"/jobs/{job.id}/retry")
    assert (await api.ok("GET", f"/jobs/{job.id}"))["status"] == "PENDING"


async def test_random_dag_four_workers_every_job_once_in_order(server: ServerProcess, project: dict) -> None:
    rng = random.Random(1234)
    n = 5000
    p = await aproject(server, project)
    deps: dict[int, list[int]] = {}
    jobs: list[Job] = []
    for i in range(n):
        parents = rng.sample(range(max(0, i - 200), i), k=min(i, rng.choice([0, 0, 1, 1, 2, 3]))) if i else []
        deps[i] = parents
        jobs.append(
            Job(f"n{i}", "t", {"i": i}, priority=rng.randint(0, 3), depends=[f"n{j}" for j in parents])
        )
    for start in range(0, n, 1000):  # batches depend on earlier batches by id
        chunk = jobs[start : start + 1000]
        for job in chunk:
            refs = job.depends_payload() or []
            job.depends = [jobs[int(str(r)[1:])].id if int(str(r)[1:]) < start else r for r in refs]
        await p.extend_queue(chunk)
    runs: dict[int, list[tuple[float, float]]] = {}

    async def work(i: int, job: JobSpec) -> None:
        begin = time.monotonic()
        runs.setdefault(i, []).append((begin, time.monotonic()))

    workers = [
        Client("t", f"dag{k}", p, PythonFormatter(work, pass_job=True), available_cpu=8) for k in range(4)
    ]
    summaries = await asyncio.wait_for(asyncio.gather(*(w.work_async() for w in workers)), 240)
    assert sum(s.completed for s in summaries) == n
    assert all(s.completed > 0 for s in summaries), "every worker took part"
    assert sorted(runs) == list(range(n)) and all(len(r) == 1 for r in runs.values()), (
        "each job ran exactly once"
    )
    for i, parents in deps.items():
        for j in parents:
            assert runs[i][0][0] >= runs[j][0][1], f"n{i} started before its dependency n{j} finished"


async def test_requeues_in_one_transaction_wake_as_many_waiters(server_factory, http, project: dict) -> None:
    srv = await server_factory()
    api = Api(srv.url, http)
    p = project["name"]
    await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        [{"name": f"r{i}", "task": "t", "max_attempts": 2} for i in range(3)],
    )
    claimed = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 3, "max_jobs": 3}))["jobs"]
    assert len(claimed) == 3
    waiters = [
        asyncio.create_task(api.post(f"/projects/{p}/claim", {"worker_name": f"w{i}", "wait": 20}))
        for i in range(3)
    ]

    async def all_waiting() -> bool:
        return (await api.ok("GET", "/health"))["waiting_claims"] >= 3

    await wait_until(all_waiting, what="three waiting claims")
    started = time.monotonic()
    out = await api.ok(
        "POST",
        "/jobs/reports",
        [{"id": c["id"], "attempt": c["attempt"], "status": "FAILED", "error": "flaky"} for c in claimed],
    )
    assert [r["status"] for r in out["results"]] == ["PENDING"] * 3
    results = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert time.monotonic() - started < 5, "every waiter was woken, not only one"
    assert sorted(j["id"] for _, body in results for j in body["jobs"]) == sorted(c["id"] for c in claimed)


async def test_retrying_a_cancelled_job_retries_its_failed_upstream(api: Api, project: dict) -> None:
    p = project["name"]
    ids = (
        await api.ok(
            "POST",
            f"/projects/{p}/jobs/batch",
            [
                {"name": "a", "task": "t"},
                {"name": "b", "task": "t", "depends": ["a"]},
                {"name": "c", "task": "t", "depends": ["b"]},
            ],
        )
    )["ids"]
    a, b, _c = ids
    assert (await api.ok("POST", f"/jobs/{b}/cancel"))["status"] == "CANCELLED"
    [job] = (await api.ok("POST", f"/projects/{p}/claim", {}))["jobs"]
    await api.ok("POST", f"/jobs/{a}/fail", {"attempt": job["attempt"], "error": "boom"})
    assert (await api.ok("POST", f"/jobs/{b}/retry"))["requeued"] == 3
    states = [(await api.ok("GET", f"/jobs/{i}")) for i in ids]
    assert [s["status"] for s in states] == ["PENDING"] * 3
    assert [s["unmet_deps"] for s in states] == [0, 1, 1]


async def test_cancel_request_wins_over_a_requeue_report(api: Api, project: dict) -> None:
    p = project["name"]
    job = await api.ok("POST", f"/projects/{p}/jobs", {"name": "preempted", "task": "t"})
    [claimed] = (await api.ok("POST", f"/projects/{p}/claim", {}))["jobs"]
    assert (await api.ok("POST", f"/jobs/{job['id']}/cancel"))["status"] == "RUNNING"
    out = await api.ok(
        "POST",
        f"/jobs/{job['id']}/fail",
        {"attempt": claimed["attempt"], "requeue": True, "error": "preempted"},
    )
    assert out["status"] == "CANCELLED"
