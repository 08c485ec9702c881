"""Servers behind Debian's PgBouncer in transaction mode, in front of the tests' PostgreSQL.

With ``--pooler transaction`` and a direct URL, claims, reports, heartbeats and wake-ups work
through the pooler; without the switch the server refuses to start and names it; with a direct
LISTEN connection but a pool that still prepares statements, requests answer 503 naming it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from conftest import ROOT, Api, ServerProcess, create_database, drop_database, wait_until
from proxy_env import PgBouncer, require_proxies

from whatsnext.api.server import schema


@pytest.fixture
async def bouncer(pg_root_url: str) -> AsyncIterator[PgBouncer]:
    require_proxies()
    pgb = await PgBouncer(pg_root_url, pool_mode="transaction", pool_size=2).start()
    yield pgb
    pgb.stop()


@pytest.fixture
async def fresh_db(pg_root_url: str) -> AsyncIterator[str]:
    url = await create_database(pg_root_url, "wn_pgb")
    yield url
    await drop_database(pg_root_url, url)


def db_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def run_server_expecting_exit(
    database_url: str, *extra: str, timeout: float = 60, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Start `whatsnext server`, which should refuse to start: (exit code, output)."""
    env_cmd = [sys.executable, "-m", "whatsnext", "server", "--port", "0", "--database-url", database_url]
    proc = await asyncio.create_subprocess_exec(
        *env_cmd,
        *extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_transaction_pooler_with_the_switch(bouncer: PgBouncer, fresh_db: str) -> None:
    pooled = bouncer.url(db_name(fresh_db))
    srv = await ServerProcess(pooled, "--pooler", "transaction", "--direct-database-url", fresh_db).start()
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(srv.url, session)
            health = await api.ok("GET", "/health")
            assert health["status"] == "ok" and health["max_wait"] == 30
            p = (await api.ok("POST", "/projects", {"name": f"pgb-{uuid.uuid4().hex[:8]}"}))["name"]
            worker = await api.ok("POST", "/workers", {"name": "w", "project": p, "cpu": 4})
            assert worker["max_wait"] == 30

            # Many statements over 2 server connections: nothing may depend on a session.
            created = await asyncio.gather(
                *(api.ok("POST", f"/projects/{p}/jobs", {"name": f"j{i}", "task": "t"}) for i in range(40))
            )
            dep = await api.ok(
                "POST", f"/projects/{p}/jobs", {"name": "after", "task": "t", "depends": [created[0]["id"]]}
            )
            claim: dict[str, Any] = {
                "worker_id": worker["id"],
                "worker_name": "w",
                "max_jobs": 50,
                "free_cpu": 64,
            }
            out = await api.ok("POST", f"/projects/{p}/claim", claim)
            jobs = out["jobs"]
            assert sorted(j["id"] for j in jobs) == sorted(j["id"] for j in created)
            beat = await api.ok(
                "POST", f"/workers/{worker['id']}/heartbeat", {"running": [j["id"] for j in jobs]}
            )
            assert beat["cancel"] == []
            reports = [{"id": j["id"], "attempt": j["attempt"], "status": "COMPLETED"} for j in jobs]
            results = (await api.ok("POST", "/jobs/reports", reports))["results"]
            assert all(r["code"] == 200 for r in results), results

            # The dependent became eligible when its dependency completed (a NOTIFY from the pool).
            out = await api.ok("POST", f"/projects/{p}/claim", {**claim, "wait": 10})
            assert [j["id"] for j in out["jobs"]] == [dep["id"]]
            await api.ok(
                "POST",
                f"/jobs/{dep['id']}/complete",
                {"attempt": out["jobs"][0]["attempt"]},
            )

            # A long-polling claim wakes when a job is queued (NOTIFY through the pooler, LISTEN direct).
            waiting = asyncio.ensure_future(api.post(f"/projects/{p}/claim", {**claim, "wait": 20}))

            async def polling() -> bool:
                return bool((await api.ok("GET", "/health"))["waiting_claims"])

            await wait_until(polling, 10, what="the claim to wait")
            loop = asyncio.get_running_loop()
            queued_at = loop.time()
            late = await api.ok("POST", f"/projects/{p}/jobs", {"name": "late", "task": "t"})
            status, body = await asyncio.wait_for(waiting, 15)
            assert status == 200 and [j["id"] for j in body["jobs"]] == [late["id"]], body
            assert loop.time() - queued_at < 5, "the waiting claim was not woken by the NOTIFY"
        assert "does not exist" not in srv.log()
    finally:
        await srv.stop()
        print(srv.log()[-4000:])  # shown when the test fails


async def test_transaction_pooler_without_the_switch_refuses_to_start(
    bouncer: PgBouncer, fresh_db: str
) -> None:
    # Migrate directly first: the pooler is what the refusal is about, not the migrations.
    await asyncio.to_thread(schema.upgrade, fresh_db)
    # The NOTIFY never arrives through the pooler: a short wait for it is as good as the default.
    quick = {"WHATSNEXT_NOTIFY_CHECK_SECONDS": "1"}
    code, out = await run_server_expecting_exit(bouncer.url(db_name(fresh_db)), env=quick)
    assert code != 0, out
    assert "--pooler transaction" in out, out
    assert "NOTIFY" in out and "within 1 s" in out, out


async def test_transaction_mode_needs_the_direct_url(fresh_db: str) -> None:
    code, out = await run_server_expecting_exit(fresh_db, "--pooler", "transaction")
    assert code == 2, out
    assert "--direct-database-url" in out, out


async def test_prepared_statements_through_a_transaction_pooler_answer_503(
    bouncer: PgBouncer, fresh_db: str
) -> None:
    # LISTEN goes direct (so the start-up self-test passes) but the pool still prepares statements.
    srv = await ServerProcess(bouncer.url(db_name(fresh_db)), "--direct-database-url", fresh_db).start()
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(srv.url, session)
            results = await asyncio.gather(
                *(api.post("/projects", {"name": f"pgb-{uuid.uuid4().hex[:8]}"}) for _ in range(20)),
                *(api.get("/projects") for _ in range(20)),
            )
        statuses = [s for s, _ in results]
        assert 500 not in statuses, results
        refused = [b for s, b in results if s == 503]
        assert refused, f"every request succeeded through the pooler: {statuses}"
        for body in refused:
            assert body["error"]["code"] == "pooler"
            assert "--pooler transaction" in body["error"]["message"]
    finally:
        await srv.stop()
        print(srv.log()[-4000:])  # shown when the test fails
