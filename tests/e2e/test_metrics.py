"""/metrics: exact counts after a known workload, bounded labels, and database gauges that several
servers on one database do not double."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from conftest import Api, ServerProcess, create_database, drop_database, wait_until
from prometheus_client.parser import text_string_to_metric_families

from whatsnext.api.client import AsyncServer, Client, Job, PythonFormatter

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
FAST = ("--metrics-interval", "0.1")


class Scrape:
    """One parsed scrape: sample values by (sample name, labels)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.series: Series = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.series[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when absent (a counter not yet incremented)."""
        return self.series.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.series)

    def label_values(self) -> set[str]:
        """Every label value but bucket bounds and HTTP status codes."""
        return {v for _, labels in self.series for k, v in labels if k not in ("le", "status")}


async def scrape(http: aiohttp.ClientSession, srv: ServerProcess) -> Scrape:
    async with http.get(srv.url + "/metrics") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        return Scrape(await resp.text())


@pytest.fixture
async def own_database(pg_root_url: str) -> AsyncIterator[str]:
    """A database of this test's own: no other test's jobs, workers or projects in the gauges."""
    url = await create_database(pg_root_url, "wn_metrics")
    yield url
    await drop_database(pg_root_url, url)


async def computed(http: aiohttp.ClientSession, srv: ServerProcess, what: str = "fresh gauges") -> Scrape:
    """Wait until ``srv`` exports database gauges computed after this call began (they then show
    everything committed before it)."""
    since = time.time()
    found: list[Scrape] = []

    async def ready() -> bool:
        s = await scrape(http, srv)
        found[:] = [s]
        return (
            s.get("whatsnext_metrics_leader") == 1
            and s.get("whatsnext_metrics_computed_timestamp_seconds") > since
        )

    await wait_until(ready, timeout=20, what=what)
    return found[0]


async def test_a_known_workload_gives_exact_counts(
    own_database: str, server_factory: Any, http: aiohttp.ClientSession
) -> None:
    # The lost job's lease is backdated below and swept at once (SIGUSR1).
    srv: ServerProcess = await server_factory(*FAST, database=own_database)
    api = Api(srv.url, http)
    name = f"m-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": name})
    p = await AsyncServer(srv.url).get_project(name)
    attempts: dict[str, int] = {}

    def work(mode: str, key: str) -> str:
        attempts[key] = attempts.get(key, 0) + 1
        if mode == "fail" or (mode == "flaky" and attempts[key] == 1):
            raise RuntimeError(f"{key} fails")
        return key

    # 3 that succeed (one batch), 1 that fails for good, 1 that fails once and is retried, a DAG
    # of three, and one job that waits on the failing one (BLOCKED).
    await p.extend_queue([Job(f"ok{i}", "work", {"mode": "ok", "key": f"ok{i}"}) for i in range(3)])
    bad = await p.append_queue(Job("bad", "work", {"mode": "fail", "key": "bad"}, max_attempts=1))
    await p.append_queue(
        Job("flaky", "work", {"mode": "flaky", "key": "flaky"}, max_attempts=2, retry_delay=0)
    )
    a = await p.append_queue(Job("a", "step", {"mode": "ok", "key": "a"}))
    b = await p.append_queue(Job("b", "step", {"mode": "ok", "key": "b"}, depends={a.id: "a"}))
    await p.append_queue(Job("c", "step", {"mode": "ok", "key": "c"}, depends={b.id: "b"}))
    await p.append_queue(Job("after-bad", "step", {"mode": "ok", "key": "x"}, depends={bad.id: "bad"}))

    summary = await Client("t", "w", p, PythonFormatter(work), available_cpu=4).work_async()
    assert (summary.completed, summary.failed) == (7, 2)  # the flaky job's first failure included

    s = await scrape(http, srv)
    assert s.types["whatsnext_jobs_submitted"] == "counter"
    assert s.types["whatsnext_job_wait_seconds"] == "histogram"
    assert "# HELP whatsnext_jobs_finished_total" in s.text
    assert s.get("whatsnext_jobs_submitted_total", project=name) == 9
    assert s.get("whatsnext_jobs_finished_total", project=name, task="work", outcome="completed") == 4
    assert s.get("whatsnext_jobs_finished_total", project=name, task="work", outcome="failed") == 1
    assert s.get("whatsnext_jobs_finished_total", project=name, task="step", outcome="completed") == 3
    assert s.get("whatsnext_job_retries_total", project=name) == 1
    assert s.get("whatsnext_jobs_lost_total", project=name) == 0
    # Every hand-out waited (5 + 1 retry + 3 of the DAG), every attempt ran (reports carry duration).
    assert s.get("whatsnext_job_wait_seconds_count", project=name) == 9
    assert s.get("whatsnext_job_run_seconds_count", project=name, task="work") == 6
    assert s.get("whatsnext_job_run_seconds_count", project=name, task="step") == 3
    assert s.get("whatsnext_job_run_seconds_bucket", project=name, task="step", le="86400.0") == 3
    assert s.get("whatsnext_job_run_seconds_bucket", project=name, task="step", le="+Inf") == 3
    claims = sum(s.get("whatsnext_claims_total", result=r) for r in ("jobs", "empty", "timed_out"))
    assert s.get("whatsnext_claims_total", result="jobs") >= 1
    assert s.get("whatsnext_claim_wait_seconds_count") == claims

    g = await computed(http, srv)
    expected = {"PENDING": 0, "RUNNING": 0, "COMPLETED": 7, "FAILED": 1, "CANCELLED": 0, "BLOCKED": 1}
    assert {st: g.get("whatsnext_jobs", project=name, status=st) for st in expected} == expected
    assert g.get("whatsnext_oldest_eligible_age_seconds", project=name) == 0
    assert g.get("whatsnext_workers", state="offline") == 1  # the client left when done

    # A claim that finds nothing answers at once (empty) or after its long-poll (timed_out).
    before = await scrape(http, srv)
    for wait in (0, 0.2):
        assert await api.ok("POST", f"/projects/{name}/claim", {"wait": wait}) == {"jobs": []}
    after = await scrape(http, srv)
    for result, n in (("empty", 1), ("timed_out", 1), ("jobs", 0)):
        delta = after.get("whatsnext_claims_total", result=result) - before.get(
            "whatsnext_claims_total", result=result
        )
        assert delta == n, result

    # A registered worker holds a job needing 2 CPUs and a GPU, then vanishes: its lease runs out.
    worker = await api.ok("POST", "/workers", {"name": "gone", "project": name, "cpu": 16, "accelerators": 4})
    lost = await p.append_queue(Job("lost", "work", {}, required_cpu=2, required_accelerators=1))
    got = await api.ok(
        "POST",
        f"/projects/{p.id}/claim",
        {"worker_id": worker["id"], "free_cpu": 16, "free_accelerators": 4},
    )
    assert [j["id"] for j in got["jobs"]] == [lost.id]
    g = await computed(http, srv)
    assert g.get("whatsnext_jobs", project=name, status="RUNNING") == 1
    assert g.get("whatsnext_allocated_cpus", project=name) == 2
    assert g.get("whatsnext_allocated_gpus", project=name) == 1
    assert (g.get("whatsnext_capacity_cpus"), g.get("whatsnext_capacity_gpus")) == (16, 4)
    assert g.get("whatsnext_workers", state="online") + g.get("whatsnext_workers", state="silent") == 1

    conn = await asyncpg.connect(own_database)
    try:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 minute' WHERE id = $1", lost.id
        )
    finally:
        await conn.close()

    async def reaped() -> bool:
        return (await scrape(http, srv)).get("whatsnext_jobs_lost_total", project=name) == 1

    srv.sweep()
    await wait_until(reaped, timeout=20, what="the reaper to count the lost job")
    g = await computed(http, srv)
    assert g.get("whatsnext_jobs", project=name, status="PENDING") == 1
    assert g.get("whatsnext_jobs", project=name, status="RUNNING") == 0
    assert g.get("whatsnext_allocated_cpus", project=name) == 0
    assert g.get("whatsnext_oldest_eligible_age_seconds", project=name) >= 0
    s = await scrape(http, srv)
    assert s.get("whatsnext_jobs_submitted_total", project=name) == 10  # by id or by name: one label
    assert s.get("whatsnext_job_wait_seconds_count", project=name) == 10
    assert s.get("whatsnext_jobs_finished_total", project=name, task="work", outcome="failed") == 1
    assert s.get("whatsnext_job_retries_total", project=name) == 1

    # Requests are labelled by route template; what no route serves is "other".
    assert (
        s.get("whatsnext_http_requests_total", method="POST", route="/projects/{project}/claim", status="200")
        >= 3
    )
    for path in ("/nothing/here", "/nothing/else/1"):
        async with http.get(srv.url + path) as resp:
            assert resp.status == 404
    s = await scrape(http, srv)
    assert s.get("whatsnext_http_requests_total", method="GET", route="other", status="404") == 2
    assert s.get("whatsnext_http_request_duration_seconds_count", method="GET", route="other") == 2


async def test_labels_stay_bounded_with_many_jobs(
    own_database: str, server_factory: Any, http: aiohttp.ClientSession
) -> None:
    srv: ServerProcess = await server_factory(*FAST, database=own_database)
    api = Api(srv.url, http)
    name = f"b-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": name})

    async def round_of(n: int) -> list[int]:
        jobs = [{"name": f"job-{uuid.uuid4().hex}", "task": "t", "parameters": {"i": i}} for i in range(n)]
        ids: list[int] = (await api.ok("POST", f"/projects/{name}/jobs/batch", jobs))["ids"]
        for job_id in ids[:20]:
            await api.ok("GET", f"/jobs/{job_id}")
            assert (await api.get(f"/jobs/{job_id + 10**9}"))[0] == 404
        return ids

    first = await round_of(5)
    await scrape(http, srv)  # a scrape is counted once answered: the next one has its series
    s1 = await computed(http, srv)
    assert s1.get("whatsnext_jobs", project=name, status="PENDING") == 5
    ids = first + await round_of(300)
    s2 = await computed(http, srv)
    assert s2.get("whatsnext_jobs", project=name, status="PENDING") == 305
    assert set(s2.series) == set(s1.series), "the series do not depend on how many jobs there are"
    assert s2.get("whatsnext_jobs_submitted_total", project=name) == 305
    assert s2.get("whatsnext_http_requests_total", method="GET", route="/jobs/{job_id}", status="200") == 25
    values = s2.label_values()
    assert not {str(i) for i in ids} & values and not any(v.startswith("job-") for v in values)


async def test_two_servers_do_not_double_the_gauges(
    own_database: str, server_factory: Any, http: aiohttp.ClientSession
) -> None:
    one, two = await asyncio.gather(
        server_factory(*FAST, database=own_database), server_factory(*FAST, database=own_database)
    )
    api = Api(one.url, http)
    name = f"d-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": name})
    await api.ok("POST", f"/projects/{name}/jobs/batch", [{"name": f"j{i}", "task": "t"} for i in range(7)])

    async def both() -> tuple[Scrape, Scrape] | None:
        a, b = await scrape(http, one), await scrape(http, two)
        total = sum(s.get("whatsnext_jobs", project=name, status="PENDING") for s in (a, b))
        leaders = a.get("whatsnext_metrics_leader") + b.get("whatsnext_metrics_leader")
        return (a, b) if total == 7 and leaders == 1 else None

    a, b = await wait_until(both, timeout=20, what="one server exporting the gauges")
    leader, other, other_scrape = (one, two, b) if a.get("whatsnext_metrics_leader") == 1 else (two, one, a)
    for family in (
        "whatsnext_jobs",
        "whatsnext_workers",
        "whatsnext_capacity_cpus",
        "whatsnext_allocated_cpus",
    ):
        assert not other_scrape.has(family), f"{family} exported by the server that does not compute it"
    assert other_scrape.get("whatsnext_metrics_leader") == 0
    # Counters stay with the server that counted: the submission went to the first one.
    assert a.get("whatsnext_jobs_submitted_total", project=name) == 7
    assert b.get("whatsnext_jobs_submitted_total", project=name) == 0

    # The computing server stops: the other takes over within an interval or so.
    await leader.stop()
    g = await computed(http, other, "the other server to take over")
    assert g.get("whatsnext_jobs", project=name, status="PENDING") == 7
    assert g.get("whatsnext_jobs", project=name, status="COMPLETED") == 0


async def test_with_auth_metrics_need_a_token(
    own_database: str, server_factory: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    token = "metrics-admin-" + uuid.uuid4().hex
    (tmp_path / "admin-token").write_text(token + "\n")
    srv: ServerProcess = await server_factory(
        "--auth", "--admin-token-file", str(tmp_path / "admin-token"), database=own_database
    )
    async with http.get(srv.url + "/metrics") as resp:
        assert resp.status == 401
    async with http.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200
        s = Scrape(await resp.text())
    assert s.get("whatsnext_http_requests_total", method="GET", route="/metrics", status="401") == 1
