"""Who is looking at the dashboard: a session (after a login with a token) or a bearer token; the
CSRF value every form carries; the headers every dashboard answer carries.

A login records a session in the database (``ui_sessions``: the SHA-256 of a random session id,
the token, an expiry 12 hours on) and gives the browser the id in the ``wn_session`` cookie. Each
request looks the session and its token up in one query, so signing out (which deletes the row)
and revoking the token end the session on every server at once.

Forms are protected three times: the cookies are ``SameSite=Strict``; the server's Origin check
refuses a post from any other origin (another port of the same host included); and every form
carries a CSRF value that is an HMAC, under a key only the servers know, of the browser's
session id (before a login, or without ``--auth``: of a random value in the ``wn_pre`` cookie).
A page elsewhere may plant cookies for the host (cookies do not separate ports) but cannot read
the session cookie nor compute the HMAC, so a value it makes up never passes. The key is
``$WHATSNEXT_SESSION_SECRET`` where set, else a random one kept in the database (``ui_secret``)
and shared by every server on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..browser import is_https
from ..errors import ApiError
from ..keys import settings_key, store_key
from ..roles import BOOTSTRAP_NAME, Principal
from ..tokens import admin_digest, authenticate

SESSION_COOKIE = "wn_session"
BROWSER_COOKIE = "wn_pre"
"""A random value naming a browser that has no session: the CSRF value of its forms derives from it."""
CSRF_FIELD = "csrf"
SESSION_SECONDS = 12 * 3600
SECRET_ENV = "WHATSNEXT_SESSION_SECRET"
_ANONYMOUS = Principal(None, "dashboard", "admin", None)
"""Without --auth, whoever reaches the server may do everything (as with the API)."""


def _request_key(name: str) -> Any:
    """A typed key of a request's storage where aiohttp has them (3.12 and later), else the name."""
    return web.RequestKey(name, str) if hasattr(web, "RequestKey") else name


_CSRF_KEY = _request_key("whatsnext.dashboard.csrf")
"""The CSRF value of the request's session or browser."""
_NEW_BROWSER_KEY = _request_key("whatsnext.dashboard.new_browser")
"""A ``wn_pre`` value made while answering, for :func:`send_cookies`."""

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""Scripts and styles from the server's own files only (no inline ones: the templates carry none,
and htmx is told not to inject its indicator style); no framing."""
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class LoginRequired(Exception):
    """No valid session: the page sends the browser to the login form."""


@dataclass
class SecretHolder:
    """The dashboard's key once read (from the environment or the database)."""

    value: bytes | None = None


secret_key = web.AppKey("dashboard_secret", SecretHolder)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _plausible(value: str | None) -> bool:
    """A cookie value of the shape this server makes (random, URL-safe) before anything is asked."""
    return bool(value) and 20 <= len(value or "") <= 100  # type: ignore[operator]


async def dashboard_secret(request: web.Request) -> bytes:
    """The key of the CSRF values (see the module's description), read once per process."""
    holder = request.app[secret_key]
    if holder.value is None:
        configured = os.environ.get(SECRET_ENV, "").strip()
        if configured:
            holder.value = hashlib.sha256(b"whatsnext-session:" + configured.encode()).digest()
        else:
            store = request.app[store_key].ui_sessions
            found = await store.secret(candidate=secrets.token_bytes(32))
            if found is None:  # another server stored its own at the same moment: read that one
                found = await store.secret(candidate=secrets.token_bytes(32))
            if found is None:
                raise ApiError(503, "unavailable", "the dashboard's key could not be read: try again")
            holder.value = found
    return holder.value


async def _set_csrf(request: web.Request, basis: bytes) -> None:
    mac = hmac.new(await dashboard_secret(request), b"whatsnext-csrf:" + basis, hashlib.sha256).digest()
    request[_CSRF_KEY] = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def browser_csrf(request: web.Request) -> str:
    """Make the CSRF value of a browser without a session (from its ``wn_pre`` cookie, a new one
    when it has none: sent by :func:`send_cookies`) the request's."""
    value = request.cookies.get(BROWSER_COOKIE)
    if not _plausible(value):
        value = secrets.token_urlsafe(24)
        request[_NEW_BROWSER_KEY] = value
    await _set_csrf(request, b"browser:" + str(value).encode())
    return csrf_token(request)


async def session_principal(request: web.Request, session_id: str) -> Principal | None:
    """The principal of a live session (None: unknown, expired, signed out, or its token revoked
    or expired)."""
    if not _plausible(session_id):
        return None
    row = await request.app[store_key].ui_sessions.lookup(hash=_digest(session_id))
    if row is None:
        return None
    if row["token_id"] is None:
        admin = request.app[settings_key].admin_token
        stored = row["admin_hash"]
        if admin and stored is not None and hmac.compare_digest(bytes(stored), admin_digest(admin)):
            return Principal(None, BOOTSTRAP_NAME, "admin", None)
        return None
    if row["name"] is None or row["revoked"] or row["expired"]:
        return None
    projects = None if row["projects"] is None else frozenset(row["projects"])
    return Principal(row["token_id"], row["name"], row["role"], projects)


async def viewer(request: web.Request) -> Principal:
    """Who is looking: anyone without --auth; else the bearer token or the session's token.
    Makes the request's CSRF value (:func:`csrf_token`). Raises :class:`LoginRequired` when there
    is neither a valid token nor a live session."""
    settings = request.app[settings_key]
    if not settings.auth:
        await browser_csrf(request)
        return _ANONYMOUS
    if "Authorization" in request.headers:
        try:
            who = await authenticate(request)
        except ApiError as exc:
            if exc.status == 429:
                raise  # too many bad tokens from this address (limits)
            raise LoginRequired from None
        await browser_csrf(request)
        return who
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        found = await session_principal(request, session_id)
        if found is not None:
            await _set_csrf(request, b"session:" + session_id.encode())
            return found
    raise LoginRequired


def csrf_token(request: web.Request) -> str:
    """The CSRF value of this request's session or browser (made by :func:`viewer` or
    :func:`browser_csrf`)."""
    return str(request[_CSRF_KEY])


def check_csrf(request: web.Request, sent: str | None) -> None:
    """Refuse a form post whose CSRF value is not the one of this session (or browser)."""
    expected = request.get(_CSRF_KEY)
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise ApiError(
            403,
            "forbidden",
            "the form is stale or came from another site: reload the page",
            {"field": CSRF_FIELD},
        )


def send_cookies(request: web.Request, response: web.StreamResponse) -> None:
    """Send the ``wn_pre`` cookie made while answering, if one was."""
    value = request.get(_NEW_BROWSER_KEY)
    if value is not None:
        response.set_cookie(
            BROWSER_COOKIE, str(value), httponly=True, samesite="Strict", path="/", secure=is_https(request)
        )


async def start_session(
    request: web.Request, response: web.StreamResponse, who: Principal, token: str
) -> None:
    """Record a new session of ``who`` (signed in with ``token``) and give the browser its id."""
    session_id = secrets.token_urlsafe(32)
    await request.app[store_key].ui_sessions.create(
        hash=_digest(session_id),
        token_id=who.id,
        admin_hash=admin_digest(token) if who.id is None else None,
        seconds=SESSION_SECONDS,
    )
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=SESSION_SECONDS,
        secure=is_https(request),
    )


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    """Delete the browser's session (on every server: it is in the database) and its cookie."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if _plausible(session_id):
        await request.app[store_key].ui_sessions.delete(hash=_digest(str(session_id)))
    response.del_cookie(SESSION_COOKIE, path="/")


async def page_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer under the dashboard (pages, the login form, redirects, errors, static files):
    no framing, no inline script or style, no type sniffing, no referrer to other sites."""
    path = request.path
    if path == "/" or path.startswith("/ui/") or path == "/ui":
        for name, value in PAGE_HEADERS.items():
            response.headers.setdefault(name, value)
