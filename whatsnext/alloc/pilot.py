"""What an allocation runs: ``workers_per_alloc`` workers, each
``whatsnext --server URL worker --forever --idle-timeout T --deadline LEFT --project P ...
<worker_args>``, started by a bash script that waits for them all (and passes SIGTERM on to them,
so they hand their jobs back when the scheduler stops the allocation).

The workers reach the server at the allocator's ``--server`` and read their token from the file
given to ``alloc run --worker-token-file`` (its path is in the script, never a token; the
allocator's own ``WHATSNEXT_TOKEN`` is unset). Their deadline is the allocation's end:
SLURM's ``$SLURM_JOB_END_TIME`` when it sets it, else the script's start plus the time limit.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NAME_PREFIX = "whatsnext-alloc-"
"""The start of every allocation's name (SLURM job name, RUN:AI workload): ``<prefix><queue>-<id>``."""
_SLUG = re.compile(r"[^a-z0-9]+")
_SUFFIX = re.compile(r"[0-9a-f]{8}")
_PATH_PART = re.compile(r"[^A-Za-z0-9_.-]+")


def queue_slug(queue: str) -> str:
    """The queue's name as it appears in allocation names: lower-case letters, digits and '-'
    (at most 30); when that changes the name, a short hash of it keeps two queues apart."""
    slug = _SLUG.sub("-", queue.lower()).strip("-")[:30].strip("-") or "q"
    if slug != queue:
        slug += "-" + hashlib.sha256(queue.encode()).hexdigest()[:6]
    return slug


def name_prefix(queue: str, prefix: str = NAME_PREFIX) -> str:
    """The start of the names of the queue's allocations (what reconciliation looks for)."""
    return f"{prefix}{queue_slug(queue)}-"


def new_name(queue: str, prefix: str = NAME_PREFIX) -> str:
    """A new allocation's name: ``<prefix><queue>-<8 hex digits>`` (a valid RUN:AI workload name
    for a prefix of lower-case letters, digits and '-')."""
    return name_prefix(queue, prefix) + secrets.token_hex(4)


def is_ours(name: str, queue: str, prefix: str = NAME_PREFIX) -> bool:
    """Whether ``name`` is the name of one of the queue's allocations (not of another queue whose
    name starts the same)."""
    start = name_prefix(queue, prefix)
    return name.startswith(start) and _SUFFIX.fullmatch(name[len(start) :]) is not None


def log_path(log_dir: Path, queue: str, name: str) -> Path:
    """Where the allocation's output goes: ``<log_dir>/<queue>/<name>.log``."""
    folder = _PATH_PART.sub("_", queue).strip("._") or "queue"
    return log_dir / folder / f"{name}.log"


@dataclass(frozen=True)
class Pilot:
    """One allocation's workers."""

    queue: str
    name: str
    projects: Sequence[str]
    workers: int
    time_limit: float
    idle_timeout: float
    server: str
    worker_command: Sequence[str]
    """How to run ``whatsnext`` where the allocation runs (``python -m whatsnext``, ``whatsnext``)."""
    cpus_per_worker: int | None = None
    gpus_per_worker: int | None = None
    worker_args: str = ""
    setup: str | None = None
    token_file: str | None = None

    def worker_argv(self, index: int) -> list[str]:
        """Worker ``index``'s command line, up to its GPUs (which the script picks) and its deadline."""
        argv = [*self.worker_command, "--server", self.server, "worker", "--forever"]
        argv += ["--idle-timeout", _seconds(self.idle_timeout)]
        argv += ["--name", f"{self.name}-{index}"]
        for project in self.projects:
            argv += ["--project", project]
        if self.cpus_per_worker:
            argv += ["--cpus", str(self.cpus_per_worker)]
        if self.token_file:
            argv += ["--worker-token-file", self.token_file]
        return argv

    def script(self, *, scheduler_end: bool) -> str:
        """The bash script: setup lines, then the workers, each in the background, then wait.
        ``scheduler_end``: take the end from ``$SLURM_JOB_END_TIME`` when set."""
        limit = math.ceil(self.time_limit)
        lines = [
            f"# WhatsNext allocation {self.name} of queue {_one_line(self.queue)}: "
            f"{self.workers} worker(s) for {', '.join(_one_line(p) for p in self.projects)}",
            "unset WHATSNEXT_TOKEN  # workers use their own token (--worker-token-file), never the allocator's",
        ]
        if self.setup:
            lines += ["# setup", *self.setup.splitlines(), "# workers"]
        lines.append(f"start=$(date +%s); limit={limit}")
        end = "${SLURM_JOB_END_TIME:-$((start + limit))}" if scheduler_end else "$((start + limit))"
        lines.append(f"end={end}")
        gpus = self.gpus_per_worker or 0
        if gpus:
            lines.append('IFS=, read -r -a gpus <<< "${CUDA_VISIBLE_DEVICES:-}"')
        lines.append("pids=()")
        lines.append("trap 'kill -TERM \"${pids[@]}\" 2>/dev/null' TERM INT")
        extra = " ".join(shlex.quote(word) for word in shlex.split(self.worker_args))  # words, never shell
        for index in range(self.workers):
            argv = " ".join(shlex.quote(a) for a in self.worker_argv(index))
            if gpus:
                pick = f'--gpus "$(IFS=,; echo "${{gpus[*]:{index * gpus}:{gpus}}}")"'
            else:
                pick = "--gpus none"
            line = f'{argv} {pick} --deadline "$((end - $(date +%s)))"'
            if extra:
                line += " " + extra
            lines.append(line + " &")
            lines.append("pids+=($!)")
        lines += [
            'echo "whatsnext allocation: ${#pids[@]} worker(s) started"',
            "status=0",
            'for pid in "${pids[@]}"; do',
            '  until wait "$pid"; rc=$?; [ "$rc" -le 128 ] || ! kill -0 "$pid" 2>/dev/null; do :; done',
            '  [ "$rc" -eq 0 ] || status=$rc',
            "done",
            'echo "whatsnext allocation: every worker exited (status $status)"',
            'exit "$status"',
        ]
        return "\n".join(lines) + "\n"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


__all__ = ["NAME_PREFIX", "Pilot", "is_ours", "log_path", "name_prefix", "new_name", "queue_slug"]
