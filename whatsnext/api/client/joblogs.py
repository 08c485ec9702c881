"""Reading a job's live log and artifacts from Python (the CLI's ``jobs logs`` and ``jobs artifacts``).

    async with AsyncServer("http://localhost:8000") as server:
        async for event in follow_logs(server.http, 42):
            if "line" in event:
                print(event["line"])

``follow_logs`` yields the job's lines as they come and returns once the job is finished; when the
connection drops (a server restart), it reconnects and goes on after the last line it yielded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson

from .errors import ConnectionError, TooManyRequests, WhatsNextError, for_status
from .http import Http, project_path


def dropped_line(n: int) -> str:
    """How a reader shows lines that were removed before it got to them."""
    return f"[... {n} earlier lines dropped ...]"


async def read_logs(
    http: Http, job_id: int, *, after: int = 0, tail: int | None = None, page: int = 1000
) -> dict[str, Any]:
    """Every retained line after ``after`` (or the last ``tail``): ``{lines, dropped, finished, status, last_id}``."""
    if tail is not None:
        return dict(await http.get(f"/jobs/{int(job_id)}/logs", after=after, tail=tail))
    lines: list[dict[str, Any]] = []
    while True:
        data = await http.get(f"/jobs/{int(job_id)}/logs", after=after, limit=page)
        lines += data["lines"]
        after = data["last_id"]
        if len(data["lines"]) < page:
            data["lines"] = lines
            return dict(data)


async def follow_logs(
    http: Http,
    job_id: int,
    *,
    after: int = 0,
    tail: int | None = None,
    reconnect: float = 60.0,
    on_wait: Callable[[float, WhatsNextError], None] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield the job's lines (``{id, seq, attempt, line, at}``) and gaps (``{dropped: N}``) as they come.

    Returns after the job is finished; the last event is ``{finished: True, status}``. Keep-alive
    lines are skipped, and a stream that ends at the server's max wait is resumed at once after the
    last line; a dropped connection is retried (with backoff) for up to ``reconnect`` seconds of
    failure in a row. A follow the server refuses for now (429: too many open streams) waits the
    ``Retry-After`` it was given and tries again, after telling ``on_wait(seconds, error)``.
    """
    url = f"{http.base_url}/jobs/{int(job_id)}/logs"
    session = http._get_session()
    delay, failing_since = 0.1, None
    loop = asyncio.get_running_loop()
    while True:
        params: dict[str, str] = {"follow": "1", "after": str(after)}
        if tail is not None:
            params["tail"] = str(tail)
        try:
            async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=None)) as resp:
                if resp.status >= 400:
                    data: Any = None
                    raw = await resp.read()
                    if raw:
                        try:
                            data = orjson.loads(raw)
                        except orjson.JSONDecodeError:
                            data = None
                    err = data.get("error", {}) if isinstance(data, dict) else {}
                    error = for_status(resp.status)(
                        err.get("message") or f"GET {url} failed with HTTP {resp.status}",
                        status=resp.status,
                        code=err.get("code"),
                        details=err.get("details"),
                        url=url,
                    )
                    retry_after = resp.headers.get("Retry-After", "")
                    if retry_after.isascii() and retry_after.isdigit():
                        error.retry_after = float(retry_after)
                    raise error
                delay, failing_since, tail = 0.1, None, None
                capped = False
                async for raw_line in resp.content:
                    if not raw_line.strip():
                        continue
                    event = orjson.loads(raw_line)
                    if event.get("keepalive"):
                        continue  # the job is silent; the server keeps the connection busy
                    if "id" in event:
                        after = event["id"]
                    if event.get("finished") is False:
                        # The request reached the server's max wait (or the server stops): go on
                        # after the last line, in a new request.
                        capped = event.get("reason") == "max_wait"
                        break
                    yield event
                    if event.get("finished"):
                        return
                if capped:
                    continue
        except TooManyRequests as exc:
            if exc.retry_after is None:
                raise
            if on_wait is not None:
                on_wait(exc.retry_after, exc)
            await asyncio.sleep(exc.retry_after)
            continue
        except WhatsNextError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            now = loop.time()
            failing_since = failing_since if failing_since is not None else now
            if now - failing_since > reconnect:
                raise ConnectionError(f"lost the log stream of job {job_id}: {exc}", url=url) from exc
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def job_artifacts(http: Http, job_id: int) -> list[dict[str, Any]]:
    """What a job read and wrote, as recorded by its worker."""
    return list((await http.get(f"/jobs/{int(job_id)}/artifacts"))["artifacts"])


async def find_artifacts(
    http: Http, project: str | int, uri: str, *, direction: str = "out", limit: int = 100
) -> list[dict[str, Any]]:
    """The jobs of a project that wrote (``direction="in"``: read) ``uri``, newest first."""
    data = await http.get(project_path(project) + "/artifacts", uri=uri, direction=direction, limit=limit)
    return list(data["artifacts"])


__all__ = ["dropped_line", "find_artifacts", "follow_logs", "job_artifacts", "read_logs"]
