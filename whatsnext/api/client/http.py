"""The SDK's HTTP layer: one aiohttp session per server, JSON in and out, typed errors."""

from __future__ import annotations

import asyncio
import atexit
import os
import weakref
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from .errors import ConnectionError, WhatsNextError, for_status

DEFAULT_SERVER = "http://localhost:8000"
RETRY_KEYS_UP_TO = 50
"""The largest submission (in jobs) the SDK gives keys of its own for its retries, by default
(``submit.post_submission``): keys cost the server about 10 µs a job, a fifth of the throughput of
a batch of 1,000 plain jobs, and nothing measurable for a few."""


def server_url(host: str | None = None, port: int | None = None) -> str:
    """Accept ``Server("localhost", 8000)``, ``Server("http://host:port")`` or nothing ($WHATSNEXT_SERVER)."""
    if host is None:
        return os.environ.get("WHATSNEXT_SERVER", DEFAULT_SERVER).rstrip("/")
    if "://" in host:
        base = host.rstrip("/")
        return f"{base}:{port}" if port is not None else base
    return f"http://{host}:{port if port is not None else 8000}"


def project_path(key: str | int) -> str:
    """``/projects/{key}`` for a project's name or id (a name is quoted)."""
    return f"/projects/{quote(str(key), safe='')}"


def job_path(job_id: int) -> str:
    """``/jobs/{id}``."""
    return f"/jobs/{int(job_id)}"


def worker_path(worker_id: int | None) -> str:
    """``/workers/{id}``."""
    return f"/workers/{worker_id}"


_instances: weakref.WeakSet[Http] = weakref.WeakSet()


@atexit.register
def _close_background_sessions() -> None:
    """Close the sync facade's connections at exit (they live on the SDK's background loop)."""
    from . import syncio

    loop = syncio._loop
    if loop is None or loop.is_closed() or not loop.is_running():
        return
    for http in list(_instances):
        try:
            asyncio.run_coroutine_threadsafe(http.close(), loop).result(2)
        except (OSError, RuntimeError, TimeoutError, asyncio.CancelledError):
            continue


class Http:
    """Async JSON client bound to the event loop it is first used on."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        retry_keys_up_to: int = RETRY_KEYS_UP_TO,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token if token is not None else os.environ.get("WHATSNEXT_TOKEN")
        self.timeout = timeout
        self.retries = retries
        """Times a submission of jobs is sent again after a connection error, a timeout or a 5xx
        answer (0: never); its jobs carry unique keys, so that a send that did arrive is not
        repeated (``submit.post_submission``)."""
        self.retry_keys_up_to = retry_keys_up_to
        """The largest submission (in jobs) given keys for its retries (:data:`RETRY_KEYS_UP_TO`)."""
        # One session per event loop: the async API runs on the caller's loop, the sync facade on
        # the SDK's background loop, and an aiohttp session belongs to the loop that made it.
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        _instances.add(self)

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            headers = {"Accept": "application/json"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            session = aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
            )
            self._sessions[loop] = session
        return session

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        url = self.base_url + path
        session = self._get_session()
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None}
        body = None if json is None else orjson.dumps(json)
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with session.request(
                method,
                url,
                data=body,
                params=clean or None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise ConnectionError(
                f"cannot reach the WhatsNext server at {self.base_url}: {exc or type(exc).__name__}", url=url
            ) from exc
        data: Any = None
        if raw:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data = raw.decode(errors="replace")
        if status >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            message = err.get("message") or f"{method} {path} failed with HTTP {status}"
            error = for_status(status)(
                message, status=status, code=err.get("code"), details=err.get("details"), url=url
            )
            if retry_after and retry_after.isascii() and retry_after.isdigit():
                error.retry_after = float(retry_after)
            raise error
        return data

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, json: Any = None, timeout: float | None = None) -> Any:
        return await self.request("POST", path, json=json if json is not None else {}, timeout=timeout)

    async def patch(self, path: str, json: Any) -> Any:
        return await self.request("PATCH", path, json=json)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)

    async def close(self) -> None:
        """Close the session of the current loop."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()


__all__ = ["Http", "WhatsNextError", "job_path", "project_path", "server_url", "worker_path"]
