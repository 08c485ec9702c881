"""The allocation page: each allocation queue the viewer may see (every project it serves is
theirs), with its allocations counted by state, its last error, the loop that holds it and its
latest allocations (state, the scheduler's reason)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..keys import store_key
from ..roles import PAGE, Principal
from ..schemas.alloc import ALLOC_STATES
from .base import PREFIX, page, views, visible_projects

RECENT_ON_PAGE = 10
"""Allocations shown per queue (newest first)."""


@views.get(PREFIX + "/alloc", "Allocation queues and their latest allocations", rule=PAGE)
@page("alloc.html")
async def alloc_page(request: web.Request, who: Principal) -> dict[str, Any]:
    store = request.app[store_key].alloc
    queues = await store.queues(projects=visible_projects(who))
    recent = await store.recent(queue_ids=[q["id"] for q in queues], per_queue=RECENT_ON_PAGE)
    for q in queues:
        q["recent"] = [a for a in recent if a["queue"] == q["name"]]
    return {"queues": queues, "states": ALLOC_STATES, "live_url": f"{PREFIX}/events", "title": "Allocation"}
