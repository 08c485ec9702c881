"""TaskFormatter: run each job with its task's command template (the job's parameters over the
task's defaults), as the server hands it out with the job."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import orjson

from ..process import run_process
from ..template import CommandTemplate
from .base import FormatError, Formatter, JobSpec, Outcome, PreflightError, RunContext, apply_defaults


class TaskFormatter(Formatter):
    """Run each job as its task's command: ``whatsnext tasks add train --command "python train.py
    --lr {lr}"`` makes every ``train`` job run ``python train.py --lr <its lr>``.

    A worker with this formatter claims only jobs of tasks that have a command. The same rules as
    :class:`CLIFormatter` apply (argv without a shell unless the task's command is a shell line).
    """

    uses_task_commands = True

    def __init__(self, *, env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
        self.env = dict(env or {})
        self.cwd = cwd
        self._templates: dict[tuple[str, bool, bytes], CommandTemplate] = {}

    def template(self, command: str, shell: bool, defaults: Mapping[str, Any]) -> CommandTemplate:
        """The parsed template of a task (kept: the same task's jobs reuse it)."""
        key = (command, shell, orjson.dumps(dict(defaults), option=orjson.OPT_SORT_KEYS))
        found = self._templates.get(key)
        if found is None:
            if len(self._templates) > 1000:
                self._templates.clear()
            found = CommandTemplate(template=command, shell=shell, defaults=defaults)
            self._templates[key] = found
        return found

    def check_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Preflight for the tasks this worker takes: each command parses and its program exists."""
        from ..preflight import check_template_words

        for task in tasks:
            command = task.get("command")
            if not command:
                continue
            try:
                self.template(command, bool(task.get("shell")), task.get("defaults") or {})
                check_template_words(command, bool(task.get("shell")), self.cwd)
            except (FormatError, PreflightError) as exc:
                raise PreflightError(f"task {task['name']!r}: {exc}") from None

    def format(self, task: str, parameters: dict[str, Any]) -> str:
        raise FormatError(f"task {task!r}: the command comes with each claimed job (use run())")

    async def run(self, job: JobSpec, ctx: RunContext) -> Outcome:
        if not job.command:
            return Outcome(
                status="FAILED",
                error=f"task {job.task!r} has no command: run a worker with --script or --command for it",
                retryable=False,
            )
        try:
            template = self.template(job.command, job.shell, job.defaults)
            cmd = (
                template.shell_line(job.parameters, upstream=job.upstream)
                if job.shell
                else template.argv(job.parameters, job.upstream)
            )
        except FormatError as exc:
            return Outcome(status="FAILED", error=f"cannot format job: {exc}", retryable=False)
        apply_defaults(ctx, self.env, self.cwd or os.getcwd())
        return await run_process(cmd, ctx, shell=job.shell)
