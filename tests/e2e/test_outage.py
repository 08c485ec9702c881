"""Outages of the queue cost nothing, with real processes: a server paused (SIGSTOP) longer than
the lease, and PostgreSQL cut off from the server longer than the lease, while a worker runs a
job: the job's body runs once and the job ends COMPLETED at its first attempt. The server's log
stays JSON lines throughout.

No waiting out of time: each test waits for the database's own clock to say that the last lease
sweep is older than the lease (the queue was away that long), and for files the job writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest
from conftest import Api, ServerProcess, create_database, drop_database, free_port, wait_until
from helpers import spawn_worker, wait_for_file

LEASE = 3.0
"""Short, to keep the tests short; long enough for a worker on a busy machine to renew it."""
AWAY = LEASE + 1.0
"""How long the queue is away in these tests at least (more than a lease and a sweep interval)."""


@pytest.fixture
async def own_database(pg_root_url: str) -> AsyncIterator[str]:
    """A database no other server sweeps: only the test's server keeps the reaper's clock."""
    url = await create_database(pg_root_url, "wn_outage")
    yield url
    await drop_database(pg_root_url, url)


async def swept(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT last_sweep_at IS NOT NULL FROM reaper_clock"))


async def queue_was_away(conn: asyncpg.Connection, job_id: int) -> bool:
    """The last lease sweep is older than AWAY seconds and the job's lease ran out (database time)."""
    return bool(
        await conn.fetchval(
            "SELECT now() - c.last_sweep_at > make_interval(secs => $2) AND j.lease_expires_at < now()"
            "  FROM reaper_clock c, jobs j WHERE j.id = $1",
            job_id,
            AWAY,
        )
    )


async def run_through_an_outage(
    srv: ServerProcess,
    http: aiohttp.ClientSession,
    database_url: str,
    tmp_path: Path,
    away: Any,
    back: Any,
) -> dict[str, Any]:
    """A worker runs a job that waits for a file; ``away()`` takes the queue away, the job may
    finish once the database says the queue was away longer than a lease, ``back()`` brings the
    queue back. Returns the job once the worker has exited (its queue empty)."""
    api = Api(srv.url, http)
    await api.ok("POST", "/projects", {"name": "outage"})
    go = tmp_path / "go"
    params = {"out": str(tmp_path), "wait-for": str(go)}
    job = await api.ok("POST", "/projects/outage/jobs", {"name": "j", "task": "t", "parameters": params})
    worker = spawn_worker(srv.url, "outage", tmp_path / "worker.log", "--cpus", "1")
    conn = await asyncpg.connect(database_url)
    try:
        await wait_for_file(tmp_path / f"{job['id']}.started")
        # A sweep has set the reaper's clock (a database never swept knows of no outage).
        await wait_until(lambda: swept(conn), what="a first lease sweep")
        await away()
        await wait_until(lambda: queue_was_away(conn, job["id"]), timeout=60, what="the queue away")
        go.touch()  # the job's body may finish now; its report cannot land until the queue is back
        await back()
        code = await asyncio.to_thread(worker.wait, 90)
        assert code == 0, (tmp_path / "worker.log").read_text()
        return dict(await api.ok("GET", f"/jobs/{job['id']}")) | {
            "history": (await api.ok("GET", f"/jobs/{job['id']}/events"))["events"]
        }
    finally:
        await conn.close()
        if worker.poll() is None:
            worker.kill()


def assert_ran_once(tmp_path: Path, job: dict[str, Any]) -> None:
    assert (job["status"], job["attempt"]) == ("COMPLETED", 1), (
        job,
        (tmp_path / "worker.log").read_text(),
    )
    record = json.loads((tmp_path / f"{job['id']}.json").read_text())
    assert record["attempt"] == "1"
    assert not [e for e in job["history"] if "lost" in (e["reason"] or "")], job["history"]


def assert_json_lines(log: str) -> None:
    for line in log.splitlines():
        assert isinstance(json.loads(line), dict), f"not a JSON line in the server's log: {line!r}"


async def test_a_server_paused_longer_than_the_lease_costs_the_job_nothing(
    own_database: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    srv = await ServerProcess(own_database, "--lease-seconds", str(LEASE)).start()
    assert srv.proc is not None
    proc = srv.proc
    try:

        async def pause() -> None:
            proc.send_signal(signal.SIGSTOP)

        async def resume() -> None:
            proc.send_signal(signal.SIGCONT)

        job = await run_through_an_outage(srv, http, own_database, tmp_path, pause, resume)
    finally:
        proc.send_signal(signal.SIGCONT)
        await srv.stop()
    assert_ran_once(tmp_path, job)
    log = srv.log()
    assert "queue was away for" in log and "leases extended" in log
    assert_json_lines(log)


class Cutter:
    """A TCP forwarder to PostgreSQL that a test cuts (every connection dropped, new ones
    refused, as when PostgreSQL is down) and restores."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        socket_dir = (parse_qs(parts.query).get("host") or [""])[0]
        self.unix = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}" if socket_dir.startswith("/") else None
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def url(self, database_url: str) -> str:
        parts = urlsplit(database_url)
        user = parts.username or "postgres"
        password = f":{parts.password}" if parts.password else ""
        return f"postgresql://{user}{password}@127.0.0.1:{self.port}{parts.path}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.unix is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self.unix)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self.writers.discard(writer)


async def test_postgresql_away_longer_than_the_lease_costs_the_job_nothing(
    own_database: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    cutter = Cutter(own_database)
    await cutter.start()
    srv = await ServerProcess(cutter.url(own_database), "--lease-seconds", str(LEASE)).start()
    try:
        job = await run_through_an_outage(srv, http, own_database, tmp_path, cutter.cut, cutter.start)
    finally:
        await srv.stop()
        await cutter.cut()
    assert_ran_once(tmp_path, job)
    log = srv.log()
    assert "queue was away for" in log and "lease sweep failed" in log
    assert_json_lines(log)
