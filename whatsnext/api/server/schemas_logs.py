"""Request and response models of the live-log and artifact routes (pydantic v2)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, RootModel, model_validator

from .schemas import JobStatus, Strict

MAX_LOG_BATCH = 1000
"""At most this many lines of one job in one request."""
MAX_LOG_REQUEST = 10_000
"""At most this many lines in all in one POST /jobs/logs."""
MAX_LOG_LINE = 65_536
"""Characters in one line (the worker cuts longer lines before sending them)."""
MAX_URI = 4096
MAX_ARTIFACTS = 10_000


def _printable(value: str) -> str:
    # PostgreSQL text cannot hold NUL characters; a program may still print them.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


LogLine = Annotated[str, Field(max_length=MAX_LOG_LINE), AfterValidator(_printable)]
Direction = Literal["in", "out"]


# ---------------------------------------------------------------- live logs


class LogAppend(Strict):
    attempt: Annotated[int, Field(ge=1, le=2**31 - 1)] = Field(
        description="The attempt the lines belong to (the claim's fencing token)."
    )
    lines: list[LogLine] = Field(
        max_length=MAX_LOG_BATCH, description=f"Output lines, oldest first (at most {MAX_LOG_BATCH})."
    )


class LogAppended(BaseModel):
    id: int
    status: JobStatus
    appended: int
    dropped: int = Field(description="Oldest lines of the job removed so far to keep the bound.")


class LogAppendFor(LogAppend):
    id: Annotated[int, Field(ge=1)] = Field(description="The job.")


class LogAppendBatch(RootModel[list[LogAppendFor]]):
    root: Annotated[list[LogAppendFor], Field(min_length=1, max_length=1000)]

    @model_validator(mode="after")
    def _bounded(self) -> LogAppendBatch:
        total = sum(len(entry.lines) for entry in self.root)
        if total > MAX_LOG_REQUEST:
            raise ValueError(f"at most {MAX_LOG_REQUEST} lines in one request, got {total}")
        return self


class LogAppendResult(BaseModel):
    id: int
    code: int = Field(description="200 appended, 404 unknown job, 409 stale attempt (nothing appended).")
    status: JobStatus | None
    message: str | None
    appended: int
    dropped: int


class LogAppendResults(BaseModel):
    results: list[LogAppendResult]


class LogLineOut(BaseModel):
    id: int = Field(description="Pass the last one as ?after= to read on.")
    seq: int = Field(description="The line's number within the job (1, 2, ...): a jump means lines dropped.")
    attempt: int
    line: str
    at: datetime


class LogPage(BaseModel):
    lines: list[LogLineOut]
    dropped: int = Field(description="How many of the job's oldest lines were removed to keep the bound.")
    finished: bool = Field(description="The job is COMPLETED, FAILED, CANCELLED or BLOCKED.")
    status: JobStatus
    last_id: int = Field(description="The id to pass as ?after= for the next page.")


# ---------------------------------------------------------------- artifacts


class ArtifactIn(Strict):
    direction: Direction = Field(description="'in' for what the job read, 'out' for what it wrote.")
    uri: str = Field(min_length=1, max_length=MAX_URI, description="Absolute path or URI.")
    size: Annotated[int, Field(ge=0)] | None = Field(None, description="Bytes (a directory: of its files).")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    modified_at: datetime | None = None
    missing: bool = Field(False, description="The job declared it but it was not there.")


class ArtifactBatch(RootModel[list[ArtifactIn]]):
    root: Annotated[list[ArtifactIn], Field(max_length=MAX_ARTIFACTS)]


class ArtifactsRecorded(BaseModel):
    id: int
    status: JobStatus
    recorded: int


class ArtifactOut(BaseModel):
    id: int
    job_id: int
    direction: Direction
    uri: str
    size: int | None
    sha256: str | None
    modified_at: datetime | None
    missing: bool
    recorded_at: datetime


class ArtifactList(BaseModel):
    artifacts: list[ArtifactOut]


class ArtifactMatch(ArtifactOut):
    job_name: str
    task: str
    job_status: JobStatus


class ArtifactMatches(BaseModel):
    artifacts: list[ArtifactMatch]
    next_before: int | None = Field(None, description="Pass as ?before= for the next page (no ?uri= given).")
