"""Validation primitives of the request bodies: bounded types, the name rule, storable values."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Annotated, Any, Literal, Self

import orjson
from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ValidationInfo,
    model_validator,
)
from pydantic import Strict as StrictValue
from pydantic import Tag as Choice
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from ....limits import MAX_ATTEMPTS, MAX_COUNT, MAX_JOB_NAME, MAX_NAME, MAX_PARAMETERS_BYTES, MAX_TAG, MAX_URI
from ....models import DependencyCondition

INT32 = 2**31 - 1
"""The largest value of a PostgreSQL ``integer`` column (attempt, cpu, priority, exit code ...)."""
INT64 = 2**63 - 1
"""The largest value of a PostgreSQL ``bigint`` column (every id)."""
NUL = "\x00"


def _problem(value: Any) -> tuple[str, str, str] | None:
    """The first part of a value that PostgreSQL cannot store, as (error type, message, where):
    text with a NUL character, an integer outside ``bigint``, a number that is not finite."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return "nul_character", "text cannot contain the NUL character (\\u0000)", where
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -INT64 - 1 <= item <= INT64:
                return "int_out_of_range", "integers must lie between -2^63 and 2^63-1", where
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "finite_number", "numbers must be finite (no NaN or Infinity)", where
        elif isinstance(item, dict):
            for key, sub in reversed(item.items()):
                if isinstance(key, str) and NUL in key:
                    return "nul_character", "keys cannot contain the NUL character (\\u0000)", where
                stack.append((sub, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list | tuple):
            stack.extend(
                (sub, f"{where}.{i}" if where else str(i)) for i, sub in reversed(list(enumerate(item)))
            )
    return None


def printable(value: str) -> str:
    """Text a program printed: PostgreSQL cannot store NUL, so it becomes U+FFFD."""
    return value.replace(NUL, "\ufffd") if NUL in value else value


def storable(value: Any) -> Any:
    """A JSON value a program produced, made storable: NUL in text and keys becomes U+FFFD, a
    number that is not finite becomes null, an integer outside ``bigint`` becomes a float."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -INT64 - 1 <= value <= INT64 else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {printable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


Printed = Annotated[str, AfterValidator(printable)]
"""Output text (logs, error messages): stored with NUL replaced rather than refused."""
Produced = Annotated[Any, AfterValidator(storable)]
"""A JSON value a job produced (its result): stored as far as PostgreSQL can hold it."""
Id = Annotated[int, StrictValue(), Field(ge=1, le=INT64)]
"""A job, worker or token named by id in a body: a JSON integer, nothing that converts to one
("1" and 1.0 are refused naming the field), from 1 to 2^63-1."""
Attempt = Annotated[int, Field(ge=1, le=INT32)]
Int32 = Annotated[int, Field(ge=-INT32 - 1, le=INT32)]


_BAD_NAME = re.compile(r"[\x00-\x1f/]")


def _check_name(value: str) -> str:
    problem = _name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


@lru_cache(maxsize=4096)
def _name_problem(value: str) -> str | None:
    """What is wrong with a name, if anything (remembered: a batch names the same task 1,000 times)."""
    if value.isdigit():
        return "a name cannot be all digits (a number addresses an id)"
    if value != value.strip():
        return "a name cannot start or end with whitespace"
    if _BAD_NAME.search(value):
        return "a name cannot contain '/' or control characters"
    return None


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(_check_name)]
ProjectKey = Id | Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
"""A project named by its id (an integer, or its digits) or its name."""
JobName = Annotated[str, Field(min_length=1, max_length=MAX_JOB_NAME)]
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
MaxLost = Annotated[int, Field(ge=0, le=MAX_ATTEMPTS)]
MaxPreempted = Annotated[int, Field(ge=0, le=MAX_ATTEMPTS)]
PathTemplate = Annotated[str, Field(min_length=1, max_length=MAX_URI)]
"""A path or URI a job reads or writes, with {parameter} fields the worker fills in."""
ProjectStatus = Literal["ACTIVE", "ARCHIVED"]
ConcurrencyKey = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
"""What jobs that may not all run at once share (a licence, a dataset): 1 to 200 characters."""
ConcurrencyLimit = Annotated[int, StrictValue(), Field(ge=1, le=INT32)]
"""How many jobs with one concurrency key may run at once: a JSON integer, at least 1."""


class DependencyItem(TypedDict, total=False):
    """One dependency given with its condition: on a job (``id``, or ``name`` inside a batch) or on
    every job a group has when the dependant is submitted (``group``)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    id: Annotated[int, Field(ge=1, le=INT64)]
    name: Annotated[str, Field(min_length=1, max_length=MAX_JOB_NAME)]
    group: Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
    on: DependencyCondition


def _one_target(item: DependencyItem) -> DependencyItem:
    given = [key for key in ("id", "name", "group") if key in item]
    if len(given) != 1:
        raise PydanticCustomError(
            "dependency_target",
            "a dependency names exactly one of id, name or group (got {given})",
            {"given": ", ".join(given) or "none"},
        )
    return item


def _dependency_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "dependency[id]"
    if isinstance(value, str):
        return "dependency[name]"
    if isinstance(value, dict):
        return "dependency[item]"
    return None  # (the choices' names hold "[": error locations leave them out)


Dependency = Annotated[
    Annotated[int, Ge(1), Le(INT64), Choice("dependency[id]")]
    | Annotated[str, MinLen(1), MaxLen(MAX_JOB_NAME), Choice("dependency[name]")]
    | Annotated[DependencyItem, AfterValidator(_one_target), Choice("dependency[item]")],
    Discriminator(
        _dependency_kind,
        custom_error_type="dependency_type",
        custom_error_message='a dependency is a job id, a job name or an object such as {"group": "hp1", '
        '"on": "finished"}',
    ),
]
DependsOn = list[Dependency] | dict[str, Any]
"""A job's dependencies: ids, names of jobs of the same batch, items with a condition, or the
seed's mapping ``{job_id: job_name}`` (each must complete)."""
UniqueKey = Annotated[str, Field(min_length=1, max_length=400)]
"""A job's key in its project: a submission with a key a job already has returns that job."""


def check_concurrency_pair(key: str | None, limit: int | None) -> None:
    """Refuse a concurrency key given without its limit, or a limit without its key, naming the
    missing field (a job or task gives both or neither)."""
    if (key is None) == (limit is None):
        return
    given, missing = ("concurrency_key", "concurrency_limit")
    if key is None:
        given, missing = missing, given
    raise PydanticCustomError(
        "missing", "{given} needs {field} too (they go together)", {"field": missing, "given": given}
    )


class Strict(BaseModel):
    """A request body: unknown fields are refused, and so is anything PostgreSQL cannot store (NUL
    in text, integers beyond ``bigint``, NaN/Infinity), naming the field. Output text of a job
    (``Printed``, ``Produced`` fields) has been made storable before this check."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable(self, info: ValidationInfo) -> Self:
        # One call per model, not one per field: this runs for every job of a batch.
        if info.context is not None and info.context.get("plain"):
            return self  # the raw body holds nothing that could be a problem (see suspicious())
        for name in type(self).model_fields:
            problem = _problem(getattr(self, name))
            if problem is not None:
                kind, message, where = problem
                field = f"{name}.{where}" if where else name
                raise PydanticCustomError(kind, "{field}: " + message, {"field": field})
        return self


_FOLD = bytes.maketrans(b"123456789E", b"000000000e")
"""Every digit as 0 and E as e: a run of 19 digits is then one substring, an exponent another."""


def suspicious(raw: bytes) -> bool:
    """Whether a raw JSON body contains what one of its values needs to be unstorable: a NUL
    (escaped or not), NaN or Infinity, an integer of 19 digits or more, or an exponent of three
    digits (1e400 is infinite). Bodies without any of these skip the walk over every field
    (``parse_body`` says so in the validation context). Substring searches only: a regular
    expression with these alternatives costs a millisecond per 100 kB."""
    if b"\\u0000" in raw or b"\x00" in raw or b"NaN" in raw or b"Infinity" in raw:
        return True
    folded = raw.translate(_FOLD)
    return b"0" * 19 in folded or b"e000" in folded or b"e+000" in folded or b"e-000" in folded


def validation_context(raw: bytes, limit: int, plain: bool | None = None) -> dict[str, Any]:
    """The validation context of a raw body: the bound on parameters (``limit`` bytes; None when
    the whole body is no larger, so that no job's parameters need measuring) and whether the body
    holds nothing unstorable (``plain``, from :func:`suspicious` unless given)."""
    return {
        "max_parameters_bytes": None if len(raw) <= limit else limit,
        "plain": not suspicious(raw) if plain is None else plain,
    }


def _bounded_json(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """Refuse a JSON object larger than the server's ``max_parameters_bytes``."""
    limit = (info.context or {}).get("max_parameters_bytes", MAX_PARAMETERS_BYTES)
    if not value or limit is None:
        return value
    try:
        size = len(orjson.dumps(value))
    except TypeError:
        return value  # not encodable (an integer beyond 64 bits): the check on every field refuses it
    if size > limit:
        raise PydanticCustomError(
            "too_large", "at most {limit} bytes of JSON, got {size}", {"limit": limit, "size": size}
        )
    return value
