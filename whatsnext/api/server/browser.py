"""What keeps web pages out, with or without ``--auth``: the ``Host`` header must name the server
(DNS rebinding), a request from a web page (``Origin``) must come from the server's own origin or
one listed with ``--cors-origin``, and listed origins get CORS preflight answers."""

from __future__ import annotations

from aiohttp import web

from .config import Settings, is_loopback
from .errors import ApiError, Handler
from .http import ACTOR_HEADER
from .keys import settings_key

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def split_host(value: str) -> tuple[str, str | None]:
    """``name:port`` (or ``[v6]:port``) as (lower-case name, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return name, port or None
    if value.count(":") == 1:
        name, _, port = value.partition(":")
        return name.rstrip("."), port or None
    return value.rstrip("."), None


def allowed_hosts(settings: Settings) -> list[str]:
    """The names the server answers to: those given, and the loopback names when bound to loopback
    (worked out once per settings: every request asks)."""
    key = (settings.host, tuple(settings.allowed_hosts))
    hosts = _ALLOWED_HOSTS.get(key)
    if hosts is None:
        hosts = list(settings.allowed_hosts)
        if is_loopback(settings.host):
            hosts += LOOPBACK_NAMES
        _ALLOWED_HOSTS[key] = hosts
    return hosts


_ALLOWED_HOSTS: dict[tuple[str, tuple[str, ...]], list[str]] = {}


def _host_ok(header: str, settings: Settings) -> bool:
    """``host_allowed`` for this server, remembered per ``Host`` value (clients send few)."""
    key = (header, settings.host, tuple(settings.allowed_hosts))
    ok = _HOST_OK.get(key)
    if ok is None:
        ok = host_allowed(header, allowed_hosts(settings))
        if len(_HOST_OK) < 1024:
            _HOST_OK[key] = ok
    return ok


_HOST_OK: dict[tuple[str, str, tuple[str, ...]], bool] = {}


def host_allowed(header: str, hosts: list[str]) -> bool:
    if "*" in hosts:
        return True
    name, port = split_host(header)
    for entry in hosts:
        allowed_name, allowed_port = split_host(entry)
        if name == allowed_name and (allowed_port is None or allowed_port == port):
            return True
    return False


def origin_allowed(origin: str, host_header: str, settings: Settings) -> bool:
    """The server's own origin (the host it was reached at, or one of its named hosts), or listed."""
    if origin in settings.cors_origins:
        return True
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        return False
    name, port = split_host(rest)
    if (name, port) == split_host(host_header) or name == split_host(host_header)[0]:
        return True
    named = [h for h in allowed_hosts(settings) if h != "*"]
    return host_allowed(rest, named)


CORS_HEADERS = "Authorization, Content-Type, " + ACTOR_HEADER


@web.middleware
async def browser_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests a web page could forge: a ``Host`` the server does not serve (DNS
    rebinding), an ``Origin`` that is neither the server's own nor listed; answer CORS preflights."""
    settings = request.app[settings_key]
    host = request.headers.get("Host", "")
    if not _host_ok(host, settings):
        raise ApiError(
            403,
            "forbidden_host",
            f"this server does not serve the host {host!r} (start it with --allowed-host {split_host(host)[0]})",
            {"field": "Host"},
        )
    origin = request.headers.get("Origin")
    if origin is not None:
        if not origin_allowed(origin, host, settings):
            raise ApiError(
                403,
                "forbidden_origin",
                f"requests from web pages at {origin} are refused (list it with --cors-origin)",
                {"field": "Origin"},
            )
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers=_cors_headers(origin, preflight=True))
    return await handler(request)


def _cors_headers(origin: str, preflight: bool = False) -> dict[str, str]:
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if preflight:
        headers |= {
            "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE",
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": "600",
        }
    return headers


async def cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Let the pages of a listed origin read the answers (streams included)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin in request.app[settings_key].cors_origins:
        for name, value in _cors_headers(origin).items():
            response.headers.setdefault(name, value)
