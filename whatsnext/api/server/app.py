"""The aiohttp application factory and the `whatsnext server` entry point."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from ... import __version__
from .config import Settings, default_data_dir
from .db import EmbeddedPostgres, apply_migrations, create_pool, redact, wait_for_database
from .errors import error_middleware
from .keys import database_key, hub_key, pool_key, settings_key
from .notify import NotifyHub
from .reaper import reaper_context
from .routes import routes

log = structlog.get_logger("whatsnext.server")


async def _database_context(app: web.Application) -> AsyncIterator[None]:
    settings, url = app[settings_key], app[database_key]
    pool = await create_pool(url, settings.pool_min, settings.pool_max)
    hub = NotifyHub(url)
    await hub.start()
    app[pool_key] = pool
    app[hub_key] = hub
    yield
    await hub.close()
    await pool.close()


async def _answer_long_polls(app: web.Application) -> None:
    await app[hub_key].close()


def create_app(settings: Settings, database_url: str) -> web.Application:
    """Build the application; the database must already be migrated."""
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024**2)
    app[settings_key] = settings
    app[database_key] = database_url
    app.cleanup_ctx.append(_database_context)
    app.cleanup_ctx.append(reaper_context)
    app.on_shutdown.append(_answer_long_polls)
    routes.install(app)
    return app


async def _serve(settings: Settings, url: str, ready: asyncio.Event | None = None) -> None:
    await wait_for_database(url)
    applied = await asyncio.to_thread(apply_migrations, url)
    if applied:
        log.info("migrations applied", migrations=applied)
    app = create_app(settings, url)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    log.info(
        "serving",
        url=f"http://{settings.host}:{settings.port}",
        version=__version__,
        lease_seconds=settings.lease_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: answering waiting claims, closing the pool")
        await app[hub_key].close()
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _event_loop_runner() -> asyncio.Runner:
    with contextlib.suppress(ImportError):
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def serve(settings: Settings) -> None:
    """Run the server until SIGINT/SIGTERM; starts (and stops) the embedded database if no URL is set."""
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if url is None:
        data_dir = settings.data_dir or default_data_dir()
        embedded = EmbeddedPostgres(data_dir)
        log.info("starting embedded PostgreSQL", data_dir=str(embedded.pgdata))
        url = embedded.start()
    else:
        log.info("using PostgreSQL", database=redact(url))
    try:
        with _event_loop_runner() as runner:
            runner.run(_serve(settings, url))
    finally:
        if embedded is not None:
            log.info("stopping embedded PostgreSQL")
            embedded.stop()
