"""CLIFormatter: run a command line built from a job's parameters, without a shell by default."""

from __future__ import annotations

import json
import shlex
import string
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from ..process import run_process
from .base import FormatError, Formatter, JobSpec, Outcome, RunContext


def render_value(value: Any) -> str:
    """A parameter value as one command-line argument: JSON for lists and dicts, text otherwise."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if value is None:
        return ""
    return str(value)


def template_fields(template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError as exc:
        raise FormatError(f"bad template {template!r}: {exc}") from None


def fill(
    template: str, parameters: Mapping[str, Any], quote: bool = False, extra: Mapping[str, Any] | None = None
) -> str:
    """Fill ``{name}`` fields from the parameters (then ``extra``); a missing one is a FormatError naming it."""
    merged = {**(extra or {}), **parameters}
    values = {k: (shlex.quote(render_value(v)) if quote else render_value(v)) for k, v in merged.items()}
    try:
        return template.format_map(values)
    except KeyError as exc:
        raise FormatError(f"missing parameter {exc.args[0]!r} for template {template!r}") from None
    except (IndexError, ValueError, AttributeError) as exc:
        raise FormatError(f"bad template {template!r}: {exc}") from None


def script_argv(
    executable: str | None, script: str, parameters: Mapping[str, Any], flag_prefix: str = "--"
) -> list[str]:
    """``python process.py --input file.csv --format json``; True is a bare flag, False/None omitted."""
    argv = [executable, script] if executable else [script]
    for key, value in parameters.items():
        if value is False or value is None:
            continue
        argv.append(f"{flag_prefix}{key}")
        if value is not True:
            argv.append(render_value(value))
    return argv


class CLIFormatter(Formatter):
    """Run each job as a command line.

    ``CLIFormatter(executable="python", script="process.py")`` runs
    ``python process.py --input file.csv --format json`` for parameters
    ``{"input": "file.csv", "format": "json"}``.
    ``CLIFormatter(template="python train.py --lr {lr} --epochs {epochs}")`` fills a template.
    Arguments go to the program as an argv list: no shell sees the values. Pass ``shell=True`` to run
    the template through ``/bin/sh -c`` (values are then shell-quoted).
    """

    def __init__(
        self,
        executable: str | None = "python",
        script: str | None = None,
        *,
        template: str | None = None,
        command: str | None = None,
        shell: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        template = template or command
        if (script is None) == (template is None):
            raise ValueError("give either script= (with executable=) or template=")
        self.executable = executable
        self.script = script
        self.template = template
        self.shell = shell
        self.env = dict(env or {})
        self.cwd = cwd
        self.defaults = dict(defaults or {})
        if template is not None:
            template_fields(template)  # a malformed template fails here, not per job

    def _params(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **parameters}

    def argv(self, task: str, parameters: Mapping[str, Any]) -> list[str]:
        params = self._params(parameters)
        if self.script is not None:
            return script_argv(self.executable, self.script, params)
        assert self.template is not None
        try:
            pieces = shlex.split(self.template)
        except ValueError as exc:
            raise FormatError(f"bad template {self.template!r}: {exc}") from None
        return [fill(piece, params) for piece in pieces]

    def shell_command(self, parameters: Mapping[str, Any]) -> str:
        assert self.template is not None
        return fill(self.template, self._params(parameters), quote=True)

    def format(self, task: str, parameters: dict[str, Any]) -> str:
        if self.shell:
            return self.shell_command(parameters)
        return shlex.join(self.argv(task, parameters))

    def execute(self, command: str) -> int:
        if self.shell:
            return subprocess.call(command, shell=True, cwd=self.cwd)
        return subprocess.call(shlex.split(command), cwd=self.cwd)

    async def run(self, job: JobSpec, ctx: RunContext) -> Outcome:
        try:
            cmd: Sequence[str] | str = (
                self.shell_command(job.parameters) if self.shell else self.argv(job.task, job.parameters)
            )
        except FormatError as exc:
            return Outcome(status="FAILED", error=f"cannot format job: {exc}")
        if self.env:
            ctx.env = {**self.env, **ctx.env}
        if self.cwd and not ctx.cwd:
            ctx.cwd = self.cwd
        return await run_process(cmd, ctx, shell=self.shell)
