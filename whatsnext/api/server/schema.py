"""The database schema: append-only migrations, then the SQL functions, installed at every start.

* ``sql/migrations/NNNN_name.sql`` hold tables, types and indexes. They are applied in order by
  yoyo and never edited once released (``sql/migrations/RELEASED.sha256`` lists the released
  files with their checksums; a test keeps both in step). The number of the newest one is the
  **schema level**.
* ``sql/functions/*.sql`` hold one ``CREATE OR REPLACE FUNCTION`` each. At every start, inside
  one transaction under an advisory lock, the server compares their content hash with the one
  stored in ``wn_meta``; when it differs it drops every ``wn_*`` function (any overload) and
  creates those of ``sql/functions``, so an edited function reaches every database and a
  function that is no longer defined disappears. A trigger function's file also creates its
  triggers (dropping the function drops them).
* Data that only Python can derive is filled in after the functions: the placeholders of task
  command templates stored before the database kept them (:func:`fill_placeholders`).
* A server refuses to start on a database whose schema level is newer than its own (it would
  put back older functions): the message says which version to run instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ... import __version__
from .sql import migrations_dir, sql_dir

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger("whatsnext.schema")

_NUMBERED = re.compile(r"^(\d+)_\w+$")
LOCK_KEY = "whatsnext.schema"


class SchemaError(RuntimeError):
    """The database cannot be used by this server (its schema is newer, or it is malformed)."""


@dataclass
class UpgradeResult:
    level: int
    migrations: list[str] = field(default_factory=list)
    """Migrations applied by this start."""
    functions_installed: bool = False
    """Whether the SQL functions were (re)installed (their hash differed)."""


def migration_ids() -> list[str]:
    return sorted(p.stem for p in migrations_dir().glob("*.sql"))


def level_of(migration_id: str) -> int:
    m = _NUMBERED.match(migration_id)
    if m is None:
        raise SchemaError(f"migration {migration_id!r} is not named NNNN_name")
    return int(m.group(1))


@cache
def schema_level() -> int:
    """This version's schema level: the number of its newest migration."""
    return max(level_of(m) for m in migration_ids())


def functions_dir() -> Path:
    return sql_dir() / "functions"


def function_files() -> list[Path]:
    return sorted(functions_dir().glob("*.sql"))


@cache
def functions_hash() -> str:
    digest = hashlib.sha256()
    for path in function_files():
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def plain_url(url: str) -> str:
    for scheme in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql://" + url[len(scheme) :]
    return url


def _newer_error(what: str) -> SchemaError:
    return SchemaError(
        f"this database was migrated by a newer WhatsNext ({what}); this server is version "
        f"{__version__} with schema level {schema_level()} and would put back older functions. "
        "Run the newer version of WhatsNext (all servers of a deployment share one schema level)."
    )


def check_not_newer(conn: psycopg.Connection) -> None:
    """Refuse a database migrated by a newer version (unknown migrations, or a higher level)."""
    known = set(migration_ids())
    cur = conn.execute(
        "SELECT to_regclass('_yoyo_migration') IS NOT NULL, to_regclass('wn_meta') IS NOT NULL"
    )
    has_yoyo, has_meta = cur.fetchone()
    if has_yoyo:
        applied = [r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration").fetchall()]
        unknown = sorted(set(applied) - known)
        if unknown:
            raise _newer_error(f"migrations {', '.join(unknown)} are unknown to this version")
    if has_meta:
        row = conn.execute("SELECT value FROM wn_meta WHERE key = 'schema_level'").fetchone()
        if row is not None and int(row[0]) > schema_level():
            raise _newer_error(f"schema level {row[0]}")


def apply_migrations(url: str) -> list[str]:
    """Apply pending migrations from ``sql/migrations`` (synchronous; yoyo takes a lock)."""
    from yoyo import get_backend, read_migrations

    backend = get_backend("postgresql+psycopg://" + plain_url(url)[len("postgresql://") :])
    try:
        migrations = read_migrations(str(migrations_dir()))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()


def install_functions(conn: psycopg.Connection) -> bool:
    """Install ``sql/functions`` unless the stored hash matches; returns whether it installed.

    Runs in one transaction under an advisory lock: servers starting together install once, and
    a concurrent request never sees a half-installed set.
    """
    wanted = functions_hash()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOCK_KEY,))
        check_not_newer(conn)
        row = conn.execute("SELECT value FROM wn_meta WHERE key = 'functions_hash'").fetchone()
        if row is not None and row[0] == wanted:
            return False
        conn.execute("SET LOCAL check_function_bodies = off")
        stale = conn.execute(
            r"""SELECT p.oid::regprocedure::text, p.prorettype = 'trigger'::regtype FROM pg_proc p
                  JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = current_schema() AND p.proname LIKE 'wn\_%' AND p.prokind = 'f'"""
        ).fetchall()
        for signature, is_trigger in stale:
            # A trigger function goes with its triggers: its file creates both again.
            conn.execute(f"DROP FUNCTION {signature}{' CASCADE' if is_trigger else ''}")
        for path in function_files():
            try:
                conn.execute(path.read_text(encoding="utf-8"))
            except Exception as exc:
                raise SchemaError(f"installing {path.name} failed: {exc}") from exc
        for key, value in (
            ("functions_hash", wanted),
            ("schema_level", str(schema_level())),
            ("version", __version__),
        ):
            conn.execute(
                """INSERT INTO wn_meta (key, value) VALUES (%s, %s)
                   ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()""",
                (key, value),
            )
    return True


def fill_placeholders(conn: psycopg.Connection) -> int:
    """Record the placeholders of command templates stored before tasks kept them (schema level 7),
    so that ``wn_enqueue`` can check submissions against them; returns how many tasks it filled."""
    from ...template import TemplateError, placeholders

    rows = conn.execute(
        "SELECT id, command FROM tasks WHERE command IS NOT NULL AND placeholders IS NULL"
    ).fetchall()
    for task_id, command in rows:
        try:
            names = placeholders(command)
        except TemplateError:
            names = []  # a template stored before templates were checked: nothing to enforce
        conn.execute("UPDATE tasks SET placeholders = %s WHERE id = %s", (names, task_id))
    return len(rows)


def upgrade(url: str) -> UpgradeResult:
    """Bring a database to this version: refuse a newer one, migrate, install the functions."""
    result = _upgrade(url)
    _log_upgrade(result)
    return result


def _upgrade(url: str) -> UpgradeResult:
    import psycopg

    dsn = plain_url(url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        check_not_newer(conn)
    applied = apply_migrations(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        installed = install_functions(conn)
        fill_placeholders(conn)
    return UpgradeResult(level=schema_level(), migrations=applied, functions_installed=installed)


def _log_upgrade(result: UpgradeResult) -> None:
    if result.migrations or result.functions_installed:
        log.info(
            "schema upgraded",
            level=result.level,
            migrations=result.migrations,
            functions=result.functions_installed,
        )


SCHEMA_ERROR_EXIT = 3
"""Exit status of ``python -m whatsnext.api.server.schema`` when the database cannot be used."""


async def is_current(url: str) -> bool:
    """Whether the database is exactly at this version already: every migration of this version
    applied and no other, the functions' hash and the schema level as this version stores them,
    no task waiting for its placeholders. One connection, three small queries: a restart, and every server
    of a deployment after the first, starts without the upgrade's child process."""
    import asyncpg

    conn = await asyncpg.connect(plain_url(url))
    try:
        ready = await conn.fetchval(
            "SELECT to_regclass('_yoyo_migration') IS NOT NULL AND to_regclass('wn_meta') IS NOT NULL"
            " AND to_regclass('tasks') IS NOT NULL"
        )
        if not ready:
            return False
        row = await conn.fetchrow(
            """SELECT (SELECT array_agg(migration_id ORDER BY migration_id) FROM _yoyo_migration) AS applied,
                      (SELECT value FROM wn_meta WHERE key = 'functions_hash') AS functions_hash,
                      (SELECT value FROM wn_meta WHERE key = 'schema_level') AS level"""
        )
        if (
            list(row["applied"] or []) != sorted(migration_ids())
            or row["functions_hash"] != functions_hash()
            or row["level"] != str(schema_level())
        ):
            return False
        # Only now is the placeholders column known to exist (schema level 7 added it).
        return not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE command IS NOT NULL AND placeholders IS NULL)"
        )
    finally:
        await conn.close()


async def upgrade_apart(url: str) -> UpgradeResult:
    """:func:`upgrade` in a child process (``python -m whatsnext.api.server.schema``, the URL on
    its stdin): the migration tool and its driver (psycopg and libpq) never load into the
    server, which stays about 8 MiB smaller for as long as it runs. A database that is current
    already (:func:`is_current`) needs no child at all."""
    if await is_current(url):
        return UpgradeResult(level=schema_level())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate(url.encode())
    if proc.returncode == 0:
        result = UpgradeResult(**json.loads(out.decode().strip().splitlines()[-1]))
        _log_upgrade(result)
        return result
    lines = err.decode(errors="replace").strip().splitlines()
    if proc.returncode == SCHEMA_ERROR_EXIT and lines:
        raise SchemaError(lines[-1])
    tail = "\n".join(lines[-20:]) or "no output"
    raise SchemaError(f"the schema upgrade failed (exit status {proc.returncode}):\n{tail}")


def _main() -> int:
    url = sys.stdin.read().strip()
    if not url:
        # An empty URL would mean libpq's defaults: some database nobody named.
        print("give the database URL on stdin", file=sys.stderr)
        return 2
    try:
        result = _upgrade(url)
    except SchemaError as exc:
        print(str(exc).replace("\n", " "), file=sys.stderr)
        return SCHEMA_ERROR_EXIT
    print(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
