"""Page rendering: the Jinja environment is built on the first page asked for, so a server whose
dashboard nobody opens never loads the template engine."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).parent / "templates"


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


def _width(part: float | None, whole: float | None) -> str:
    """The style sheet's class for a bar ``part`` of ``whole`` long (``w-0`` to ``w-100``; a part
    that is not nothing shows at least 1%): pages carry no inline style (Content-Security-Policy)."""
    if not part or not whole or part <= 0 or whole <= 0:
        return "w-0"
    return f"w-{min(100, max(1, round(100 * part / whole)))}"


def _when(value: Any) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@cache
def environment() -> jinja2.Environment:
    """The dashboard's templates, with their filters (made once per process)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(default=True)
    )
    env.filters |= {
        "duration": _duration,
        "compact": _compact,
        "pretty": _pretty,
        "when": _when,
        "width": _width,
    }
    return env


def render(template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """An HTML page from ``template`` and ``context``."""
    html = environment().get_template(template).render(context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
