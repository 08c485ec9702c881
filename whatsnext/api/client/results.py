"""For a job's own process: report a result, read what the upstream jobs left.

A worker gives each job ``WHATSNEXT_RESULT_FILE`` (where the job may write its result as JSON; the
worker reads it when the attempt ends and reports it as the job's ``result``) and, to a job with
dependencies, ``WHATSNEXT_UPSTREAM`` (a JSON file: a list of ``{id, name, task, status, result,
artifacts}``, one per upstream job). These two helpers read and write them::

    from whatsnext.api.client import upstream, write_result

    checkpoint = next(u["result"]["checkpoint"] for u in upstream() if u["name"] == "train")
    write_result({"accuracy": evaluate(checkpoint)})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

__all__ = ["RESULT_FILE_ENV", "UPSTREAM_ENV", "upstream", "write_result"]

RESULT_FILE_ENV = "WHATSNEXT_RESULT_FILE"
UPSTREAM_ENV = "WHATSNEXT_UPSTREAM"


def write_result(value: Any, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``value`` (anything JSON can hold; an object is usual) as the job's result, to
    ``path`` or ``$WHATSNEXT_RESULT_FILE``, whole or not at all. Writing again replaces it. Returns
    the file's path. RuntimeError outside a job a worker started; TypeError for a value JSON
    cannot hold."""
    target = path if path is not None else os.environ.get(RESULT_FILE_ENV)
    if not target:
        raise RuntimeError(
            f"${RESULT_FILE_ENV} is not set: write_result() is for a job a WhatsNext worker runs"
        )
    data = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    file = Path(target)
    partial = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    partial.write_bytes(data)
    os.replace(partial, file)
    return file


def upstream() -> list[dict[str, Any]]:
    """What the jobs this one depends on left (``$WHATSNEXT_UPSTREAM``), in id order: a list of
    ``{id, name, task, status, result, artifacts}``; empty for a job without dependencies."""
    path = os.environ.get(UPSTREAM_ENV)
    if not path:
        return []
    found: list[dict[str, Any]] = orjson.loads(Path(path).read_bytes())
    return found
