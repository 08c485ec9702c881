"""What the server checks before it queues jobs, beyond each field's own validation.

* A job whose task has a command template must give every placeholder the template uses (its
  parameters over the task's defaults): a missing one is a 422 that names it, instead of a job
  that fails on every worker.
* A job for a task the project does not have creates the task (1 CPU, 0 GPUs), and the answer
  lists it in ``created_tasks`` with a similar existing name, so clients can warn about a typo.
  A strict project refuses it instead (422, with the suggestion).
* Named groups are created on first use and their ids put on the jobs.
"""

from __future__ import annotations

import difflib
from typing import Any

from ...template import TemplateError, placeholders
from .batch import entries_json
from .errors import invalid
from .schemas import JobCreate
from .store import Store


def similar(name: str, names: list[str]) -> str | None:
    """The existing name closest to ``name``, if one is close enough to be a likely typo."""
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return match[0] if match else None


async def prepare(
    store: Store, project: str, jobs: list[JobCreate], group: str | None = None
) -> tuple[str, list[dict[str, Any]], dict[str, int]]:
    """The ``wn_job_entry`` objects for ``jobs`` (as JSON), the tasks their submission creates, and the ids
    of their groups by name. Raises a 422 for a missing template parameter or, in a strict
    project, an unknown task."""
    rows = await store.tasks.templates(project=project)
    strict = bool(rows and rows[0]["strict_tasks"])
    tasks = {r["name"]: r for r in rows if r["name"] is not None}
    names = list(tasks)
    needed: dict[str, list[str]] = {}
    created: dict[str, dict[str, Any]] = {}
    for i, job in enumerate(jobs):
        where = f"{i}." if len(jobs) > 1 else ""
        task = tasks.get(job.task)
        if task is None:
            if job.task in created:
                continue
            guess = similar(job.task, names)
            if strict:
                hint = f" (did you mean {guess!r}?)" if guess else ""
                raise invalid(
                    f"unknown task {job.task!r}: project is strict, create the task first{hint}",
                    f"{where}task",
                    task=job.task,
                    did_you_mean=guess,
                )
            created[job.task] = {
                "name": job.task,
                "required_cpu": 1,
                "required_accelerators": 0,
                "did_you_mean": guess,
            }
            continue
        command = task["command"]
        if not command:
            continue
        if job.task not in needed:
            try:
                needed[job.task] = placeholders(command)
            except TemplateError:
                needed[job.task] = []  # a template stored before templates were checked
        defaults = task["defaults"] or {}
        missing = [p for p in needed[job.task] if p not in job.parameters and p not in defaults]
        if missing:
            raise invalid(
                f"job {job.name!r}: task {job.task!r} runs {command!r}, which needs parameter "
                f"{missing[0]!r}"
                + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""),
                f"{where}parameters",
                missing=missing,
            )
    group_names = [n for n in {*(j.group for j in jobs), group} if n is not None]
    group_ids = await store.groups.ensure(project=project, names=group_names)
    return entries_json(jobs, group_ids, group), list(created.values()), group_ids
