"""What the allocator's end-to-end tests share: a queue of their own, an allocator in this process
(on the test's clock when it gives one), and waiting on the server's state."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, wait_until

from whatsnext.alloc.api import AllocApi
from whatsnext.alloc.loop import Allocator, Settings
from whatsnext.alloc.run import backends
from whatsnext.api.client.http import Http

RECORD = str(Path(__file__).resolve().parent / "jobs" / "record.py")
WORKER_ARGS = f"--script {RECORD} --executable {sys.executable}"
"""The pilots' workers run the recording job program with this Python."""


async def make_queue(api: Api, project: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"q{uuid.uuid4().hex[:8]}",
        "backend": "slurm",
        "projects": [project],
        "worker_args": WORKER_ARGS,
        "time_limit": 600,
        "max_workers": 2,
        "idle_timeout": 3,
        "max_submits_per_minute": 10,
    }
    body.update(fields)
    return dict(await api.ok("POST", "/alloc/queues", body))


def allocator(
    url: str,
    queue: str,
    log_dir: Path,
    *,
    clock: Callable[[], float] | None = None,
    runai_bin: str = "runai",
    **settings: Any,
) -> Allocator:
    options: dict[str, Any] = {
        "server": url,
        "log_dir": log_dir,
        "worker_command": [sys.executable, "-m", "whatsnext"],
        "interval": 0.3,
    }
    options.update(settings)
    extra = {"clock": clock} if clock is not None else {}
    return Allocator(
        AllocApi(Http(url)),
        backends(runai_bin=runai_bin),
        Settings(**options),
        [queue],
        out=lambda line: None,
        **extra,
    )


@pytest.fixture
async def allocators() -> AsyncIterator[Callable[..., Allocator]]:
    """:func:`allocator`, whose HTTP sessions close when the test ends."""
    made: list[Allocator] = []

    def make(*args: Any, **kwargs: Any) -> Allocator:
        made.append(allocator(*args, **kwargs))
        return made[-1]

    yield make
    for one in made:
        await one.api.http.close()


async def allocations(api: Api, queue: str) -> list[dict[str, Any]]:
    return list((await api.ok("GET", f"/alloc/queues/{queue}"))["recent"])


async def wait_jobs(api: Api, job_ids: list[int], status: str, timeout: float) -> None:
    async def done() -> bool:
        states = [(await api.ok("GET", f"/jobs/{j}"))["status"] for j in job_ids]
        return all(s == status for s in states)

    await wait_until(done, timeout=timeout, interval=0.2, what=f"jobs {job_ids} to be {status}")


async def stop(task: asyncio.Task[Any], event: asyncio.Event) -> None:
    event.set()
    await asyncio.wait_for(task, 30)
