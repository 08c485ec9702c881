"""What keeps web pages out, with or without ``--auth``: the ``Host`` header must name the server
(DNS rebinding), a request from a web page (``Origin``) must come from the server's own origin
(scheme, host and port all equal to those the request was made to) or one listed with
``--cors-origin``, and listed origins get CORS preflight answers.

Behind a reverse proxy, the request's own origin and the client's address are those the proxy
saw: ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Forwarded-For`` are believed only when
the TCP peer is inside a ``--trusted-proxy`` network, and ignored from anyone else."""

from __future__ import annotations

import ipaddress
from functools import cache
from typing import Any

from aiohttp import web

from .config import DEFAULT_PORTS, Settings, is_loopback, parse_origin
from .errors import ApiError, Handler
from .http import ACTOR_HEADER
from .keys import settings_key

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Origin = tuple[str, str, int]
"""A web origin: scheme, lower-case host name, port (the scheme's default filled in)."""
_TRUSTED_PEER: Any = (
    web.RequestKey("whatsnext.trusted_peer", bool) if hasattr(web, "RequestKey") else "wn_trusted_peer"
)
"""Whether the request's peer is a trusted proxy, worked out once per request."""
_CLIENT_ADDRESS: Any = (
    web.RequestKey("whatsnext.client_address", str) if hasattr(web, "RequestKey") else "wn_client_address"
)

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


# ---------------------------------------------------------------- proxies and origins


@cache
def _networks(proxies: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _in(address: str, networks: tuple[IpNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in n for n in networks)


def peer_address(request: web.Request) -> str:
    """The TCP peer's address (before any forwarding header); "" when unknown (a Unix socket)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return request.remote or ""


def from_trusted_proxy(request: web.Request) -> bool:
    """Whether the TCP peer is a ``--trusted-proxy`` (whose forwarding headers are believed)."""
    found = request.get(_TRUSTED_PEER)
    if found is None:
        proxies = request.app[settings_key].trusted_proxies
        found = bool(proxies) and _in(peer_address(request), _networks(tuple(proxies)))
        request[_TRUSTED_PEER] = found
    return bool(found)


def _forwarded(request: web.Request, name: str) -> str | None:
    """The value the nearest (trusted) proxy gave a forwarding header: the last of a list."""
    raw = request.headers.get(name)
    if not raw:
        return None
    value = raw.split(",")[-1].strip()
    return value or None


def client_address(request: web.Request) -> str:
    """The client's address: the TCP peer's, or behind a trusted proxy the last address in
    ``X-Forwarded-For`` that is not itself a trusted proxy (what the client could not forge).
    Worked out once per request (the limits ask for it before and after a token's look-up)."""
    found = request.get(_CLIENT_ADDRESS)
    if found is None:
        found = request[_CLIENT_ADDRESS] = _client_address(request)
    return str(found)


def _client_address(request: web.Request) -> str:
    peer = peer_address(request)
    if not from_trusted_proxy(request):
        return peer
    networks = _networks(tuple(request.app[settings_key].trusted_proxies))
    hops = [h.strip().strip("[]") for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    client = peer
    for hop in reversed([h for h in hops if h]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # not an address: what lies beyond it cannot be trusted either
        client = hop
        if not _in(hop, networks):
            break
    return client


def is_https(request: web.Request) -> bool:
    """Whether the browser's connection is HTTPS: TLS on this socket, or ``X-Forwarded-Proto:
    https`` from a trusted proxy."""
    if request.secure:
        return True
    return from_trusted_proxy(request) and (_forwarded(request, "X-Forwarded-Proto") or "").lower() == "https"


def request_host(request: web.Request) -> str:
    """The ``Host`` the browser asked for: ``X-Forwarded-Host`` from a trusted proxy, else ``Host``."""
    if from_trusted_proxy(request):
        forwarded = _forwarded(request, "X-Forwarded-Host")
        if forwarded:
            return forwarded
    return request.headers.get("Host", "")


def request_origin(request: web.Request) -> Origin:
    """The origin the request was made to (scheme, host, port), as the browser sees it."""
    scheme = "https" if is_https(request) else "http"
    name, port = split_host(request_host(request))
    return scheme, name, int(port) if port and port.isdigit() else DEFAULT_PORTS[scheme]


def origin_allowed(origin: str, request: web.Request, settings: Settings) -> bool:
    """The request's own origin (scheme, host and port alike), or one listed with --cors-origin."""
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    if parsed == request_origin(request):
        return True
    return parsed in _listed(tuple(settings.cors_origins))


@cache
def _listed(origins: tuple[str, ...]) -> frozenset[Origin]:
    return frozenset(o for o in map(parse_origin, origins) if o is not None)


CORS_HEADERS = "Authorization, Content-Type, " + ACTOR_HEADER


@web.middleware
async def browser_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests a web page could forge: a ``Host`` the server does not serve (DNS
    rebinding), an ``Origin`` that is neither the server's own nor listed; answer CORS preflights."""
    settings = request.app[settings_key]
    host = request_host(request) if settings.trusted_proxies else request.headers.get("Host", "")
    if not _host_ok(host, settings):
        raise ApiError(
            403,
            "forbidden_host",
            f"this server does not serve the host {host!r} (start it with --allowed-host {split_host(host)[0]})",
            {"field": "Host"},
        )
    origin = request.headers.get("Origin")
    if origin is not None:
        if not origin_allowed(origin, request, settings):
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
    if origin is not None and origin_listed(origin, request.app[settings_key]):
        for name, value in _cors_headers(origin).items():
            response.headers.setdefault(name, value)


def origin_listed(origin: str, settings: Settings) -> bool:
    """Whether ``origin`` is one given with --cors-origin (compared as scheme, host and port)."""
    if not settings.cors_origins:
        return False
    parsed = parse_origin(origin)
    return parsed is not None and parsed in _listed(tuple(settings.cors_origins))
