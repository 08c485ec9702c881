"""Errors as JSON: every failure leaves the server as {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pydantic
import structlog
from aiohttp import web

log = structlog.get_logger("whatsnext.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error with an HTTP status, a stable code, a message and optional details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def not_found(what: str, key: object, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", f"{what} {key} not found", {"field": field or what})


def bad_request(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, "bad_request", message, {"field": field} if field else None)


def invalid(message: str, field: str, **extra: Any) -> ApiError:
    return ApiError(422, "invalid", message, {"field": field, **extra})


def check_attempt_outcome(row: Any) -> None:
    """Raise for a SQL function's (code, status, message) answer about one job's attempt: 404
    for an unknown job, 409 for an attempt that is not the job's current one."""
    if row["code"] == 404:
        raise ApiError(404, "not_found", row["message"], {"field": "job_id"})
    if row["code"] == 409:
        raise ApiError(409, "stale_attempt", row["message"], {"field": "attempt", "status": row["status"]})


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def validation_details(exc: pydantic.ValidationError, prefix: tuple[str | int, ...] = ()) -> list[dict]:
    out = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = [*prefix, *err["loc"]]
        out.append(
            {"field": ".".join(str(p) for p in loc) or "body", "message": err["msg"], "type": err["type"]}
        )
    return out


# SQLSTATEs raised by our SQL functions (class WN), and PostgreSQL's own that bad input can cause.
_SQLSTATE_HTTP = {
    "WN404": (404, "not_found"),
    "WN409": (409, "conflict"),
    "WN422": (422, "invalid"),
    "23505": (409, "conflict"),  # unique_violation
    "23503": (409, "conflict"),  # foreign_key_violation
    "23514": (422, "invalid"),  # check_violation
    "22003": (422, "invalid"),  # numeric_value_out_of_range
    "22P02": (422, "invalid"),  # invalid_text_representation
    "54000": (422, "invalid"),  # program_limit_exceeded (e.g. too large a value)
}


_UNIQUE_FIELDS = {"projects_name_key": "name", "tasks_project_id_name_key": "name"}


def database_error(exc: asyncpg.PostgresError) -> ApiError | None:
    mapped = _SQLSTATE_HTTP.get(exc.sqlstate or "")
    if mapped is None:
        return None
    status, code = mapped
    message = exc.args[0] if exc.args else str(exc)
    if exc.sqlstate == "23505":
        field = _UNIQUE_FIELDS.get(getattr(exc, "constraint_name", None) or "")
        message = f"already exists: {exc.detail or message}"
        return ApiError(status, code, message, {"field": field})
    return ApiError(status, code, message, {"field": exc.detail} if exc.detail else None)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except pydantic.ValidationError as exc:
        details = validation_details(exc)
        first = details[0] if details else {"field": "body", "message": "invalid"}
        return error_response(422, "invalid", f"{first['field']}: {first['message']}", details)
    except asyncpg.PostgresError as exc:
        mapped = database_error(exc)
        if mapped is not None:
            return error_response(mapped.status, mapped.code, mapped.message, mapped.details)
        log.error("database error", path=request.path, sqlstate=exc.sqlstate, error=str(exc))
        return error_response(500, "database_error", "the database refused the request")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
        message = exc.reason if exc.status != 404 else f"no route for {request.method} {request.path}"
        return error_response(exc.status, code, message)
    except (OSError, asyncpg.ConnectionDoesNotExistError) as exc:
        log.error("service unavailable", path=request.path, error=str(exc))
        return error_response(503, "unavailable", "the database is not reachable right now")
    except Exception as exc:
        log.exception("unhandled error", path=request.path, error=str(exc))
        return error_response(500, "internal", "internal server error")
