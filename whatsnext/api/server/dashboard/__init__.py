"""The web dashboard: server-rendered pages under ``/ui/`` with their vendored static files
(htmx, a small script, a style sheet: nothing is loaded from elsewhere, GPU clusters are often
offline)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
import orjson
from aiohttp import web

from .views import PREFIX, routes, stop_key

HERE = Path(__file__).parent
STATIC = HERE / "static"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = round(seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _compact(value: Any, limit: int = 80) -> str:
    if value is None:
        return ""
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _when(value: Any) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


async def _stop_streams(app: web.Application) -> None:
    app[stop_key].set()


def install_dashboard(app: web.Application) -> None:
    """Mount the dashboard on the application."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=jinja2.select_autoescape(default=True),
    )
    env.filters |= {"duration": _duration, "compact": _compact, "pretty": _pretty, "when": _when}
    app[stop_key] = asyncio.Event()
    app.on_shutdown.append(_stop_streams)
    app.router.add_routes(routes)
    app.router.add_static(PREFIX + "/static", STATIC, name="dashboard_static")


__all__ = ["PREFIX", "install_dashboard"]
