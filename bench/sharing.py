"""Sharing a pool: fair share between projects, a newcomer's wait, and the cost of a pool claim.

``python -m bench.sharing [--quick] [--only fairness,claims]`` measures WhatsNext alone, with real
server and worker processes on a fresh database (embedded, or ``WHATSNEXT_BENCH_DATABASE_URL``):

* **fairness**: projects ``a`` (share 2) and ``b`` (share 1), each with far more 1-GPU jobs than
  the pool runs in the whole measurement (each job is ``sleep JOB_SECONDS``), on ``--workers``
  worker processes (``whatsnext worker --all-projects --gpus 0,1,2,3 --cpus 4``: GPU ids need no
  real GPU) against a server with a short ``--fair-share-half-life``. After ``--warmup`` seconds,
  the GPU-seconds each project held over ``--window`` seconds, from the jobs' start and finish
  times in the database (an attempt holds its GPUs from its hand-out to its report), and their
  ratio (target: within 10 % of 2:1).
* **arrival**: then project ``c`` (share 1) queues 3 jobs: the time from its submission to its
  first job's start, in job lengths (target: at most 1).
* **claims**: single-job claims (``max_jobs`` 1, each followed by its ``complete``), timed in
  turns: ``POST /projects/{p}/claim`` against ``POST /claim`` with ``all_projects`` and with the
  list of every project, first with 1 project holding pending jobs, then with ``--projects``
  (100). The p50 of each and the ratio of the pool claims to the project's own route (target:
  at most 1.5x).

Results go to ``bench/out/sharing.json`` and ``sharing.md``; a short table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.common import (
    DEFAULT_OUT,
    Progress,
    WorkerProcess,
    fresh_database,
    machine_info,
    percentile,
    postgres_server,
    run_async,
)
from bench.whatsnext_bench import ServerProcess

JSON = {"Content-Type": "application/json"}
SHARES = {"a": 2.0, "b": 1.0}
"""The fairness workload's projects and their shares."""
NEWCOMER = "c"
NEWCOMER_JOBS = 3
GPU_TASK = "gpu"
NOOP_TASK = "noop"
RATIO_TOLERANCE = 0.10
WAIT_TARGET_JOBS = 1.0
CLAIM_RATIO_TARGET = 1.5

Interval = tuple[str, float, float, float]
"""One attempt: its project, the GPUs it held, and when it started and ended (seconds)."""


# --------------------------------------------------------------------------- computations


def held_in_window(intervals: Iterable[Interval], start: float, end: float) -> dict[str, float]:
    """GPU-seconds each project held between ``start`` and ``end``: each attempt's GPUs times the
    part of its span inside the window (attempts wholly outside count nothing)."""
    held: dict[str, float] = {}
    for project, gpus, began, ended in intervals:
        overlap = min(ended, end) - max(began, start)
        if overlap > 0 and gpus > 0:
            held[project] = held.get(project, 0.0) + gpus * overlap
    return held


def held_by_step(
    intervals: Sequence[Interval], start: float, end: float, step: float
) -> list[dict[str, float]]:
    """:func:`held_in_window` over consecutive windows of ``step`` seconds from ``start``, as many
    whole ones as end by ``end`` (a shorter rest is left out)."""
    if step <= 0:
        raise ValueError("step must be positive")
    count = int((end - start) / step + 1e-9)
    return [held_in_window(intervals, start + i * step, start + (i + 1) * step) for i in range(count)]


def share_ratio(held: dict[str, float], first: str, second: str) -> float | None:
    """``first``'s GPU-seconds over ``second``'s (None when ``second`` held nothing)."""
    below = held.get(second, 0.0)
    return held.get(first, 0.0) / below if below > 0 else None


def within(value: float | None, target: float, tolerance: float) -> bool:
    """``value`` within ``tolerance`` (a fraction) of ``target``."""
    return value is not None and abs(value - target) <= tolerance * target


# --------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class SharingConfig:
    job_seconds: float = 1.0
    half_life: float = 60.0
    warmup: float = 60.0
    window: float = 120.0
    step: float = 30.0
    workers: int = 2
    gpus_per_worker: int = 4
    projects: int = 100
    claims: int = 200
    claim_warmup: int = 10

    @classmethod
    def make(cls, quick: bool, **given: Any) -> SharingConfig:
        base = cls(half_life=20.0, warmup=20.0, window=40.0, step=10.0, claims=100) if quick else cls()
        return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})

    @property
    def pool_gpus(self) -> int:
        return self.workers * self.gpus_per_worker

    def jobs_per_project(self) -> int:
        """Enough that no project runs dry before the end: the pool's whole throughput, twice."""
        seconds = self.warmup + self.window + 30
        return max(1_000, int(2 * self.pool_gpus * seconds / self.job_seconds))


# --------------------------------------------------------------------------- processes and HTTP


class CliProcess(WorkerProcess):
    """``whatsnext ARGS`` in its own process (``bench.whatsnext_cli``), output to a file."""

    events_on_stdout = False


@contextlib.asynccontextmanager
async def server_running(dsn: str, *extra: str) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(dsn)
    server.args += list(extra)
    try:
        await server.start()
        yield server
    finally:
        await asyncio.shield(server.stop())


async def call(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with session.request(method, url, data=None if body is None else orjson.dumps(body)) as resp:
        raw = await resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {url} answered HTTP {resp.status}: {raw[:300]!r}")
        return orjson.loads(raw) if raw else None


async def add_project(
    session: aiohttp.ClientSession, url: str, name: str, task: dict[str, Any], jobs: int, share: float = 1.0
) -> None:
    """A project with ``share``, one task and ``jobs`` pending jobs of it."""
    await call(session, "POST", f"{url}/projects", {"name": name})
    if share != 1.0:
        await call(session, "PATCH", f"{url}/projects/{name}", {"share": share})
    await call(session, "POST", f"{url}/tasks/", {"project_id": name, **task})
    for first in range(0, jobs, 5_000):
        batch = [
            {"name": f"{name}-{i}", "task": task["name"]} for i in range(first, min(jobs, first + 5_000))
        ]
        await call(session, "POST", f"{url}/projects/{name}/jobs/batch", batch)


async def db_now(conn: asyncpg.Connection) -> float:
    return float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))


# --------------------------------------------------------------------------- fairness and arrival


async def attempts(conn: asyncpg.Connection) -> list[Interval]:
    """Every attempt that started, as an interval (one still running ends now)."""
    rows = await conn.fetch(
        "SELECT p.name, j.required_accelerators AS gpus, extract(epoch FROM j.started_at) AS began, "
        "extract(epoch FROM coalesce(j.finished_at, clock_timestamp())) AS ended "
        "FROM jobs j JOIN projects p ON p.id = j.project_id WHERE j.started_at IS NOT NULL"
    )
    return [(r["name"], float(r["gpus"]), float(r["began"]), float(r["ended"])) for r in rows]


async def measure_fairness(dsn: str, cfg: SharingConfig, progress: Progress) -> dict[str, Any]:
    gpu_ids = ",".join(str(i) for i in range(cfg.gpus_per_worker))
    jobs = cfg.jobs_per_project()
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(
            server_running(dsn, "--fair-share-half-life", f"{cfg.half_life:g}")
        )
        session = await stack.enter_async_context(aiohttp.ClientSession(headers=JSON))
        conn = await asyncpg.connect(dsn)
        stack.push_async_callback(conn.close)
        task = {"name": GPU_TASK, "required_cpu": 1, "required_accelerators": 1}
        for name, share in SHARES.items():
            await add_project(session, server.url, name, task, jobs, share)
        await add_project(session, server.url, NEWCOMER, task, 0)
        progress(f"projects {', '.join(f'{n} (share {s:g})' for n, s in SHARES.items())}: {jobs:,} jobs each")
        for i in range(cfg.workers):
            args = ["worker", "--all-projects", "--gpus", gpu_ids, "--cpus", str(cfg.gpus_per_worker)]
            args += ["--command", f"sleep {cfg.job_seconds:g}", "--forever", "--name", f"pool-{i}"]
            args += ["--log-level", "WARNING"]
            worker = CliProcess("bench.whatsnext_cli", args, env={"WHATSNEXT_SERVER": server.url})
            await stack.enter_async_context(worker)
        started = await db_now(conn)
        progress(
            f"{cfg.workers} workers of {cfg.gpus_per_worker} GPUs, jobs of {cfg.job_seconds:g} s, "
            f"half-life {cfg.half_life:g} s; warm-up {cfg.warmup:g} s, then a window of {cfg.window:g} s"
        )
        await asyncio.sleep(cfg.warmup)
        window_start = await db_now(conn)
        await asyncio.sleep(cfg.window)
        window_end = await db_now(conn)
        usage = {
            r["name"]: {"usage": float(r["usage"]), "share": float(r["share"])}
            for r in await conn.fetch(
                "SELECT p.name, u.usage, u.share FROM wn_project_usage() u JOIN projects p ON p.id = u.project_id"
            )
        }

        # A newcomer queues a few jobs while the pool is full.
        batch = [{"name": f"{NEWCOMER}-{i}", "task": GPU_TASK} for i in range(NEWCOMER_JOBS)]
        await call(session, "POST", f"{server.url}/projects/{NEWCOMER}/jobs/batch", batch)
        deadline = time.monotonic() + 30 * cfg.job_seconds + 30
        while True:
            rows = await conn.fetch(
                "SELECT extract(epoch FROM j.created_at) AS created, extract(epoch FROM j.started_at) AS began "
                "FROM jobs j JOIN projects p ON p.id = j.project_id WHERE p.name = $1",
                NEWCOMER,
            )
            if all(r["began"] is not None for r in rows) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        held = await attempts(conn)
        counts = {
            f"{r['name']}:{r['status']}": int(r["n"])
            for r in await conn.fetch(
                "SELECT p.name, j.status, count(*) AS n FROM jobs j JOIN projects p ON p.id = j.project_id "
                "GROUP BY 1, 2"
            )
        }
    return summarise_fairness(cfg, held, started, window_start, window_end, rows, usage, counts)


def summarise_fairness(
    cfg: SharingConfig,
    held: list[Interval],
    started: float,
    window_start: float,
    window_end: float,
    newcomer: Sequence[Any],
    usage: dict[str, dict[str, float]],
    counts: dict[str, int],
) -> dict[str, Any]:
    window = held_in_window(held, window_start, window_end)
    ratio = share_ratio(window, "a", "b")
    span = window_end - window_start
    steps = held_by_step(held, started, window_end, cfg.step)
    created = min(float(r["created"]) for r in newcomer)
    starts = sorted(float(r["began"]) for r in newcomer if r["began"] is not None)
    first_wait = starts[0] - created if starts else None
    last_wait = starts[-1] - created if len(starts) == len(newcomer) else None
    fairness = {
        "gpu_seconds": {k: round(v, 1) for k, v in sorted(window.items())},
        "ratio_a_b": None if ratio is None else round(ratio, 3),
        "target_ratio": SHARES["a"] / SHARES["b"],
        "ratio_met": within(ratio, SHARES["a"] / SHARES["b"], RATIO_TOLERANCE),
        "utilisation": round(sum(window.values()) / (cfg.pool_gpus * span), 3) if span > 0 else None,
        "window_s": round(span, 1),
        "decayed_usage": {k: round(v["usage"], 1) for k, v in sorted(usage.items())},
        "decayed_ratio_a_b": round(usage["a"]["usage"] / usage["b"]["usage"], 3)
        if usage.get("b", {}).get("usage")
        else None,
        "by_step": [
            {
                "from_s": round(i * cfg.step, 1),
                "gpu_seconds": {k: round(v, 1) for k, v in sorted(s.items())},
                "ratio_a_b": None if (r := share_ratio(s, "a", "b")) is None else round(r, 3),
            }
            for i, s in enumerate(steps)
        ],
    }
    arrival = {
        "jobs": len(newcomer),
        "started": len(starts),
        "first_wait_s": None if first_wait is None else round(first_wait, 3),
        "first_wait_jobs": None if first_wait is None else round(first_wait / cfg.job_seconds, 3),
        "all_wait_s": None if last_wait is None else round(last_wait, 3),
        "wait_met": first_wait is not None and first_wait <= WAIT_TARGET_JOBS * cfg.job_seconds,
    }
    return {"fairness": fairness, "arrival": arrival, "jobs": counts}


# --------------------------------------------------------------------------- claim latency


@dataclasses.dataclass
class ClaimKind:
    """One way of claiming: its path and body, and the latencies it took."""

    name: str
    path: str
    body: bytes
    samples: list[float] = dataclasses.field(default_factory=list)


async def claim_once(session: aiohttp.ClientSession, url: str, kind: ClaimKind) -> float:
    """One claim of one job, then its completion: the claim's round trip in milliseconds."""
    t0 = time.perf_counter()
    async with session.post(url + kind.path, data=kind.body) as resp:
        raw = await resp.read()
    took = (time.perf_counter() - t0) * 1000.0
    if resp.status != 200:
        raise RuntimeError(f"{kind.name}: claim answered HTTP {resp.status}: {raw[:200]!r}")
    jobs = orjson.loads(raw)["jobs"]
    if len(jobs) != 1:
        raise RuntimeError(f"{kind.name}: a claim handed out {len(jobs)} jobs")
    job = jobs[0]
    await call(session, "POST", f"{url}/jobs/{job['id']}/complete", {"attempt": job["attempt"]})
    return took


async def time_claims(
    session: aiohttp.ClientSession, url: str, kinds: list[ClaimKind], samples: int, warmup: int
) -> dict[str, dict[str, float]]:
    """``samples`` claims of each kind after ``warmup`` untimed ones, in turns (so that the kinds
    see the same database and the same machine), and each kind's percentiles."""
    for kind in kinds:
        kind.samples.clear()
    for i in range(warmup + samples):
        for kind in kinds:
            took = await claim_once(session, url, kind)
            if i >= warmup:
                kind.samples.append(took)
    return {
        k.name: {
            "p50_ms": round(percentile(k.samples, 50), 3),
            "p90_ms": round(percentile(k.samples, 90), 3),
        }
        for k in kinds
    }


def claim_kinds(names: list[str]) -> list[ClaimKind]:
    base = {"worker_name": "latency", "free_cpu": 1, "max_jobs": 1}
    return [
        ClaimKind("project", f"/projects/{names[0]}/claim", orjson.dumps(base)),
        ClaimKind("all_projects", "/claim", orjson.dumps({**base, "all_projects": True})),
        ClaimKind("projects_list", "/claim", orjson.dumps({**base, "projects": names})),
    ]


async def measure_claims(dsn: str, cfg: SharingConfig, progress: Progress) -> dict[str, Any]:
    per_project = cfg.claims + cfg.claim_warmup + 50
    task = {"name": NOOP_TASK, "required_cpu": 1}
    names = [f"p{i:03d}" for i in range(cfg.projects)]
    out: dict[str, Any] = {}
    async with server_running(dsn) as server, aiohttp.ClientSession(headers=JSON) as session:
        # The first project serves every claim of the first round and the project route's of both.
        await add_project(session, server.url, names[0], task, 5 * per_project)
        out["1"] = await time_claims(
            session, server.url, claim_kinds(names[:1]), cfg.claims, cfg.claim_warmup
        )
        progress(f"claims with 1 project: {_claims_line(out['1'])}")
        for name in names[1:]:
            await add_project(session, server.url, name, task, per_project)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("ANALYZE")
            active = await conn.fetchval(
                "SELECT count(DISTINCT project_id) FROM jobs WHERE status = 'PENDING'"
            )
        finally:
            await conn.close()
        out[str(cfg.projects)] = await time_claims(
            session, server.url, claim_kinds(names), cfg.claims, cfg.claim_warmup
        )
        progress(f"claims with {active} projects with pending jobs: {_claims_line(out[str(cfg.projects)])}")
    many = out[str(cfg.projects)]
    base = many["project"]["p50_ms"]
    return {
        "samples": cfg.claims,
        "projects": cfg.projects,
        "active_projects": int(active),
        "p50_ms": out,
        "ratio_all_projects": round(many["all_projects"]["p50_ms"] / base, 3),
        "ratio_projects_list": round(many["projects_list"]["p50_ms"] / base, 3),
        "ratio_all_projects_vs_1": round(many["all_projects"]["p50_ms"] / out["1"]["project"]["p50_ms"], 3),
    }


def _claims_line(res: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{k} p50 {v['p50_ms']:.2f} ms" for k, v in res.items())


# --------------------------------------------------------------------------- report


def render(result: dict[str, Any]) -> str:
    lines = ["| measure | value | target |", "|---|---:|---|"]
    if "fairness" in result:
        f, a = result["fairness"], result["arrival"]
        held = ", ".join(f"{k} {v:,.0f}" for k, v in f["gpu_seconds"].items())
        lines += [
            f"| GPU-seconds over {f['window_s']:g} s after warm-up | {held} | |",
            f"| ratio a (share 2) / b (share 1) | {f['ratio_a_b']} | 2 ± 10 % ({'met' if f['ratio_met'] else 'missed'}) |",
            f"| pool busy over the window | {f['utilisation']:.1%} | |",
            f"| c's first job: wait after submission | {a['first_wait_s']} s = {a['first_wait_jobs']} job lengths | at most 1 ({'met' if a['wait_met'] else 'missed'}) |",
            f"| c's {a['jobs']} jobs all started after | {a['all_wait_s']} s | |",
        ]
    if "claims" in result:
        c = result["claims"]
        for n, res in c["p50_ms"].items():
            for kind, v in res.items():
                lines.append(
                    f"| claim p50, {n} project{'s' if n != '1' else ''}, {kind} | {v['p50_ms']:.2f} ms | |"
                )
        met = max(c["ratio_all_projects"], c["ratio_projects_list"]) <= CLAIM_RATIO_TARGET
        lines += [
            f"| pool claim / project claim, {c['projects']} projects: all_projects | {c['ratio_all_projects']:.2f}x | at most 1.5x ({'met' if met else 'missed'}) |",
            f"| pool claim / project claim, {c['projects']} projects: projects list | {c['ratio_projects_list']:.2f}x | |",
        ]
    return "\n".join(lines) + "\n"


def met(result: dict[str, Any]) -> bool:
    ok = True
    if "fairness" in result:
        ok = ok and result["fairness"]["ratio_met"] and result["arrival"]["wait_met"]
    if "claims" in result:
        c = result["claims"]
        ok = ok and max(c["ratio_all_projects"], c["ratio_projects_list"]) <= CLAIM_RATIO_TARGET
    return bool(ok)


async def run(cfg: SharingConfig, parts: list[str], progress: Progress) -> dict[str, Any]:
    result: dict[str, Any] = {"config": dataclasses.asdict(cfg)}
    with postgres_server(progress) as pg:
        result["machine"] = await machine_info(pg)
        if "fairness" in parts:
            async with fresh_database(pg.dsn, "sharing") as dsn:
                result.update(await measure_fairness(dsn, cfg, progress))
        if "claims" in parts:
            async with fresh_database(pg.dsn, "sharing_claims") as dsn:
                result["claims"] = await measure_claims(dsn, cfg, progress)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sharing", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="half-life 20 s, warm-up 20 s, window 40 s, 100 claims"
    )
    parser.add_argument("--only", default="fairness,claims", help="fairness, claims or both (default)")
    parser.add_argument(
        "--job-seconds", type=float, help="how long each job of the fairness workload runs (1)"
    )
    parser.add_argument("--half-life", type=float, help="the server's --fair-share-half-life (60)")
    parser.add_argument("--warmup", type=float, help="seconds before the window (60)")
    parser.add_argument("--window", type=float, help="seconds measured (120)")
    parser.add_argument("--workers", type=int, help="worker processes (2)")
    parser.add_argument("--gpus-per-worker", type=int, help="GPU ids each worker offers (4)")
    parser.add_argument("--projects", type=int, help="projects with pending jobs for the claim latency (100)")
    parser.add_argument("--claims", type=int, help="timed claims of each kind (200)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results go (bench/out)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if not parts or set(parts) - {"fairness", "claims"}:
        parser.error("--only takes fairness, claims or both")
    cfg = SharingConfig.make(
        args.quick,
        job_seconds=args.job_seconds,
        half_life=args.half_life,
        warmup=args.warmup,
        window=args.window,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        projects=args.projects,
        claims=args.claims,
    )

    def progress(message: str) -> None:
        print(f"[sharing] {message}", flush=True)

    result = run_async(run(cfg, parts, progress))
    table = render(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sharing.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "sharing.md").write_text("# Sharing a pool\n\n" + table)
    print(table, end="")
    print(f"[sharing] wrote {args.out / 'sharing.json'}, {args.out / 'sharing.md'}")
    return 0 if met(result) else 1


if __name__ == "__main__":
    sys.exit(main())
