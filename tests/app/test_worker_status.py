"""A worker's status tells the truth, the same everywhere: a real worker killed with SIGKILL is
LOST once its last heartbeat is older than its lease (GET /workers, GET /workers/{id},
``workers ls --status lost``, /metrics, the dashboard), ONLINE again at its next heartbeat, and
not LOST right after an outage of the queue until the recovery grace has passed.

Nothing is waited out: the worker's last heartbeat and the reaper's clock are backdated, and the
reaper's sweep runs once by hand."""

from __future__ import annotations

import asyncio
import html
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from conftest import Api, create_database, drop_database, wait_until
from helpers import Result, cli, spawn_worker, wait_for_file
from pool_world import Scrape

from whatsnext.api.server.keys import settings_key, store_key
from whatsnext.api.server.metrics import metrics_key
from whatsnext.api.server.reaper import reap_once

LEASE = 60.0
"""The server's lease (its default): long enough that only a backdated heartbeat is older."""


@dataclass
class World:
    """The application in this process on a database of its own (the gauges and the reaper's
    clock are this test's alone), and a project."""

    api: Api
    url: str
    database_url: str
    app: web.Application
    project: str

    async def sql(self, query: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def worker(self, worker_id: int) -> dict[str, Any]:
        return dict(await self.api.ok("GET", f"/workers/{worker_id}"))

    async def listed(self, status: str) -> list[int]:
        """The ids GET /workers lists with ``status`` (as given: any case)."""
        body = await self.api.ok("GET", f"/workers?project={self.project}&status={status}")
        return [w["id"] for w in body["workers"]]

    async def gauges(self) -> Scrape:
        """The first scrape whose database gauges were computed after this call began."""
        since = time.time()

        async def fresh() -> Scrape | None:
            async with self.api.session.get(self.url + "/metrics") as resp:
                s = Scrape(await resp.text())
            return s if (s.get("whatsnext_metrics_computed_timestamp_seconds") or 0) > since else None

        found: Scrape = await wait_until(fresh, timeout=20, what="gauges computed after the change")
        return found

    async def page(self, path: str) -> str:
        async with self.api.session.get(self.url + path) as resp:
            assert resp.status == 200
            return html.unescape(await resp.text())

    async def cli(self, *args: str) -> Result:
        """``whatsnext ARGS`` against this server (in a thread: the server runs on this loop)."""
        return await asyncio.to_thread(cli, SimpleNamespace(url=self.url), *args)

    async def ls(self, *args: str) -> Any:
        """``whatsnext workers ls --project P ARGS --json``: the workers it lists."""
        done = await self.cli("workers", "ls", "--project", self.project, *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["workers"]


@pytest.fixture
async def world(pg_root_url: str, http: aiohttp.ClientSession) -> AsyncIterator[World]:
    from aiohttp.test_utils import TestServer

    from whatsnext.api.server import schema
    from whatsnext.api.server.app import create_app
    from whatsnext.api.server.config import Settings

    url = await create_database(pg_root_url, "wn_wstatus")
    await asyncio.to_thread(schema.upgrade, url)
    app = create_app(Settings(database_url=url, lease_seconds=LEASE, metrics_interval=0.05), url)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    api = Api(base, http)
    project = f"ws-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": project})
    try:
        yield World(api, base, url, app, project)
    finally:
        await server.close()
        await drop_database(pg_root_url, url)


async def killed_worker(w: World, tmp_path: Path) -> tuple[dict[str, Any], int]:
    """A real worker holding a running job, killed with SIGKILL: its row, and the job's id (the
    job's process goes on until the file ``go`` exists)."""
    name = f"doomed-{uuid.uuid4().hex[:6]}"
    params = {"out": str(tmp_path), "wait-for": str(tmp_path / "go")}
    job = await w.api.ok(
        "POST", f"/projects/{w.project}/jobs", {"name": "j", "task": "t", "parameters": params}
    )
    proc = spawn_worker(
        w.url, w.project, tmp_path / "worker.log", "--name", name, "--cpus", "1", "--gpus", "none"
    )
    try:
        await wait_for_file(tmp_path / f"{job['id']}.started")
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 20)
    [row] = (await w.api.ok("GET", f"/workers?project={w.project}"))["workers"]
    assert row["name"] == name and row["running"] == [job["id"]]
    return row, job["id"]


async def test_a_killed_worker_is_lost_everywhere_and_online_again_when_it_heartbeats(
    world: World, tmp_path: Path
) -> None:
    w = world
    try:
        row, job_id = await killed_worker(w, tmp_path)
        wid = row["id"]
        # Killed, but its last heartbeat is within its lease: ONLINE still (it may be on its way).
        assert (await w.worker(wid))["status"] == "ONLINE"
        assert (await w.worker(wid))["lease_seconds"] == LEASE
        assert await w.listed("LOST") == []

        # Its last heartbeat older than its lease: LOST, in every view.
        await w.sql(
            "UPDATE workers SET last_seen = now() - make_interval(secs => lease_seconds + 1) WHERE id = $1",
            wid,
        )
        got = await w.worker(wid)
        assert got["status"] == "LOST" and got["running"] == [job_id]
        assert await w.listed("LOST") == await w.listed("lost") == [wid]
        assert await w.listed("ONLINE") == [] and await w.listed("OFFLINE") == []
        assert [x["id"] for x in await w.ls("--status", "lost")] == [wid]
        assert await w.ls("--status", "online") == []
        table = await w.cli("workers", "ls", "--project", w.project)
        assert "LOST" in table.stdout and row["name"] in table.stdout
        g = await w.gauges()
        assert g.get("whatsnext_workers", state="lost") == 1
        assert g.get("whatsnext_workers", state="silent") == 1  # the former name, for one release
        assert g.get("whatsnext_workers", state="online") == 0
        assert g.get("whatsnext_capacity_cpus") == 0  # a lost worker's CPUs are no capacity
        page = await w.page("/ui/workers")
        assert f'<tr data-worker="{row["name"]}" data-status="LOST">' in page
        assert "0 online" in page and "1 lost" in page
        assert 'id="workers-lost"' in await w.page("/ui/")
        # Its job is not handed back before its own lease runs out: the job is RUNNING still.
        assert (await w.api.ok("GET", f"/jobs/{job_id}"))["status"] == "RUNNING"

        # It heartbeats again (a real heartbeat request with its id): ONLINE.
        beat = await w.api.ok("POST", f"/workers/{wid}/heartbeat", {})
        assert beat["leases"] == [{"id": job_id, "attempt": 1}]
        assert (await w.worker(wid))["status"] == "ONLINE"
        assert await w.listed("ONLINE") == [wid] and await w.listed("LOST") == []
        assert await w.ls("--status", "lost") == []
        g = await w.gauges()
        assert (g.get("whatsnext_workers", state="online"), g.get("whatsnext_workers", state="lost")) == (
            1,
            0,
        )
        assert g.get("whatsnext_workers", state="silent") == 0
        page = await w.page("/ui/workers")
        assert f'<tr data-worker="{row["name"]}">' in page and 'data-status="LOST"' not in page

        # A worker that left is OFFLINE, however old its last heartbeat.
        await w.api.ok("DELETE", f"/workers/{wid}")
        await w.sql("UPDATE workers SET last_seen = now() - interval '1 day' WHERE id = $1", wid)
        assert (await w.worker(wid))["status"] == "OFFLINE"
        assert await w.listed("OFFLINE") == [wid] and await w.listed("LOST") == []
        g = await w.gauges()
        assert (g.get("whatsnext_workers", state="offline"), g.get("whatsnext_workers", state="lost")) == (
            1,
            0,
        )
    finally:
        (tmp_path / "go").touch()  # the orphaned job's process ends


async def test_no_worker_is_lost_right_after_an_outage_until_the_recovery_grace_has_passed(
    world: World, tmp_path: Path
) -> None:
    w = world
    store, settings = w.app[store_key], w.app[settings_key]
    try:
        row, _ = await killed_worker(w, tmp_path)
        wid = row["id"]
        # The queue was away for 10 minutes (every server down): the reaper's clock says the last
        # sweep is that old, and no worker could heartbeat meanwhile.
        await w.sql(
            "UPDATE reaper_clock SET last_sweep_at = now() - interval '600 seconds', sweep_every = 15"
        )
        await w.sql("UPDATE workers SET last_seen = now() - interval '600 seconds' WHERE id = $1", wid)
        # Back, before any sweep noticed the outage: not LOST (the reaper would extend, not reap).
        assert (await w.worker(wid))["status"] == "ONLINE"
        # The first sweep after the outage extends the leases and starts the recovery grace.
        await reap_once(store, settings, w.app[metrics_key])
        grace_left = await w.sql(
            "SELECT extract(epoch FROM recovery_until - now())::float8 FROM reaper_clock"
        )
        assert grace_left == pytest.approx(settings.recovery_grace_seconds, abs=5)
        assert (await w.worker(wid))["status"] == "ONLINE"
        assert await w.listed("LOST") == [] and await w.ls("--status", "lost") == []
        g = await w.gauges()
        assert (g.get("whatsnext_workers", state="online"), g.get("whatsnext_workers", state="lost")) == (
            1,
            0,
        )
        assert 'data-status="LOST"' not in await w.page("/ui/workers")
        # A later sweep (the clock fresh again) keeps the grace.
        await reap_once(store, settings, w.app[metrics_key])
        assert (await w.worker(wid))["status"] == "ONLINE"

        # The grace has passed and the worker never came back: LOST.
        await w.sql("UPDATE reaper_clock SET recovery_until = now() - interval '1 second'")
        assert (await w.worker(wid))["status"] == "LOST"
        assert [x["id"] for x in await w.ls("--status", "lost")] == [wid]
        g = await w.gauges()
        assert g.get("whatsnext_workers", state="lost") == g.get("whatsnext_workers", state="silent") == 1
    finally:
        (tmp_path / "go").touch()


async def test_status_filters_and_a_worker_out_of_reach(world: World) -> None:
    w = world
    status, body = await w.api.get("/workers?status=gone")
    assert status == 422 and body["error"]["details"]["field"] == "status"
    assert "ONLINE, LOST, OFFLINE" in body["error"]["message"]
    status, body = await w.api.get("/workers/999999999")
    assert status == 404 and body["error"]["details"]["field"] == "worker_id"
    status, body = await w.api.get("/workers/abc")
    assert status == 422 and body["error"]["details"]["field"] == "worker_id"
    bad = await w.cli("workers", "ls", "--status", "gone")
    assert bad.returncode == 2 and "online" in bad.stderr and "lost" in bad.stderr
