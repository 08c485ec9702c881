"""A job: what to run (task + parameters), and, once queued, its state on the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ...models import FINISHED, JOB_SUBMIT_FIELDS
from .errors import WhatsNextError
from .syncio import run_sync

if TYPE_CHECKING:
    from .http import Http

DependsArg = Mapping[Any, Any] | Iterable["Job | int | str"] | None


_OPTIONAL_FIELDS = tuple(
    k for k in JOB_SUBMIT_FIELDS if k not in ("name", "task", "parameters", "priority", "depends")
)
"""What a submission carries only when set."""


class Job:
    """A job to queue, e.g. ``Job(name="process-data", task="data-pipeline", parameters={...})``.

    ``depends`` lists jobs that must complete first: a mapping ``{job_id: job_name}`` (as in the
    original interface), or a list of :class:`Job` objects, job ids, or (inside one
    ``extend_queue`` batch) names of other jobs of the batch.

    ``concurrency_key`` and ``concurrency_limit`` (given together): at most that many jobs with
    the key run at once in the project, e.g. ``concurrency_key="licence-x", concurrency_limit=2``;
    left out, the job takes its task's pair.

    ``max_preempted``: how often the job may go back to the queue because it was preempted (no
    attempt used) before it fails with "preempted N times" (left out: its task's, 10).
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

    def depends_payload(self) -> list[int | str] | None:
        deps = self.depends
        if deps is None:
            return None
        if isinstance(deps, Mapping):
            return [int(k) if isinstance(k, int) or str(k).isdigit() else str(k) for k in deps]
        out: list[int | str] = []
        for d in deps:
            if isinstance(d, Job):
                if d.id is None:
                    out.append(d.name)  # a job of the same batch, by name
                else:
                    out.append(d.id)
            else:
                out.append(d)
        return out

    def to_request(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "task": self.task,
            "parameters": self.parameters,
            "priority": self.priority,
        }
        if self.depends is not None:
            deps = self.depends_payload()
            if deps:
                body["depends"] = deps
        for key in _OPTIONAL_FIELDS:
            value = getattr(self, key)
            if value is not None:
                body[key] = value
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
