"""The server's allocation API as the allocator uses it (``/alloc/queues``, ``/demand``,
``/allocations``), on the SDK's HTTP session. Durations are seconds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

from ..api.client.http import Http


def queue_path(name: str) -> str:
    return "/alloc/queues/" + quote(name, safe="")


class AllocApi:
    def __init__(self, http: Http) -> None:
        self.http = http

    async def queues(self) -> list[dict[str, Any]]:
        return list((await self.http.get("/alloc/queues"))["queues"])

    async def queue(self, name: str) -> dict[str, Any]:
        """The queue with its ``recent`` allocations."""
        return dict(await self.http.get(queue_path(name)))

    async def update_queue(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.http.patch(queue_path(name), fields))

    async def allocations(self, name: str, states: Iterable[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for state in states:
            found += (await self.http.get(queue_path(name) + "/allocations", state=state))["allocations"]
        return found

    async def demand(self, projects: Iterable[str]) -> dict[str, Any]:
        query = urlencode([("project", p) for p in projects])
        return dict(await self.http.request("GET", "/demand" + (f"?{query}" if query else "")))

    async def lease(self, name: str, holder: str, seconds: float) -> dict[str, Any]:
        """Take or renew the queue's loop lease (:class:`Conflict` while another loop holds it)."""
        return dict(await self.http.post(queue_path(name) + "/lease", {"holder": holder, "seconds": seconds}))

    async def release(self, name: str, holder: str) -> None:
        await self.http.request("DELETE", queue_path(name) + "/lease", params={"holder": holder})

    async def add_allocation(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.http.post(queue_path(name) + "/allocations", body))

    async def update_allocation(self, allocation_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.http.patch(f"/allocations/{int(allocation_id)}", fields))


__all__ = ["AllocApi", "queue_path"]
