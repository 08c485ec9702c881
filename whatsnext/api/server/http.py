"""Small helpers shared by the route modules: parse a body, read params, answer JSON; and the
middleware that refuses what no route can take (a body that is not JSON, NUL in the URL)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar

import orjson
import pydantic
from aiohttp import web

from .errors import ApiError, Handler, bad_request, check_attempt_outcome, invalid, validation_details
from .keys import settings_key
from .schemas import MAX_PARAMETERS_BYTES, validation_context

M = TypeVar("M", bound=pydantic.BaseModel)
MAX_ID = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,20}")
"""An integer in a URL: ASCII digits only (``int()`` would also take '١٢', ' 12' or '1_2')."""
_NUMBER = re.compile(r"[0-9]{1,10}(\.[0-9]{1,9})?")
"""A non-negative number in a URL: ASCII digits, at most one dot (no exponent, inf or nan)."""
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_PATHS = "/ui/"
"""The web dashboard's forms post form-encoded bodies (each checked for its CSRF token)."""
FORM_TYPE = "application/x-www-form-urlencoded"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def attempt_answer(job_id: int, row: Any, *fields: str) -> web.Response:
    """The answer to what a worker says of a job's attempt: 404 or 409 as the SQL function decided
    (see :func:`check_attempt_outcome`), else the job's id and status with ``fields`` of ``row``."""
    check_attempt_outcome(row)
    return json_response({"id": job_id, "status": row["status"], **{f: row[f] for f in fields}})


def parsing_context(request: web.Request, raw: bytes, plain: bool | None = None) -> dict[str, Any]:
    """The validation context of a request body (``schemas``: the parameters bound, and whether
    the body holds nothing unstorable)."""
    settings = request.app.get(settings_key)
    limit = settings.max_parameters_bytes if settings is not None else MAX_PARAMETERS_BYTES
    return validation_context(raw, limit, plain)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The request's body as ``model``, validated once; then the route's rule decides what the
    body names (with ``--auth``: the project of a task, the worker of a claim ...) on this same
    parsed body (:data:`BODY_GUARD`)."""
    raw = await request.read()
    if not raw.strip():
        raise bad_request("a JSON body is required", "body")
    try:
        body = model.model_validate_json(raw, context=parsing_context(request, raw))
    except pydantic.ValidationError as exc:
        details = validation_details(exc)
        if any(d["type"] == "json_invalid" for d in details):
            raise bad_request("the body is not valid JSON", "body") from None
        first = details[0]
        raise ApiError(422, "invalid", f"{first['field']}: {first['message']}", details) from None
    guard = request.get(BODY_GUARD)
    if guard is not None:
        await guard(body)
    return body


def client_gone(request: web.Request) -> bool:
    """Whether the client of a long request (a long-poll, a follow stream) went away."""
    transport = request.transport
    return transport is None or transport.is_closing()


def path_id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 0 < int(raw) <= MAX_ID:
        raise invalid(f"{name} must be a positive integer below 2^63, got {raw!r}", name)
    return int(raw)


def query_int(
    request: web.Request, name: str, default: int | None, lo: int = 0, hi: int = MAX_ID
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw):
        raise invalid(f"{name} must be an integer (ASCII digits), got {raw!r}", name)
    value = int(raw)
    if not lo <= value <= hi:
        raise invalid(f"{name} must be between {lo} and {hi}", name)
    return value


def query_number(request: web.Request, name: str, default: float, lo: float, hi: float) -> float:
    """A number of seconds (or the like) in the query: ``2``, ``0.5``; 422 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not _NUMBER.fullmatch(raw):
        raise invalid(f"{name} must be a number (ASCII digits and a dot), got {raw!r}", name)
    value = float(raw)
    if not lo <= value <= hi:
        raise invalid(f"{name} must be between {lo:g} and {hi:g}", name)
    return value


def query_flag(request: web.Request, name: str, default: bool = False) -> bool:
    """A yes/no query parameter: 1/0, true/false, yes/no, on/off."""
    raw = request.query.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise invalid(f"{name} must be 1 or 0, got {raw!r}", name)


def query_choice(request: web.Request, name: str, choices: Iterable[str]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    value = raw.upper()
    allowed = list(choices)
    if value not in allowed:
        raise invalid(f"{name} must be one of {', '.join(allowed)}, got {raw!r}", name)
    return value


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


@web.middleware
async def input_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse, before any route runs, what no route can take: a request body that is not JSON
    (415; a request without a body needs no Content-Type), and a NUL character in a path segment
    or a query parameter (422, PostgreSQL text cannot hold it). No route, or a method the path
    does not serve, is answered 404/405 first."""
    if getattr(request.match_info, "http_exception", None) is not None:
        return await handler(request)
    if (
        request.method not in _BODYLESS
        and request.body_exists
        and not _is_json(request.content_type)
        and not (request.path.startswith(FORM_PATHS) and request.content_type == FORM_TYPE)
    ):
        given = request.headers.get("Content-Type")
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be JSON (Content-Type: application/json), got {given or 'no Content-Type'}",
            {"field": "Content-Type"},
        )
    for name, value in (*request.match_info.items(), *request.query.items()):
        if "\x00" in value or "\x00" in name:
            raise invalid(f"{name} cannot contain the NUL character", name)
    return await handler(request)


ACTOR_HEADER = "X-WhatsNext-Actor"
PRINCIPAL_KEY: Any = (
    web.RequestKey("whatsnext.principal", object) if hasattr(web, "RequestKey") else "whatsnext.principal"
)
"""Where the auth middleware leaves the token behind a request (``roles.Principal``)."""
BODY_GUARD: Any = (
    web.RequestKey("whatsnext.body_guard", object) if hasattr(web, "RequestKey") else "whatsnext.body_guard"
)
"""Where the auth middleware leaves the check of a route whose rule depends on its body: an async
callable that :func:`parse_body` awaits with the parsed body (403 when the body names what the
token does not cover)."""


def actor(request: web.Request) -> str | None:
    """Who is behind a request, for the job history: the client's own name for itself (the CLI
    and SDK send the user and host), at most 200 characters. With auth on, the token's name, with
    the client's own name after it in parentheses when it sends one."""
    name = request.headers.get(ACTOR_HEADER)
    name = name[:200].replace("\x00", "") if name else None
    token = request.get(PRINCIPAL_KEY)
    if token is not None:
        return f"{token.name} ({name})" if name else str(token.name)
    return name or None
