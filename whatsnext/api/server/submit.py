"""Queueing jobs: from a raw body to ``wn_enqueue``, in one database statement.

* The body is validated into plain dicts (``schemas.JobEntry``: the fields of :class:`JobCreate`,
  the same checks, no model objects); a body that might hold something PostgreSQL cannot store
  goes through :class:`JobCreate` and its walk over every value instead.
* What the database checks, and this module explains: a job whose task has a command template
  must give every placeholder the template uses (its parameters over the task's defaults), else
  a 422 names it; a job for a task the project does not have creates the task (1 CPU, 0 GPUs),
  and the answer lists it in ``created_tasks`` with a similar existing name, so clients can warn
  about a typo; a strict project refuses it instead (422, with the suggestion).
* Named groups are created on first use and their ids put on the jobs.
* A job whose ``unique_key`` the project has already is that job: the answer gives its id and
  says ``existing``; the same key with other fields is a 409 naming them, and two entries of one
  batch with one key a 422 (checked here, before the database).
* A parameter no placeholder of the task's command uses is a warning in the answer (a 422 when the
  project sets ``strict_parameters``).
* A claim waiting on this server for the project is handed the jobs it can take in the same
  transaction (``NotifyHub.offer``): no notification, no second transaction.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pydantic

from .batch import Entry, entries_json
from .errors import ApiError, invalid
from .notify import Handed, NotifyHub
from .schemas import JOB_ENTRIES, JOB_ENTRY, plain_entries, suspicious, validation_context
from .store import Store
from .store.base import Row


@dataclass
class Queued:
    ids: list[int]
    """One per entry, in batch order: the new job's, or the existing job's (``existing``)."""
    created_tasks: list[dict[str, Any]]
    group_ids: dict[str, int]
    project: str
    """The project's name."""
    job: Row | None = None
    """For one job: the job as GET /jobs/{id} shows it."""
    existing: list[bool] = field(default_factory=list)
    """One per entry: whether its unique key belonged to a job the project had (nothing created)."""
    warnings: list[dict[str, Any]] = field(default_factory=list)
    """``{index (in a batch), field, message}``: what was accepted but looks wrong."""

    @property
    def created(self) -> int:
        """How many jobs the submission created."""
        return len(self.ids) - sum(self.existing)


def similar(name: str, names: list[str]) -> str | None:
    """The existing name closest to ``name``, if one is close enough to be a likely typo."""
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return match[0] if match else None


def read_jobs(raw: bytes, *, batch: bool, max_parameters_bytes: int) -> list[Entry] | None:
    """The submitted jobs of a raw body (one job, or a batch as a list) validated on the fast path
    (plain dicts, no model objects); None when the body needs the models (:class:`JobCreate`,
    :class:`JobBatch`): it may hold something unstorable, it is a batch with a group
    (``{group, jobs}``), or it is invalid (the models then say what is wrong, in their words)."""
    plain = not suspicious(raw)
    head = raw.lstrip()[:1]
    if not plain or head != (b"[" if batch else b"{"):
        return None
    context = validation_context(raw, max_parameters_bytes, plain)
    if batch and context["max_parameters_bytes"] is None:
        entries = plain_entries(raw)
        if entries is not None:
            return entries
    try:
        if batch:
            return JOB_ENTRIES.validate_json(raw, context=context)
        return [JOB_ENTRY.validate_json(raw, context=context)]
    except pydantic.ValidationError:
        return None


async def enqueue(
    store: Store,
    hub: NotifyHub,
    project: str,
    entries: list[Entry],
    group: str | None = None,
    *,
    actor: str | None,
    single: bool = False,
) -> Queued:
    """Queue ``entries`` in project ``project`` (its name or id), in one statement, and hand what
    fits to a claim waiting here; 422 for a missing template parameter or, in a strict project, an
    unknown task. ``single``: one job, answered as GET /jobs/{id} shows it (``Queued.job``)."""
    check_unique_keys(entries, single=single)
    group_names = sorted({n for n in (*(e.get("group") for e in entries), group) if n is not None})
    group_ids = await store.groups.ensure(project=project, names=group_names)
    jobs_json = entries_json(entries, group_ids, group)
    waiter = hub.offer(project)
    claim = None if waiter is None or waiter.claim is None else waiter.claim()
    try:
        queued = await store.jobs.submit(
            project=project, jobs_json=jobs_json, actor=actor, claim=claim, single=single
        )
    except BaseException as exc:
        if waiter is not None:
            hub.take_back(waiter)
        if isinstance(exc, asyncpg.PostgresError):
            explained = await _explain(store, project, entries, exc, single=single)
            if explained is not None:
                raise explained from None
        raise
    claimed = queued.claimed
    if waiter is not None:
        if not claimed:
            hub.take_back(waiter)
        elif not waiter.hand(Handed(claimed)):
            await store.jobs.release_unread(claimed)
    created = [
        {
            "name": name,
            "required_cpu": 1,
            "required_accelerators": 0,
            "did_you_mean": similar(name, queued.known_tasks),
        }
        for name in queued.created_tasks
    ]
    existing = set(queued.existing)
    return Queued(
        queued.ids,
        created,
        group_ids,
        queued.project,
        queued.job,
        [i in existing for i in range(len(queued.ids))],
        submit_warnings(queued.warnings, single=single),
    )


def check_unique_keys(entries: list[Entry], *, single: bool) -> None:
    """Refuse a batch in which two entries give one ``unique_key`` (422 naming the second): the
    second would be the first job, which is surely not what was meant."""
    if single:
        return
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        key = entry.get("unique_key")
        if key is None:
            continue
        first = seen.setdefault(key, index)
        if first != index:
            raise invalid(
                f"unique_key {key!r} is given twice in the batch: by entries {first} and {index}",
                f"{index}.unique_key",
                first=first,
            )


def submit_warnings(warnings: list[dict[str, Any]] | None, *, single: bool) -> list[dict[str, Any]]:
    """The warnings of ``wn_enqueue`` as the answer gives them: fields named as errors name them
    (``0.parameters.stpes`` in a batch), with the entry's index in a batch."""
    out = []
    for warning in warnings or ():
        if single:
            out.append({"field": warning["field"], "message": warning["message"]})
        else:
            index = int(warning["index"])
            out.append(
                {"index": index, "field": f"{index}.{warning['field']}", "message": warning["message"]}
            )
    return out


async def _explain(
    store: Store, project: str, entries: list[Entry], exc: asyncpg.PostgresError, *, single: bool
) -> ApiError | None:
    """The 409 or 422 for a refusal of ``wn_enqueue`` that names a job (its HINT, a JSON object,
    says which and why); fields are named as errors name them (with the entry's index in a batch)."""
    if exc.sqlstate not in ("WN409", "WN422") or not (exc.hint or "").startswith("{"):
        return None
    facts = orjson.loads(exc.hint or "{}")
    index = int(facts.get("index", 0))
    if not 0 <= index < len(entries):
        return None
    job = entries[index]
    where = "" if single else f"{index}."
    if exc.sqlstate == "WN409":
        if exc.detail != "unique_key":
            return None
        fields = list(facts.get("fields") or ())
        return ApiError(
            409,
            "conflict",
            f"job {job['name']!r}: unique_key {job.get('unique_key')!r} belongs to job {facts.get('id')}, "
            f"which differs in {', '.join(fields) or 'its fields'}: submit it with another key, or as it was",
            {"field": f"{where}unique_key", "id": facts.get("id"), "fields": fields},
        )
    unused = list(facts.get("unused") or ())
    if unused:
        return invalid(
            f"job {job['name']!r}: task {job['task']!r} uses no parameter {unused[0]!r}"
            + (f" (nor {', '.join(map(repr, unused[1:]))})" if len(unused) > 1 else "")
            + ": the project refuses parameters its tasks' commands do not use (strict_parameters)",
            f"{where}parameters.{unused[0]}",
            unused=unused,
        )
    for reason, what in (("unknown_group", "has no group"), ("empty_group", "has no job in group")):
        if reason in facts:
            name = facts[reason]
            return invalid(
                f"job {job['name']!r} depends on group {name!r}, but the project {what} {name!r}",
                f"{where}depends",
                group=name,
            )
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
