"""Signing in to the dashboard with a token (a session recorded in the database) and out."""

from __future__ import annotations

from aiohttp import web

from ..errors import ApiError
from ..keys import settings_key
from ..limits import auth_check, auth_failed, auth_succeeded
from ..roles import PAGE_OPEN
from ..tokens import MAX_TOKEN_LENGTH, hash_token, lookup
from .base import PREFIX, read_form, safe_next, views
from .render import render
from .session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    browser_csrf,
    csrf_token,
    end_session,
    send_cookies,
    session_principal,
    start_session,
    viewer,
)

# ---------------------------------------------------------------- login


@views.get(PREFIX + "/login", "Sign in", rule=PAGE_OPEN)
async def login_form(request: web.Request) -> web.StreamResponse:
    if not request.app[settings_key].auth:
        raise web.HTTPFound(PREFIX + "/")
    await browser_csrf(request)
    return _login_page(request, request.query.get("next"), None, 200)


def _login_page(
    request: web.Request, next_path: str | None, error: str | None, status: int
) -> web.StreamResponse:
    """The login form (the request's CSRF value is made first: :func:`browser_csrf`)."""
    context = {
        "next": safe_next(next_path),
        "error": error,
        "csrf": csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "prefix": PREFIX,
        "title": "Sign in",
        "who": None,
        "auth": True,
    }
    response = render("login.html", context, status=status)
    response.headers["Cache-Control"] = "no-store"
    send_cookies(request, response)
    return response


@views.post(PREFIX + "/login", "Sign in with a token (a form)", rule=PAGE_OPEN)
async def login(request: web.Request) -> web.StreamResponse:
    """Check the token and start a session (recorded in the database; the cookie holds its id)."""
    await browser_csrf(request)
    form = await read_form(request)
    token = str(form.get("token", "")).strip()
    next_path = str(form.get("next", ""))
    if not token:
        return _login_page(request, next_path, "Paste a token to sign in.", 401)
    digest = hash_token(token)
    try:
        auth_check(request, digest)  # a limited address: only a token that worked from it is tried
        who = (await lookup(request.app, digest))[0] if len(token) <= MAX_TOKEN_LENGTH else None
        if who is None:
            auth_failed(request)
    except ApiError as limited:
        response = _login_page(request, next_path, limited.message, limited.status)
        response.headers.update(limited.headers or {})
        return response
    if who is None:
        return _login_page(request, next_path, "This token is not valid (unknown, expired or revoked).", 401)
    auth_succeeded(request, digest)
    response = web.HTTPSeeOther(safe_next(next_path or None))
    await start_session(request, response, who, token)
    raise response


@views.post(PREFIX + "/logout", "Sign out", rule=PAGE_OPEN)
async def logout(request: web.Request) -> web.StreamResponse:
    """End the session: its record is deleted, so its cookie works nowhere any more. A browser
    whose session already ended is just sent to the login form."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id and await session_principal(request, session_id) is not None:
        await viewer(request)  # the CSRF value of this session: another page cannot sign anyone out
        await read_form(request)
    response = web.HTTPSeeOther(PREFIX + "/login")
    await end_session(request, response)
    raise response
