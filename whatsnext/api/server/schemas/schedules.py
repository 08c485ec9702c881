"""Models of schedules: a job submitted at each tick of a cron expression or every N seconds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from ....cron import MAX_LENGTH, CronError, load_zone, parse
from ....models import JobStatus
from .base import JobName, Name, Strict
from .jobs import JobCreate

MAX_EVERY = 366 * 86400
"""The longest period of an ``every`` schedule, in seconds (a year: longer ones are a cron's)."""
Overlap = Literal["skip", "allow"]


def _cron(value: str) -> str:
    try:
        parse(value)
    except CronError as exc:
        raise ValueError(str(exc)) from None
    return value


def _zone(value: str) -> str:
    try:
        load_zone(value)
    except CronError as exc:
        raise ValueError(str(exc)) from None
    return value


CronText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_LENGTH,
        description="Five fields, minute hour day-of-month month day-of-week (`0 2 * * *`), or a macro "
        "(`@daily`), read in `timezone`.",
    ),
    AfterValidator(_cron),
]
Every = Annotated[int, Field(ge=1, le=MAX_EVERY, description="A period in seconds: a tick every N seconds.")]
TimeZone = Annotated[
    str,
    Field(min_length=1, max_length=100, description="An IANA time zone (`Europe/Berlin`); UTC by default."),
    AfterValidator(_zone),
]


def _one_timing(cron: str | None, every: int | None) -> None:
    """Refuse a schedule with both a cron expression and a period, naming the field."""
    if cron is not None and every is not None:
        raise PydanticCustomError("cron_or_every", "give cron or every, not both", {"field": "every"})


class ScheduledJob(JobCreate):
    """The job a schedule submits at each tick: a job as POST /projects/{project}/jobs takes it,
    whose name defaults to the schedule's."""

    name: JobName | None = Field(None, description="The job's name (default: the schedule's).")


class ScheduleCreate(Strict):
    name: Name = Field(description="Unique in the project; also the job's name when the job gives none.")
    cron: CronText | None = None
    every: Every | None = None
    timezone: TimeZone = "UTC"
    job: ScheduledJob = Field(
        description="The job each tick submits, as POST /projects/{project}/jobs takes it."
    )
    overlap: Overlap = Field(
        "skip",
        description="skip: a tick while the last tick's job is still pending or running makes no job "
        "(counted in `skipped`); allow: every tick makes a job.",
    )
    paused: bool = False

    @model_validator(mode="after")
    def _timing(self) -> Self:
        _one_timing(self.cron, self.every)
        if self.cron is None and self.every is None:
            raise PydanticCustomError(
                "missing", "give cron (an expression) or every (seconds)", {"field": "cron"}
            )
        return self


class ScheduleUpdate(Strict):
    """What to change; what is left out stays. A cron expression replaces a period and the other
    way round; a job replaces the whole job."""

    cron: CronText | None = None
    every: Every | None = None
    timezone: TimeZone | None = None
    job: ScheduledJob | None = None
    overlap: Overlap | None = None
    paused: bool | None = Field(None, description="true pauses; false resumes at the first tick from now.")

    @model_validator(mode="after")
    def _something(self) -> Self:
        _one_timing(self.cron, self.every)
        if not self.model_fields_set:
            raise PydanticCustomError("missing", "give at least one field to change", {"field": "body"})
        return self


class ScheduleOut(BaseModel):
    id: int
    project_id: int
    project: str
    name: str
    cron: str | None
    every: int | None
    timezone: str
    job: dict[str, Any]
    overlap: Overlap
    paused: bool
    next_run_at: datetime | None = Field(description="The next tick (null while paused).")
    last_run_at: datetime | None = Field(description="The tick of the last job made.")
    last_job_id: int | None
    last_job_status: JobStatus | None = Field(description="null: no job yet, or the job was removed.")
    runs: int = Field(description="Ticks that made (or found, by unique_key) a job.")
    skipped: int = Field(description="Ticks skipped while the last job was unfinished (overlap skip).")
    last_skipped_at: datetime | None
    last_error: str | None = Field(
        description="Why the last tick could not submit its job (cleared by a run)."
    )
    last_error_at: datetime | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
