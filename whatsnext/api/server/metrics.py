"""Prometheus metrics: one registry per application.

Counters and histograms of events (jobs submitted, attempts ended, claims, HTTP requests) are kept
in-process: each server counts what it did, so the sum over all servers is the cluster's total.
Gauges that read the database (jobs by status, waiting time of the oldest eligible job, workers,
capacity, allocation, each project's share, quotas and usage of the pool, allocations of the
allocation queues by state) are computed every
``metrics_interval`` seconds by the one server that holds a PostgreSQL session advisory lock; only
that server exports them, and ``whatsnext_metrics_leader`` says which one it is (1 there, 0
elsewhere), so summing over servers never doubles them. The hot path pays no extra SQL: waiting times come from what the claim returns,
run times from the report's ``duration``, outcomes from what the state machine answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ...models import STATUSES, TERMINAL, WORKER_STATUSES
from .background import while_serving
from .keys import database_key, settings_key, store_key
from .store import Store
from .store.base import Row
from .store.jobs import AttemptEnd
from .store.metrics import MetricsStore

log = structlog.get_logger("whatsnext.metrics")

# ``*_created`` series add nothing a scrape needs and double the size of the text.
disable_created_metrics()

WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 10800, 21600, 43200, 86400)
"""Job waiting time: from ten milliseconds (a worker was waiting) to a day (a queue far behind)."""
RUN_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
"""Job run time: from a second to a day."""
CLAIM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

CLAIM_ROUTE = "/projects/{project}/claim"
OTHER = "other"
"""The label of a route or method the server does not serve (label values stay bounded)."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_CACHED_NAMES = 10_000
_PROJECT_ID = re.compile(r"[0-9]{1,18}")  # as wn_project_id tells an id from a name


def _request_key(name: str) -> Any:
    """A typed key of a request's storage where aiohttp has them (3.12 and later), else the name."""
    return web.RequestKey(name, bool) if hasattr(web, "RequestKey") else name


_CLAIMED = _request_key("whatsnext.metrics.claimed")
_WAITED = _request_key("whatsnext.metrics.waited")


@dataclass(frozen=True)
class Standing:
    """A project's place in the shared pool: its share, quotas (None: none) and its usage decayed
    with the pool's half-life (weighted, GPU- and CPU-seconds)."""

    share: float
    usage: float
    gpu_seconds: float
    cpu_seconds: float
    max_gpus: int | None = None
    max_cpus: int | None = None
    max_running: int | None = None

    @classmethod
    def of(cls, row: Row) -> Standing:
        return cls(
            share=float(row["share"]),
            usage=float(row["usage"]),
            gpu_seconds=float(row["gpu_seconds"]),
            cpu_seconds=float(row["cpu_seconds"]),
            max_gpus=row["max_gpus"],
            max_cpus=row["max_cpus"],
            max_running=row["max_running"],
        )


@dataclass
class Snapshot:
    """The database gauges as one server computed them, in one read-only snapshot."""

    at: float
    projects: list[str]
    jobs: dict[tuple[str, str], int]
    oldest_eligible: dict[str, float]
    workers: dict[str, int]
    capacity_cpus: int
    capacity_gpus: int
    allocated: dict[str, tuple[int, int]] = field(default_factory=dict)
    pool: dict[str, Standing] = field(default_factory=dict)
    allocations: dict[str, dict[str, int]] = field(default_factory=dict)
    """Each allocation queue's allocations by state."""


async def compute_snapshot(db: MetricsStore) -> Snapshot:
    """Read the gauges (in one repeatable-read transaction: ``at``, taken before the first read,
    is a time the snapshot is no older than)."""
    at = time.time()
    projects = await db.projects()
    jobs = {(r["project"], r["status"]): int(r["jobs"]) for r in await db.job_counts()}
    oldest = {r["project"]: max(0.0, float(r["age"])) for r in await db.oldest_eligible()}
    workers = {r["state"]: r for r in await db.workers()}
    online = workers.get("online")
    allocated = {r["project"]: (int(r["cpus"]), int(r["gpus"])) for r in await db.allocated()}
    pool = {r["project"]: Standing.of(r) for r in await db.standings()}
    allocations: dict[str, dict[str, int]] = {}
    for r in await db.allocations():
        by_state = allocations.setdefault(r["queue"], {})
        if r["state"] is not None:
            by_state[r["state"]] = int(r["allocations"])
    return Snapshot(
        at=at,
        projects=projects,
        jobs=jobs,
        oldest_eligible=oldest,
        workers={state: int(r["workers"]) for state, r in workers.items()},
        capacity_cpus=int(online["cpus"]) if online else 0,
        capacity_gpus=int(online["gpus"]) if online else 0,
        allocated=allocated,
        pool=pool,
        allocations=allocations,
    )


class DatabaseGauges(Collector):
    """Exports the latest :class:`Snapshot` while this server computes the gauges; nothing but
    ``whatsnext_metrics_leader 0`` otherwise (another server exports them)."""

    WORKER_STATES = tuple(s.lower() for s in WORKER_STATUSES)
    SILENT = "silent"
    """The former name of ``lost``, exported beside it (same value) for one release."""
    ALLOCATION_STATES = ("QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED")

    def __init__(self) -> None:
        self.leader = False
        self.snapshot: Snapshot | None = None

    def step_down(self) -> None:
        self.leader = False
        self.snapshot = None

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self.snapshot if self.leader else None))

    def _families(self, s: Snapshot | None) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "whatsnext_metrics_leader",
            "1 on the server that computes the database gauges (whatsnext_jobs and the others "
            "read from the database), 0 on every other server",
            value=1 if s is not None else 0,
        )
        jobs = GaugeMetricFamily("whatsnext_jobs", "Jobs by project and status", labels=["project", "status"])
        oldest = GaugeMetricFamily(
            "whatsnext_oldest_eligible_age_seconds",
            "How long the oldest eligible job of the project (pending, dependencies met) has waited",
            labels=["project"],
        )
        workers = GaugeMetricFamily(
            "whatsnext_workers",
            "Registered workers by state: online, lost (last heartbeat older than its lease; not "
            "during the recovery grace after an outage of the queue), offline (left); silent: the "
            "former name of lost, the same value, exported for one release",
            labels=["state"],
        )
        cpus = GaugeMetricFamily("whatsnext_capacity_cpus", "CPUs declared by online workers")
        gpus = GaugeMetricFamily("whatsnext_capacity_gpus", "GPUs declared by online workers")
        alloc_cpus = GaugeMetricFamily(
            "whatsnext_allocated_cpus", "CPUs held by the project's running jobs", labels=["project"]
        )
        alloc_gpus = GaugeMetricFamily(
            "whatsnext_allocated_gpus", "GPUs held by the project's running jobs", labels=["project"]
        )
        if s is not None:
            projects = sorted(set(s.projects) | {p for p, _ in s.jobs} | set(s.allocated))
            for project in projects:
                for status in STATUSES:
                    jobs.add_metric([project, status], s.jobs.get((project, status), 0))
                oldest.add_metric([project], s.oldest_eligible.get(project, 0.0))
                c, g = s.allocated.get(project, (0, 0))
                alloc_cpus.add_metric([project], c)
                alloc_gpus.add_metric([project], g)
            for state in self.WORKER_STATES:
                workers.add_metric([state], s.workers.get(state, 0))
            workers.add_metric([self.SILENT], s.workers.get("lost", 0))
            cpus.add_metric([], s.capacity_cpus)
            gpus.add_metric([], s.capacity_gpus)
        yield from (jobs, oldest, workers, cpus, gpus, alloc_cpus, alloc_gpus)
        yield from self._pool_families(s)
        queues = GaugeMetricFamily(
            "whatsnext_allocations",
            "Allocations of each allocation queue by state (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)",
            labels=["queue", "state"],
        )
        for queue, by_state in sorted(s.allocations.items()) if s is not None else ():
            for state in self.ALLOCATION_STATES:
                queues.add_metric([queue, state], by_state.get(state, 0))
        yield queues
        at = GaugeMetricFamily(
            "whatsnext_metrics_computed_timestamp_seconds",
            "When this server last computed the database gauges (Unix time)",
        )
        if s is not None:
            at.add_metric([], s.at)
        yield at

    @staticmethod
    def _pool_families(s: Snapshot | None) -> Iterator[Metric]:
        """Each project's share, quotas and usage of the pool (a quota's gauge only where the
        project has that quota)."""

        def gauge(name: str, text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=["project"])

        usage_gpu = gauge(
            "whatsnext_project_usage_gpu_seconds",
            "GPU-seconds the project's attempts used, running ones included, decayed with the pool's half-life",
        )
        usage_cpu = gauge(
            "whatsnext_project_usage_cpu_seconds",
            "CPU-seconds the project's attempts used, running ones included, decayed with the pool's half-life",
        )
        usage = gauge(
            "whatsnext_project_usage",
            "The project's usage of the pool as fair share weighs it: seconds times each attempt's GPUs "
            "(or CPUs / 8 when more), decayed with the pool's half-life",
        )
        share = gauge("whatsnext_project_share", "The project's share of the pool (its weight in fair share)")
        quota_gpus = gauge("whatsnext_project_quota_gpus", "GPUs the project's running jobs may hold at once")
        quota_cpus = gauge("whatsnext_project_quota_cpus", "CPUs the project's running jobs may hold at once")
        quota_running = gauge("whatsnext_project_quota_running", "Jobs the project may have running at once")
        for project, p in sorted(s.pool.items()) if s is not None else ():
            usage_gpu.add_metric([project], p.gpu_seconds)
            usage_cpu.add_metric([project], p.cpu_seconds)
            usage.add_metric([project], p.usage)
            share.add_metric([project], p.share)
            for family, quota in (
                (quota_gpus, p.max_gpus),
                (quota_cpus, p.max_cpus),
                (quota_running, p.max_running),
            ):
                if quota is not None:
                    family.add_metric([project], quota)
        yield from (usage_gpu, usage_cpu, usage, share, quota_gpus, quota_cpus, quota_running)


class Metrics:
    """The application's registry and the calls that feed it."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.submitted = Counter(
            "whatsnext_jobs_submitted", "Jobs queued through this server", ["project"], registry=r
        )
        self.finished = Counter(
            "whatsnext_jobs_finished",
            "Jobs that ended for good (outcome: completed, failed, cancelled), by this server's "
            "reports and lease reaper",
            ["project", "task", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "whatsnext_job_retries",
            "Failed attempts put back in the queue because attempts remained",
            ["project"],
            registry=r,
        )
        self.lost = Counter(
            "whatsnext_jobs_lost",
            "Running jobs whose worker was lost (lease expired), requeued or failed",
            ["project"],
            registry=r,
        )
        self.job_wait = Histogram(
            "whatsnext_job_wait_seconds",
            "From the moment a job became eligible (dependencies met, requeued, retry delay over) "
            "to its hand-out to a worker",
            ["project"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.job_run = Histogram(
            "whatsnext_job_run_seconds",
            "How long an attempt ran, as its worker reported",
            ["project", "task"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.claims = Counter(
            "whatsnext_claims",
            "Claim requests by result: jobs (handed out), empty (nothing, without waiting), "
            "timed_out (nothing after a long-poll)",
            ["result"],
            registry=r,
        )
        self.claim_wait = Histogram(
            "whatsnext_claim_wait_seconds",
            "How long a claim request took, long-poll included",
            buckets=CLAIM_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "whatsnext_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "whatsnext_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        for result in ("jobs", "empty", "timed_out"):
            self.claims.labels(result)
        self.gauges = DatabaseGauges()
        r.register(self.gauges)
        self._names: dict[int, str] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    async def project_label(self, store: Store, key: str) -> str:
        """The project's name for a label, whether the request named it by name or by id (an id
        costs one query the first time this server sees it)."""
        if not _PROJECT_ID.fullmatch(key):
            return key
        project_id = int(key)
        name = self._names.get(project_id)
        if name is None:
            name = await store.metrics.project_name(project_id=project_id) or key
            if len(self._names) < MAX_CACHED_NAMES:
                self._names[project_id] = name
        return name

    def jobs_submitted(self, project: str, count: int) -> None:
        """A submission queued ``count`` jobs in ``project`` (its name, as the statement returned it)."""
        if count:
            self.child(self.submitted, project).inc(count)

    async def jobs_claimed(
        self, request: web.Request, key: str, rows: Sequence[Row], lease_seconds: float
    ) -> None:
        """A claim handed out ``rows``: each one's wait, from its ``eligible_at`` to the database
        time of the claim (its lease end less the lease)."""
        request[_CLAIMED] = True
        project = await self.project_label(request.app[store_key], key)
        histogram = self.child(self.job_wait, project)
        lease = timedelta(seconds=lease_seconds)
        for row in rows:
            eligible, lease_end = row.get("eligible_at"), row.get("lease_expires_at")
            if eligible is not None and lease_end is not None:
                histogram.observe(max(0.0, (lease_end - lease - eligible).total_seconds()))

    @staticmethod
    def claim_waits(request: web.Request) -> None:
        """The claim found nothing and starts a long-poll."""
        request[_WAITED] = True

    def attempts_ended(self, changes: Sequence[AttemptEnd], rows: Sequence[Row]) -> None:
        """Count what the state machine did with reports (``wn_end_attempts`` rows, one per change,
        ``ord`` numbering the changes from 1)."""
        seen: set[int] = set()
        for row in rows:
            if not row.get("changed") or row["id"] in seen:
                continue
            seen.add(row["id"])
            change = changes[row["ord"] - 1]
            self._ended(row["project_name"], row["task_name"], change["outcome"], row["status"])
            duration = change.get("duration")
            if duration is not None:
                self.child(self.job_run, row["project_name"], row["task_name"]).observe(duration)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: label values are bounded, and this runs for
        every request and every reported job."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def jobs_lost(self, rows: Iterable[Row]) -> None:
        """Count a reaper sweep: (project_name, task_name, status, jobs) rows."""
        for row in rows:
            self._ended(row["project_name"], row["task_name"], "LOST", row["status"], row["jobs"])

    def _ended(self, project: str, task: str, outcome: str, status: str, n: int = 1) -> None:
        if status in TERMINAL:
            self.child(self.finished, project, task, status.lower()).inc(n)
        elif status == "PENDING" and outcome == "FAILED":
            self.child(self.retries, project).inc(n)
        if outcome == "LOST":
            self.child(self.lost, project).inc(n)

    def request_done(self, request: web.Request, status: int, seconds: float) -> None:
        route = route_label(request)
        method = request.method if request.method in METHODS else OTHER
        self.child(self.http_requests, method, route, str(status)).inc()
        self.child(self.http_seconds, method, route).observe(seconds)
        if route == CLAIM_ROUTE and status == 200:
            self.claim_wait.observe(seconds)
            if request.get(_CLAIMED):
                result = "jobs"
            elif request.get(_WAITED):
                result = "timed_out"
            else:
                result = "empty"
            self.child(self.claims, result).inc()


def route_label(request: web.Request) -> str:
    """The route template (``/jobs/{job_id}``), never the raw path; ``other`` for what no route
    serves (404, 405)."""
    match = request.match_info
    resource = match.route.resource
    if resource is None or match.http_exception is not None:
        return OTHER
    return resource.canonical


class ProjectScope(Collector):
    """What a token of some projects sees of a registry: the series of its projects (by their
    ``project`` label, so with their tasks) and the server-wide ones, which carry no ``project``
    label (HTTP requests by route template, claims by result, workers by state, total capacity).
    A family whose samples all belong to other projects stays, empty."""

    def __init__(self, registry: Collector, projects: frozenset[str]) -> None:
        self.registry = registry
        self.projects = projects

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            samples = [
                s for s in family.samples if "project" not in s.labels or s.labels["project"] in self.projects
            ]
            if len(samples) != len(family.samples):
                family = copy.copy(family)
                family.samples = samples
            yield family


metrics_key = web.AppKey("metrics", Metrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away
        raise
    finally:
        request.app[metrics_key].request_done(request, status, time.perf_counter() - started)


async def _compute_gauges(app: web.Application) -> None:
    """Every interval: try to become (or stay) the server that computes the database gauges, on a
    connection of its own (a session lock needs a session: the direct one behind a pooler)."""
    metrics, settings = app[metrics_key], app[settings_key]
    gauges = metrics.gauges
    url = settings.direct_database_url or app[database_key]
    conn: asyncpg.Connection | None = None
    try:
        while True:
            try:
                if conn is None or conn.is_closed():
                    gauges.step_down()
                    conn = await asyncpg.connect(
                        url, server_settings={"application_name": "whatsnext-metrics"}
                    )
                db = MetricsStore(conn)
                if not gauges.leader:
                    gauges.leader = await db.lead()
                    if gauges.leader:
                        log.info("computing the database gauges of /metrics")
                if gauges.leader:
                    async with conn.transaction(isolation="repeatable_read", readonly=True):
                        gauges.snapshot = await compute_snapshot(db)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("computing the database gauges failed", error=str(exc))
                gauges.step_down()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=5)
                    conn = None
            await asyncio.sleep(settings.metrics_interval)
    finally:
        gauges.step_down()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)


async def _gauges_context(app: web.Application) -> AsyncIterator[None]:
    async for _ in while_serving(_compute_gauges(app), "metrics gauges"):
        yield


def install_metrics(app: web.Application) -> None:
    """Give ``app`` its registry, the HTTP middleware (outermost: it sees every final status) and
    the gauge computation; call before the application starts."""
    app[metrics_key] = Metrics()
    app.middlewares.insert(0, metrics_middleware)
    app.cleanup_ctx.append(_gauges_context)
