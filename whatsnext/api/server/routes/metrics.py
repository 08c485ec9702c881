"""``GET /metrics``: the Prometheus text format of this server's registry."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..metrics import metrics_key
from ..roles import READ
from . import routes


@routes.route(
    "GET",
    "/metrics",
    "Prometheus metrics of this server (scrape every server directly, not through a balancer)",
    rule=READ,
    tag="meta",
    errors=(),
    streams={"text/plain": "the Prometheus text exposition format"},
)
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[metrics_key].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
