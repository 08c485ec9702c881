"""Checkpoints: where a job keeps what it needs to resume, and how it names its latest one.

Each job gets a directory of its own, ``<root>/<project>/<job id>/``, the same for every attempt
(on a filesystem shared by the workers' hosts, the same on every node), in
``WHATSNEXT_CHECKPOINT_DIR``. A job names its latest checkpoint by writing its path into the file
``WHATSNEXT_CHECKPOINT_FILE`` (one per attempt, in that directory); the worker reads it when the
attempt ends, however it ends, and sends it with the attempt's report. The server hands it to
the next attempt as ``WHATSNEXT_CHECKPOINT``, with ``WHATSNEXT_RESUME=1`` when that attempt
follows a preemption or a lost one.

The root is the worker's ``checkpoint_root`` (``--checkpoint-root``), else
``$WHATSNEXT_CHECKPOINT_ROOT``, else ``~/.whatsnext/checkpoints`` (beside the SLURM formatter's
``~/.whatsnext/slurm``: a home directory is usually shared by a cluster's nodes).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import structlog

from .formatters.base import JobSpec

log = structlog.get_logger("whatsnext.worker")

MAX_CHECKPOINT_CHARS = 4096
"""The longest checkpoint path a report carries (a longer one is not sent)."""
FILE_BYTES = 64 * 1024
"""How much of the checkpoint file is read (its first line is the path)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def default_checkpoint_root() -> Path:
    """``$WHATSNEXT_CHECKPOINT_ROOT``, else ``~/.whatsnext/checkpoints``."""
    env = os.environ.get("WHATSNEXT_CHECKPOINT_ROOT")
    return Path(env).expanduser() if env else Path.home() / ".whatsnext" / "checkpoints"


def path_part(name: str) -> str:
    """A project's name as one directory name (no separators, no leading dot)."""
    part = _UNSAFE.sub("_", name).lstrip(".")
    return part or "_"


class Checkpoints:
    """Gives each job its checkpoint directory and file; reads what the job named."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_checkpoint_root()

    def directory(self, project: str, job_id: int) -> Path:
        return self.root / path_part(project) / str(job_id)

    def prepare(self, spec: JobSpec, project: str) -> dict[str, str]:
        """Set ``spec``'s checkpoint directory and file (creating the directory) and return the
        job's checkpoint variables. A directory that cannot be created leaves them out (logged)."""
        env: dict[str, str] = {}
        if spec.checkpoint:
            env["WHATSNEXT_CHECKPOINT"] = spec.checkpoint
        if spec.resume:
            env["WHATSNEXT_RESUME"] = "1"
        folder = self.directory(project, spec.id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning(
                "cannot create the job's checkpoint directory", job=spec.id, dir=str(folder), error=str(exc)
            )
            return env
        file = folder / f".checkpoint-attempt-{spec.attempt}"
        try:
            file.unlink(missing_ok=True)  # an attempt number is handed out once; never read a stale one
        except OSError:
            pass
        spec.checkpoint_dir, spec.checkpoint_file = str(folder), str(file)
        env["WHATSNEXT_CHECKPOINT_DIR"] = spec.checkpoint_dir
        env["WHATSNEXT_CHECKPOINT_FILE"] = spec.checkpoint_file
        return env

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
