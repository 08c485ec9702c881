"""Artifacts from the worker: after a job, look at the inputs and outputs it declared, and record them.

A job (or its task) declares ``inputs`` and ``outputs``: paths or URIs with ``{parameter}`` fields,
e.g. ``"results/{dataset}/model-{lr}.pt"``. Besides the job's parameters, templates may use
``{job_id}``, ``{job_name}``, ``{task}`` and ``{attempt}``. After the job, the worker renders each
template and, for local files (plain paths or ``file://`` URIs; relative paths are taken from the
job's working directory), records its size, sha256 and modification time, or that it is missing.
A template with ``*``, ``?`` or ``[...]`` that names no existing file is a glob: every match is
recorded (none: one missing entry). A directory is recorded with the total size of its files and no
hash. Other URIs (``s3://...``, ``https://...``) are recorded as declared, unchecked.

Whoever submits a job chooses these paths, so the worker only opens what its operator allows:

* the path, with symlinks and ``..`` resolved, must lie under the job's working directory or one
  of the worker's artifact roots (``--artifact-root``);
* it must be a regular file or a directory (checked with ``stat`` before anything is opened; a
  file is opened non-blocking and without following a symlink, and checked again once open), so
  a device, FIFO or socket is never read;
* hashing has a budget per job (bytes and seconds): past it, files are recorded with their size
  and no sha256, and the entry says why.

Anything else is recorded as *refused*, with the reason and no size or hash; the job's outcome
does not change.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import structlog

from ...limits import MAX_REASON
from .errors import RETRYABLE, WhatsNextError
from .formatters.base import FormatError, RunContext
from .http import Http
from .template import render_text

log = structlog.get_logger("whatsnext.artifacts")

HASH_MAX_BYTES = 4 << 30
"""Bytes hashed per job at most; files past it are recorded without a sha256."""
HASH_MAX_SECONDS = 60.0
"""Seconds spent hashing (and adding up directory sizes) per job at most."""
_CHUNK = 1 << 20
_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


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
    refused: bool = False
    """The worker would not look at it (outside its roots, not a regular file): see ``reason``."""
    reason: str | None = None
    """Why the entry is refused, or why a file has no sha256."""

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "uri": self.uri,
            "size": self.size,
            "sha256": self.sha256,
            "modified_at": self.modified_at.isoformat() if self.modified_at is not None else None,
            "missing": self.missing,
            "refused": self.refused,
            "reason": self.reason,
        }


@dataclass(slots=True)
class HashBudget:
    """How much hashing one job's artifacts may cost; shared by all of the job's files."""

    max_bytes: int = HASH_MAX_BYTES
    max_seconds: float = HASH_MAX_SECONDS
    used_bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def time_left(self) -> float:
        return self.max_seconds - (time.monotonic() - self.started)

    def bytes_left(self) -> int:
        return self.max_bytes - self.used_bytes


# ---------------------------------------------------------------- templates and paths


def render_template(
    template: str, parameters: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> str:
    """Fill ``{name}`` fields from the parameters (then ``extra``); FormatError names a missing one."""
    return render_text(template, {**(extra or {}), **parameters})


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


def resolve_roots(roots: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Absolute roots with symlinks resolved, duplicates removed."""
    out: list[str] = []
    for root in roots:
        real = os.path.realpath(os.fspath(root))
        if real not in out:
            out.append(real)
    return out


def under_roots(path: str, roots: Sequence[str]) -> bool:
    """Whether ``path`` (already resolved) is one of ``roots`` or lies below one."""
    return any(os.path.commonpath([path, root]) == root for root in roots)


def _mtime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _kind(mode: int) -> str | None:
    """What a non-regular, non-directory file is ("a FIFO" ...), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _hash_file(path: str, st: os.stat_result, budget: HashBudget) -> tuple[str | None, str | None]:
    """``(sha256, None)``, or ``(None, why not)``. Never blocks on anything but a regular file."""
    if st.st_size > budget.bytes_left():
        return None, (
            f"not hashed: {st.st_size} bytes is more than is left of the job's hashing budget "
            f"({max(0, budget.bytes_left())} of {budget.max_bytes} bytes)"
        )
    if budget.time_left() <= 0:
        return None, f"not hashed: the job's hashing time budget ({budget.max_seconds:g} s) ran out"
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return None, f"not hashed: cannot open it ({exc.strerror})"
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            return None, "not hashed: the file changed while it was being opened"
        digest = hashlib.sha256()
        while True:
            if budget.time_left() <= 0:
                return None, f"not hashed: the job's hashing time budget ({budget.max_seconds:g} s) ran out"
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            budget.used_bytes += len(chunk)
            digest.update(chunk)
        return digest.hexdigest(), None
    except OSError as exc:
        return None, f"not hashed: cannot read it ({exc.strerror})"
    finally:
        os.close(fd)


def _directory(direction: str, path: str, st: os.stat_result, budget: HashBudget) -> Artifact:
    total, newest, complete = 0, st.st_mtime, True
    for root, _dirs, files in os.walk(path):  # symlinks to directories are not followed
        if budget.time_left() <= 0:
            complete = False
            break
        for name in files:
            try:
                fst = os.stat(os.path.join(root, name), follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(fst.st_mode):
                total += fst.st_size
                newest = max(newest, fst.st_mtime)
    if not complete:
        return Artifact(
            direction,
            path,
            modified_at=_mtime(newest),
            reason=f"size unknown: the job's time budget ({budget.max_seconds:g} s) ran out adding it up",
        )
    return Artifact(direction, path, size=total, modified_at=_mtime(newest))


def stat_path(
    direction: str,
    path: str,
    hash_max_bytes: int = HASH_MAX_BYTES,
    *,
    roots: Sequence[str] | None = None,
    budget: HashBudget | None = None,
) -> Artifact:
    """What is at a local path now: size, sha256 and modification time, missing, or refused.

    ``roots`` (resolved, see :func:`resolve_roots`): the path must resolve to a place under one of
    them (None: no restriction). Nothing but a regular file is ever opened.
    """
    budget = budget if budget is not None else HashBudget(max_bytes=hash_max_bytes)
    real = os.path.realpath(path)
    if roots is not None and not under_roots(real, roots):
        where = "it resolves to " + real + ", " if real != path else ""
        return Artifact(
            direction,
            path,
            refused=True,
            reason=f"refused: {where}outside the job's working directory and the worker's artifact roots",
        )
    try:
        st = os.stat(real)
    except OSError:
        return Artifact(direction, path, missing=True)
    if stat.S_ISDIR(st.st_mode):
        return _directory(direction, path, st, budget)
    kind = _kind(st.st_mode)
    if kind is not None:
        return Artifact(direction, path, refused=True, reason=f"refused: {kind}, not a regular file")
    digest, why = _hash_file(real, st, budget)
    return Artifact(
        direction, path, size=st.st_size, sha256=digest, modified_at=_mtime(st.st_mtime), reason=why
    )


def scan(
    direction: str,
    uri: str,
    cwd: str,
    hash_max_bytes: int = HASH_MAX_BYTES,
    *,
    roots: Sequence[str] | None = None,
    budget: HashBudget | None = None,
) -> list[Artifact]:
    """The artifacts one rendered path or URI stands for (several for a glob)."""
    budget = budget if budget is not None else HashBudget(max_bytes=hash_max_bytes)
    if "\x00" in uri:
        return [
            Artifact(
                direction, uri.replace("\x00", "\ufffd"), refused=True, reason="refused: NUL in the path"
            )
        ]
    path = local_path(uri, cwd)
    if path is None:
        return [Artifact(direction, uri)]
    if glob.has_magic(path) and not os.path.lexists(path):
        matches = sorted(glob.glob(path))
        if not matches:
            return [Artifact(direction, path, missing=True)]
        return [stat_path(direction, m, roots=roots, budget=budget) for m in matches]
    return [stat_path(direction, path, roots=roots, budget=budget)]


def collect(
    job: ArtifactJob,
    inputs: Iterable[str],
    outputs: Iterable[str],
    cwd: str,
    hash_max_bytes: int = HASH_MAX_BYTES,
    *,
    roots: Iterable[str | os.PathLike[str]] = (),
    hash_max_seconds: float = HASH_MAX_SECONDS,
) -> list[Artifact]:
    """Render and look at every declared input and output of a job (blocking: run it in a thread).

    Only files under ``cwd`` or one of ``roots`` are looked at; the others are refused.
    """
    extra = {"job_id": job.id, "job_name": job.name, "task": job.task, "attempt": job.attempt}
    allowed = resolve_roots([cwd, *roots])
    budget = HashBudget(max_bytes=hash_max_bytes, max_seconds=hash_max_seconds)
    out: list[Artifact] = []
    for direction, templates in (("in", inputs), ("out", outputs)):
        for template in templates:
            try:
                uri = render_template(template, job.parameters, extra)
            except FormatError as exc:
                log.warning("cannot render artifact template", job=job.id, error=str(exc))
                out.append(Artifact(direction, template, missing=True, reason=str(exc)[:MAX_REASON]))
                continue
            out.extend(scan(direction, uri, cwd, roots=allowed, budget=budget))
    return out


# ---------------------------------------------------------------- recording


class ArtifactRecorder:
    """After a job: look at its declared inputs and outputs and post them to the server.

    ``roots``: directories (besides each job's working directory) whose files may be recorded;
    ``hash_max_bytes``/``hash_max_seconds``: the hashing budget of one job.
    """

    def __init__(
        self,
        http: Http,
        *,
        roots: Iterable[str | os.PathLike[str]] = (),
        hash_max_bytes: int = HASH_MAX_BYTES,
        hash_max_seconds: float = HASH_MAX_SECONDS,
        retries: int = 3,
    ) -> None:
        self.http = http
        self.roots = [os.fspath(r) for r in roots]
        self.hash_max_bytes = hash_max_bytes
        self.hash_max_seconds = hash_max_seconds
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

        Missing outputs and refused entries are also written to the job's live log. Never raises:
        a failure to record is logged, and the job's report goes on.
        """
        ins = list(inputs if inputs is not None else getattr(job, "inputs", None) or ())
        outs = list(outputs if outputs is not None else getattr(job, "outputs", None) or ())
        if not ins and not outs:
            return []
        cwd = (ctx.cwd if ctx is not None else None) or os.getcwd()
        try:
            found = await asyncio.to_thread(
                collect,
                job,
                ins,
                outs,
                cwd,
                self.hash_max_bytes,
                roots=self.roots,
                hash_max_seconds=self.hash_max_seconds,
            )
        except Exception as exc:
            log.exception("cannot look at the job's artifacts", job=job.id, error=str(exc))
            return []
        if ctx is not None and ctx.on_output is not None:
            for a in found:
                if a.refused:
                    ctx.on_output(f"[whatsnext] artifact {a.uri}: {a.reason}")
                elif a.missing and a.direction == "out":
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
    "HASH_MAX_BYTES",
    "HASH_MAX_SECONDS",
    "Artifact",
    "ArtifactRecorder",
    "HashBudget",
    "collect",
    "local_path",
    "render_template",
    "resolve_roots",
    "scan",
    "stat_path",
    "under_roots",
]
