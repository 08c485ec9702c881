"""Typed errors raised by the SDK, carrying the server's message."""

from __future__ import annotations

import builtins
from typing import Any


class WhatsNextError(Exception):
    """Base class of every error the SDK raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Any = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details
        self.url = url
        self.retry_after: float | None = None
        """Seconds the server asked to wait before trying again (its ``Retry-After``), if it said."""


class BadRequest(WhatsNextError):
    """The server could not read the request (400)."""


class NotFound(WhatsNextError):
    """Unknown project, job, task or worker (404)."""


class Conflict(WhatsNextError):
    """The request conflicts with the current state: a duplicate name, a stale attempt (409)."""


class ValidationError(WhatsNextError):
    """The server refused a field's value (422); ``details`` names the field."""


class TooManyRequests(WhatsNextError):
    """The server asks to come back later (429): too many open streams from this address, or too
    many failed authentications; ``retry_after`` says in how many seconds."""


class ServerError(WhatsNextError):
    """The server failed (5xx)."""


class ConnectionError(WhatsNextError, builtins.ConnectionError):
    """The server could not be reached; ``url`` is the address tried."""


def for_status(status: int) -> type[WhatsNextError]:
    if status == 400:
        return BadRequest
    if status == 404:
        return NotFound
    if status == 409:
        return Conflict
    if status == 422:
        return ValidationError
    if status == 429:
        return TooManyRequests
    if status >= 500:
        return ServerError
    return WhatsNextError


RETRYABLE: tuple[type[WhatsNextError], ...] = (ConnectionError, ServerError)
"""Errors a worker retries with backoff: the server is unreachable or failed; it may come back."""
