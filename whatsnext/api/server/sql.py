"""Named SQL statements, loaded once from ``sql/queries/*.sql`` (``-- name: x`` blocks).

A statement names its parameters (``:project``, ``:worker_id``); they become ``$1, $2, ...`` in
order of first appearance, and :meth:`Statement.args` maps keyword arguments onto them, refusing
a missing or unknown name. (``::type`` casts and quoted text are left alone.)"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_PARAM = re.compile(r"'(?:[^']|'')*'|::|:([a-z_][a-z0-9_]*)")


class Statement:
    """A statement's text (with ``$n`` placeholders) and the names of its parameters, in order."""

    __slots__ = ("name", "params", "text")

    def __init__(self, name: str, text: str) -> None:
        params: list[str] = []

        def number(m: re.Match[str]) -> str:
            if m.group(1) is None:
                return m.group(0)
            if m.group(1) not in params:
                params.append(m.group(1))
            return f"${params.index(m.group(1)) + 1}"

        self.name = name
        self.text = _PARAM.sub(number, text)
        self.params = tuple(params)

    def args(self, **values: object) -> tuple[object, ...]:
        """The positional arguments for ``values`` given by name (all of them, no others)."""
        if values.keys() != set(self.params):
            missing = sorted(set(self.params) - values.keys())
            extra = sorted(values.keys() - set(self.params))
            raise TypeError(f"statement {self.name}: missing {missing}, unknown {extra}")
        return tuple(values[p] for p in self.params)


def sql_dir() -> Path:
    """The ``sql`` folder: inside the package when installed from a wheel, else the repository's."""
    here = Path(__file__).resolve()
    packaged = here.parents[2] / "sql"  # whatsnext/sql in a wheel
    if (packaged / "migrations").is_dir():
        return packaged
    return here.parents[3] / "sql"


def migrations_dir() -> Path:
    return sql_dir() / "migrations"


class Queries:
    """Attribute access to named statements: ``S.job_get`` (a :class:`Statement`)."""

    def __init__(self, statements: dict[str, Statement]) -> None:
        self._statements = statements

    def __getattr__(self, name: str) -> Statement:
        try:
            return self._statements[name]
        except KeyError:
            raise AttributeError(f"no SQL statement named {name!r} in sql/queries") from None

    def names(self) -> list[str]:
        return sorted(self._statements)


def parse(text: str) -> dict[str, Statement]:
    out: dict[str, Statement] = {}
    parts = _NAME.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        statement = "\n".join(lines).strip().rstrip(";")
        if name in out:
            raise ValueError(f"SQL statement {name!r} defined twice")
        out[name] = Statement(name, statement)
    return out


@cache
def load() -> Queries:
    statements: dict[str, Statement] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, statement in parse(path.read_text(encoding="utf-8")).items():
            if name in statements:
                raise ValueError(f"SQL statement {name!r} defined twice ({path.name})")
            statements[name] = statement
    return Queries(statements)


S = load()
"""The named statements, for the store."""
