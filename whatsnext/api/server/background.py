"""A server's background loops (the lease sweep, claim marks, metrics gauges, retention, schedules):
each runs as a task for as long as the application serves, and is cancelled and awaited at
shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger("whatsnext.server")

TASK_PREFIX = "whatsnext background: "
"""How the task of each loop is named (then the loop's name), in asyncio's own reports too."""


def is_background(task: asyncio.Task[Any] | None) -> bool:
    """Whether ``task`` is one of these loops (not a request being served)."""
    return task is not None and task.get_name().startswith(TASK_PREFIX)


async def while_serving(loop: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``loop`` while the application serves: use as the body of a cleanup context,
    ``async for _ in while_serving(_loop(app), "reaper"): yield``. A loop that ended on its own
    because the database went away (the pool closed under it at shutdown) is logged, not raised."""
    task = asyncio.get_running_loop().create_task(loop, name=TASK_PREFIX + name)
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("background loop ended", loop=name, error=str(exc))
