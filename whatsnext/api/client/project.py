"""A project on the server: its queue and its settings. Nothing is cached locally but the last read."""

from __future__ import annotations

import enum
import hashlib
import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ...models import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_LOST, DEFAULT_MAX_PREEMPTED
from .bulk import Progress
from .errors import NotFound
from .groups import AsyncGroups, Groups
from .http import Http, project_path
from .job import Job
from .submit import submit_job, submit_jobs
from .syncio import run_sync
from .tasks import TaskSettingsWarning, asked_settings, differs_message, task_changes, task_path


def sweep_jobs(
    task: str,
    grid: Mapping[str, Sequence[Any]],
    *,
    name: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    depends: Any = None,
    priority: int = 0,
    group: str | None = None,
    concurrency_key: str | None = None,
    concurrency_limit: int | None = None,
) -> list[Job]:
    """Expand a parameter grid into jobs (the cartesian product), named after the values; the
    concurrency pair, if given, goes on every job."""
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], (list, tuple)) or not grid[key]:
            raise ValueError(f"grid[{key!r}] must be a non-empty list of values")
    jobs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        combo = dict(zip(keys, values, strict=True))
        label = ",".join(f"{k}={v}" for k, v in combo.items())
        jobs.append(
            Job(
                name=f"{name or task}[{label}]",
                task=task,
                parameters={**(parameters or {}), **combo},
                priority=priority,
                depends=depends,
                group=group,
                concurrency_key=concurrency_key,
                concurrency_limit=concurrency_limit,
            )
        )
    return jobs


def sweep_group_name(task: str, jobs: Sequence[Job] | None = None) -> str:
    """The group name of a sweep nobody named: ``TASK-sweep-DATE-TIME``; for a sweep whose jobs
    are deduplicated (``jobs`` given), ``TASK-sweep-HASH`` from their keys instead, the same
    each time the same sweep is submitted (so that its jobs are found in the group they joined)."""
    if jobs is not None:
        keys = "\n".join(sorted(job.key(dedupe=True) or "" for job in jobs))
        return f"{task}-sweep-{hashlib.sha256(keys.encode()).hexdigest()[:12]}"
    return f"{task}-sweep-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"


def new_task_notices(created: Iterable[Mapping[str, Any]]) -> list[str]:
    """What to tell a user about tasks a submission created: a typo is the usual cause."""
    out = []
    for t in created:
        gpus = t.get("required_accelerators", 0)
        line = f"new task {t['name']!r}: {t.get('required_cpu', 1)} CPU, {gpus} GPU{'' if gpus == 1 else 's'}"
        if t.get("did_you_mean"):
            line += f" (did you mean {t['did_you_mean']!r}?)"
        out.append(line)
    return out


def warn_new_tasks(created: Iterable[Mapping[str, Any]]) -> None:
    """Print :func:`new_task_notices` on stderr."""
    import sys

    for line in new_task_notices(created):
        print(f"whatsnext: {line}", file=sys.stderr)


class Keep(enum.Enum):
    """An argument left out where None means something (a quota of None is removed)."""

    KEEP = "keep"


KEEP = Keep.KEEP


async def update_project(http: Http, project: str | int, **changes: Any) -> dict[str, Any]:
    """Change a project (name or id): ``changes`` as the server takes them (``PATCH
    /projects/{project}``: a quota of None is removed). The project as the server answers."""
    if not changes:
        raise ValueError("nothing to change")
    return dict(await http.patch(project_path(project), changes))


class AsyncProject(AsyncGroups):
    """Async handle on a project: ``await project.append_queue(job)``."""

    def __init__(self, http: Http, data: Mapping[str, Any]) -> None:
        self._http = http
        self._data: dict[str, Any] = {}
        self._update(data)

    def _update(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)
        self.id: int = data["id"]
        self.name: str = data["name"]
        self.description: str = data.get("description", "")
        self.status: str = data.get("status", "ACTIVE")
        self.created_at: datetime | None = _ts(data.get("created_at"))
        self.last_updated: datetime | None = _ts(data.get("updated_at"))
        self.job_counts: dict[str, int] = dict(data.get("jobs") or {})
        self.share: float = data.get("share", 1.0)
        self.max_gpus: int | None = data.get("max_gpus")
        self.max_cpus: int | None = data.get("max_cpus")
        self.max_running: int | None = data.get("max_running")
        self.strict_parameters: bool = data.get("strict_parameters", False)

    def __repr__(self) -> str:
        return f"Project(id={self.id}, name={self.name!r}, status={self.status})"

    @property
    def _path(self) -> str:
        return project_path(self.id)

    async def refresh(self) -> AsyncProject:
        self._update(await self._http.get(self._path))
        return self

    async def _patch(self, **fields: Any) -> AsyncProject:
        self._update(await self._http.patch(self._path, fields))
        return self

    async def update(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        status: str | None = None,
        strict_tasks: bool | None = None,
        share: float | None = None,
        max_gpus: int | Keep | None = KEEP,
        max_cpus: int | Keep | None = KEEP,
        max_running: int | Keep | None = KEEP,
        strict_parameters: bool | None = None,
    ) -> AsyncProject:
        """Change what is given, in one request: ``await project.update(share=2, max_gpus=8)``.
        A quota (``max_gpus``, ``max_cpus``, ``max_running``) given as None is removed; left out,
        it stays. ``share`` and the quotas need a token that covers every project."""
        given: dict[str, Any] = {
            "name": name,
            "description": description,
            "status": None if status is None else status.upper(),
            "strict_tasks": strict_tasks,
            "strict_parameters": strict_parameters,
            "share": share,
        }
        changes = {k: v for k, v in given.items() if v is not None}
        quotas = {"max_gpus": max_gpus, "max_cpus": max_cpus, "max_running": max_running}
        changes |= {k: v for k, v in quotas.items() if v is not KEEP}
        self._update(await update_project(self._http, self.id, **changes))
        return self

    async def set_name(self, name: str) -> AsyncProject:
        return await self._patch(name=name)

    async def set_description(self, description: str) -> AsyncProject:
        return await self._patch(description=description)

    async def set_status(self, status: str) -> AsyncProject:
        return await self._patch(status=status.upper())

    async def archive(self) -> AsyncProject:
        return await self.set_status("ARCHIVED")

    async def delete(self) -> None:
        await self._http.delete(self._path)

    # seed-compatible getters: each one asks the server
    async def get_name(self) -> str:
        return (await self.refresh()).name

    async def get_description(self) -> str:
        return (await self.refresh()).description

    async def get_status(self) -> str:
        return (await self.refresh()).status

    async def get_created_at(self) -> datetime | None:
        return (await self.refresh()).created_at

    async def get_last_updated(self) -> datetime | None:
        return (await self.refresh()).last_updated

    # ------------------------------------------------------------ tasks

    async def create_task(
        self,
        name: str,
        *,
        required_cpu: int = 1,
        required_accelerators: int = 0,
        required_tags: Iterable[str] = (),
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_lost: int = DEFAULT_MAX_LOST,
        max_preempted: int = DEFAULT_MAX_PREEMPTED,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        command: str | None = None,
        shell: bool = False,
        defaults: Mapping[str, Any] | None = None,
        inputs: Iterable[str] = (),
        outputs: Iterable[str] = (),
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        exist_ok: bool = False,
    ) -> dict[str, Any]:
        """Create a task; ``command`` is the template its jobs run (``"python train.py --lr {lr}"``).
        ``concurrency_key`` with ``concurrency_limit``: at most that many of the project's jobs with
        the key run at once (its jobs' default). ``max_preempted``: how often a job may be handed
        back by a preemption without using an attempt before it fails. ``exist_ok=True``: a task of
        that name may exist already; it is returned as it is (with ``existed`` and ``differs``), and
        a :class:`TaskSettingsWarning` names each setting asked here (one not left at its default)
        that it has another value of (:meth:`update_task` changes them)."""
        settings: dict[str, Any] = {
            "required_cpu": required_cpu,
            "required_accelerators": required_accelerators,
            "required_tags": list(required_tags),
            "max_attempts": max_attempts,
            "max_lost": max_lost,
            "max_preempted": max_preempted,
            "retry_delay": retry_delay,
            "timeout": timeout,
            "command": command,
            "shell": shell,
            "defaults": dict(defaults or {}),
            "inputs": list(inputs),
            "outputs": list(outputs),
        }
        if concurrency_key is not None or concurrency_limit is not None:
            settings |= {"concurrency_key": concurrency_key, "concurrency_limit": concurrency_limit}
        body = {"name": name, "project_id": self.id, **asked_settings(settings)}
        if exist_ok:
            body["exist_ok"] = True
        task = dict(await self._http.post("/tasks/", body))
        if task.get("differs"):
            how = f"project.update_task({name!r}, ...) or `whatsnext tasks update {name}`"
            warnings.warn(differs_message(name, task["differs"], how), TaskSettingsWarning, stacklevel=2)
        return task

    async def get_task(self, name: str | int) -> dict[str, Any]:
        """A task (by name or id) at its current version."""
        return dict(await self._http.get(task_path(self.id, name)))

    async def update_task(self, name: str | int, **changes: Any) -> dict[str, Any]:
        """Change a task (by name or id) for the jobs submitted from now on, in one request:
        ``await project.update_task("train", command="python train.py --lr {lr}", required_cpu=2)``.
        ``changes``: any setting of :meth:`create_task` (``command``, ``timeout`` and the
        concurrency pair may be None: removed; ``defaults`` replaces them all). Jobs already
        submitted keep the version they were submitted with. The task as the server answers, with
        its ``version`` (the same one when nothing changed)."""
        return dict(await self._http.patch(task_path(self.id, name), task_changes(changes)))

    async def task_versions(self, name: str | int) -> list[dict[str, Any]]:
        """A task's versions, oldest first: ``version``, ``command``, ``defaults``, ``shell``,
        ``settings`` (the others), ``actor`` and ``created_at`` of each."""
        return list((await self._http.get(task_path(self.id, name) + "/versions"))["versions"])

    async def list_tasks(self) -> list[dict[str, Any]]:
        return list((await self._http.get(f"{self._path}/tasks"))["tasks"])

    # ------------------------------------------------------------ queue

    async def append_queue(self, job: Job, *, dedupe: bool = False) -> Job:
        """Queue one job; sets ``job.id``. A job whose ``unique_key`` the project has already
        is that job: ``job.existing`` is then True and nothing is created. ``dedupe``: the key
        comes from the task and parameters (unless the job has one)."""
        data = await submit_job(self._http, self.id, job, dedupe=dedupe)
        warn_new_tasks(data.get("created_tasks") or ())
        return job

    async def extend_queue(
        self, jobs: Iterable[Job], group: str | None = None, *, dedupe: bool = False
    ) -> list[Job]:
        """Queue many jobs in one request (one transaction); sets each ``job.id``. ``group``
        names the batch: follow, cancel and retry it as one (``whatsnext groups show NAME``).
        ``dedupe``: each job's unique key comes from its task and parameters (unless it has one),
        so that submitting the same jobs again creates none (``job.existing`` says which were
        there)."""
        batch = list(jobs)
        if not batch:
            return []
        out = await submit_jobs(self._http, self.id, batch, group, dedupe=dedupe)
        warn_new_tasks(out.get("created_tasks") or ())
        for job in batch:
            job.project = self.name
        return batch

    async def sweep(
        self,
        task: str,
        grid: Mapping[str, Sequence[Any]],
        group: str | None = None,
        *,
        dedupe: bool = False,
        **kwargs: Any,
    ) -> list[Job]:
        """Queue the cartesian product of ``grid`` as jobs of ``task`` in one request, as one
        group (``group``: its name; default ``TASK-sweep-<date-time>``), to follow, cancel and
        retry as one. ``dedupe``: keys from task and parameters (see :meth:`extend_queue`); the
        default group name is then ``TASK-sweep-<hash of the keys>``, the same each time."""
        jobs = sweep_jobs(task, grid, **kwargs)
        name = group or sweep_group_name(task, jobs if dedupe else None)
        return await self.extend_queue(jobs, group=name, dedupe=dedupe)

    async def get_queue(self, limit: int = 1000) -> list[Job]:
        """Pending jobs in the order they will be handed out."""
        data = await self._http.get(f"{self._path}/queue", limit=limit)
        return [Job.from_server(self._http, j) for j in data["jobs"]]

    async def pop_queue(self, idx: int = 0) -> Job:
        """Remove the pending job at position ``idx`` of the queue and return it."""
        queue = await self.get_queue(limit=max(idx + 1, 1) if idx >= 0 else 10_000)
        try:
            job = queue[idx]
        except IndexError:
            raise NotFound(
                f"the queue of {self.name!r} has no position {idx} ({len(queue)} pending)"
            ) from None
        await self.remove_queue(job)
        return job

    async def remove_queue(self, job: Job | int) -> None:
        job_id = job if isinstance(job, int) else job.id
        await self._http.delete(f"{self._path}/jobs/{job_id}")
        if isinstance(job, Job):
            job.status = "DELETED"

    async def clear_queue(self) -> int:
        """Cancel every pending job; returns how many."""
        return int((await self._http.delete(f"{self._path}/queue"))["deleted"])

    async def list_jobs(
        self,
        status: str | Iterable[str] | None = None,
        task: str | None = None,
        limit: int = 100,
        before: int | None = None,
        *,
        group: str | None = None,
        name: str | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Job]:
        """Jobs newest first; ``status`` one or several, ``name`` a pattern (``*``), ``where``
        parameters the jobs must have (``{"lr": 0.1}``)."""
        import json

        statuses = status if status is None or isinstance(status, str) else ",".join(status)
        data = await self._http.get(
            f"{self._path}/jobs",
            status=statuses,
            task=task,
            limit=limit,
            before=before,
            group=group,
            name=name,
            where=json.dumps(dict(where)) if where else None,
        )
        return [Job.from_server(self._http, j) for j in data["jobs"]]

    async def find_artifacts(
        self, uri: str, direction: str = "out", limit: int = 100
    ) -> list[dict[str, Any]]:
        """The jobs that wrote (``direction="in"``: read) ``uri``, newest first."""
        from .joblogs import find_artifacts

        return await find_artifacts(self._http, self.id, uri, direction=direction, limit=limit)

    async def graph(self) -> dict[str, Any]:
        return dict(await self._http.get(f"{self._path}/graph"))

    async def wait(
        self,
        jobs: Iterable[Job | int] | None = None,
        *,
        group: str | int | None = None,
        timeout: float | None = None,
    ) -> Progress:
        """Wait until the ``jobs`` (or every job of ``group``) have ended: COMPLETED, FAILED,
        CANCELLED or BLOCKED; ``TimeoutError`` after ``timeout`` s. The answer's ``completed``
        says whether all completed, ``counts`` how many ended how, ``missing`` the ids with no
        job: ``(await project.wait(group="hp1")).completed``."""
        from .bulk import wait

        ids = None if jobs is None else [j if isinstance(j, int) else _queued_id(j) for j in jobs]
        return await wait(self._http, ids, project=self.id, group=group, timeout=timeout)


class Project(Groups):
    """A project, synchronous API (as in ``server.get_project("my-project")``)."""

    def __init__(self, inner: AsyncProject) -> None:
        self._async = inner

    def __repr__(self) -> str:
        return repr(self._async)

    def __getattr__(self, name: str) -> Any:
        # plain attributes (id, name, status, created_at, ...) read from the last server answer
        return getattr(self._async, name)

    @property
    def aio(self) -> AsyncProject:
        """The async API of this project."""
        return self._async

    def _run(self, coro: Any) -> Any:
        return run_sync(coro)

    def refresh(self) -> Project:
        self._run(self._async.refresh())
        return self

    def update(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        status: str | None = None,
        strict_tasks: bool | None = None,
        share: float | None = None,
        max_gpus: int | Keep | None = KEEP,
        max_cpus: int | Keep | None = KEEP,
        max_running: int | Keep | None = KEEP,
        strict_parameters: bool | None = None,
    ) -> Project:
        """Change what is given, in one request: ``project.update(share=2, max_gpus=8)``; a quota
        given as None is removed (see :meth:`AsyncProject.update`)."""
        self._run(
            self._async.update(
                name=name,
                description=description,
                status=status,
                strict_tasks=strict_tasks,
                share=share,
                max_gpus=max_gpus,
                max_cpus=max_cpus,
                max_running=max_running,
                strict_parameters=strict_parameters,
            )
        )
        return self

    def set_name(self, name: str) -> Project:
        self._run(self._async.set_name(name))
        return self

    def set_description(self, description: str) -> Project:
        self._run(self._async.set_description(description))
        return self

    def set_status(self, status: str) -> Project:
        self._run(self._async.set_status(status))
        return self

    def archive(self) -> Project:
        self._run(self._async.archive())
        return self

    def delete(self) -> None:
        self._run(self._async.delete())

    def get_name(self) -> str:
        return self._run(self._async.get_name())

    def get_description(self) -> str:
        return self._run(self._async.get_description())

    def get_status(self) -> str:
        return self._run(self._async.get_status())

    def get_created_at(self) -> datetime | None:
        return self._run(self._async.get_created_at())

    def get_last_updated(self) -> datetime | None:
        return self._run(self._async.get_last_updated())

    def create_task(self, name: str, **kwargs: Any) -> dict[str, Any]:
        return self._run(self._async.create_task(name, **kwargs))

    def get_task(self, name: str | int) -> dict[str, Any]:
        return self._run(self._async.get_task(name))

    def update_task(self, name: str | int, **changes: Any) -> dict[str, Any]:
        """Change a task for the jobs submitted from now on (see :meth:`AsyncProject.update_task`)."""
        return self._run(self._async.update_task(name, **changes))

    def task_versions(self, name: str | int) -> list[dict[str, Any]]:
        return self._run(self._async.task_versions(name))

    def list_tasks(self) -> list[dict[str, Any]]:
        return self._run(self._async.list_tasks())

    def append_queue(self, job: Job, *, dedupe: bool = False) -> Job:
        return self._run(self._async.append_queue(job, dedupe=dedupe))

    def extend_queue(
        self, jobs: Iterable[Job], group: str | None = None, *, dedupe: bool = False
    ) -> list[Job]:
        return self._run(self._async.extend_queue(jobs, group, dedupe=dedupe))

    def sweep(
        self,
        task: str,
        grid: Mapping[str, Sequence[Any]],
        group: str | None = None,
        *,
        dedupe: bool = False,
        **kwargs: Any,
    ) -> list[Job]:
        return self._run(self._async.sweep(task, grid, group, dedupe=dedupe, **kwargs))

    def get_queue(self, limit: int = 1000) -> list[Job]:
        return self._run(self._async.get_queue(limit))

    def pop_queue(self, idx: int = 0) -> Job:
        return self._run(self._async.pop_queue(idx))

    def remove_queue(self, job: Job | int) -> None:
        self._run(self._async.remove_queue(job))

    def clear_queue(self) -> int:
        return self._run(self._async.clear_queue())

    def list_jobs(
        self,
        status: str | Iterable[str] | None = None,
        task: str | None = None,
        limit: int = 100,
        before: int | None = None,
        **filters: Any,
    ) -> list[Job]:
        return self._run(self._async.list_jobs(status, task, limit, before, **filters))

    def find_artifacts(self, uri: str, direction: str = "out", limit: int = 100) -> list[dict[str, Any]]:
        return self._run(self._async.find_artifacts(uri, direction, limit))

    def graph(self) -> dict[str, Any]:
        return self._run(self._async.graph())

    def wait(
        self,
        jobs: Iterable[Job | int] | None = None,
        *,
        group: str | int | None = None,
        timeout: float | None = None,
    ) -> Progress:
        return self._run(self._async.wait(jobs, group=group, timeout=timeout))


def _queued_id(job: Job) -> int:
    """The id of a job that was queued (a ``WhatsNextError`` for one that was not)."""
    job._require()
    return int(job.id or 0)


def _ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
