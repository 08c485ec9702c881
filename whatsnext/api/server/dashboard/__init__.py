"""The web dashboard: server-rendered pages under ``/ui/`` with their vendored static files
(htmx, a small script, a style sheet: nothing is loaded from elsewhere, GPU clusters are often
offline)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from ..roles import PAGE_OPEN
from . import actions, alloc, login, pages, schedules  # noqa: F401  (each registers its routes)
from .base import PREFIX, routes, stop_key
from .live import install_live
from .session import SecretHolder, page_headers, secret_key

HERE = Path(__file__).parent
STATIC = HERE / "static"


routes.static(PREFIX + "/static", STATIC, "The dashboard's style sheet and scripts", rule=PAGE_OPEN)


async def _stop_streams(app: web.Application) -> None:
    app[stop_key].set()


def install_dashboard(app: web.Application) -> None:
    """Mount the dashboard on the application."""
    app[stop_key] = asyncio.Event()
    app[secret_key] = SecretHolder()
    app.on_shutdown.append(_stop_streams)
    app.on_response_prepare.append(page_headers)
    install_live(app)
    routes.install(app)


__all__ = ["PREFIX", "install_dashboard"]
