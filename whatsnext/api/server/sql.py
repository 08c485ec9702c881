"""Named SQL statements, loaded once from ``sql/queries/*.sql`` (``-- name: x`` blocks)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


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
    """Attribute access to named statements: ``Q.job_get``."""

    def __init__(self, statements: dict[str, str]) -> None:
        self._statements = statements

    def __getattr__(self, name: str) -> str:
        try:
            return self._statements[name]
        except KeyError:
            raise AttributeError(f"no SQL statement named {name!r} in sql/queries") from None

    def names(self) -> list[str]:
        return sorted(self._statements)


def parse(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    parts = _NAME.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        statement = "\n".join(lines).strip().rstrip(";")
        if name in out:
            raise ValueError(f"SQL statement {name!r} defined twice")
        out[name] = statement
    return out


@cache
def load() -> Queries:
    statements: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, statement in parse(path.read_text(encoding="utf-8")).items():
            if name in statements:
                raise ValueError(f"SQL statement {name!r} defined twice ({path.name})")
            statements[name] = statement
    return Queries(statements)


Q = load()
