"""CLIFormatter: run a command line built from a job's parameters, without a shell by default."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from ..process import run_process
from ..template import CommandTemplate, Upstream
from .base import FormatError, Formatter, JobSpec, Outcome, RunContext, apply_defaults


class CLIFormatter(Formatter):
    """Run each job as a command line.

    ``CLIFormatter(executable="python", script="process.py")`` runs
    ``python process.py --input file.csv --format json`` for parameters
    ``{"input": "file.csv", "format": "json"}``.
    ``CLIFormatter(template="python train.py --lr {lr} --epochs {epochs}")`` fills a template.
    Arguments go to the program as an argv list: no shell sees the values. Pass ``shell=True`` to run
    the template through ``/bin/sh -c`` (values are then shell-quoted, and placeholders inside quotes
    are refused). The rules are those of :class:`~whatsnext.api.client.template.CommandTemplate`,
    shared with the SLURM and RUN:AI formatters.
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
        # A malformed or unsafe template fails here, when the worker starts, not on each job.
        self.command_template = CommandTemplate(
            executable=executable, script=script, template=template, shell=shell, defaults=defaults
        )

    def preflight(self) -> None:
        from ..preflight import check_program, check_script, check_template_words

        if self.script is not None:
            if self.executable:
                check_program(self.executable, self.cwd, what="executable")
                check_script(self.script, self.cwd)
            else:
                check_program(self.script, self.cwd, what="script")
        elif self.template is not None:
            check_template_words(self.template, self.shell, self.cwd)

    def argv(self, task: str, parameters: Mapping[str, Any], upstream: Upstream = None) -> list[str]:
        return self.command_template.argv(parameters, upstream)

    def shell_command(self, parameters: Mapping[str, Any], upstream: Upstream = None) -> str:
        return self.command_template.shell_line(parameters, upstream=upstream)

    def format(self, task: str, parameters: dict[str, Any]) -> str:
        return self.shell_command(parameters)

    def execute(self, command: str) -> int:
        if self.shell:
            return subprocess.call(command, shell=True, cwd=self.cwd)
        return subprocess.call(shlex.split(command), cwd=self.cwd)

    async def run(self, job: JobSpec, ctx: RunContext) -> Outcome:
        try:
            cmd: Sequence[str] | str = (
                self.shell_command(job.parameters, job.upstream)
                if self.shell
                else self.argv(job.task, job.parameters, job.upstream)
            )
        except FormatError as exc:
            return Outcome(status="FAILED", error=f"cannot format job: {exc}", retryable=False)
        apply_defaults(ctx, self.env, self.cwd)
        return await run_process(cmd, ctx, shell=self.shell)
