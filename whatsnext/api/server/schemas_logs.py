"""Request and response models of the live-log and artifact routes (pydantic v2)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, RootModel, model_validator

from ...limits import MAX_ARTIFACTS, MAX_LOG_BATCH, MAX_LOG_JOBS, MAX_LOG_LINE, MAX_LOG_REQUEST, MAX_URI
from ...limits import MAX_REASON as MAX_ARTIFACT_REASON
from .schemas import INT64, Attempt, Id, JobStatus, Printed, Strict

LogLine = Annotated[Printed, Field(max_length=MAX_LOG_LINE)]
Direction = Literal["in", "out"]
ArtifactKind = Literal["declared", "checkpoint"]


# ---------------------------------------------------------------- live logs


class LogAppend(Strict):
    attempt: Attempt = Field(description="The attempt the lines belong to (the claim's fencing token).")
    lines: list[LogLine] = Field(
        max_length=MAX_LOG_BATCH, description=f"Output lines, oldest first (at most {MAX_LOG_BATCH})."
    )


class LogAppended(BaseModel):
    id: int
    status: JobStatus
    appended: int
    dropped: int = Field(description="Oldest lines of the job removed so far to keep the bound.")


class LogAppendFor(LogAppend):
    id: Id = Field(description="The job.")


class LogAppendBatch(RootModel[list[LogAppendFor]]):
    root: Annotated[list[LogAppendFor], Field(min_length=1, max_length=MAX_LOG_JOBS)]

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
    size: Annotated[int, Field(ge=0, le=INT64)] | None = Field(
        None, description="Bytes (a directory: of its files)."
    )
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    modified_at: datetime | None = None
    missing: bool = Field(False, description="The job declared it but it was not there.")
    refused: bool = Field(
        False,
        description="The worker would not look at it (outside its artifact roots, or not a regular "
        "file): no size or sha256; `reason` says why.",
    )
    reason: str | None = Field(
        None, max_length=MAX_ARTIFACT_REASON, description="Why it is refused, or why it has no sha256."
    )

    @model_validator(mode="after")
    def _refused_has_no_content(self) -> ArtifactIn:
        if self.refused and (self.size is not None or self.sha256 is not None):
            raise ValueError("a refused artifact has no size or sha256")
        return self


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
    refused: bool = False
    reason: str | None = None
    kind: ArtifactKind = Field(
        "declared",
        description="'declared': an input or output the job declared, as its worker found it; "
        "'checkpoint': a checkpoint an attempt named in its report.",
    )
    attempt: int | None = Field(None, description="The attempt that recorded it.")
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
