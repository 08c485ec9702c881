"""Secret parameters: values of parameters whose names match ``--secret-parameter`` patterns are
shown as ``***`` to roles without the ``secrets`` permission, and cannot be filtered on by them."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from functools import cache
from typing import Any

import orjson
from aiohttp import web

from .errors import invalid

MASK = "***"
IsSecret = Callable[[str], bool]


@cache
def secret_matcher(patterns: tuple[str, ...]) -> IsSecret:
    """Whether a parameter name is secret (made once per pattern list: every masked answer asks)."""
    lowered = tuple(p.lower() for p in patterns)

    def is_secret(name: str) -> bool:
        low = name.lower()
        return any(fnmatch.fnmatchcase(low, p) for p in lowered)

    return is_secret


def mask_secrets(value: Any, is_secret: IsSecret) -> Any:
    """``value`` with the values of secret keys (at any depth) replaced by ``***``."""
    if isinstance(value, dict):
        return {k: MASK if is_secret(str(k)) else mask_secrets(v, is_secret) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, is_secret) for v in value]
    return value


def secret_path(value: Any, is_secret: IsSecret, where: str = "") -> str | None:
    """The first key (as ``a.b``) of a filter on parameters that names a secret one, at any depth."""
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{where}.{k}" if where else str(k)
            if is_secret(str(k)):
                return here
            found = secret_path(v, is_secret, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = secret_path(v, is_secret, f"{where}.{i}" if where else str(i))
            if found is not None:
                return found
    return None


def refuse_secret_filter(value: Any, patterns: tuple[str, ...], field: str) -> None:
    """422 for a parameter filter that tests the value of a secret parameter: a caller who sees
    it masked could otherwise guess it value by value."""
    found = secret_path(value, secret_matcher(patterns))
    if found is not None:
        raise invalid(
            f"{field}: the parameter {found!r} is secret (shown as {MASK}) and cannot be filtered on "
            "by a role without the secrets permission",
            field,
        )


def mask_answer(data: Any, is_secret: IsSecret) -> Any:
    """Mask every ``parameters`` and ``defaults`` object found in an answer."""
    if isinstance(data, dict):
        return {
            k: mask_secrets(v, is_secret) if k in ("parameters", "defaults") else mask_answer(v, is_secret)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [mask_answer(v, is_secret) for v in data]
    return data


def masked(response: web.StreamResponse, patterns: tuple[str, ...]) -> web.StreamResponse:
    """A JSON answer with its secret parameters masked (other answers as they are)."""
    if (
        not isinstance(response, web.Response)
        or response.content_type != "application/json"
        or not isinstance(response.body, bytes)
        or (b'"parameters"' not in response.body and b'"defaults"' not in response.body)
    ):
        return response
    data = mask_answer(orjson.loads(response.body), secret_matcher(patterns))
    response.body = orjson.dumps(data)
    return response
