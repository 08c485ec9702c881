"""A server of their own for the tests of the shared pool (metrics, "why is it not running?", the
pool page): the application in this process under --auth, on a database of its own (its gauges
show only these tests' projects), computing the database gauges every few hundredths of a second;
and the steps those tests repeat (projects, tokens, workers, claims, SQL on the pool's columns)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
from conftest import Api, create_database, drop_database, wait_until
from prometheus_client.parser import text_string_to_metric_families

ADMIN = "pool-admin-" + uuid.uuid4().hex + uuid.uuid4().hex
METRICS_INTERVAL = 0.05


class Scrape:
    """One parsed scrape of /metrics: sample values by (name, labels)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.series: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.series[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float | None:
        """The sample's value; None when the series is absent."""
        return self.series.get((name, frozenset(labels.items())))

    def projects(self) -> set[str]:
        """Every value of a ``project`` label."""
        return {v for _, labels in self.series for k, v in labels if k == "project"}


class PoolServer:
    """The application under --auth and what the pool tests do with it."""

    def __init__(self, url: str, database_url: str) -> None:
        self.url = url
        self.database_url = database_url
        self._clients: dict[str | None, Api] = {}
        self.root = self.api(ADMIN)

    def api(self, token: str | None) -> Api:
        """A JSON client that sends ``token`` (None: no token), one per token."""
        if token not in self._clients:
            headers = {} if token is None else {"Authorization": f"Bearer {token}"}
            self._clients[token] = Api(self.url, aiohttp.ClientSession(headers=headers))
        return self._clients[token]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.session.close()

    async def sql(self, query: str, *args: Any) -> Any:
        """Run one statement on the server's database; its first value."""
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def project(self, prefix: str = "pool") -> tuple[str, int]:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        created = await self.root.ok("POST", "/projects", {"name": name})
        return name, int(created["id"])

    async def token(self, role: str, projects: list[str] | None = None) -> str:
        body: dict[str, Any] = {"name": f"{role}-{uuid.uuid4().hex[:8]}", "role": role}
        if projects is not None:
            body["projects"] = projects
        return str((await self.root.ok("POST", "/tokens", body))["token"])

    async def worker(self, cpu: int, gpus: int = 0, **where: Any) -> int:
        """Register a worker (``project=`` one, or ``projects=`` several); its id."""
        body = {"name": f"w-{uuid.uuid4().hex[:6]}", "cpu": cpu, "accelerators": gpus, **where}
        return int((await self.root.ok("POST", "/workers", body))["id"])

    async def jobs(self, project: str, n: int, **needs: Any) -> list[int]:
        """Queue ``n`` jobs of task ``t`` needing ``needs``; their ids."""
        ids = []
        for i in range(n):
            body = {"name": f"j{i}", "task": "t", **needs}
            ids.append(int((await self.root.ok("POST", f"/projects/{project}/jobs", body))["id"]))
        return ids

    async def claim(self, project: str, worker_id: int, cpu: int, gpus: int = 0, n: int = 10) -> list[dict]:
        body = {"worker_id": worker_id, "free_cpu": cpu, "free_accelerators": gpus, "max_jobs": n}
        return list((await self.root.ok("POST", f"/projects/{project}/claim", body))["jobs"])

    async def run_for_an_hour(self, job: dict[str, Any]) -> None:
        """Complete a claimed job as if it had run for an hour (its start backdated)."""
        await self.sql(
            "UPDATE jobs SET started_at = now() - interval '1 hour' WHERE id = $1 AND status = 'RUNNING'",
            job["id"],
        )
        await self.root.ok("POST", f"/jobs/{job['id']}/complete", {"attempt": job["attempt"]})

    async def page(self, token: str, path: str) -> tuple[int, str]:
        """A dashboard page as ``token`` sees it (entities decoded)."""
        async with self.api(token).session.get(self.url + path) as resp:
            return resp.status, html.unescape(await resp.text())

    async def scrape(self, token: str = ADMIN) -> Scrape:
        async with self.api(token).session.get(self.url + "/metrics") as resp:
            assert resp.status == 200, await resp.text()
            return Scrape(await resp.text())

    async def fresh_gauges(self, token: str = ADMIN) -> Scrape:
        """The first scrape whose database gauges were computed after this call began (they then
        show everything committed before it)."""
        since = time.time()

        async def fresh() -> Scrape | None:
            s = await self.scrape(token)
            return s if (s.get("whatsnext_metrics_computed_timestamp_seconds") or 0) > since else None

        found: Scrape = await wait_until(fresh, timeout=20, what="gauges computed after the changes")
        return found


@contextlib.asynccontextmanager
async def pool_server(pg_root_url: str) -> AsyncIterator[PoolServer]:
    """The application under --auth on a database of its own, served in this process."""
    from aiohttp.test_utils import TestServer

    from whatsnext.api.server import schema
    from whatsnext.api.server.app import create_app
    from whatsnext.api.server.config import Settings

    url = await create_database(pg_root_url, "wn_pool")
    await asyncio.to_thread(schema.upgrade, url)
    settings = Settings(database_url=url, auth=True, admin_token=ADMIN, metrics_interval=METRICS_INTERVAL)
    server = TestServer(create_app(settings, url), host="127.0.0.1")
    await server.start_server()
    srv = PoolServer(str(server.make_url("")).rstrip("/"), url)
    try:
        yield srv
    finally:
        await srv.close()
        await server.close()
        await drop_database(pg_root_url, url)
