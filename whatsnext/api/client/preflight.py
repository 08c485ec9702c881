"""Checks a worker runs before its first claim, so that a typo costs no job: the program of a
command exists, a script it names is there (with the closest file name when it is not), and the
tasks it takes exist in the projects it serves and have a command when it runs theirs."""

from __future__ import annotations

import asyncio
import difflib
import os
import shlex
import shutil
from collections.abc import Sequence
from typing import Any

import structlog

from .backoff import Backoff
from .errors import RETRYABLE
from .formatters.base import Formatter, PreflightError
from .formatters.task import TaskFormatter
from .http import Http, project_path
from .target import Target

log = structlog.get_logger("whatsnext.worker")

#: Programs whose first argument is a script file to run (``python train.py``).
INTERPRETERS = frozenset(
    {"python", "python3", "bash", "sh", "zsh", "Rscript", "julia", "node", "perl", "ruby", "torchrun"}
)
SCRIPT_SUFFIXES = (".py", ".sh", ".R", ".r", ".jl", ".js", ".pl", ".rb")


def _nearby(path: str, cwd: str) -> str | None:
    folder = os.path.join(cwd, os.path.dirname(path))
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    match = difflib.get_close_matches(os.path.basename(path), names, n=1, cutoff=0.6)
    return os.path.join(os.path.dirname(path), match[0]) if match else None


def check_program(program: str, cwd: str | None = None, what: str = "program") -> None:
    """Raise unless ``program`` can be started (found on PATH, or an executable file)."""
    cwd = cwd or os.getcwd()
    if os.sep in program:
        path = os.path.join(cwd, program)
        if not os.path.isfile(path):
            guess = _nearby(program, cwd)
            hint = f" (did you mean {guess!r}?)" if guess else ""
            raise PreflightError(f"{what} {program!r} not found in {cwd}{hint}")
        if not os.access(path, os.X_OK):
            raise PreflightError(f"{what} {program!r} is not executable (chmod +x {shlex.quote(program)})")
        return
    if shutil.which(program) is None:
        raise PreflightError(f"{what} {program!r} not found on PATH")


def check_script(script: str, cwd: str | None = None) -> None:
    """Raise unless the script file exists (relative paths are taken from ``cwd``)."""
    cwd = cwd or os.getcwd()
    if not os.path.isfile(os.path.join(cwd, os.path.expanduser(script))):
        guess = _nearby(script, cwd)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        raise PreflightError(f"script {script!r} not found in {cwd}{hint}")


def check_words(words: Sequence[str], cwd: str | None = None) -> None:
    """Check a command's literal words: its program, and the script an interpreter is given.
    Words with ``{placeholders}`` are left alone (their value is only known per job)."""
    if not words or "{" in words[0]:
        return
    check_program(words[0], cwd)
    if os.path.basename(words[0]).rstrip("0123456789.") in INTERPRETERS:
        script = next((w for w in words[1:] if not w.startswith("-")), None)
        if script and "{" not in script and script.endswith(SCRIPT_SUFFIXES):
            check_script(script, cwd)


def check_template_words(template: str, shell: bool, cwd: str | None = None) -> None:
    """Check the first command of a template (for a shell line: when it is a simple command)."""
    try:
        words = shlex.split(template)
    except ValueError:
        return  # the template parser already said what is wrong
    if shell and any(ch in template for ch in ";&|`$()<>\n"):
        return  # a pipeline or a compound command: the shell decides
    check_words(words, cwd)


# ---------------------------------------------------------------- the tasks of the projects served


async def fetch_tasks(
    http: Http, target: Target, stop: asyncio.Event | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The tasks of each project the worker serves, by project key (retried while the server is
    unreachable: it may start after its workers). Empty for ``all_projects``: which projects that
    covers is only known at each claim."""
    found: dict[str, list[dict[str, Any]]] = {}
    for key in target.keys:
        backoff = Backoff()
        while True:
            try:
                found[key] = (await http.get(f"{project_path(key)}/tasks"))["tasks"]
                break
            except RETRYABLE as exc:
                if stop is not None and stop.is_set():
                    raise
                delay = backoff.next()
                log.warning("server unreachable; retrying", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
    return found


def check_tasks(
    target: Target, tasks: dict[str, list[dict[str, Any]]], wanted: list[str] | None, formatter: Formatter
) -> None:
    """Raise unless the tasks this worker takes (``wanted``; None: any) exist in one of its projects
    at least, and, when it runs each task's command, that one of them has a command and that every
    such command parses and starts. With several projects a check holds across them."""
    one = target.one
    everything = [task for key in target.keys for task in tasks.get(key, ())]
    names = list(dict.fromkeys(t["name"] for t in everything))
    unknown = [t for t in wanted or () if t not in names]
    if unknown:
        guess = difflib.get_close_matches(unknown[0], names, n=1, cutoff=0.6)
        hint = f" (did you mean {guess[0]!r}?)" if guess else ""
        listed = ", ".join(names) or "none"
        if one is not None:
            raise PreflightError(f"project {one} has no task {unknown[0]!r}{hint}; its tasks: {listed}")
        raise PreflightError(f"none of {target} has a task {unknown[0]!r}{hint}; their tasks: {listed}")
    if not isinstance(formatter, TaskFormatter):
        return
    mine = {
        key: [t for t in tasks.get(key, ()) if wanted is None or t["name"] in wanted] for key in target.keys
    }
    runnable = {key: [t for t in found if t.get("command")] for key, found in mine.items()}
    if not any(runnable.values()):
        which = ", ".join(dict.fromkeys(t["name"] for found in mine.values() for t in found)) or "none"
        raise PreflightError(
            f"no task of {target} has a command to run (tasks: {which}): give "
            "one (whatsnext tasks add NAME --command 'python train.py --lr {lr}') or run the "
            "worker with --script, --command or --python"
        )
    for key, found in runnable.items():
        try:
            formatter.check_tasks(found)
        except PreflightError as exc:
            if one is not None:
                raise
            raise PreflightError(f"project {key}, {exc}") from None
    skipped = list(dict.fromkeys(t["name"] for found in mine.values() for t in found if not t.get("command")))
    if skipped:
        log.info("tasks without a command are left to other workers", tasks=skipped)
