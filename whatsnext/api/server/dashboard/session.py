"""Who is looking at the dashboard: a signed session cookie (after a login with a token) or a
bearer token; and the CSRF token every form carries.

The session cookie holds the SHA-256 of the token and an expiry, signed with HMAC-SHA256. The
signing secret is ``$WHATSNEXT_SESSION_SECRET`` where set (give every server of a deployment the
same one), else derived from the admin token (the same on every server that shares it), else a
random one of this process (sessions then last as long as the process). Each request looks the
token up again, so revoking it ends its sessions.

Forms are protected twice: the cookies are ``SameSite=Strict`` (a page elsewhere cannot send
them), and every form carries the value of the ``wn_csrf`` cookie, compared on each post
(double submit). The server's Origin check applies too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time

import orjson
from aiohttp import web

from ..errors import ApiError
from ..keys import settings_key
from ..roles import Principal
from ..tokens import authenticate, hash_token, lookup

SESSION_COOKIE = "wn_session"
CSRF_COOKIE = "wn_csrf"
CSRF_FIELD = "csrf"
SESSION_SECONDS = 12 * 3600
SECRET_ENV = "WHATSNEXT_SESSION_SECRET"
_PROCESS_SECRET = secrets.token_bytes(32)
_ANONYMOUS = Principal(None, "dashboard", "admin", None)
"""Without --auth, whoever reaches the server may do everything (as with the API)."""


class LoginRequired(Exception):
    """No valid session: the page sends the browser to the login form."""


def session_secret(admin_token: str | None) -> bytes:
    """The key that signs session cookies (see the module's description)."""
    configured = os.environ.get(SECRET_ENV, "").strip()
    if configured:
        return hashlib.sha256(b"whatsnext-session:" + configured.encode()).digest()
    if admin_token:
        return hmac.new(admin_token.encode(), b"whatsnext-session", hashlib.sha256).digest()
    return _PROCESS_SECRET


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_session(token: str, secret: bytes, now: float | None = None) -> str:
    """The cookie value for a session of ``token``."""
    payload = orjson.dumps({"h": hash_token(token).hex(), "exp": int((now or time.time()) + SESSION_SECONDS)})
    mac = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def read_session(value: str, secret: bytes, now: float | None = None) -> bytes | None:
    """The token hash of a valid, unexpired session cookie, else None."""
    try:
        raw_payload, raw_mac = value.split(".", 1)
        payload, mac = _unb64(raw_payload), _unb64(raw_mac)
    except ValueError:
        return None
    if not hmac.compare_digest(mac, hmac.new(secret, payload, hashlib.sha256).digest()):
        return None
    try:
        data = orjson.loads(payload)
        digest = bytes.fromhex(data["h"])
        expires = float(data["exp"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if expires < (now or time.time()):
        return None
    return digest


async def principal_for_hash(request: web.Request, digest: bytes) -> Principal | None:
    """The principal of a token hash (None: unknown, revoked or expired)."""
    return (await lookup(request.app, digest))[0]


async def viewer(request: web.Request) -> Principal:
    """Who is looking: anyone without --auth; else the bearer token or the session's token.
    Raises :class:`LoginRequired` when there is neither."""
    settings = request.app[settings_key]
    if not settings.auth:
        return _ANONYMOUS
    if "Authorization" in request.headers:
        try:
            return await authenticate(request)
        except ApiError as exc:
            if exc.status == 429:
                raise  # too many bad tokens from this address (limits)
            raise LoginRequired from None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        digest = read_session(cookie, session_secret(settings.admin_token))
        if digest is not None:
            who = await principal_for_hash(request, digest)
            if who is not None:
                return who
    raise LoginRequired


def csrf_token(request: web.Request) -> str:
    """The CSRF value of this browser (a new one when it has none yet; see :func:`set_csrf`)."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 100:
        return existing
    token = request.get("wn_new_csrf")
    if token is None:
        token = secrets.token_urlsafe(24)
        request["wn_new_csrf"] = token
    return str(token)


def set_csrf(request: web.Request, response: web.StreamResponse) -> None:
    """Send the CSRF cookie made while rendering the page, if one was."""
    token = request.get("wn_new_csrf")
    if token is not None:
        response.set_cookie(
            CSRF_COOKIE, str(token), httponly=True, samesite="Strict", path="/", secure=request.secure
        )


def check_csrf(request: web.Request, sent: str | None) -> None:
    """Refuse a form post whose CSRF value is not this browser's."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not sent or not hmac.compare_digest(cookie, sent):
        raise ApiError(
            403,
            "forbidden",
            "the form is stale or came from another site: reload the page",
            {"field": CSRF_FIELD},
        )


def start_session(request: web.Request, response: web.StreamResponse, token: str) -> None:
    secret = session_secret(request.app[settings_key].admin_token)
    response.set_cookie(
        SESSION_COOKIE,
        sign_session(token, secret),
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=SESSION_SECONDS,
        secure=request.secure,
    )


def end_session(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")
