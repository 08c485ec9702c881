"""Checks a worker runs before its first claim, so that a typo costs no job: the program of a
command exists, and a script it names is there (with the closest file name when it is not)."""

from __future__ import annotations

import difflib
import os
import shlex
import shutil
from collections.abc import Sequence

from .formatters.base import PreflightError

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
