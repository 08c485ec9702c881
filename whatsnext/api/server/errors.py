"""Errors as JSON: every failure leaves the server as {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import orjson
import pydantic
import structlog
from aiohttp import web

log = structlog.get_logger("whatsnext.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error with an HTTP status, a stable code, a message and optional details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers
        """Headers the answer carries (``Retry-After`` on a 429)."""


def not_found(what: str, key: object, field: str | None = None) -> ApiError:
    return ApiError(404, "not_found", f"{what} {key} not found", {"field": field or what})


T = TypeVar("T")


def found(row: T | None, what: str, key: object, field: str | None = None) -> T:
    """``row``, or a 404 for ``what`` ``key`` when the store found none."""
    if row is None:
        raise not_found(what, key, field)
    return row


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


RETRY_AFTER = 2
"""Seconds a client is asked to wait (``Retry-After``) when the database is unavailable."""


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def unavailable(message: str = "the database is not available right now: retry shortly") -> web.Response:
    """503 with ``Retry-After``: the request did nothing; the same request may succeed later."""
    return error_response(503, "unavailable", message, None, {"Retry-After": str(RETRY_AFTER)})


def validation_details(exc: pydantic.ValidationError, prefix: tuple[str | int, ...] = ()) -> list[dict]:
    out = []
    for err in exc.errors(include_url=False, include_context=True, include_input=False):
        # Union members show in the location as their type ("list[...]", "function-after[...]"):
        # a field name never holds "[", so those parts go.
        loc = [*prefix, *(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))]
        field = (err.get("ctx") or {}).get("field")
        if isinstance(field, str):  # a check over a whole model names the field it found
            loc.append(field)
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
# Whole classes of SQLSTATE: data exceptions (NUL in text 22021, \u0000 in jsonb 22P05, a value out
# of range ...) and integrity or size limits are the request's fault; the rest of the list means the
# database cannot serve now (shutting down 57P01-03, too many connections 53300, connection lost
# class 08, a database closed to connections or a lock not available 55, a serialisation conflict or
# deadlock, a read-only standby) and the request may be retried.
_SQLSTATE_CLASS_HTTP = {"22": (422, "invalid"), "23": (422, "invalid"), "54": (422, "invalid")}
_UNAVAILABLE_CLASSES = ("08", "53", "57P01", "57P02", "57P03", "58", "40001", "40P01", "25006", "55")


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot serve this request now (it may later): answer 503 with Retry-After."""
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "").startswith(_UNAVAILABLE_CLASSES)
    if isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, ValueError):
        # "connection is closed", "pool is closing", "cannot ... connection was closed in the middle"
        text = str(exc).lower()
        return "clos" in text or "connection" in text
    return isinstance(exc, OSError)  # refused, reset, unreachable, timed out


_UNIQUE_FIELDS = {
    "projects_name_key": "name",
    "tasks_project_id_name_key": "name",
    "tokens_live_name": "name",
    "alloc_queues_name_key": "name",
    "allocations_external": "external_id",
}


# "prepared statement ... does not exist" / "... already exists": a transaction pooler sits between
# the server and PostgreSQL, and the server was not started with --pooler transaction.
_POOLER_SQLSTATES = frozenset({"26000", "42P05"})
POOLER_MESSAGE = (
    "the database connection goes through a transaction pooler: restart the server with "
    "--pooler transaction and --direct-database-url"
)


def database_error(exc: asyncpg.PostgresError) -> ApiError | None:
    if exc.sqlstate in _POOLER_SQLSTATES:
        log.error("prepared statements are lost in a transaction pooler", error=str(exc), hint=POOLER_MESSAGE)
        return ApiError(503, "pooler", POOLER_MESSAGE, {"database": str(exc)})
    sqlstate = exc.sqlstate or ""
    mapped = _SQLSTATE_HTTP.get(sqlstate) or _SQLSTATE_CLASS_HTTP.get(sqlstate[:2])
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
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except pydantic.ValidationError as exc:
        details = validation_details(exc)
        first = details[0] if details else {"field": "body", "message": "invalid"}
        return error_response(422, "invalid", f"{first['field']}: {first['message']}", details)
    except asyncpg.PostgresError as exc:
        if is_unavailable(exc):
            log.warning("database unavailable", path=request.path, sqlstate=exc.sqlstate, error=str(exc))
            return unavailable()
        mapped = database_error(exc)
        if mapped is not None:
            return error_response(mapped.status, mapped.code, mapped.message, mapped.details)
        log.error("database error", path=request.path, sqlstate=exc.sqlstate, error=str(exc))
        return error_response(500, "database_error", "the database refused the request")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except asyncpg.InterfaceError as exc:
        if isinstance(exc, ValueError):  # a value the driver cannot send: the input's fault
            log.warning("value refused by the driver", path=request.path, error=str(exc))
            return error_response(422, "invalid", str(exc))
        if is_unavailable(exc):
            log.warning("database unavailable", path=request.path, error=str(exc))
            return unavailable()
        log.exception("database driver error", path=request.path, error=str(exc))
        return error_response(500, "internal", "internal server error")
    except asyncpg.exceptions.InternalClientError as exc:
        # A connection left mid-operation when its session was ended under it: nothing was done.
        log.exception("database connection in a broken state", path=request.path, error=str(exc))
        return unavailable()
    except OSError as exc:
        log.warning("database unreachable", path=request.path, error=str(exc))
        return unavailable("the database is not reachable right now: retry shortly")
    except Exception as exc:
        log.exception("unhandled error", path=request.path, error=str(exc))
        return error_response(500, "internal", "internal server error")


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, method not allowed, body too large) as JSON errors,
    keeping the headers that go with them (``Allow`` on a 405)."""
    code = _HTTP_CODES.get(exc.status, "http_error")
    details: dict[str, Any] | None = None
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if exc.status == 404:
        message = f"no route for {request.method} {request.path}"
    elif exc.status == 405:
        allowed = headers.get("Allow", "")
        message = f"{request.method} is not allowed on {request.path}; allowed: {allowed or 'none'}"
        details = {"field": "method", "allowed": [m for m in allowed.split(",") if m]}
    elif exc.status == 413:
        limit = request.client_max_size
        message = f"the request body is larger than the server accepts ({limit} bytes, --max-body-bytes)"
        details = {"field": "body", "limit": limit}
    else:
        message = exc.reason
    return error_response(exc.status, code, message, details, headers or None)
