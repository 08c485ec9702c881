"""Migrations apply to an empty database and are idempotent."""

from __future__ import annotations

import asyncio

import asyncpg
from conftest import create_database, drop_database

from whatsnext.api.server.db import apply_migrations
from whatsnext.api.server.sql import Q, migrations_dir


async def test_migrations_apply_and_are_idempotent(pg_root_url: str) -> None:
    url = await create_database(pg_root_url, "wn_migr")
    try:
        first = await asyncio.to_thread(apply_migrations, url)
        assert first == sorted(p.stem for p in migrations_dir().glob("*.sql"))
        second = await asyncio.to_thread(apply_migrations, url)
        assert second == []
        conn = await asyncpg.connect(url)
        try:
            tables = {
                r["tablename"]
                for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
            }
            assert {
                "projects",
                "tasks",
                "jobs",
                "job_dependencies",
                "workers",
                "job_events",
                "artifacts",
            } <= tables
            index = await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_eligible'")
            assert "priority DESC" in index and "WHERE" in index and "PENDING" in index
        finally:
            await conn.close()
    finally:
        await drop_database(pg_root_url, url)


async def test_every_named_query_prepares(database_url: str, server) -> None:
    """Each statement in sql/queries parses and type-checks against the migrated schema."""
    conn = await asyncpg.connect(database_url)
    try:
        for name in Q.names():
            await conn.prepare(getattr(Q, name))
    finally:
        await conn.close()
