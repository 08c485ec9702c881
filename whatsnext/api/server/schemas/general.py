"""Models of the service itself: health and the error body."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
)

# ---------------------------------------------------------------- health


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    schema_level: int | None = Field(
        None,
        description="The database schema level (the number of its newest migration) this server runs.",
    )
    database: str | None = Field(
        None, description="The database's version (left out for a request without a token under --auth)."
    )
    lease_seconds: float | None = None
    waiting_claims: int = Field(0, description="Long-polling claims this server process holds now.")
    listen_reconnects: int = Field(0, description="Times the LISTEN connection was re-established.")
    max_wait: float | None = Field(
        None, description="Longest wait (s) of one claim or log follow; clients never ask for more."
    )
    retention: float | None = Field(
        None,
        description="Seconds finished jobs are kept after they finish (--retention); null: kept "
        "forever (left out for a request without a token under --auth).",
    )


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class Error(BaseModel):
    error: ErrorBody
