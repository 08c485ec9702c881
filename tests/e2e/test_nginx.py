"""Two servers on one database behind Debian's nginx running docs/nginx-whatsnext.conf.

Real workers drain a graph of jobs through the balancer while one server is killed: every job
runs exactly once and after its dependencies. A worker long-polling one server wakes for a job
queued through the other; long-polls and silent log follows outlast nothing the proxy allows.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Api, ServerProcess, create_database, drop_database, wait_until
from helpers import records, spawn_worker
from proxy_env import NGINX_CONF, Nginx, require_proxies

JOBS = 300
"""Jobs in the drain: 100 chains of 3 (about 20 s on 2 cores with 4 workers)."""
CHAIN = 3
MAX_WAIT = 4.0
"""The servers' --max-wait here, short so that the cap is reached within the test."""
KEEPALIVE = 0.5
TRUSTED = "127.0.0.1/32"
"""nginx's address, given to the servers with --trusted-proxy (as docs/nginx-whatsnext.conf says)."""


FLAGS = ("--lease-seconds", "6", "--max-wait", str(MAX_WAIT), "--trusted-proxy", TRUSTED)


async def _start_server(url: str, port: int | None = None) -> ServerProcess:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WHATSNEXT_KEEPALIVE_SECONDS", str(KEEPALIVE))
        return await ServerProcess(url, *FLAGS, port=port).start()


@pytest.fixture(scope="module")
async def shared_cluster(pg_root_url: str) -> AsyncIterator[dict[str, Any]]:
    """A fresh database, two servers on it and nginx in front of them, for this module's tests
    (each uses projects of its own)."""
    require_proxies()
    url = await create_database(pg_root_url, "wn_nginx")
    servers = [await _start_server(url), await _start_server(url)]
    nginx = await Nginx([srv.port for srv in servers]).start()
    try:
        async with aiohttp.ClientSession() as session:
            yield {"servers": servers, "nginx": nginx, "session": session, "url": url}
    finally:
        nginx.stop()
        for srv in servers:
            await srv.stop()
        await drop_database(pg_root_url, url)


@pytest.fixture
async def cluster(shared_cluster: dict[str, Any]) -> dict[str, Any]:
    """The module's cluster with both servers up: one that a test killed starts again on its port."""
    servers: list[ServerProcess] = shared_cluster["servers"]
    for i, srv in enumerate(servers):
        if not srv.alive():
            servers[i] = await _start_server(shared_cluster["url"], port=srv.port)
    return shared_cluster


def _job_starts(logs: list[Path]) -> Counter[int]:
    """How often the workers started each job (their "job started" log events)."""
    starts: Counter[int] = Counter()
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if "job started" not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "job started":
                starts[int(event["job"])] += 1
    return starts


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in workers:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_documented_config_never_resends_a_post() -> None:
    conf = NGINX_CONF.read_text()
    assert "proxy_next_upstream error timeout;" in conf
    assert "non_idempotent" not in conf.split("proxy_next_upstream error timeout;")[1].split("\n")[0]
    assert "proxy_buffering off;" in conf and "keepalive " in conf
    # The browser's Host with its port reaches the servers (their Origin check compares ports).
    assert "proxy_set_header Host $http_host;" in conf and "--trusted-proxy" in conf


async def test_web_pages_through_nginx_need_nginx_s_own_origin(cluster: dict[str, Any]) -> None:
    """Behind nginx, a page of nginx's own origin (scheme, host and port) may use the API and post
    the dashboard's forms; a page on another port of the same host (a server's own port included)
    may not, and a forged X-Forwarded-Host from a client is not believed."""
    nginx: Nginx = cluster["nginx"]
    first, _ = cluster["servers"]
    http: aiohttp.ClientSession = cluster["session"]
    own = nginx.url
    name = f"ngx-{uuid.uuid4().hex[:8]}"
    async with http.post(own + "/projects", json={"name": name}, headers={"Origin": own}) as resp:
        assert resp.status == 201, await resp.text()
    async with http.post(
        f"{own}/projects/{name}/jobs", json={"name": "j", "task": "t"}, headers={"Origin": own}
    ) as resp:
        assert resp.status == 201, await resp.text()
    for other in (first.url, f"http://127.0.0.1:{nginx.port + 1}", f"https://127.0.0.1:{nginx.port}"):
        async with http.post(
            f"{own}/projects/{name}/jobs", json={"name": "x", "task": "t"}, headers={"Origin": other}
        ) as resp:
            assert resp.status == 403, other
            assert (await resp.json())["error"]["code"] == "forbidden_origin"
        preflight = {"Origin": other, "Access-Control-Request-Method": "POST"}
        async with http.options(f"{own}/projects/{name}/jobs", headers=preflight) as resp:
            assert resp.status == 403, other
    # A client cannot make another origin nginx's by sending X-Forwarded-Host (nginx drops it).
    async with http.post(
        f"{own}/projects/{name}/jobs",
        json={"name": "x", "task": "t"},
        headers={"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example"},
    ) as resp:
        assert resp.status == 403

    # The dashboard's forms, through nginx, from nginx's own origin: the confirmation page.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{own}/ui/projects/{name}") as resp:
            assert resp.status == 200
            page = await resp.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        form = {"csrf": csrf.group(1), "do": "cancel:filter"}
        async with browser.post(
            f"{own}/ui/projects/{name}/actions", data=form, headers={"Origin": own}
        ) as resp:
            assert resp.status == 200 and 'id="confirm-count">1<' in await resp.text()
        async with browser.post(
            f"{own}/ui/projects/{name}/actions", data=form, headers={"Origin": first.url}
        ) as resp:
            assert resp.status == 403


async def test_a_worker_on_one_server_wakes_for_a_job_queued_through_the_other(
    cluster: dict[str, Any], tmp_path: Path
) -> None:
    first, second = cluster["servers"]
    on_first, on_second = Api(first.url, cluster["session"]), Api(second.url, cluster["session"])
    project = (await on_second.ok("POST", "/projects", {"name": f"ngx-{uuid.uuid4().hex[:8]}"}))["name"]
    out = tmp_path / "out"
    out.mkdir()
    worker = spawn_worker(first.url, project, tmp_path / "worker.log", "--cpus", "1", "--forever")

    async def long_polling() -> bool:
        return bool((await on_first.ok("GET", "/health"))["waiting_claims"])

    try:
        await wait_until(long_polling, 30, what="the worker to long-poll the first server")
        queued = time.time()
        job = await on_second.ok(
            "POST", f"/projects/{project}/jobs", {"name": "x", "task": "t", "parameters": {"out": str(out)}}
        )

        async def ran() -> bool:  # reported: its program has exited and its record is complete
            return (await on_second.ok("GET", f"/jobs/{job['id']}"))["status"] == "COMPLETED"

        await wait_until(ran, 20, interval=0.05, what="the job queued through the other server to run")
        started = records(out)[job["id"]]["start"]
        print(
            f"job queued through one server started by a worker on the other after {started - queued:.3f} s"
        )
        # Woken at once, not after the long-poll's max wait (4 s) ran out.
        assert started - queued < 2.5, f"the job started {started - queued:.2f} s after it was queued"
    finally:
        _stop_workers([worker])


async def test_long_polls_and_silent_log_follows_through_nginx(cluster: dict[str, Any]) -> None:
    """Through nginx, side by side (each waits out the servers' max wait once): a claim asking
    for more than the cap is answered (empty) at the cap; the follow of a job that prints nothing
    carries keep-alives and ends at the cap; the SDK's follow of another job skips the keep-alives
    and resumes after the cap until that job is finished."""
    nginx: Nginx = cluster["nginx"]
    session: aiohttp.ClientSession = cluster["session"]
    api = Api(nginx.url, session)
    health = await api.ok("GET", "/health")
    assert health["max_wait"] == MAX_WAIT
    project = (await api.ok("POST", "/projects", {"name": f"ngx-{uuid.uuid4().hex[:8]}"}))["name"]
    silent = await api.ok("POST", f"/projects/{project}/jobs", {"name": "silent", "task": "t"})
    talking = await api.ok("POST", f"/projects/{project}/jobs", {"name": "talking", "task": "t"})
    worker = await api.ok("POST", "/workers", {"name": "w", "project": project, "cpu": 2})
    claimed = await api.ok(
        "POST",
        f"/projects/{project}/claim",
        {"worker_name": "w", "worker_id": worker["id"], "free_cpu": 2, "max_jobs": 2},
    )
    assert sorted(j["id"] for j in claimed["jobs"]) == sorted([silent["id"], talking["id"]])
    attempt = {j["id"]: j["attempt"] for j in claimed["jobs"]}
    beat = f"/workers/{worker['id']}/heartbeat"  # keeps the jobs leased (6 s) while the test reads
    running = {"running": [silent["id"], talking["id"]]}
    loop = asyncio.get_running_loop()

    async def capped_claim() -> float:
        t0 = loop.time()
        status, body = await api.post(
            f"/projects/{project}/claim", {"worker_name": "w", "wait": 60}, timeout=30
        )
        assert status == 200 and body["jobs"] == [], body
        return loop.time() - t0

    async def silent_follow() -> tuple[list[dict[str, Any]], float]:
        t0 = loop.time()
        async with session.get(f"{nginx.url}/jobs/{silent['id']}/logs?follow=1") as resp:
            assert resp.status == 200
            events = [json.loads(line) async for line in resp.content if line.strip()]
        return events, loop.time() - t0

    from whatsnext.api.client.http import Http
    from whatsnext.api.client.joblogs import follow_logs

    http = Http(nginx.url)
    seen: list[dict[str, Any]] = []

    async def follow() -> None:
        async for event in follow_logs(http, talking["id"]):
            seen.append(event)

    async def got(n: int) -> bool:
        return len(seen) >= n

    follower = asyncio.ensure_future(follow())
    try:
        lines = {"attempt": attempt[talking["id"]], "lines": ["first"]}
        await api.ok("POST", f"/jobs/{talking['id']}/logs", lines)
        await wait_until(lambda: got(1), 10, what="the first line")
        waited, (events, took) = await asyncio.gather(capped_claim(), silent_follow())
        # The claim, answered (empty) at the cap.
        assert MAX_WAIT - 0.5 <= waited < MAX_WAIT + 3
        # The silent job's follow: keep-alives, then the end at the cap.
        keepalives = [e for e in events if e.get("keepalive")]
        assert len(keepalives) >= int(MAX_WAIT / KEEPALIVE) - 2, events
        assert events[-1] == {"finished": False, "status": "RUNNING", "reason": "max_wait"}, events
        assert MAX_WAIT - 0.5 <= took < MAX_WAIT + 3
        await api.ok("POST", beat, running)
        path = f"GET /jobs/{talking['id']}/logs?follow=1"

        async def resumed() -> bool:
            return nginx.access_log().count(path) >= 1  # the SDK's first follow, ended at the cap

        await wait_until(resumed, MAX_WAIT + 10, interval=0.1, what="the follower to resume after the cap")
        await api.ok("POST", beat, running)
        await api.ok("POST", f"/jobs/{talking['id']}/logs", {**lines, "lines": ["second"]})
        await api.ok("POST", f"/jobs/{talking['id']}/complete", {"attempt": attempt[talking["id"]]})
        await asyncio.wait_for(follower, 15)
    finally:
        follower.cancel()
        await http.close()
    assert [e.get("line") for e in seen if "line" in e] == ["first", "second"]
    assert not any("keepalive" in e for e in seen)
    assert seen[-1]["finished"] is True and seen[-1]["status"] == "COMPLETED"


async def _jobs(api: Api, project: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    before = ""
    while True:
        page = await api.ok("GET", f"/projects/{project}/jobs?limit=1000{before}")
        jobs += page["jobs"]
        if page["next_before"] is None:
            return jobs
        before = f"&before={page['next_before']}"


async def test_drain_through_nginx_with_a_server_killed(cluster: dict[str, Any], tmp_path: Path) -> None:
    nginx: Nginx = cluster["nginx"]
    first, second = cluster["servers"]
    api = Api(nginx.url, cluster["session"])
    project = (await api.ok("POST", "/projects", {"name": f"ngx-{uuid.uuid4().hex[:8]}"}))["name"]
    out = tmp_path / "out"
    out.mkdir()
    batch: list[dict[str, Any]] = []
    for chain in range(JOBS // CHAIN):
        for step in range(CHAIN):
            job: dict[str, Any] = {"name": f"c{chain}s{step}", "task": "t", "parameters": {"out": str(out)}}
            if step:
                job["depends"] = [f"c{chain}s{step - 1}"]
            batch.append(job)
    ids = (await api.ok("POST", f"/projects/{project}/jobs/batch", batch))["ids"]
    assert len(ids) == JOBS
    by_name = {entry["name"]: job_id for entry, job_id in zip(batch, ids, strict=True)}

    logs = [tmp_path / f"worker{i}.log" for i in range(4)]
    started = time.monotonic()
    workers = [spawn_worker(nginx.url, project, log, "--cpus", "4", "--log-level", "DEBUG") for log in logs]

    def finished() -> int:  # files only: one may be half written while jobs run
        return sum(1 for _ in out.glob("*.json"))

    async def recorded(n: int) -> bool:
        return finished() >= n

    async def exited() -> bool:
        return all(proc.poll() is not None for proc in workers)

    try:
        # Kill one server (no goodbye) once a third of the jobs ran; the other one carries on.
        await wait_until(lambda: recorded(JOBS // 3), 60, interval=0.05, what="a third of the jobs")
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        killed_after = finished()
        await wait_until(exited, 120, interval=0.1, what="the workers to drain the project and exit")
    finally:
        _stop_workers(workers)
    elapsed = time.monotonic() - started
    print(
        f"{JOBS} jobs, 4 workers, through nginx: {elapsed:.1f} s; one server killed after {killed_after} jobs"
    )
    assert [proc.returncode for proc in workers] == [0, 0, 0, 0], [log.read_text()[-2000:] for log in logs]

    done = records(out)
    assert sorted(done) == sorted(ids), f"{len(done)} of {JOBS} jobs recorded"
    starts = _job_starts(logs)
    twice = {job: n for job, n in starts.items() if n != 1}
    assert not twice and len(starts) == JOBS, f"jobs not started exactly once: {twice}"
    for chain in range(JOBS // CHAIN):
        for step in range(1, CHAIN):
            before, after = done[by_name[f"c{chain}s{step - 1}"]], done[by_name[f"c{chain}s{step}"]]
            assert after["start"] >= before["end"], (
                f"chain {chain}: step {step} started before its dependency"
            )
    jobs = await _jobs(Api(second.url, cluster["session"]), project)
    assert len(jobs) == JOBS and {j["status"] for j in jobs} == {"COMPLETED"}
    for j in jobs:
        # A claim answer lost with the killed server requeues the job (a new attempt); it runs once.
        assert str(j["attempt"]) == done[j["id"]]["attempt"], (j, done[j["id"]])
