"""Many jobs at once: a project's jobs chosen by the job list's filters (every page of them),
cancel, retry or remove several jobs with one answer per job, and wait for several jobs or a
whole group to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from ...models import FINISHED, STATUSES
from .errors import Conflict, NotFound, WhatsNextError
from .http import Http, job_path, project_path

Action = Literal["cancel", "retry", "remove"]
ACTS_ON: dict[Action, frozenset[str]] = {
    "cancel": frozenset({"PENDING", "RUNNING", "BLOCKED"}),
    "retry": frozenset({"FAILED", "CANCELLED", "BLOCKED"}),
    "remove": frozenset(STATUSES) - {"RUNNING"},
}
"""The statuses of the jobs each action applies to (a filter selects only those)."""
UNFINISHED: frozenset[str] = frozenset(STATUSES) - FINISHED
"""PENDING and RUNNING: a job in them has not ended yet."""
PAGE = 1000
"""Jobs per request when reading a whole selection (the list's largest page)."""
IN_FLIGHT = 16
"""At most this many requests at once when looking at several jobs."""
FIRST_LOOK, LOOK_EVERY = 0.05, 1.0
"""A wait looks again after ``FIRST_LOOK`` s, then half as late again each time, up to
``LOOK_EVERY`` s (as :meth:`Job.wait_async`), and later when it looks at many jobs one by one."""
LOOKS_PER_SECOND = 50
"""A wait on many single jobs spaces its looks so as to ask about at most this many per second."""


# ---------------------------------------------------------------- choosing jobs


@dataclass(frozen=True)
class Selection:
    """Which of a project's jobs (None: any), as ``GET /projects/{p}/jobs`` filters them."""

    statuses: tuple[str, ...] | None = None
    task: str | None = None
    group: str | None = None
    name: str | None = None
    """A pattern: ``*`` matches anything."""
    where: Mapping[str, Any] | None = None
    """Parameters the jobs have (``{"lr": 0.1}``)."""

    def __bool__(self) -> bool:
        return any(v for v in (self.statuses, self.task, self.group, self.name, self.where))

    def only(self, statuses: Iterable[str]) -> Selection:
        """This selection, narrowed to ``statuses`` (those of it that are among them)."""
        allowed = set(statuses)
        wanted = [s for s in (self.statuses or STATUSES) if s in allowed]
        return Selection(tuple(wanted), self.task, self.group, self.name, self.where)

    def params(self) -> dict[str, Any]:
        """The query parameters of the filter."""
        return {
            "status": ",".join(self.statuses) if self.statuses is not None else None,
            "task": self.task,
            "group": self.group,
            "name": self.name,
            "where": json.dumps(dict(self.where)) if self.where else None,
        }

    def empty(self) -> bool:
        """It asks for no status at all (narrowed to statuses it did not have)."""
        return self.statuses is not None and not self.statuses


async def count(http: Http, project: str | int, selection: Selection) -> tuple[dict[str, int], int]:
    """How many of the project's jobs the selection matches: by status, and in all."""
    if selection.empty():
        return {}, 0
    data = await http.get(project_path(project) + "/jobs/counts", **selection.params())
    return dict(data["counts"]), int(data["total"])


async def page(
    http: Http, project: str | int, selection: Selection, limit: int, *, full: bool = True
) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs the selection matches (at most 1000)."""
    if selection.empty() or limit <= 0:
        return []
    data = await http.get(project_path(project) + "/jobs", limit=limit, full=int(full), **selection.params())
    return list(data["jobs"])


async def select(
    http: Http, project: str | int, selection: Selection, *, full: bool = False
) -> list[dict[str, Any]]:
    """Every job the selection matches, newest first, read a page at a time; without ``full``
    the jobs come without their parameters and results (lighter)."""
    out: list[dict[str, Any]] = []
    before: int | None = None
    while not selection.empty():
        data = await http.get(
            project_path(project) + "/jobs", limit=PAGE, before=before, full=int(full), **selection.params()
        )
        out += data["jobs"]
        before = data.get("next_before")
        if before is None:
            break
    return out


# ---------------------------------------------------------------- acting on jobs


@dataclass
class Outcome:
    """What became of one job a bulk action was asked for."""

    id: int
    ok: bool
    answer: dict[str, Any] | None = None
    """The server's answer (``{"id", "status"}`` for a cancel, ``{"id", "requeued"}`` for a
    retry, ``{"deleted"}`` for a removal)."""
    error: WhatsNextError | None = None
    """Why the server refused it (``NotFound`` when there is no such job)."""
    note: str | None = None
    """``released``: a retry found the job back in the queue already (retried with one before)."""

    @property
    def not_found(self) -> bool:
        return isinstance(self.error, NotFound)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "ok": self.ok, **(self.answer or {})}
        if self.note:
            out["note"] = self.note
        if self.error is not None:
            out["error"] = {
                "status": self.error.status,
                "code": self.error.code,
                "message": self.error.message,
            }
        return out


async def _gather(items: Iterable[Any], each: Callable[[Any], Awaitable[Any]]) -> list[Any]:
    """``each(item)`` for every item, at most ``IN_FLIGHT`` at once, in the items' order."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(item: Any) -> Any:
        async with gate:
            return await each(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def look(http: Http, ids: Iterable[int]) -> dict[int, dict[str, Any] | None]:
    """The jobs ``ids`` as ``GET /jobs/{id}`` shows them (None: no such job), several at once."""

    async def get(job_id: int) -> dict[str, Any] | None:
        try:
            return dict(await http.get(job_path(job_id)))
        except NotFound:
            return None

    wanted = list(dict.fromkeys(ids))
    return dict(zip(wanted, await _gather(wanted, get), strict=True))


async def act(
    http: Http,
    action: Action,
    jobs: Iterable[int | Mapping[str, Any]],
    *,
    project: str | int | None = None,
    done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Cancel, retry or remove each job, one request each, and say what became of every one
    (``done`` is called as each ends). ``jobs``: ids, or jobs as the list shows them (their
    ``status`` known); a removal needs the jobs' ``project`` (else it reads each job first).
    Cancels and retries go oldest first, removals newest first (a dependant before its upstream).
    A retry refused because the job is back in the queue already (an earlier retry of the same
    call released it, or retried it through the job it blocked) counts as done."""
    known: dict[int, Mapping[str, Any] | None] = {}
    for j in jobs:
        if isinstance(j, Mapping):
            known[int(j["id"])] = j
        else:
            known.setdefault(int(j), None)
    unknown = [i for i, j in known.items() if j is None]
    if unknown and (action == "retry" or (action == "remove" and project is None)):
        known.update(await look(http, unknown))
    else:
        unknown = []
    order = sorted(known, reverse=action == "remove")
    out: list[Outcome] = []
    for job_id in order:
        job = known[job_id]
        if job_id in unknown and job is None:
            outcome = Outcome(job_id, False, error=NotFound(f"job {job_id} not found", status=404))
        else:
            outcome = await _act_one(http, action, job_id, job, project)
        out.append(outcome)
        if done is not None:
            done(outcome)
    return out


async def _act_one(
    http: Http, action: Action, job_id: int, job: Mapping[str, Any] | None, project: str | int | None
) -> Outcome:
    try:
        if action == "cancel":
            answer = await http.post(f"{job_path(job_id)}/cancel")
        elif action == "retry":
            answer = await http.post(f"{job_path(job_id)}/retry")
        else:
            where = project if project is not None else (job or {}).get("project_id")
            answer = await http.delete(f"{project_path(str(where))}/jobs/{job_id}")
    except Conflict as exc:
        if action == "retry" and job is not None and job.get("status") in ACTS_ON["retry"]:
            now = (await look(http, [job_id]))[job_id]
            if now is not None and now["status"] in UNFINISHED:
                return Outcome(job_id, True, {"id": job_id, "requeued": 0}, note="released")
        return Outcome(job_id, False, error=exc)
    except NotFound as exc:
        return Outcome(job_id, False, error=exc)
    except WhatsNextError as exc:
        if exc.status is None or exc.status >= 500 or exc.status in (401, 429):
            raise  # the server, not this job: stop
        return Outcome(job_id, False, error=exc)
    return Outcome(job_id, True, dict(answer or {}))


# ---------------------------------------------------------------- waiting


@dataclass
class Progress:
    """Where a set of jobs (some ids, or a group) stands."""

    total: int
    counts: dict[str, int]
    """How many are in each status."""
    statuses: dict[int, str] = field(default_factory=dict)
    """Each job's status, when waiting on ids."""
    missing: list[int] = field(default_factory=list)
    """Ids of jobs that do not exist (or were removed meanwhile)."""

    @property
    def done(self) -> int:
        """How many have ended (COMPLETED, FAILED, CANCELLED or BLOCKED), or are gone."""
        return sum(n for s, n in self.counts.items() if s in FINISHED) + len(self.missing)

    @property
    def finished(self) -> bool:
        """Every one has ended."""
        return self.done >= self.total

    @property
    def completed(self) -> bool:
        """Every one COMPLETED."""
        return self.counts.get("COMPLETED", 0) == self.total and not self.missing


async def watch(
    http: Http,
    ids: Iterable[int] | None = None,
    *,
    project: str | int | None = None,
    group: str | int | None = None,
    every: float = LOOK_EVERY,
) -> AsyncIterator[Progress]:
    """Look at the jobs ``ids`` (or every job of ``group`` in ``project``) until all have ended:
    one :class:`Progress` per look, the last one finished. The looks come soon, then less often
    (up to ``every`` s apart; one job at a time: about ``LOOKS_PER_SECOND`` jobs a second)."""
    if (ids is None) == (group is None):
        raise ValueError("wait for ids or for a group, not both")
    if group is not None and project is None:
        raise ValueError("a group is found in a project: give project")
    wanted = list(dict.fromkeys(int(i) for i in ids or ()))
    statuses: dict[int, str] = {}
    delay = FIRST_LOOK
    while True:
        if group is not None:
            data = await http.get(f"{project_path(str(project))}/groups/{quote(str(group), safe='')}")
            progress = Progress(int(data["total"]), dict(data["counts"]))
            pace = every
        else:
            pending = [i for i in wanted if i not in statuses or statuses[i] in UNFINISHED]
            for job_id, job in (await look(http, pending)).items():
                statuses[job_id] = job["status"] if job is not None else ""
            counts: dict[str, int] = {}
            for status in statuses.values():
                if status:
                    counts[status] = counts.get(status, 0) + 1
            missing = [i for i in wanted if not statuses[i]]
            progress = Progress(len(wanted), counts, dict(statuses), missing)
            pace = max(every, (progress.total - progress.done) / LOOKS_PER_SECOND)
        yield progress
        if progress.finished:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, pace)


async def wait(
    http: Http,
    ids: Iterable[int] | None = None,
    *,
    project: str | int | None = None,
    group: str | int | None = None,
    timeout: float | None = None,
) -> Progress:
    """Wait until the jobs ``ids`` (or every job of ``group``) have ended: COMPLETED, FAILED,
    CANCELLED or BLOCKED; ``TimeoutError`` after ``timeout`` s. ``.completed`` says whether all
    of them completed, ``.counts`` how many ended how, ``.missing`` the ids with no job."""

    async def last() -> Progress:
        final = Progress(0, {})
        async for progress in watch(http, ids, project=project, group=group):
            final = progress
        return final

    return await asyncio.wait_for(last(), timeout)
