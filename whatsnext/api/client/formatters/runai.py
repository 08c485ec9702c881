"""Run jobs as RUN:AI training workloads through the ``runai`` command-line tool.

Both generations of the CLI are supported:

* ``cli_version=1``: ``runai submit --name NAME -p PROJECT -i IMAGE ... --command -- CMD ARGS``,
  status from ``runai describe job NAME -p PROJECT -o json``, ``runai logs``, ``runai delete job``;
* ``cli_version=2``: ``runai training submit NAME -p PROJECT -i IMAGE ... --command -- CMD ARGS``,
  status from ``runai training describe NAME -p PROJECT -o json``, ``runai training logs``,
  ``runai training delete``.

For clusters without the CLI, :meth:`RUNAIFormatter.render_k8s_manifest` renders the same job as
a plain Kubernetes ``batch/v1`` Job handed to the RUN:AI scheduler.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .base import FormatError, JobSpec, Outcome, RunContext
from .external import (
    MAX_POLL_ERRORS,
    ExternalFormatter,
    PollInterval,
    cancel_on_teardown,
    handle_id,
    job_environment,
    report_external,
    run_command,
    tail_text,
)

log = logging.getLogger(__name__)

#: RUN:AI workload states (CLI v1 prints them upper-case, v2 capitalised), lower-cased.
COMPLETED_STATES = frozenset({"succeeded", "completed", "complete", "success"})
FAILED_STATES = frozenset({"failed", "error", "crashloopbackoff", "imagepullbackoff", "errimagepull"})
CANCELLED_STATES = frozenset({"deleted", "stopped"})
#: States in which the workload's container runs (the timeout clock starts at the first one).
RUNNING_STATES = frozenset({"running", "degraded"})
#: The scheduler took the workload's resources back (a higher-priority or in-quota workload):
#: the attempt goes back to the WhatsNext queue without using an attempt. So does a workload
#: that waits again (``Pending``) after it ran: RUN:AI requeued it after a preemption.
PREEMPTED_STATES = frozenset({"preempted", "evicted"})
#: The workload reached its time limit (``activeDeadlineSeconds``): a failure as a timeout.
TIMED_OUT_STATES = frozenset({"timedout", "deadlineexceeded"})
#: Reasons (``reason`` fields of the workload, its pods and conditions) that say the same of a
#: failed workload, lower-cased.
PREEMPTED_REASONS = frozenset({"preempted", "preemption", "evicted", "preempting"})
TIMED_OUT_REASONS = frozenset({"deadlineexceeded", "timedout"})

_STATUS_KEYS = ("status", "phase", "state", "actualPhase", "jobStatus")
_EXIT_KEYS = ("exitCode", "exit_code", "ExitCode")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NOT_FOUND = re.compile(r"not found|does not exist|doesn't exist|no such|no workload", re.IGNORECASE)


def _bfs(data: Any, keys: Sequence[str], want: type | tuple[type, ...]) -> Any:
    """The first value of one of ``keys`` found breadth-first in nested JSON (shallowest wins)."""
    queue: list[Any] = [data]
    while queue:
        nxt: list[Any] = []
        for node in queue:
            if isinstance(node, dict):
                for key in keys:
                    value = node.get(key)
                    if isinstance(value, want) and not isinstance(value, bool):
                        return value
                nxt.extend(v for v in node.values() if isinstance(v, (dict, list)))
            elif isinstance(node, list):
                nxt.extend(v for v in node if isinstance(v, (dict, list)))
        queue = nxt
    return None


def parse_describe(text: str) -> tuple[str | None, int | None]:
    """The workload's status and (if reported) its container's exit code, from ``describe -o json``.

    The status is the shallowest ``status``/``phase``/``state`` string in the document, so the
    workload's own status wins over its pods'. Raises ``ValueError`` when there is no JSON.
    """
    start = text.find("{")
    if start < 0:
        raise ValueError(f"no JSON in describe output: {text.strip()[:200]!r}")
    data, _ = json.JSONDecoder().raw_decode(text[start:])
    status = _bfs(data, _STATUS_KEYS, str)
    code = _bfs(data, _EXIT_KEYS, int)
    return status, code


def parse_reasons(text: str) -> set[str]:
    """Every ``reason`` in a ``describe -o json`` document (the workload's, its pods' and their
    conditions'), lower-cased; empty when there is none or no JSON."""
    start = text.find("{")
    if start < 0:
        return set()
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return set()
    found: set[str] = set()
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("reason", "statusReason") and isinstance(value, str):
                    found.add(value.strip().lower())
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return found


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --------------------------------------------------------------------------------------------
# A small YAML writer (block style, every string double-quoted): enough for manifests, no PyYAML.
# --------------------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _yaml_key(key: Any) -> str:
    text = str(key)
    reserved = text.lower() in ("true", "false", "yes", "no", "on", "off", "null", "~")
    return text if _PLAIN_KEY.match(text) and not reserved else json.dumps(text)


def to_yaml(data: Any, indent: int = 0) -> str:
    """Render JSON-like data as block-style YAML."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(data, dict):
        if not data:
            return pad + "{}\n"
        for key, value in data.items():
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{pad}{_yaml_key(key)}:\n" + to_yaml(value, indent + 2))
            elif isinstance(value, (dict, list)):
                lines.append(f"{pad}{_yaml_key(key)}: {'{}' if isinstance(value, dict) else '[]'}\n")
            else:
                lines.append(f"{pad}{_yaml_key(key)}: {_yaml_scalar(value)}\n")
        return "".join(lines)
    if isinstance(data, list):
        if not data:
            return pad + "[]\n"
        for item in data:
            if isinstance(item, (dict, list)) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}- " + body[indent + 2 :])
            elif isinstance(item, (dict, list)):
                lines.append(f"{pad}- {'{}' if isinstance(item, dict) else '[]'}\n")
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}\n")
        return "".join(lines)
    return pad + _yaml_scalar(data) + "\n"


# --------------------------------------------------------------------------------------------
# The formatter
# --------------------------------------------------------------------------------------------


class RUNAIFormatter(ExternalFormatter):
    """Submit each job as a RUN:AI training workload and follow it until it ends.

    The command inside the container is built by the same engine as :class:`CLIFormatter`
    (:class:`~whatsnext.api.client.template.CommandTemplate`), from ``script``
    (``<executable> <script> --key value ...``) or a ``command`` template, and is passed to the
    container as an argument vector (no shell; ``shell=True`` runs the template with
    ``/bin/sh -c``, values shell-quoted).

    Each submission is reported to ``ctx.on_external`` as ``"runai:<name>"``;
    :meth:`cancel_external` deletes such a workload.
    """

    def __init__(
        self,
        project: str,
        image: str,
        cli_version: Literal[1, 2] = 2,
        script: str | None = None,
        executable: str = "python",
        command: str | None = None,
        *,
        shell: bool = False,
        gpu: float | None = None,
        cpu: float | None = None,
        memory: str | None = None,
        environment: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        runai_bin: str = "runai",
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        namespace: str | None = None,
        delete_finished: bool = False,
    ) -> None:
        if cli_version not in (1, 2):
            raise ValueError(f"cli_version must be 1 or 2, not {cli_version!r}")
        self.set_job_command(script, executable, command, shell)
        self.set_poll_intervals(poll_interval, max_poll_interval)
        if isinstance(extra_args, str):
            extra_args = shlex.split(extra_args)
        self.project = project
        self.image = image
        self.cli_version = cli_version
        self.gpu = gpu
        self.cpu = cpu
        self.memory = memory
        self.environment = dict(environment or {})
        self.extra_args = tuple(extra_args)
        self.runai_bin = runai_bin
        self.namespace = namespace
        self.delete_finished = delete_finished

    # -- rendering ----------------------------------------------------------------------------

    def format(self, task: str, parameters: dict[str, Any]) -> str:
        """The command run inside the container, as one shell-quoted line."""
        try:
            return self.command_template.shell_line(parameters)
        except FormatError as exc:
            raise FormatError(f"task {task!r}: {exc}") from None

    def container_argv(self, job: JobSpec) -> list[str]:
        """The container's argument vector (the same argv the CLI formatter would run)."""
        try:
            argv = self.command_template.argv(job.parameters, job.upstream)
        except FormatError as exc:
            raise FormatError(f"task {job.task!r}: {exc}") from None
        if not argv:
            raise FormatError(f"task {job.task!r}: the command is empty")
        return argv

    @staticmethod
    def job_name(job: JobSpec) -> str:
        """``wn-<id>-<attempt>``: a valid RFC 1123 label (lower-case, digits and '-')."""
        name = re.sub(r"[^a-z0-9-]+", "-", f"wn-{job.id}-{job.attempt}".lower()).strip("-")
        return name[:63].rstrip("-")

    def gpus(self, job: JobSpec) -> float:
        return float(self.gpu) if self.gpu is not None else float(max(0, job.required_accelerators))

    def cpus(self, job: JobSpec) -> float:
        return float(self.cpu) if self.cpu is not None else float(max(1, job.required_cpu))

    def container_env(self, job: JobSpec, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Configured ``environment`` first, then WHATSNEXT_* and the worker's ``ctx.env``."""
        result = dict(self.environment)
        result.update(job_environment(job, env))
        return result

    def render_submit(self, job: JobSpec, env: Mapping[str, str] | None = None) -> list[str]:
        """The ``runai`` argument vector that submits ``job``."""
        argv = self.container_argv(job)
        name = self.job_name(job)
        gpus = self.gpus(job)
        cpus = self.cpus(job)
        out: list[str]
        if self.cli_version == 1:
            out = [self.runai_bin, "submit", "--name", name, "-p", self.project, "-i", self.image]
            if gpus > 0:
                out += ["-g", _number(gpus)]
            out += ["--cpu", _number(cpus)]
            if self.memory:
                out += ["--memory", self.memory]
        else:
            out = [self.runai_bin, "training", "submit", name, "-p", self.project, "-i", self.image]
            if gpus >= 1:
                out += ["--gpu-devices-request", str(math.ceil(gpus))]
            elif gpus > 0:  # a fraction of one GPU
                out += ["--gpu-portion-request", _number(gpus)]
            out += ["--cpu-core-request", _number(cpus)]
            if self.memory:
                out += ["--cpu-memory-request", self.memory]
        for key, value in self.container_env(job, env).items():
            out += ["-e", f"{key}={value}"]
        out += ["--backoff-limit", "0"]
        out += list(self.extra_args)
        out += ["--command", "--", *argv]
        return out

    def _cli(self, verb: str, name: str) -> list[str]:
        if self.cli_version == 1:
            base = {"describe": ["describe", "job"], "logs": ["logs"], "delete": ["delete", "job"]}[verb]
        else:
            base = ["training", verb]
        argv = [self.runai_bin, *base, name, "-p", self.project]
        if verb == "describe":
            argv += ["-o", "json"]
        return argv

    def describe_argv(self, name: str) -> list[str]:
        return self._cli("describe", name)

    def logs_argv(self, name: str) -> list[str]:
        return self._cli("logs", name)

    def delete_argv(self, name: str) -> list[str]:
        return self._cli("delete", name)

    def render_k8s_manifest(self, job: JobSpec, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The job as a Kubernetes ``batch/v1`` Job scheduled by RUN:AI (``kubectl apply -f``)."""
        argv = self.container_argv(job)
        name = self.job_name(job)
        gpus = self.gpus(job)
        cpu = _number(self.cpus(job))
        labels = {
            "app.kubernetes.io/managed-by": "whatsnext",
            "whatsnext/job-id": str(job.id),
            "whatsnext/attempt": str(job.attempt),
            "project": self.project,
        }
        requests: dict[str, Any] = {"cpu": cpu}
        limits: dict[str, Any] = {"cpu": cpu}
        if self.memory:
            requests["memory"] = self.memory
            limits["memory"] = self.memory
        annotations: dict[str, str] = {}
        if gpus >= 1:
            limits["nvidia.com/gpu"] = math.ceil(gpus)
        elif gpus > 0:
            annotations["gpu-fraction"] = _number(gpus)
        container = {
            "name": "main",
            "image": self.image,
            "command": argv[:1],
            "args": argv[1:],
            "env": [{"name": k, "value": v} for k, v in self.container_env(job, env).items()],
            "resources": {"requests": requests, "limits": limits},
        }
        pod_meta: dict[str, Any] = {"labels": dict(labels)}
        if annotations:
            pod_meta["annotations"] = annotations
        spec: dict[str, Any] = {
            "backoffLimit": 0,
            "template": {
                "metadata": pod_meta,
                "spec": {
                    "schedulerName": "runai-scheduler",
                    "restartPolicy": "Never",
                    "containers": [container],
                },
            },
        }
        if job.timeout is not None and job.timeout > 0:
            spec["activeDeadlineSeconds"] = math.ceil(job.timeout)
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": self.namespace or f"runai-{self.project}",
                "labels": labels,
            },
            "spec": spec,
        }

    def render_k8s_yaml(self, job: JobSpec, env: Mapping[str, str] | None = None) -> str:
        """:meth:`render_k8s_manifest` as YAML."""
        return to_yaml(self.render_k8s_manifest(job, env))

    # -- running ------------------------------------------------------------------------------

    async def run(self, job: JobSpec, ctx: RunContext) -> Outcome:
        started = time.monotonic()
        try:
            submit = self.render_submit(job, ctx.env)
        except FormatError as exc:  # another attempt would fail the same way
            return Outcome(status="FAILED", error=str(exc), duration=0.0, retryable=False)
        name = self.job_name(job)
        rc, out, err = await run_command(submit, cwd=ctx.cwd)
        if rc != 0:
            message = err.strip() or out.strip() or f"exit code {rc}"
            return Outcome(
                status="FAILED", error=f"runai submit failed: {message}", duration=time.monotonic() - started
            )
        log.info("job %s submitted to RUN:AI as %s (project %s)", job.id, name, self.project)
        report_external(ctx, f"runai:{name}")
        if ctx.on_output is not None:
            ctx.on_output(f"[whatsnext] submitted to RUN:AI as {name} in project {self.project}")
        try:
            return await self._follow(name, ctx, started)
        except BaseException:
            await cancel_on_teardown(self.delete_argv(name), limit=60)
            raise

    async def cancel_external(self, handle: str) -> None:
        """Delete the workload behind ``"runai:<name>"`` (gone already is fine); other handles are
        not ours and are left alone."""
        name = handle_id(handle, "runai", _LABEL)
        if name is None:
            return
        rc, out, err = await run_command(self.delete_argv(name), limit=120)
        if rc != 0 and not _NOT_FOUND.search(err + out):
            log.warning("runai delete %s exited %d: %s", name, rc, (err or out).strip())

    async def _follow(self, name: str, ctx: RunContext, started: float) -> Outcome:
        interval = PollInterval(self)
        run_deadline: float | None = None
        last_status: str | None = None
        ran = False
        errors = 0
        cancel_wait = asyncio.ensure_future(ctx.cancel.wait())
        try:
            while True:
                now = time.monotonic()
                limits = [interval.current]
                if run_deadline is not None:
                    limits.append(run_deadline - now)
                if not ctx.cancel.is_set():
                    await asyncio.wait([cancel_wait], timeout=max(0.0, min(limits)))
                if ctx.cancel.is_set():
                    return await self._stop(name, ctx, "CANCELLED", ctx.cancel_reason, started)
                if run_deadline is not None and time.monotonic() >= run_deadline:
                    return await self._stop(name, ctx, "FAILED", "timeout", started)

                rc, out, err = await run_command(self.describe_argv(name))
                if rc != 0:
                    if _NOT_FOUND.search(err + out):
                        return await self._finish(
                            name,
                            ctx,
                            started,
                            "CANCELLED",
                            error="workload deleted in RUN:AI",
                            fetch_logs=False,
                        )
                    errors += 1
                    log.warning("runai describe %s exited %d: %s", name, rc, (err or out).strip())
                else:
                    try:
                        status, code = parse_describe(out)
                        errors = 0
                    except ValueError as exc:
                        status, code = None, None
                        errors += 1
                        log.warning("runai describe %s: %s", name, exc)
                    if status is not None:
                        key = status.strip().lower()
                        ran = ran or key in RUNNING_STATES
                        if key in PREEMPTED_STATES or (ran and key == "pending"):
                            return await self._hand_back(name, ctx, started, status)
                        if key in TIMED_OUT_STATES:
                            return await self._finish(name, ctx, started, "FAILED", error="timeout")
                        if key in COMPLETED_STATES:
                            return await self._finish(name, ctx, started, "COMPLETED", exit_code=0)
                        if key in FAILED_STATES:
                            reasons = parse_reasons(out)
                            if reasons & PREEMPTED_REASONS:
                                return await self._hand_back(name, ctx, started, status)
                            if reasons & TIMED_OUT_REASONS:
                                return await self._finish(
                                    name, ctx, started, "FAILED", exit_code=code, error="timeout"
                                )
                            error = f"exit code {code}" if code is not None else f"workload {status}"
                            return await self._finish(
                                name, ctx, started, "FAILED", exit_code=code, error=error
                            )
                        if key in CANCELLED_STATES:
                            return await self._finish(
                                name, ctx, started, "CANCELLED", error=f"workload {status} in RUN:AI"
                            )
                        if key in RUNNING_STATES and run_deadline is None and ctx.timeout is not None:
                            run_deadline = time.monotonic() + ctx.timeout
                        if status != last_status:
                            last_status = status
                            interval.changed()
                            continue
                if errors >= MAX_POLL_ERRORS:
                    return await self._finish(
                        name,
                        ctx,
                        started,
                        "FAILED",
                        error=f"cannot query RUN:AI about {name}: {(err or out).strip()[:500]}",
                    )
                interval.unchanged()
        finally:
            cancel_wait.cancel()

    async def _logs(self, name: str, ctx: RunContext) -> str:
        rc, out, err = await run_command(self.logs_argv(name), limit=300)
        if rc != 0:
            log.warning("runai logs %s exited %d: %s", name, rc, err.strip())
            return tail_text(out, ctx.tail_bytes) if out else f"[logs unavailable: {err.strip()[:500]}]\n"
        if ctx.on_output is not None:
            for line in out.splitlines():
                ctx.on_output(line)
        return tail_text(out, ctx.tail_bytes)

    async def _finish(
        self,
        name: str,
        ctx: RunContext,
        started: float,
        status: Literal["COMPLETED", "FAILED", "CANCELLED"],
        *,
        exit_code: int | None = None,
        error: str | None = None,
        fetch_logs: bool = True,
    ) -> Outcome:
        log_tail = await self._logs(name, ctx) if fetch_logs else ""
        if fetch_logs and self.delete_finished:
            rc, _, err = await run_command(self.delete_argv(name), limit=120)
            if rc != 0:
                log.warning("runai delete %s exited %d: %s", name, rc, err.strip())
        return Outcome(
            status=status,
            exit_code=exit_code,
            error=error,
            log_tail=log_tail,
            duration=time.monotonic() - started,
        )

    async def _hand_back(self, name: str, ctx: RunContext, started: float, status: str) -> Outcome:
        """RUN:AI preempted the workload: keep its logs, delete it (RUN:AI would run it again on its
        own) and hand the attempt back to the WhatsNext queue without using an attempt."""
        outcome = await self._stop(name, ctx, "FAILED", f"preempted in RUN:AI (workload {status})", started)
        outcome.requeue = True
        return outcome

    async def _stop(
        self,
        name: str,
        ctx: RunContext,
        status: Literal["FAILED", "CANCELLED"],
        error: str,
        started: float,
    ) -> Outcome:
        """Cancellation or timeout: keep the logs, then delete the workload."""
        log_tail = await self._logs(name, ctx)
        rc, _, err = await run_command(self.delete_argv(name), limit=120)
        if rc != 0 and not _NOT_FOUND.search(err):
            log.warning("runai delete %s exited %d: %s", name, rc, err.strip())
            error = f"{error} (runai delete failed: {err.strip()[:300]})"
        return Outcome(status=status, error=error, log_tail=log_tail, duration=time.monotonic() - started)


__all__ = ["RUNAIFormatter", "parse_describe", "parse_reasons", "to_yaml"]
