"""Checkpoints: where a job keeps what it needs to resume, and how it names its latest one.

Each job gets a directory of its own, ``<root>/<project>/<job id>/``, the same for every attempt
(on a filesystem shared by the workers' hosts, the same on every node), in
``WHATSNEXT_CHECKPOINT_DIR``. A job names its latest checkpoint by writing its path into the file
``WHATSNEXT_CHECKPOINT_FILE`` (one per attempt, in that directory); the worker reads it when the
attempt ends, however it ends, and sends it with the attempt's report. The server hands it to
the next attempt as ``WHATSNEXT_CHECKPOINT``, with ``WHATSNEXT_RESUME=1`` when that attempt
follows a preemption or a lost one.

The same directory carries what flows between jobs: a job may write its result as JSON to
``WHATSNEXT_RESULT_FILE`` (``.result-attempt-N.json``, one per attempt), which the worker reads
when the attempt ends and reports as the job's ``result``; a job with dependencies finds what its
upstream jobs left in ``upstream.json`` (``WHATSNEXT_UPSTREAM``), written when its attempt starts.

When the attempt ends and all that is read, those files go, and the directory with them when the
job wrote nothing else there: a worker leaves behind only what its jobs wrote.

The root is the worker's ``checkpoint_root`` (``--checkpoint-root``), else
``$WHATSNEXT_CHECKPOINT_ROOT``, else ``~/.whatsnext/checkpoints`` (beside the SLURM formatter's
``~/.whatsnext/slurm``: a home directory is usually shared by a cluster's nodes).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import orjson
import structlog

from ...limits import MAX_RESULT_BYTES
from ...wire import oversized
from .formatters.base import JobSpec

log = structlog.get_logger("whatsnext.worker")

MAX_CHECKPOINT_CHARS = 4096
"""The longest checkpoint path a report carries (a longer one is not sent)."""
FILE_BYTES = 64 * 1024
"""How much of the checkpoint file is read (its first line is the path)."""
RESULT_FILE_BYTES = 16 * MAX_RESULT_BYTES
"""The largest result file that is read (1 MiB: room for indented JSON whose compact form fits);
a larger one is reported as oversized by its size, unread."""
UPSTREAM_FILE = "upstream.json"
"""The file in the job's directory that holds what its upstream jobs left (``WHATSNEXT_UPSTREAM``)."""
INVALID = "$invalid"
"""The key of the mark a result file that is not JSON (or cannot be read) is reported as."""
HEAD_CHARS = 200
"""How much of a result file that is not JSON its mark shows."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def default_checkpoint_root() -> Path:
    """``$WHATSNEXT_CHECKPOINT_ROOT``, else ``~/.whatsnext/checkpoints``."""
    env = os.environ.get("WHATSNEXT_CHECKPOINT_ROOT")
    return Path(env).expanduser() if env else Path.home() / ".whatsnext" / "checkpoints"


@functools.lru_cache(maxsize=1024)
def path_part(name: str) -> str:
    """A project's name as one directory name (no separators, no leading dot)."""
    part = _UNSAFE.sub("_", name).lstrip(".")
    return part or "_"


class Checkpoints:
    """Gives each job its checkpoint directory and files; reads what the job named and wrote."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_checkpoint_root()
        self._root = str(self.root)

    def directory(self, project: str, job_id: int) -> Path:
        return self.root / path_part(project) / str(job_id)

    def prepare(self, spec: JobSpec, project: str) -> dict[str, str]:
        """Set ``spec``'s checkpoint directory, checkpoint file and result file (creating the
        directory; for a job with dependencies, writing ``upstream.json``) and return the job's
        variables. A directory that cannot be created leaves them out (logged).

        This runs on the worker's event loop for every job: paths are plain strings and each step
        one system call (a ``pathlib`` path costs more than the call itself)."""
        env: dict[str, str] = {}
        if spec.checkpoint:
            env["WHATSNEXT_CHECKPOINT"] = spec.checkpoint
        if spec.resume:
            env["WHATSNEXT_RESUME"] = "1"
        sep = os.sep
        folder = f"{self._root}{sep}{path_part(project)}{sep}{spec.id}"
        try:
            try:
                os.mkdir(folder)
            except FileExistsError:
                if not os.path.isdir(folder):
                    raise
            except FileNotFoundError:  # the project's first job here
                os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            log.warning(
                "cannot create the job's checkpoint directory", job=spec.id, dir=folder, error=str(exc)
            )
            return env
        file = f"{folder}{sep}.checkpoint-attempt-{spec.attempt}"
        result = f"{folder}{sep}.result-attempt-{spec.attempt}.json"
        for stale in (file, result):
            try:
                os.unlink(stale)  # an attempt number is handed out once; never read a stale one
            except OSError:
                pass
        spec.checkpoint_dir, spec.checkpoint_file, spec.result_file = folder, file, result
        env["WHATSNEXT_CHECKPOINT_DIR"] = folder
        env["WHATSNEXT_CHECKPOINT_FILE"] = file
        env["WHATSNEXT_RESULT_FILE"] = result
        if spec.upstream is not None and self._write_upstream(spec, folder):
            env["WHATSNEXT_UPSTREAM"] = str(spec.upstream_file)
        return env

    def finish(self, spec: JobSpec) -> None:
        """Once the attempt's end is read: remove the files the worker made or read for it (its
        checkpoint file, result file and ``upstream.json``), then the directory itself when nothing
        else is in it. A worker leaves behind only what its jobs wrote, not a directory per job.
        Never raises. Not for an attempt whose lease was lost: a newer one may use the directory."""
        folder = spec.checkpoint_dir
        if not folder:
            return
        for path in (spec.checkpoint_file, spec.result_file, spec.upstream_file):
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass  # not written, or gone already
        try:
            os.rmdir(folder)
        except OSError:
            pass  # what the job wrote is there (or it is gone already): it stays

    def _write_upstream(self, spec: JobSpec, folder: str) -> bool:
        """Write the claim's ``upstream`` list to ``upstream.json`` (whole or not at all: through a
        file of the attempt's own, renamed). False when it cannot be written (logged)."""
        path = os.path.join(folder, UPSTREAM_FILE)
        partial = os.path.join(folder, f".upstream-attempt-{spec.attempt}.tmp")
        try:
            with open(partial, "wb") as fh:
                fh.write(orjson.dumps(spec.upstream))
            os.replace(partial, path)
        except (OSError, TypeError) as exc:
            log.warning("cannot write the job's upstream file", job=spec.id, file=path, error=str(exc))
            return False
        spec.upstream_file = path
        return True

    def read_result(self, spec: JobSpec) -> Any:
        """The result the attempt wrote to its result file: any JSON value (None when there is no
        file, or it is empty). A file larger than ``RESULT_FILE_BYTES`` is not read: its result is
        the oversized mark. A file that is not JSON never fails the job: its result is
        ``{"$invalid": {"error", "bytes", "head"}}`` (logged)."""
        if not spec.result_file:
            return None
        try:
            with open(spec.result_file, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > RESULT_FILE_BYTES:
                    log.warning("result file too large; reported as oversized", job=spec.id, bytes=size)
                    return oversized(size)
                data = fh.read(RESULT_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the job's result file", job=spec.id, error=str(exc))
            return {INVALID: {"error": f"cannot read the result file: {exc.strerror or exc}", "bytes": None}}
        if len(data) > RESULT_FILE_BYTES:  # it grew after the look at its size
            return oversized(len(data))
        if not data.strip():
            return None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            log.warning("the job's result file is not valid JSON", job=spec.id, error=str(exc))
            head = data[: HEAD_CHARS * 4].decode("utf-8", errors="replace")[:HEAD_CHARS]
            return {
                INVALID: {
                    "error": f"the result file is not valid JSON: {exc}",
                    "bytes": len(data),
                    "head": head,
                }
            }

    def read(self, spec: JobSpec) -> str | None:
        """The checkpoint the attempt named (the first line of its checkpoint file: a path or a URI;
        a relative path is taken from the checkpoint directory), or None when it named none."""
        if not spec.checkpoint_file or not spec.checkpoint_dir:
            return None
        try:
            with open(spec.checkpoint_file, "rb") as fh:
                data = fh.read(FILE_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the job's checkpoint file", job=spec.id, error=str(exc))
            return None
        lines = data.decode("utf-8", errors="replace").replace("\x00", "").strip().splitlines()
        text = lines[0].strip() if lines else ""
        if not text:
            return None
        # A URI (s3://..., file://...) as it is; a relative path from the checkpoint directory.
        path = text if _URI.match(text) else os.path.join(spec.checkpoint_dir, os.path.expanduser(text))
        if len(path) > MAX_CHECKPOINT_CHARS:
            log.warning("checkpoint path too long; not sent", job=spec.id, chars=len(path))
            return None
        return path
