"""Tokens on requests: making them, hashing them, and finding the principal behind a request.

Tokens are random (``wnt_`` and 43 URL-safe characters, 256 bits), shown once and stored as their
SHA-256. A token has a role (``roles.PERMISSIONS``) and may be restricted to some projects."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cache

from aiohttp import web

from .errors import ApiError
from .http import PRINCIPAL_KEY
from .keys import settings_key, store_key
from .limits import auth_check, auth_failed, auth_succeeded
from .roles import BOOTSTRAP_NAME, Principal

TOKEN_PREFIX = "wnt_"
MAX_TOKEN_LENGTH = 200


def new_token() -> str:
    """A new random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """What is stored: SHA-256, fast enough for every request (the token is random, not a password)."""
    return hashlib.sha256(token.encode()).digest()


@cache
def admin_digest(admin_token: str) -> bytes:
    """The admin token's hash, computed once (every authenticated request compares against it)."""
    return hash_token(admin_token)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"field": "Authorization"})


def bearer(request: web.Request) -> str | None:
    """The request's bearer token (None: no Authorization header); 401 for another scheme."""
    raw = request.headers.get("Authorization")
    if raw is None:
        return None
    scheme, _, token = raw.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def authenticate(request: web.Request) -> Principal:
    """The token's principal; 401 when it is missing, unknown, expired or revoked, and 429 when the
    client's address presented too many bad tokens (``limits``: then only a token that worked from
    that address before is looked up)."""
    try:
        token = bearer(request)
    except ApiError:
        auth_failed(request)
        raise
    if token is None:
        raise unauthorized("this server requires a token: Authorization: Bearer <token> ($WHATSNEXT_TOKEN)")
    if len(token) > MAX_TOKEN_LENGTH:
        auth_failed(request)
        raise unauthorized("the token is not valid")
    digest = hash_token(token)
    auth_check(request, digest)
    found, why = await lookup(request.app, digest)
    if found is None:
        auth_failed(request)
        raise unauthorized(why)
    auth_succeeded(request, digest)
    return found


async def lookup(app: web.Application, digest: bytes) -> tuple[Principal | None, str]:
    """The principal of a token hash, or None and why not (unknown, revoked, expired)."""
    admin = app[settings_key].admin_token
    if admin and hmac.compare_digest(digest, admin_digest(admin)):
        return Principal(None, BOOTSTRAP_NAME, "admin", None), ""
    row = await app[store_key].tokens.authenticate(hash=digest)
    if row is None:
        return None, "the token is not valid"
    if row["revoked"]:
        return None, f"the token {row['name']!r} was revoked"
    if row["expired"]:
        return None, f"the token {row['name']!r} has expired"
    projects = None if row["projects"] is None else frozenset(row["projects"])
    return Principal(row["id"], row["name"], row["role"], projects), ""


def principal(request: web.Request) -> Principal | None:
    """The token behind the request (None when auth is off)."""
    found = request.get(PRINCIPAL_KEY)
    return found if isinstance(found, Principal) else None


def token_id(request: web.Request) -> int | None:
    """The id of the token behind the request, to record on what it creates (a worker)."""
    p = principal(request)
    return None if p is None else p.id


def project_filter(request: web.Request) -> list[int] | None:
    """The projects a list may show (None: all), for the ``:projects`` parameter of list statements."""
    p = principal(request)
    return None if p is None or p.projects is None else sorted(p.projects)


def worker_token(request: web.Request) -> int | None:
    """The id of the request's token when it is a stored worker token (:attr:`Principal.worker_token`)."""
    p = principal(request)
    return None if p is None else p.worker_token
