"""Artifacts from the worker: after a job, look at the inputs and outputs it declared, and record them.

A job (or its task) declares ``inputs`` and ``outputs``: paths or URIs with ``{parameter}`` fields,
e.g. ``"results/{dataset}/model-{lr}.pt"``. Besides the job's parameters, templates may use
``{job_id}``, ``{job_name}``, ``{task}`` and ``{attempt}``. After the job, the worker renders each
template and, for local files (plain paths or ``file://`` URIs; relative paths are taken from the
job's working directory), records its size, sha256 and modification time, or that it is missing.
A template with ``*``, ``?`` or ``[...]`` that names no existing file is a glob: every match is
recorded (none: one missing entry). A directory is recorded with the total size of its files and no
hash. Other URIs (``s3://...``, ``https://...``) are recorded as declared, unchecked.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import structlog

from .errors import ConnectionError as ServerUnreachable
from .errors import ServerError, WhatsNextError
from .formatters.base import FormatError, RunContext
from .formatters.cli import fill
from .http import Http

log = structlog.get_logger("whatsnext.artifacts")

RETRYABLE = (ServerUnreachable, ServerError)
HASH_MAX_BYTES = 1 << 30
"""Files larger than this are recorded without a sha256 (hashing them would hold up the report)."""


class ArtifactJob(Protocol):
    """What the recorder needs of a job (``JobSpec`` has it)."""

    id: int
    name: str
    task: str
    attempt: int
    parameters: dict[str, Any]


@dataclass(slots=True)
class Artifact:
    direction: str
    uri: str
    size: int | None = None
    sha256: str | None = None
    modified_at: datetime | None = None
    missing: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "uri": self.uri,
            "size": self.size,
            "sha256": self.sha256,
            "modified_at": self.modified_at.isoformat() if self.modified_at is not None else None,
            "missing": self.missing,
        }


# ---------------------------------------------------------------- templates and paths


def render_template(
    template: str, parameters: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> str:
    """Fill ``{name}`` fields from the parameters (then ``extra``); FormatError names a missing one."""
    return fill(template, parameters, extra=extra)


def local_path(uri: str, cwd: str) -> str | None:
    """The absolute local path a URI names, or None for a non-local URI (``s3://``, ``https://``)."""
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            return None
        path = unquote(parts.path)
    elif "://" in uri:
        return None
    else:
        path = uri
    path = os.path.expanduser(path)
    return os.path.normpath(os.path.join(cwd, path))


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _mtime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def stat_path(direction: str, path: str, hash_max_bytes: int = HASH_MAX_BYTES) -> Artifact:
    """What is at a local path now: size, sha256 and modification time, or missing."""
    try:
        st = os.stat(path)
    except OSError:
        return Artifact(direction, path, missing=True)
    if os.path.isdir(path):
        total, newest = 0, st.st_mtime
        for root, _dirs, files in os.walk(path):
            for name in files:
                try:
                    fst = os.stat(os.path.join(root, name), follow_symlinks=False)
                except OSError:
                    continue
                total += fst.st_size
                newest = max(newest, fst.st_mtime)
        return Artifact(direction, path, size=total, modified_at=_mtime(newest))
    digest = None
    if st.st_size <= hash_max_bytes:
        try:
            digest = _sha256(path)
        except OSError:
            digest = None
    return Artifact(direction, path, size=st.st_size, sha256=digest, modified_at=_mtime(st.st_mtime))


def scan(direction: str, uri: str, cwd: str, hash_max_bytes: int = HASH_MAX_BYTES) -> list[Artifact]:
    """The artifacts one rendered path or URI stands for (several for a glob)."""
    path = local_path(uri, cwd)
    if path is None:
        return [Artifact(direction, uri)]
    if glob.has_magic(path) and not os.path.lexists(path):
        matches = sorted(glob.glob(path))
        if not matches:
            return [Artifact(direction, path, missing=True)]
        return [stat_path(direction, m, hash_max_bytes) for m in matches]
    return [stat_path(direction, path, hash_max_bytes)]


def collect(
    job: ArtifactJob,
    inputs: Iterable[str],
    outputs: Iterable[str],
    cwd: str,
    hash_max_bytes: int = HASH_MAX_BYTES,
) -> list[Artifact]:
    """Render and look at every declared input and output of a job (blocking: run it in a thread)."""
    extra = {"job_id": job.id, "job_name": job.name, "task": job.task, "attempt": job.attempt}
    out: list[Artifact] = []
    for direction, templates in (("in", inputs), ("out", outputs)):
        for template in templates:
            try:
                uri = render_template(template, job.parameters, extra)
            except FormatError as exc:
                log.warning("cannot render artifact template", job=job.id, error=str(exc))
                out.append(Artifact(direction, template, missing=True))
                continue
            out.extend(scan(direction, uri, cwd, hash_max_bytes))
    return out


# ---------------------------------------------------------------- recording


class ArtifactRecorder:
    """After a job: look at its declared inputs and outputs and post them to the server."""

    def __init__(self, http: Http, *, hash_max_bytes: int = HASH_MAX_BYTES, retries: int = 3) -> None:
        self.http = http
        self.hash_max_bytes = hash_max_bytes
        self.retries = retries

    async def record(
        self,
        job: ArtifactJob,
        ctx: RunContext | None = None,
        *,
        inputs: Iterable[str] | None = None,
        outputs: Iterable[str] | None = None,
    ) -> list[Artifact]:
        """Collect and post the job's artifacts (``inputs``/``outputs`` default to the job's own).

        Missing outputs are also written to the job's live log. Never raises: a failure to record
        is logged, and the job's report goes on.
        """
        ins = list(inputs if inputs is not None else getattr(job, "inputs", None) or ())
        outs = list(outputs if outputs is not None else getattr(job, "outputs", None) or ())
        if not ins and not outs:
            return []
        cwd = (ctx.cwd if ctx is not None else None) or os.getcwd()
        try:
            found = await asyncio.to_thread(collect, job, ins, outs, cwd, self.hash_max_bytes)
        except Exception as exc:
            log.exception("cannot look at the job's artifacts", job=job.id, error=str(exc))
            return []
        if ctx is not None and ctx.on_output is not None:
            for a in found:
                if a.missing and a.direction == "out":
                    ctx.on_output(f"[whatsnext] declared output missing: {a.uri}")
        await self.post(job.id, job.attempt, found)
        return found

    async def post(self, job_id: int, attempt: int | None, artifacts: list[Artifact]) -> bool:
        """``POST /jobs/{id}/artifacts``, retried a few times on connection errors; True if recorded."""
        if not artifacts:
            return True
        body = [a.to_json() for a in artifacts]
        delay = 0.5
        for left in range(self.retries, -1, -1):
            try:
                await self.http.request(
                    "POST",
                    f"/jobs/{job_id}/artifacts",
                    json=body,
                    params={"attempt": attempt} if attempt is not None else None,
                )
                return True
            except RETRYABLE as exc:
                if left == 0:
                    log.warning("artifacts not recorded", job=job_id, error=str(exc))
                    return False
                await asyncio.sleep(delay)
                delay *= 2
            except WhatsNextError as exc:
                log.warning("artifacts refused", job=job_id, error=exc.message)
                return False
            except Exception as exc:
                log.exception("artifacts not recorded", job=job_id, error=str(exc))
                return False
        return False


__all__ = [
    "Artifact",
    "ArtifactRecorder",
    "collect",
    "local_path",
    "render_template",
    "scan",
    "stat_path",
]
