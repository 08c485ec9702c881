"""A job: what to run (task + parameters), and, once queued, its state on the server."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...models import CONDITIONS, FINISHED, JOB_SUBMIT_FIELDS
from .errors import WhatsNextError
from .syncio import run_sync

if TYPE_CHECKING:
    from .http import Http

DependsItem = Any
"""One dependency: a :class:`Job`, a job id, a job name (of the same batch), a pair ``(job or id or
name, condition)``, or a mapping ``{"id": 12, "on": "finished"}`` (``"name"`` or ``"group"`` in
place of ``"id"``)."""
DependsArg = Mapping[Any, Any] | Iterable[DependsItem] | None
GroupsArg = str | tuple[str, str] | Mapping[str, str] | Iterable[str | tuple[str, str]] | None
"""Groups to wait for: a name, a pair ``(name, condition)``, or a list of them."""

_OPTIONAL_FIELDS = tuple(
    k
    for k in JOB_SUBMIT_FIELDS
    if k not in ("name", "task", "parameters", "priority", "depends", "unique_key")
)
"""What a submission carries only when set."""
_DEPENDENCY_KEYS = frozenset({"id", "name", "group", "on"})

DEDUPE_PREFIX = "auto:"
"""How the keys :func:`dedupe_key` derives begin."""
RETRY_PREFIX = "retry:"
"""How the keys begin that the SDK gives a submission it may send again (``retry:<id>:<i>``)."""


KEY_ALPHABET = "0123456789abcdfghijklmnopqrstuvw"
"""The 32 symbols of the keys the SDK makes (5 bits each). No "e": a body whose text holds an "e"
and three digits in a row (1e400) takes the server's slower path, which checks every value."""


def key_text(data: bytes, length: int) -> str:
    """``length`` symbols of :data:`KEY_ALPHABET` from the first bits of ``data``."""
    number, bits = int.from_bytes(data, "big"), len(data) * 8
    return "".join(KEY_ALPHABET[(number >> (bits - 5 * (i + 1))) & 31] for i in range(length))


def dedupe_key(task: str, parameters: Mapping[str, Any] | None) -> str:
    """The unique key a job gets from its task and parameters (``dedupe``): ``auto:`` and 32
    symbols (160 bits) of the SHA-256 of the task's name and the parameters as canonical JSON
    (keys sorted, no spaces). The same task with the same parameters gives the same key, from the
    SDK as from the CLI; the job's name, group and the rest do not count."""
    canonical = json.dumps(dict(parameters or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return DEDUPE_PREFIX + key_text(hashlib.sha256(f"{task}\n{canonical}".encode()).digest(), 32)


def condition(on: Any) -> str:
    """A dependency's condition, checked: ``success``, ``finished`` or ``failure``."""
    if on not in CONDITIONS:
        raise ValueError(f"a dependency's condition is one of {', '.join(CONDITIONS)}, got {on!r}")
    return str(on)


def _target(ref: Any) -> int | str:
    """A job a dependency names: its id, or its name (a job of the same batch)."""
    if isinstance(ref, Job):
        return ref.id if ref.id is not None else ref.name
    if isinstance(ref, bool) or not isinstance(ref, (int, str)):
        raise TypeError(f"a dependency is a Job, a job id or a job name, got {ref!r}")
    return ref


def _dependency(item: Any) -> int | str | dict[str, Any]:
    """One dependency as the server takes it: an id or a name (condition success), else an object
    ``{"id" | "name" | "group": ..., "on": condition}``."""
    if isinstance(item, Mapping):
        unknown = set(item) - _DEPENDENCY_KEYS
        kinds = [k for k in ("id", "name", "group") if k in item]
        if unknown or len(kinds) != 1:
            raise ValueError(
                f"a dependency as a mapping has one of 'id', 'name' or 'group', and 'on'; got {dict(item)!r}"
            )
        return {kinds[0]: item[kinds[0]], "on": condition(item.get("on", "success"))}
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValueError(f"a dependency as a pair is (job, condition), got {item!r}")
        ref, on = _target(item[0]), condition(item[1])
        if on == "success":
            return ref
        return {("id" if isinstance(ref, int) else "name"): ref, "on": on}
    return _target(item)


def _is_pair(value: Any) -> bool:
    """``(job, condition)``: a tuple of two whose second is a condition (a tuple of jobs is a list)."""
    return (
        isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str) and value[1] in CONDITIONS
    )


def _groups(groups: GroupsArg) -> list[dict[str, str]]:
    """``depends_group`` as dependency objects ``{"group": name, "on": condition}``."""
    if groups is None:
        return []
    if isinstance(groups, str):
        return [{"group": groups, "on": "success"}]
    if isinstance(groups, Mapping):
        if "group" not in groups:
            raise ValueError(
                f"depends_group takes names, (name, condition) pairs or {{'group', 'on'}}, got {groups!r}"
            )
        return [_dependency(groups)]  # type: ignore[list-item]
    if _is_pair(groups):
        return [{"group": str(groups[0]), "on": str(groups[1])}]  # type: ignore[index]
    out: list[dict[str, str]] = []
    for group in groups:
        if isinstance(group, (str, Mapping)) or _is_pair(group):
            out += _groups(group)
        elif isinstance(group, tuple) and len(group) == 2:
            out += _groups((group[0], condition(group[1])))
        else:
            raise TypeError(f"depends_group takes names or (name, condition) pairs, got {group!r}")
    return out


class Job:
    """A job to queue, e.g. ``Job(name="process-data", task="data-pipeline", parameters={...})``.

    ``depends`` lists jobs that must complete first: a mapping ``{job_id: job_name}`` (as in the
    original interface), or a list of :class:`Job` objects, job ids, or (inside one
    ``extend_queue`` batch) names of other jobs of the batch. An item may carry a condition:
    ``(job, "finished")`` or ``{"id": 12, "on": "finished"}`` waits until the job is finished
    whatever its outcome (COMPLETED, FAILED, CANCELLED or BLOCKED); ``"failure"`` until it FAILED or
    was CANCELLED; ``"success"`` (the default) until it COMPLETED.

    ``depends_group``: wait for every job a group has when this job is submitted (jobs added to the
    group later do not count): ``"hp1"``, ``("hp1", "finished")``, or a list of them.

    ``unique_key``: the project keeps one job per key. Submitted again, the job is not created
    twice: the answer is the job already there (``job.existing`` is True); with other fields, the
    submission is refused (``Conflict`` naming them). ``dedupe=True`` derives the key from the task
    and the parameters (:func:`dedupe_key`).

    ``concurrency_key`` and ``concurrency_limit`` (given together): at most that many jobs with
    the key run at once in the project, e.g. ``concurrency_key="licence-x", concurrency_limit=2``;
    left out, the job takes its task's pair.

    ``max_preempted``: how often the job may go back to the queue because it was preempted (no
    attempt used) before it fails with "preempted N times" (left out: its task's, 10).

    ``not_before`` (an aware ``datetime`` or ISO text with its offset) or ``delay`` (seconds), not
    both: the job is not handed out before then, and its wait counts from then.
    """

    def __init__(
        self,
        name: str,
        task: str,
        parameters: dict[str, Any] | None = None,
        priority: int = 0,
        depends: DependsArg = None,
        *,
        required_cpu: int | None = None,
        required_accelerators: int | None = None,
        required_tags: Iterable[str] | None = None,
        max_attempts: int | None = None,
        max_lost: int | None = None,
        retry_delay: float | None = None,
        timeout: float | None = None,
        inputs: Iterable[str] | None = None,
        outputs: Iterable[str] | None = None,
        group: str | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        max_preempted: int | None = None,
        unique_key: str | None = None,
        dedupe: bool = False,
        depends_group: GroupsArg = None,
        not_before: datetime | str | None = None,
        delay: float | None = None,
    ) -> None:
        self.name = name
        self.task = task
        self.parameters: dict[str, Any] = dict(parameters or {})
        self.priority = priority
        self.depends = depends
        self.required_cpu = required_cpu
        self.required_accelerators = required_accelerators
        self.required_tags = list(required_tags) if required_tags is not None else None
        self.max_attempts = max_attempts
        self.max_lost = max_lost
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.inputs = list(inputs) if inputs is not None else None
        self.outputs = list(outputs) if outputs is not None else None
        self.group = group
        self.concurrency_key = concurrency_key
        self.concurrency_limit = concurrency_limit
        self.max_preempted = max_preempted
        self.unique_key = unique_key
        self.dedupe = dedupe
        self.depends_group = depends_group
        self.not_before = not_before
        """Not started before this time (an aware ``datetime``, or ISO text with its offset)."""
        self.delay = delay
        """Not started before this many seconds after the server queued it."""
        self.existing = False
        """After submission: whether the job was there already (its unique key), nothing created."""
        self.warnings: list[dict[str, Any]] = []
        """After submission: what the server accepted but found suspicious (``{field, message}``)."""
        self.id: int | None = None
        self.status: str | None = None
        self.attempt: int = 0
        self.exit_code: int | None = None
        self.result: Any = None
        self.error: str | None = None
        self.log_tail: str | None = None
        self.project: str | None = None
        self.data: dict[str, Any] = {}
        self._http: Http | None = None

    def __repr__(self) -> str:
        return f"Job(id={self.id}, name={self.name!r}, task={self.task!r}, status={self.status})"

    # ------------------------------------------------------------ wire format

    def depends_payload(self) -> list[int | str | dict[str, Any]] | None:
        """``depends`` and ``depends_group`` as the server takes them: ids and names (a job of the
        same batch, by name, when it has no id yet), and objects for conditions and groups."""
        deps = self.depends
        if deps is None and self.depends_group is None:
            return None  # the common case, kept cheap: a sweep builds thousands of these
        out: list[int | str | dict[str, Any]] = []
        if isinstance(deps, Mapping) and deps and _DEPENDENCY_KEYS.issuperset(deps):
            out.append(_dependency(deps))  # one dependency as a mapping, {"id": 12, "on": ...}
        elif isinstance(deps, Mapping):  # the original {job_id: job_name}
            out += [int(k) if isinstance(k, int) or str(k).isdigit() else str(k) for k in deps]
        elif isinstance(deps, (Job, str, int)) or _is_pair(deps):
            out.append(_dependency(deps))
        elif deps is not None:
            out += [_dependency(d) for d in deps]
        out += _groups(self.depends_group)
        return out if out or deps is not None else None

    def key(self, dedupe: bool = False) -> str | None:
        """The unique key the job is submitted with: its own, else (``dedupe`` here or on the job)
        the one derived from its task and parameters."""
        if self.unique_key is not None:
            return self.unique_key
        if dedupe or self.dedupe:
            return dedupe_key(self.task, self.parameters)
        return None

    def to_request(self, dedupe: bool = False) -> dict[str, Any]:
        """The job as the server takes it; ``dedupe``: with a key from its task and parameters
        when it has none of its own."""
        body: dict[str, Any] = {
            "name": self.name,
            "task": self.task,
            "parameters": self.parameters,
            "priority": self.priority,
        }
        deps = self.depends_payload()
        if deps:
            body["depends"] = deps
        for key in _OPTIONAL_FIELDS:
            value = getattr(self, key)
            if value is not None:
                body[key] = value.isoformat() if isinstance(value, datetime) else value
        unique_key = self.key(dedupe)
        if unique_key is not None:
            body["unique_key"] = unique_key
        return body

    def _bind(self, http: Http, data: Mapping[str, Any] | None = None, job_id: int | None = None) -> Job:
        self._http = http
        if job_id is not None:
            self.id = job_id
            self.status = self.status or "PENDING"
        if data:
            self._update(data)
        return self

    def _update(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self.id = data["id"]
        for key in (
            "name",
            "task",
            "priority",
            "status",
            "attempt",
            "exit_code",
            "result",
            "error",
            "log_tail",
            "project",
            "timeout",
            "max_attempts",
            "max_lost",
            "retry_delay",
            "required_cpu",
            "required_accelerators",
            "inputs",
            "outputs",
            "concurrency_key",
            "concurrency_limit",
            "max_preempted",
        ):
            if key in data:
                setattr(self, key, data[key])
        key = data.get("unique_key")
        if key is not None and not str(key).startswith(RETRY_PREFIX):
            self.unique_key = key  # not the key of a send the SDK may repeat: that was its own
        if "parameters" in data:
            self.parameters = dict(data["parameters"])

    @classmethod
    def from_server(cls, http: Http, data: Mapping[str, Any]) -> Job:
        job = cls(
            name=data["name"],
            task=data.get("task", ""),
            parameters=data.get("parameters"),
            priority=data.get("priority", 0),
        )
        return job._bind(http, data)

    def _require(self) -> Http:
        if self._http is None or self.id is None:
            raise WhatsNextError(f"job {self.name!r} is not queued yet: append it to a project first")
        return self._http

    # ------------------------------------------------------------ async API

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    async def refresh_async(self) -> Job:
        data = await self._require().get(f"/jobs/{self.id}")
        self._update(data)
        return self

    async def wait_async(self, timeout: float | None = None, poll: float = 0.05) -> Job:
        """Wait until the job is COMPLETED, FAILED, CANCELLED or BLOCKED; TimeoutError after ``timeout``."""

        async def loop() -> Job:
            delay = poll
            while True:
                await self.refresh_async()
                if self.finished:
                    return self
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 1.0)

        return await asyncio.wait_for(loop(), timeout)

    async def cancel_async(self) -> str:
        out = await self._require().post(f"/jobs/{self.id}/cancel")
        self.status = out["status"]
        return str(out["status"])

    async def requeue_async(self) -> str:
        """Hand the running job back to the queue: its worker stops it at once, and it goes back to
        PENDING without using an attempt (``Conflict`` unless it is RUNNING)."""
        out = await self._require().post(f"/jobs/{self.id}/requeue")
        self.status = out["status"]
        return str(out["status"])

    async def retry_async(self) -> int:
        out = await self._require().post(f"/jobs/{self.id}/retry")
        await self.refresh_async()
        return int(out["requeued"])

    async def history_async(self) -> list[dict[str, Any]]:
        return list((await self._require().get(f"/jobs/{self.id}/events"))["events"])

    async def dependencies_async(self) -> dict[str, list[dict[str, Any]]]:
        return dict(await self._require().get(f"/jobs/{self.id}/dependencies"))

    async def logs_async(self, tail: int | None = None) -> list[str]:
        """The job's output lines kept on the server (the last ``tail`` only, if given)."""
        from .joblogs import read_logs

        data = await read_logs(self._require(), int(self.id or 0), tail=tail)
        return [line["line"] for line in data["lines"]]

    def follow_logs(self, tail: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """``async for event in job.follow_logs()``: its lines as they come, until it is finished."""
        from .joblogs import follow_logs

        return follow_logs(self._require(), int(self.id or 0), tail=tail)

    async def artifacts_async(self) -> list[dict[str, Any]]:
        """What the job read and wrote, as its worker found them after the job."""
        from .joblogs import job_artifacts

        return await job_artifacts(self._require(), int(self.id or 0))

    # ------------------------------------------------------------ sync API

    def refresh(self) -> Job:
        return run_sync(self.refresh_async())

    def wait(self, timeout: float | None = None) -> Job:
        return run_sync(self.wait_async(timeout))

    def cancel(self) -> str:
        return run_sync(self.cancel_async())

    def retry(self) -> int:
        return run_sync(self.retry_async())

    def requeue(self) -> str:
        return run_sync(self.requeue_async())

    def history(self) -> list[dict[str, Any]]:
        return run_sync(self.history_async())

    def dependencies(self) -> dict[str, list[dict[str, Any]]]:
        return run_sync(self.dependencies_async())

    def logs(self, tail: int | None = None) -> list[str]:
        return run_sync(self.logs_async(tail))

    def artifacts(self) -> list[dict[str, Any]]:
        return run_sync(self.artifacts_async())
