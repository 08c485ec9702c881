"""PythonFormatter: call a Python function in-process with the job's parameters."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
import traceback
from collections.abc import Callable
from typing import Any

import anyio
import orjson

from .base import FormatError, Formatter, JobSpec, Outcome, RunContext


def load_callable(ref: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (or ``"package.module.function"``)."""
    module_name, sep, attr = ref.partition(":")
    if not sep:
        module_name, _, attr = ref.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"expected 'package.module:function', got {ref!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{ref!r} is not callable")
    return obj


def jsonable(value: Any) -> Any:
    """The function's return value as JSON (anything else becomes its repr)."""
    try:
        return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))
    except TypeError:
        return repr(value)


class PythonFormatter(Formatter):
    """Run each job as ``func(**parameters)`` in the worker process.

    Coroutine functions are awaited on the worker's loop; plain functions run in a thread. The return
    value becomes the job's ``result``; an exception fails the job with its traceback.
    """

    def __init__(self, func: Callable[..., Any] | str, *, pass_job: bool = False) -> None:
        self.func = load_callable(func) if isinstance(func, str) else func
        self.name = func if isinstance(func, str) else f"{func.__module__}:{func.__qualname__}"
        self.pass_job = pass_job
        """When True, the function also receives ``job=JobSpec`` (id, attempt, GPU ids, ...)."""
        self._is_async = inspect.iscoroutinefunction(self.func)

    def format(self, task: str, parameters: dict[str, Any]) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in parameters.items())
        return f"{self.name}({args})"

    def execute(self, command: str) -> int:
        raise FormatError("PythonFormatter runs functions, not command lines; use the worker")

    async def run(self, job: JobSpec, ctx: RunContext) -> Outcome:
        kwargs = dict(job.parameters)
        if self.pass_job:
            kwargs["job"] = job
        started = time.monotonic()

        async def call() -> Any:
            if self._is_async:
                return await self.func(**kwargs)
            result = await anyio.to_thread.run_sync(lambda: self.func(**kwargs), abandon_on_cancel=True)
            if inspect.isawaitable(result):
                result = await result
            return result

        loop = asyncio.get_running_loop()
        task = loop.create_task(call())
        stopped: list[str] = []

        def stop(reason: str) -> None:
            if not task.done():
                stopped.append(reason)
                task.cancel()

        ctx.add_cancel_callback(lambda: stop(ctx.cancel_reason))
        timer = None
        if ctx.timeout is not None:
            timer = loop.call_later(ctx.timeout, stop, "timeout")
        ended = loop.create_future()  # set when the call ends, however it ends
        task.add_done_callback(lambda _: ended.done() or ended.set_result(None))
        try:
            await ended
        except asyncio.CancelledError:
            task.cancel()  # the worker itself is being torn down
            raise
        finally:
            if timer is not None:
                timer.cancel()
        duration = time.monotonic() - started
        if stopped or task.cancelled():
            reason = stopped[0] if stopped else "cancelled"
            return Outcome(
                status="FAILED" if reason == "timeout" else "CANCELLED", error=reason, duration=duration
            )
        exc = task.exception()
        if exc is not None:
            tb = "".join(traceback.format_exception(exc))
            if isinstance(exc, TypeError) and "argument" in str(exc):
                msg = f"cannot call {self.name} with parameters {sorted(job.parameters)}: {exc}"
            else:
                msg = f"{type(exc).__name__}: {exc}"
            return Outcome(
                status="FAILED", exit_code=1, error=msg, log_tail=tb[-ctx.tail_bytes :], duration=duration
            )
        return Outcome(status="COMPLETED", exit_code=0, result=jsonable(task.result()), duration=duration)
