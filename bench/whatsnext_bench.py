"""WhatsNext side of the benchmark (harness process).

WhatsNext is measured the way it is deployed: its HTTP server runs in its own process
(``whatsnext server --database-url DSN``, started by :mod:`bench.whatsnext_server`,
which applies the migrations on start), jobs are submitted from this process through
the Python SDK, and the worker is a separate process using the SDK's ``Client``
(:mod:`bench.whatsnext_worker`).

APIs used:

* enqueue: ``AsyncProject.extend_queue(list[Job])``, one ``POST
  /projects/{p}/jobs/batch`` (one ``wn_enqueue`` call) per batch;
* wake-up submissions: ``AsyncProject.append_queue(Job)``, one ``POST
  /projects/{p}/jobs`` per job;
* worker: ``Client(..., PythonFormatter(func), available_cpu=C).work_async(forever)``.

On top of the three shared workloads (:func:`bench.common.run_suite`) it measures three
that only apply to WhatsNext:

* **scale**: latency of single-job claims (``POST /projects/{p}/claim`` with
  ``max_jobs=1``, each followed by ``POST /jobs/{id}/complete``) with 1,000 and with
  1,000,000 (``--quick``: 100,000) jobs pending in the project. The backlog is seeded
  directly in SQL (``INSERT ... SELECT generate_series``) because inserting a million
  rows through the API would only measure enqueue again; the table is then ANALYZEd.
* **fan-in**: 1,000 long-polling claims (``wait`` 60 s) held by one server process:
  the server's resident memory while they wait, and how long one of them takes to
  receive a job submitted through the SDK (median over several rounds).
* **DAG**: groups of a root job, 8 children that depend on it and a join that depends
  on the 8 children (10,000 jobs), queued by name-based dependencies inside each
  batch, drained by one worker process at concurrency 20.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.common import (
    WORKER_DSN_ENV,
    BenchConfig,
    Progress,
    WorkerError,
    WorkerProcess,
    analyze,
    median,
    percentile,
    rate,
    run_suite,
)
from bench.whatsnext_worker import NOOP_TASK, PROJECT_ENV, WAKE_TASK

PROJECT = "bench"
FANIN_PROJECT = "bench-fanin"
SERVER_ENV = "WHATSNEXT_SERVER"
TOKEN_ENV = "WHATSNEXT_TOKEN"


# --------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raise_open_files_limit(wanted: int = 8192) -> None:
    """1,000 held long-polls are 1,000 sockets in this process and in the server (which inherits it)."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@contextlib.contextmanager
def temp_environ(**values: str) -> Iterator[None]:
    """Set environment variables for the worker processes started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


async def _execute(dsn: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


# --------------------------------------------------------------------------- server process


class ServerProcess(WorkerProcess):
    """``whatsnext server`` on a free local port, against ``dsn``; stopped with SIGTERM, then SIGKILL."""

    events_on_stdout = False

    def __init__(
        self,
        dsn: str,
        log_level: str = "WARNING",
        module: str = "bench.whatsnext_server",
        auth: bool = False,
    ) -> None:
        self.dsn = dsn
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_level = log_level
        #: With ``auth``: the token the server takes as admin (given through its environment).
        self.admin_token = "wnt_" + secrets.token_urlsafe(32) if auth else None
        args = ["--host", "127.0.0.1", "--port", str(self.port), "--database-url", dsn]
        args += ["--log-level", log_level] + (["--auth"] if auth else [])
        env = {"WHATSNEXT_ADMIN_TOKEN": self.admin_token} if self.admin_token else None
        super().__init__(module, args, env=env)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 90.0) -> None:
        await super().start()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.returncode is not None:
                    raise WorkerError(
                        f"whatsnext server exited with code {self.proc.returncode} while starting\n"
                        f"--- server output ---\n{self.stderr_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(
                        self.url + "/health", timeout=aiohttp.ClientTimeout(total=2)
                    ) as resp:
                        if resp.status == 200 and (await resp.json()).get("status") == "ok":
                            return
                if time.monotonic() > deadline:
                    raise WorkerError(
                        f"whatsnext server not healthy within {timeout:.0f}s\n"
                        f"--- server output ---\n{self.stderr_tail()}"
                    )
                await asyncio.sleep(0.1)

    async def stop(self, grace_s: float = 10.0) -> None:
        await super().stop(grace_s)

    async def create_token(self, name: str, role: str) -> str:
        """A token stored in the server's database (``POST /tokens`` with the admin token)."""
        assert self.admin_token is not None
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(self.url + "/tokens", json={"name": name, "role": role}) as resp:
                if resp.status != 201:
                    raise WorkerError(f"POST /tokens answered HTTP {resp.status}: {await resp.text()}")
                token: str = (await resp.json())["token"]
                return token


@contextlib.asynccontextmanager
async def running_server(
    dsn: str, module: str = "bench.whatsnext_server", auth: bool = False
) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(dsn, module=module, auth=auth)
    try:
        await server.start()
        yield server
    finally:
        await asyncio.shield(server.stop())


# --------------------------------------------------------------------------- adapter


class WhatsNextAdapter:
    worker_module = "bench.whatsnext_worker"

    def __init__(self, dsn: str, url: str, token: str | None = None) -> None:
        self.dsn = dsn
        self.url = url
        #: The harness's own token (``--auth``): it creates projects, submits and claims.
        self.token = token
        self._server: Any = None
        self.project: Any = None

    @property
    def headers(self) -> dict[str, str]:
        """Headers of the harness's own HTTP requests (those that bypass the SDK)."""
        out = {"Content-Type": "application/json"}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        return out

    async def open(self) -> None:
        from whatsnext.api.client import AsyncServer

        self._server = AsyncServer(self.url, token=self.token or "")
        self.project = await self.ensure_project(PROJECT)

    async def ensure_project(self, name: str) -> Any:
        from whatsnext.api.client import NotFound

        try:
            return await self._server.get_project(name)
        except NotFound:
            return await self._server.create_project(name, "benchmark")

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    async def reset(self) -> None:
        # Projects and tasks stay; every job, its history and every worker go.
        await _execute(self.dsn, "TRUNCATE jobs, job_events, workers RESTART IDENTITY CASCADE")

    async def enqueue_batch(self, start: int, count: int) -> None:
        from whatsnext.api.client import Job

        await self.project.extend_queue(
            [Job(f"noop-{i}", NOOP_TASK, {"i": i}) for i in range(start, start + count)]
        )

    async def submit_wake(self, seq: int, sent: float) -> None:
        from whatsnext.api.client import Job

        await self.project.append_queue(Job(f"wake-{seq}", WAKE_TASK, {"seq": seq, "sent": sent}))

    async def status_counts(self, project: str = PROJECT) -> dict[str, int]:
        rows = await _execute(
            self.dsn,
            "SELECT j.status, count(*) AS n FROM jobs j JOIN projects p ON p.id = j.project_id "
            "WHERE p.name = $1 GROUP BY j.status",
            project,
        )
        return {r["status"]: int(r["n"]) for r in rows}

    async def check_drained(self, jobs: int) -> None:
        counts = await self.status_counts()
        if counts.get("COMPLETED", 0) != jobs or sum(counts.values()) != jobs:
            raise RuntimeError(f"after the drain the jobs are {counts} (expected {jobs} COMPLETED)")


# --------------------------------------------------------------------------- scale: claim latency


async def noop_task(conn: asyncpg.Connection, project: str) -> tuple[int, int]:
    """The ids of ``project`` and of its no-op task (created when missing)."""
    project_id = await conn.fetchval("SELECT id FROM projects WHERE name = $1", project)
    task_id = await conn.fetchval(
        "INSERT INTO tasks (project_id, name) VALUES ($1, $2) "
        "ON CONFLICT (project_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        project_id,
        NOOP_TASK,
    )
    return project_id, task_id


async def seed_pending(dsn: str, project: str, count: int) -> None:
    """``count`` pending no-op jobs straight into the jobs table (what ``wn_enqueue`` would insert)."""
    conn = await asyncpg.connect(dsn)
    try:
        project_id, task_id = await noop_task(conn, project)
        await conn.execute(
            "INSERT INTO jobs (project_id, task_id, name, parameters) "
            "SELECT $1, $2, 'seed-' || g, jsonb_build_object('i', g) FROM generate_series(1, $3) g",
            project_id,
            task_id,
            count,
        )
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


async def measure_claims(
    adapter: WhatsNextAdapter, pending: int, samples: int, warmup: int = 10
) -> dict[str, Any]:
    """p50 of single-job claim round trips with ``pending`` jobs in the project."""
    await adapter.reset()
    t0 = time.perf_counter()
    await seed_pending(adapter.dsn, PROJECT, pending)
    seed_s = time.perf_counter() - t0
    claim_url = f"{adapter.url}/projects/{PROJECT}/claim"
    body = _dumps({"worker_name": "b", "free_cpu": 1, "max_jobs": 1})
    headers = adapter.headers
    claims: list[float] = []
    completes: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for i in range(warmup + samples):
            t0 = time.perf_counter()
            async with session.post(claim_url, data=body) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"claim answered HTTP {resp.status}: {raw[:200]!r}")
            t1 = time.perf_counter()
            jobs = orjson.loads(raw)["jobs"]
            if len(jobs) != 1:
                raise RuntimeError(f"claim {i} with {pending:,} pending returned {len(jobs)} jobs")
            job = jobs[0]
            async with session.post(
                f"{adapter.url}/jobs/{job['id']}/complete", data=_dumps({"attempt": job["attempt"]})
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"complete answered HTTP {resp.status}: {raw[:200]!r}")
            t2 = time.perf_counter()
            if i >= warmup:
                claims.append((t1 - t0) * 1000.0)
                completes.append((t2 - t1) * 1000.0)
    return {
        "pending": pending,
        "seed_s": round(seed_s, 2),
        "claim_p50_ms": round(percentile(claims, 50), 3),
        "claim_p90_ms": round(percentile(claims, 90), 3),
        "complete_p50_ms": round(percentile(completes, 50), 3),
        "claim_ms": [round(v, 3) for v in claims],
    }


# --------------------------------------------------------------------------- fan-in: held long-polls


async def health(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/health") as resp:
        data: dict[str, Any] = await resp.json(loads=orjson.loads)
        return data


async def wait_for_waiting(session: aiohttp.ClientSession, url: str, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        waiting = int((await health(session, url)).get("waiting_claims", 0))
        if waiting >= target:
            return waiting
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{waiting} claims waiting on the server after {timeout:.0f}s, expected {target}"
            )
        await asyncio.sleep(0.02)


async def measure_fanin(
    adapter: WhatsNextAdapter, server: ServerProcess, waiters: int, rounds: int, progress: Progress
) -> dict[str, Any]:
    import psutil

    from whatsnext.api.client import Job

    await adapter.reset()
    project = await adapter.ensure_project(FANIN_PROJECT)
    proc = psutil.Process(server.pid)
    rss_idle = proc.memory_info().rss
    claim_url = f"{server.url}/projects/{FANIN_PROJECT}/claim"
    headers = adapter.headers
    received: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
    latencies: list[float] = []

    async def holder(i: int, session: aiohttp.ClientSession) -> None:
        body = _dumps({"worker_name": f"fanin-{i}", "free_cpu": 1, "max_jobs": 1, "wait": 60})
        while True:
            async with session.post(claim_url, data=body) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"claim answered HTTP {resp.status}: {raw[:200]!r}")
            now = time.time()
            for job in orjson.loads(raw)["jobs"]:
                received.put_nowait((now, job))

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        holders = [asyncio.create_task(holder(i, session)) for i in range(waiters)]
        try:
            t0 = time.perf_counter()
            await wait_for_waiting(session, server.url, waiters, 60.0)
            settle_s = time.perf_counter() - t0
            await asyncio.sleep(0.5)
            rss_waiting = proc.memory_info().rss
            cpu_before = proc.cpu_times()
            progress(
                f"fan-in: {waiters} claims waiting after {settle_s:.1f}s; server RSS "
                f"{rss_waiting / 2**20:.1f} MiB (idle {rss_idle / 2**20:.1f} MiB)"
            )
            rss_peak = rss_waiting
            for r in range(rounds):
                await wait_for_waiting(session, server.url, waiters, 30.0)
                await asyncio.sleep(0.05)
                sent = time.time()
                await project.append_queue(Job(f"fanin-{r}", NOOP_TASK, {"i": r}))
                got, job = await asyncio.wait_for(received.get(), 30.0)
                latencies.append((got - sent) * 1000.0)
                async with session.post(
                    f"{server.url}/jobs/{job['id']}/complete", data=_dumps({"attempt": job["attempt"]})
                ) as resp:
                    await resp.read()
                rss_peak = max(rss_peak, proc.memory_info().rss)
            cpu_after = proc.cpu_times()
        finally:
            # The claims still waiting are dropped by closing their connections. The server
            # keeps them until their 60 s run out (or it stops): this is the last workload,
            # and they wait on a project of their own.
            for task in holders:
                task.cancel()
            await asyncio.gather(*holders, return_exceptions=True)
    idle_cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {
        "waiters": waiters,
        "settle_s": round(settle_s, 2),
        "rss_idle_mb": round(rss_idle / 2**20, 1),
        "rss_waiting_mb": round(rss_waiting / 2**20, 1),
        "rss_peak_mb": round(rss_peak / 2**20, 1),
        "server_cpu_s_during_rounds": round(idle_cpu_s, 3),
        "wake_p50_ms": round(percentile(latencies, 50), 3),
        "wake_max_ms": round(max(latencies), 3),
        "wake_ms": [round(v, 3) for v in latencies],
    }


# --------------------------------------------------------------------------- DAG


def dag_batches(groups: int, children: int, groups_per_batch: int) -> Iterator[list[Any]]:
    """Batches of ``Job`` objects: per group a root, ``children`` jobs after it, a join after them."""
    from whatsnext.api.client import Job

    batch: list[Any] = []
    for g in range(groups):
        root = f"g{g}-root"
        kids = [f"g{g}-c{k}" for k in range(children)]
        batch.append(Job(root, NOOP_TASK, {"i": g}))
        batch.extend(Job(name, NOOP_TASK, {"i": g}, depends=[root]) for name in kids)
        batch.append(Job(f"g{g}-join", NOOP_TASK, {"i": g}, depends=kids))
        if (g + 1) % groups_per_batch == 0:
            yield batch
            batch = []
    if batch:
        yield batch


async def measure_dag(adapter: WhatsNextAdapter, cfg: BenchConfig) -> dict[str, float]:
    await adapter.reset()
    per_group = cfg.dag_children + 2
    total = cfg.dag_groups * per_group
    t0 = time.perf_counter()
    for batch in dag_batches(cfg.dag_groups, cfg.dag_children, max(1, cfg.enqueue_batch // per_group)):
        await adapter.project.extend_queue(batch)
    enqueue_s = time.perf_counter() - t0
    await analyze(adapter.dsn)
    args = ["--mode", "drain", "--jobs", str(total), "--concurrency", str(cfg.concurrency)]
    async with WorkerProcess(adapter.worker_module, args, {WORKER_DSN_ENV: adapter.dsn}) as worker:
        event = await worker.expect("drained", cfg.drain_timeout_s)
        await worker.wait_exit(30.0)
    if event["processed"] != total:
        raise WorkerError(f"DAG drain processed {event['processed']} jobs, expected {total}")
    await adapter.check_drained(total)
    elapsed = event["t_end"] - event["t_start"]
    return {
        "jobs": total,
        "jobs_s": rate(total, elapsed),
        "seconds": elapsed,
        "enqueue_jobs_s": rate(total, enqueue_s),
    }


# --------------------------------------------------------------------------- entry point


def _large_label(count: int) -> str:
    if count % 1_000_000 == 0:
        return f"{count // 1_000_000}m"
    if count % 1_000 == 0:
        return f"{count // 1_000}k"
    return str(count)


async def run_extras(
    adapter: WhatsNextAdapter, server: ServerProcess, cfg: BenchConfig, progress: Progress
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    raw: dict[str, Any] = {}

    # DAG first: it uses the same worker as the drain.
    dag_rates: list[float] = []
    dag_enqueue: list[float] = []
    for r in range(cfg.repeat):
        res = await measure_dag(adapter, cfg)
        dag_rates.append(res["jobs_s"])
        dag_enqueue.append(res["enqueue_jobs_s"])
        progress(
            f"DAG rep {r + 1}/{cfg.repeat}: {res['jobs']:,} jobs drained at {res['jobs_s']:,.0f} jobs/s "
            f"({res['seconds']:.2f}s; queued at {res['enqueue_jobs_s']:,.0f} jobs/s)"
        )
    out["dag_jobs"] = cfg.dag_groups * (cfg.dag_children + 2)
    out["dag_jobs_s"] = round(median(dag_rates), 1)
    out["dag_enqueue_jobs_s"] = round(median(dag_enqueue), 1)
    raw["dag_jobs_s"] = [round(v, 1) for v in dag_rates]
    raw["dag_enqueue_jobs_s"] = [round(v, 1) for v in dag_enqueue]

    scale: dict[str, Any] = {}
    for pending in (cfg.scale_small, cfg.scale_large):
        res = await measure_claims(adapter, pending, cfg.claim_samples)
        scale[_large_label(pending)] = res
        progress(
            f"claim with {pending:,} pending (seeded in {res['seed_s']:.1f}s): p50 {res['claim_p50_ms']:.2f} ms, "
            f"p90 {res['claim_p90_ms']:.2f} ms; complete p50 {res['complete_p50_ms']:.2f} ms"
        )
    small = scale[_large_label(cfg.scale_small)]
    large = scale[_large_label(cfg.scale_large)]
    out[f"claim_p50_ms_{_large_label(cfg.scale_small)}"] = small["claim_p50_ms"]
    out[f"claim_p50_ms_{_large_label(cfg.scale_large)}"] = large["claim_p50_ms"]
    out["claim_small_pending"] = cfg.scale_small
    out["claim_large_pending"] = cfg.scale_large
    out["claim_ratio"] = round(large["claim_p50_ms"] / small["claim_p50_ms"], 3)
    raw["scale"] = scale
    await adapter.reset()  # drop the seeded backlog before the next workload

    fanin = await measure_fanin(adapter, server, cfg.fanin_waiters, cfg.fanin_rounds, progress)
    progress(
        f"fan-in: wake p50 {fanin['wake_p50_ms']:.1f} ms, max {fanin['wake_max_ms']:.1f} ms over "
        f"{cfg.fanin_rounds} rounds with {cfg.fanin_waiters} claims waiting"
    )
    out["fanin_waiting_claims"] = fanin["waiters"]
    out["fanin_rss_mb"] = fanin["rss_waiting_mb"]
    out["fanin_rss_idle_mb"] = fanin["rss_idle_mb"]
    out["fanin_wake_p50_ms"] = fanin["wake_p50_ms"]
    raw["fanin"] = fanin
    return {"extra": out, "raw": raw}


async def run(dsn: str, cfg: BenchConfig, progress: Progress) -> dict[str, Any]:
    import whatsnext

    _raise_open_files_limit()
    async with running_server(dsn, auth=cfg.auth) as server:
        progress(f"server {server.url} (pid {server.pid}) is up{' with --auth' if cfg.auth else ''}")
        env = {SERVER_ENV: server.url, PROJECT_ENV: PROJECT}
        token = None
        if cfg.auth:
            # Stored tokens, checked the way a deployment's are: the harness's and the workers'.
            token = await server.create_token("bench", "admin")
            env[TOKEN_ENV] = await server.create_token("bench-worker", "worker")
        adapter = WhatsNextAdapter(dsn, server.url, token)
        await adapter.open()
        try:
            with temp_environ(**env):
                result = await run_suite(adapter, dsn, cfg, progress)
                extras = await run_extras(adapter, server, cfg, progress)
        finally:
            await adapter.close()
    result.update(extras["extra"])
    result["raw"].update(extras["raw"])
    result["version"] = whatsnext.__version__
    result["settings"] = {
        "server": "whatsnext server (aiohttp + uvloop, asyncpg pool 2..10), its own process",
        "auth": "--auth: harness with an admin token, workers with a worker token" if cfg.auth else "off",
        "enqueue": "AsyncProject.extend_queue(list[Job]) -> POST /projects/{p}/jobs/batch",
        "submit": "AsyncProject.append_queue(Job) -> POST /projects/{p}/jobs",
        "worker": "Client(..., PythonFormatter(async func), available_cpu=C).work_async(forever)",
        "concurrency": cfg.concurrency,
        "heartbeat": True,
        "worker_log_level": "WARNING",
        "drain_mode": "work_async(forever=False)",
        "wake_mode": "work_async(forever=True) (long-poll claims, 30 s)",
        "claim_seed": "INSERT ... SELECT generate_series into jobs, then ANALYZE",
    }
    return result
