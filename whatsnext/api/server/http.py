"""Small helpers shared by the route modules: parse a body, read params, answer JSON."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import asyncpg
import orjson
import pydantic
from aiohttp import web

from .errors import ApiError, bad_request, invalid, validation_details

M = TypeVar("M", bound=pydantic.BaseModel)
MAX_ID = 2**63 - 1


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def record(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None


def records(rows: Iterable[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]


async def parse_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    if not raw.strip():
        raise bad_request("a JSON body is required", "body")
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        details = validation_details(exc)
        if any(d["type"] == "json_invalid" for d in details):
            raise bad_request("the body is not valid JSON", "body") from None
        first = details[0]
        raise ApiError(422, "invalid", f"{first['field']}: {first['message']}", details) from None


def path_id(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
        raise invalid(f"{name} must be a positive integer, got {raw!r}", name)
    return int(raw)


def query_int(
    request: web.Request, name: str, default: int | None, lo: int = 0, hi: int = MAX_ID
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer, got {raw!r}", name) from None
    if not lo <= value <= hi:
        raise invalid(f"{name} must be between {lo} and {hi}", name)
    return value


def query_choice(request: web.Request, name: str, choices: Iterable[str]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    value = raw.upper()
    allowed = list(choices)
    if value not in allowed:
        raise invalid(f"{name} must be one of {', '.join(allowed)}, got {raw!r}", name)
    return value


def dumps_json(value: Any) -> str:
    """Encode a value for a jsonb parameter."""
    return orjson.dumps(value).decode()
