"""Helpers for tests that run real workers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

POLL = 0.02  # seconds between looks at a file a job program writes
RECORD = str(Path(__file__).resolve().parent / "jobs" / "record.py")


def records(out: Path) -> dict[int, dict[str, Any]]:
    """What each finished job recorded, by job id."""
    return {int(p.stem): json.loads(p.read_text()) for p in out.glob("*.json")}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1])
    )
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


async def wait_for_file(path: Path, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not path.exists():
        if loop.time() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        await asyncio.sleep(POLL)


PYTHON = sys.executable


async def wait_for_condition(predicate: Any, timeout: float, what: str = "condition") -> None:
    """Wait for a plain ``predicate()`` to hold (state another task or process sets), at most ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(POLL)


def spawn_worker(
    url: str, project: str, log: Path, *extra: str, script: str | Path = RECORD
) -> subprocess.Popen[bytes]:
    """`whatsnext worker` running ``script`` (the recording job program by default) with this
    Python, in its own session, output to ``log``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "whatsnext",
            "--server",
            url,
            "worker",
            "--project",
            project,
            "--script",
            str(script),
            "--executable",
            PYTHON,
            *extra,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,
    )


@dataclass
class Result:
    """What a `whatsnext` run left: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def cli(
    server: Any, *args: str, cwd: Path | None = None, env: Mapping[str, str | None] | None = None
) -> Result:
    """`whatsnext ARGS` against ``server`` (anything with a ``url``; None: the user's default), in
    this process: ``main([...])`` with its output captured and $WHATSNEXT_SERVER (and ``env``; None
    unsets a variable) set for the run. main runs in a thread of its own (it may call asyncio.run), so
    async tests may call this too, as a shell would wait for the command."""
    from whatsnext.cli import main

    changes = {"WHATSNEXT_SERVER": server.url if server is not None else None, **(env or {})}
    code: list[int] = []

    def run() -> None:
        try:
            main(list(args))
            code.append(0)
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code.append(exc.code or 0)
            else:  # sys.exit("message"), as the interpreter does it
                print(exc.code, file=sys.stderr)
                code.append(1)
        except BaseException:  # an escaped error, as the interpreter shows it
            traceback.print_exc()
            code.append(1)

    out, err = io.StringIO(), io.StringIO()
    with (
        _environment(changes),
        contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext(),
        _logs_put_back(),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        thread = threading.Thread(target=run, name="whatsnext-cli")
        thread.start()
        thread.join()
    return Result(code[0], out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    with mock.patch.dict(os.environ):
        for key, value in changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield


@contextlib.contextmanager
def _logs_put_back() -> Iterator[None]:
    """A command that sets up structlog (``worker``) does it for its run only: its loggers are not
    cached, and the configuration before it comes back afterwards."""
    import structlog

    import whatsnext.logs

    configured, before = structlog.is_configured(), structlog.get_config()
    configure = whatsnext.logs.configure

    def for_this_run(*args: Any, **kwargs: Any) -> None:
        configure(*args, **kwargs)
        structlog.configure(cache_logger_on_first_use=False)

    try:
        with mock.patch.object(whatsnext.logs, "configure", for_this_run):
            yield
    finally:
        if configured:
            structlog.configure(**before)
        else:
            structlog.reset_defaults()


async def running_job(api: Any, project: dict[str, Any], name: str = "j") -> dict[str, Any]:
    """Queue a job and claim it as a worker would: the claimed job, with its attempt."""
    p = project["name"]
    job = await api.ok("POST", f"/projects/{p}/jobs", {"name": name, "task": "t"})
    out = await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "test"})
    assert [j["id"] for j in out["jobs"]] == [job["id"]]
    return dict(out["jobs"][0])


async def call(client: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A request to an in-process application (the ``client`` fixture): status and JSON body."""
    async with client.request(method, path, json=body) as resp:
        return resp.status, await resp.json()
