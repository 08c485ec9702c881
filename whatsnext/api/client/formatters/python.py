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


Called = tuple[str | None, Any, BaseException | None]
"""How a call ended: why it was stopped (None: it was not), its return value, its exception."""


def declares(func: Callable[..., Any], name: str) -> bool:
    """Whether ``func`` has a parameter ``name`` that can be given by keyword (``**kwargs`` does not count)."""
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    found = parameters.get(name)
    return found is not None and found.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


class PythonFormatter(Formatter):
    """Run each job as ``func(**parameters)`` in the worker process.

    Coroutine functions are awaited on the worker's loop; plain functions run in a thread. The return
    value becomes the job's ``result`` (when it returns None, what the job wrote to its result file
    ``job.result_file``, if anything); an exception fails the job with its traceback. A function
    that declares an ``upstream`` parameter receives what the jobs it depends on left (a list of
    ``{id, name, task, status, result, artifacts}``, empty for a job without dependencies), unless
    the job has a parameter of that name.
    """

    def __init__(self, func: Callable[..., Any] | str, *, pass_job: bool = False) -> None:
        self.func = load_callable(func) if isinstance(func, str) else func
        self.name = func if isinstance(func, str) else f"{func.__module__}:{func.__qualname__}"
        self.pass_job = pass_job
        """When True, the function also receives ``job=JobSpec`` (id, attempt, GPU ids, ...)."""
        # A function shares the worker's environment: only ``job=`` shows it its directory.
        self.uses_checkpoint_dir = pass_job
        self._is_async = inspect.iscoroutinefunction(self.func)
        self._takes_upstream = declares(self.func, "upstream")

    def format(self, task: str, parameters: dict[str, Any]) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in parameters.items())
        return f"{self.name}({args})"

    def execute(self, command: str) -> int:
        raise FormatError("PythonFormatter runs functions, not command lines; use the worker")

    async def run(self, job: JobSpec, ctx: RunContext) -> Outcome:
        kwargs = dict(job.parameters)
        if self.pass_job:
            kwargs["job"] = job
        if self._takes_upstream and "upstream" not in kwargs:
            kwargs["upstream"] = list(job.upstream or ())
        started = time.monotonic()
        call = self._call_here if self._is_async else self._call_in_thread
        stopped, value, exc = await call(kwargs, ctx)
        duration = time.monotonic() - started
        if stopped is not None:
            return Outcome(
                status="FAILED" if stopped == "timeout" else "CANCELLED", error=stopped, duration=duration
            )
        if exc is not None:
            tb = "".join(traceback.format_exception(exc))
            if isinstance(exc, TypeError) and "argument" in str(exc):
                msg = f"cannot call {self.name} with parameters {sorted(job.parameters)}: {exc}"
            else:
                msg = f"{type(exc).__name__}: {exc}"
            return Outcome(
                status="FAILED", exit_code=1, error=msg, log_tail=tb[-ctx.tail_bytes :], duration=duration
            )
        return Outcome(status="COMPLETED", exit_code=0, result=jsonable(value), duration=duration)

    async def _call_here(self, kwargs: dict[str, Any], ctx: RunContext) -> Called:
        """Await a coroutine function in the job's own task (jobs are many: no task each). A stop
        (cancel, timeout) cancels this task while the function runs, and is taken back after."""
        task = asyncio.current_task()
        assert task is not None
        stopped: list[str] = []
        running = [True]

        def stop(reason: str) -> None:
            if running[0] and not stopped:
                stopped.append(reason)
                task.cancel()

        ctx.add_cancel_callback(lambda: stop(ctx.cancel_reason))
        timer = None
        if ctx.timeout is not None:
            timer = asyncio.get_running_loop().call_later(ctx.timeout, stop, "timeout")
        value: Any = None
        exc: BaseException | None = None
        try:
            value = await self.func(**kwargs)
        except asyncio.CancelledError:
            if not stopped and task.cancelling():
                raise  # the worker itself is being torn down
            if not stopped:
                stopped.append("cancelled")  # the function cancelled itself
        except Exception as error:
            exc = error
        finally:
            running[0] = False
            if timer is not None:
                timer.cancel()
            if stopped and task.cancelling():
                task.uncancel()
        if not stopped and task.cancelling():
            raise asyncio.CancelledError  # torn down while the function ran (and it ignored that)
        return (stopped[0] if stopped else None), value, exc

    async def _call_in_thread(self, kwargs: dict[str, Any], ctx: RunContext) -> Called:
        """Run a plain function in a thread, in a task of its own that a stop cancels."""

        async def call() -> Any:
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
        if stopped or task.cancelled():
            return (stopped[0] if stopped else "cancelled"), None, None
        exc = task.exception()
        return None, (None if exc else task.result()), exc
