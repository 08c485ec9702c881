"""``GET /metrics``: the Prometheus text format of this server's registry; a token that covers
some projects only sees their series and the server-wide ones (``metrics.ProjectScope``)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..keys import store_key
from ..metrics import ProjectScope, metrics_key
from ..roles import READ
from ..tokens import principal
from .table import routes

meta = routes.section("meta")


@meta.get(
    "/metrics",
    "Prometheus metrics of this server (scrape every server directly, not through a balancer); "
    "a token that covers some projects only sees their series and the server-wide ones",
    rule=READ,
    errors=(),
    streams={"text/plain": "the Prometheus text exposition format"},
)
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[metrics_key].registry
    who = principal(request)
    if who is None or who.projects is None:
        body = generate_latest(registry)  # no auth, or a token of all projects: everything
    else:
        names = await request.app[store_key].metrics.project_names(project_ids=sorted(who.projects))
        body = generate_latest(ProjectScope(registry, frozenset(names)))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
