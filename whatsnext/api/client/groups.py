"""A project's groups (sweeps, named batches) in the SDK: their progress, and rerunning what
failed in them. Mixed into :class:`~.project.AsyncProject` and its synchronous facade."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any
from urllib.parse import quote

from .http import Http


class AsyncGroups:
    """The group methods of an async project (its ``_http`` session and ``_path``)."""

    _http: Http

    @property
    def _path(self) -> str:
        raise NotImplementedError

    def _group_path(self, name: str | int) -> str:
        return f"{self._path}/groups/{quote(str(name), safe='')}"

    async def groups(self, limit: int = 100) -> list[dict[str, Any]]:
        """The project's groups (sweeps, named batches), newest first, with job counts by status."""
        return list((await self._http.get(f"{self._path}/groups", limit=limit))["groups"])

    async def group(self, name: str | int) -> dict[str, Any]:
        """One group and its progress (total, finished, counts by status)."""
        return dict(await self._http.get(self._group_path(name)))

    async def retry_group(
        self,
        name: str | int,
        *,
        failed: bool = False,
        cancelled: bool = False,
        lost: bool = False,
        downstream: bool = False,
    ) -> dict[str, Any]:
        """Put a group's jobs back in the queue: the FAILED ones (``failed``: those whose last
        attempt was not lost; ``lost``: those whose worker went away), the CANCELLED ones
        (``cancelled``), or all of them when none is chosen, with what they blocked.
        ``downstream`` also reruns the jobs that already ran downstream of them (in any group)
        over their old results, after their new run. Answers ``count``, the ``ids`` of every job
        put back, and the ``downstream`` ones among them."""
        body = {"failed": failed, "cancelled": cancelled, "lost": lost, "downstream": downstream}
        return dict(await self._http.post(self._group_path(name) + "/retry", body))


class Groups:
    """The group methods of a synchronous project (``_async``: its async project)."""

    _async: AsyncGroups

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        raise NotImplementedError

    def groups(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._run(self._async.groups(limit))

    def group(self, name: str | int) -> dict[str, Any]:
        return self._run(self._async.group(name))

    def retry_group(
        self,
        name: str | int,
        *,
        failed: bool = False,
        cancelled: bool = False,
        lost: bool = False,
        downstream: bool = False,
    ) -> dict[str, Any]:
        return self._run(
            self._async.retry_group(
                name, failed=failed, cancelled=cancelled, lost=lost, downstream=downstream
            )
        )
