"""The aiohttp application factory and the `whatsnext server` entry point."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from ... import __version__
from .auth import auth_middleware
from .browser import browser_middleware, cors_on_prepare
from .config import Settings, default_data_dir
from .dashboard import install_dashboard
from .db import (
    EmbeddedPostgres,
    create_pool,
    notify_self_test,
    redact,
    wait_for_database,
)
from .errors import error_middleware
from .http import input_middleware
from .keys import database_key, hub_key, pool_key, settings_key, store_key, worker_tokens_key
from .limits import install_limits
from .marks import marks_context
from .metrics import install_metrics
from .notify import NotifyHub
from .reaper import reaper_context
from .registry import check_served
from .retention import retention_context
from .routes import routes
from .schedules import schedules_context
from .schema import upgrade_apart
from .store import Store

log = structlog.get_logger("whatsnext.server")


async def _database_context(app: web.Application) -> AsyncIterator[None]:
    settings, url = app[settings_key], app[database_key]
    pool = await create_pool(url, settings.pool_min, settings.pool_max, pooler=settings.pooler)
    # LISTEN needs a session of its own: behind a transaction pooler, the direct connection.
    hub = NotifyHub(settings.direct_database_url or url)
    try:
        await hub.start()
        took = await notify_self_test(pool, hub.subscribe, settings.notify_check_seconds)
        log.debug("NOTIFY through the pool reaches LISTEN", seconds=round(took, 4))
    except BaseException:
        await hub.close()
        await pool.close()
        raise
    app[pool_key] = pool
    app[store_key] = store = Store(pool)
    app[hub_key] = hub
    before = await store.sharing.set_half_life(half_life=settings.fair_share_half_life)
    if before is not None and before != settings.fair_share_half_life:
        log.warning(
            "the pool's fair-share half-life changed: give every server the same --fair-share-half-life",
            was=before,
            now=settings.fair_share_half_life,
        )
    yield
    await hub.close()
    await pool.close()


async def _answer_long_polls(app: web.Application) -> None:
    await app[hub_key].close()


def create_app(settings: Settings, database_url: str) -> web.Application:
    """Build the application; the database must already be migrated."""
    app = web.Application(
        middlewares=[error_middleware, browser_middleware, auth_middleware, input_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app.on_response_prepare.append(cors_on_prepare)
    app[settings_key] = settings
    app[database_key] = database_url
    app[worker_tokens_key] = {}
    install_limits(app, settings)
    app.cleanup_ctx.append(_database_context)
    app.cleanup_ctx.append(reaper_context)
    app.cleanup_ctx.append(marks_context)
    app.cleanup_ctx.append(retention_context)
    app.cleanup_ctx.append(schedules_context)
    install_metrics(app)
    app.on_shutdown.append(_answer_long_polls)
    routes.install(app)
    install_dashboard(app)
    check_served(app)
    return app


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft limit on open files to the hard limit (each waiting claim and each follow
    stream holds a socket; the common soft limit of 1024 is reached by about 1,000 long-polls).
    Answers the (soft, hard) limits in force, or None where the platform has no such limit."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    for wanted in (target, 65536, 10240):  # macOS refuses more than OPEN_MAX (10240)
        if soft < wanted <= target:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                return wanted, hard
    return soft, hard


async def _serve(settings: Settings, url: str, ready: asyncio.Event | None = None) -> None:
    limits = raise_open_file_limit()
    if limits is not None:
        log.info("open files", soft_limit=limits[0], hard_limit=limits[1])
    # Migrations take locks and run DDL: never through a transaction pooler.
    direct = settings.direct_database_url or url
    await wait_for_database(direct)
    if direct != url:
        await wait_for_database(url)
    await upgrade_apart(direct)
    app = create_app(settings, url)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    # What startup made lives as long as the server: out of the collector's sight, so that its
    # full collections, which the requests' short-lived objects trigger, walk only those.
    gc.collect()
    gc.freeze()
    log.info(
        "serving",
        url=f"http://{settings.host}:{settings.port}",
        version=__version__,
        lease_seconds=settings.lease_seconds,
        max_wait=settings.max_wait,
        pooler=settings.pooler,
        auth=settings.auth,
    )
    if settings.auth and not settings.admin_token:
        log.warning("--auth without an admin token: only tokens already in the database are accepted")
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
    settings.check()
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
