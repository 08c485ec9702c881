"""Queueing jobs: from a request body to ``wn_enqueue``, in one database round trip.

* The body is validated into plain dicts (``schemas.JobEntry``: the fields of :class:`JobCreate`,
  the same checks, no model objects); a body that might hold something PostgreSQL cannot store
  goes through :class:`JobCreate` and its walk over every value instead.
* What the database checks, and this module explains: a job whose task has a command template
  must give every placeholder the template uses (its parameters over the task's defaults), else
  a 422 names it; a job for a task the project does not have creates the task (1 CPU, 0 GPUs),
  and the answer lists it in ``created_tasks`` with a similar existing name, so clients can warn
  about a typo; a strict project refuses it instead (422, with the suggestion).
* Named groups are created on first use and their ids put on the jobs.
* A claim waiting on this server for the project is handed the jobs it can take in the same
  transaction (``NotifyHub.offer``): no notification, no second transaction.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pydantic
from aiohttp import web

from .batch import Entry, entries_json
from .errors import ApiError, invalid
from .http import actor, parse_body, parsing_context
from .keys import hub_key, store_key
from .notify import Handed
from .schemas import JOB_ENTRIES, JOB_ENTRY, JobBatch, JobCreate, plain_entries, suspicious
from .store import Store


@dataclass
class Queued:
    ids: list[int]
    created_tasks: list[dict[str, Any]]
    group_ids: dict[str, int]


def similar(name: str, names: list[str]) -> str | None:
    """The existing name closest to ``name``, if one is close enough to be a likely typo."""
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return match[0] if match else None


async def read_jobs(request: web.Request, *, batch: bool) -> tuple[list[Entry], str | None]:
    """The submitted jobs of a request (one job, or a batch: a list, or ``{group, jobs}``) and the
    batch's group name."""
    raw = await request.read()
    plain = not suspicious(raw)
    head = raw.lstrip()[:1]
    if plain and (head == b"[" if batch else head == b"{"):
        context = parsing_context(request, raw, plain)
        if batch and context["max_parameters_bytes"] is None:
            entries = plain_entries(raw)
            if entries is not None:
                return entries, None
        try:
            if batch:
                return JOB_ENTRIES.validate_json(raw, context=context), None
            return [JOB_ENTRY.validate_json(raw, context=context)], None
        except pydantic.ValidationError:
            pass  # the model path below says what is wrong, in its words
    if batch:
        jobs, group = (await parse_body(request, JobBatch)).jobs_and_group()
    else:
        jobs, group = [await parse_body(request, JobCreate)], None
    return [job.model_dump(exclude_unset=True) for job in jobs], group


async def enqueue(
    request: web.Request, project: str, entries: list[Entry], group: str | None = None
) -> Queued:
    """Queue ``entries`` in project ``project`` (its name or id) and hand what fits to a claim
    waiting here; 422 for a missing template parameter or, in a strict project, an unknown task."""
    app = request.app
    store, hub = app[store_key], app[hub_key]
    group_names = sorted({n for n in (*(e.get("group") for e in entries), group) if n is not None})
    group_ids = await store.groups.ensure(project=project, names=group_names)
    jobs_json = entries_json(entries, group_ids, group)
    waiter = hub.offer(project)
    claim = None if waiter is None or waiter.claim is None else waiter.claim()
    try:
        ids, created, claimed = await store.jobs.enqueue(
            project=project, jobs_json=jobs_json, actor=actor(request), claim=claim
        )
    except BaseException as exc:
        if waiter is not None:
            hub.take_back(waiter)
        if isinstance(exc, asyncpg.PostgresError):
            explained = await _explain(store, project, entries, exc)
            if explained is not None:
                raise explained from None
        raise
    if waiter is not None:
        if not claimed:
            hub.take_back(waiter)
        elif not waiter.hand(Handed(claimed)):
            await store.jobs.release_unread(claimed)
    return Queued(ids, await _created(store, project, created), group_ids)


async def _created(store: Store, project: str, created: list[str]) -> list[dict[str, Any]]:
    """The tasks a submission created, each with the existing task its name is closest to."""
    if not created:
        return []
    names = [n for n in await store.tasks.names(project=project) if n not in created]
    return [
        {"name": name, "required_cpu": 1, "required_accelerators": 0, "did_you_mean": similar(name, names)}
        for name in created
    ]


async def _explain(
    store: Store, project: str, entries: list[Entry], exc: asyncpg.PostgresError
) -> ApiError | None:
    """The 422 for a refusal of ``wn_enqueue`` that names a job (its HINT says which and why)."""
    if exc.sqlstate != "WN422" or not (exc.hint or "").startswith("{"):
        return None
    facts = orjson.loads(exc.hint or "{}")
    index = int(facts.get("index", 0))
    if not 0 <= index < len(entries):
        return None
    job = entries[index]
    where = f"{index}." if len(entries) > 1 else ""
    if "unknown_task" in facts:
        task = facts["unknown_task"]
        guess = similar(task, await store.tasks.names(project=project))
        hint = f" (did you mean {guess!r}?)" if guess else ""
        return invalid(
            f"unknown task {task!r}: project is strict, create the task first{hint}",
            f"{where}task",
            task=task,
            did_you_mean=guess,
        )
    missing = list(facts.get("missing") or ())
    if missing:
        return invalid(
            f"job {job['name']!r}: task {job['task']!r} runs {facts.get('command')!r}, which needs parameter "
            f"{missing[0]!r}" + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""),
            f"{where}parameters",
            missing=missing,
        )
    return None
