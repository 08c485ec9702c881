from __future__ import annotations

from aiohttp import web

from .... import __version__
from ..db import server_version
from ..http import json_response
from ..keys import hub_key, pool_key, settings_key
from ..openapi import build_openapi
from ..roles import PUBLIC, READ
from ..schema import schema_level
from ..schemas import Health
from .table import routes

meta = routes.section("meta")


@meta.get("/health", "Server and database status", rule=PUBLIC, response=Health, errors=())
async def health(request: web.Request) -> web.Response:
    pool = request.app[pool_key]
    try:
        version = await server_version(pool)
        database = f"PostgreSQL {version}"
        ok = request.app[hub_key].listening
    except OSError as exc:
        return json_response(
            {
                "status": "degraded",
                "version": __version__,
                "database": str(exc),
                "schema_level": schema_level(),
            },
            503,
        )
    return json_response(
        {
            "status": "ok" if ok else "degraded",
            "version": __version__,
            "database": database,
            "lease_seconds": request.app[settings_key].lease_seconds,
            "waiting_claims": request.app[hub_key].waiting(),
            "listen_reconnects": request.app[hub_key].reconnects,
            "max_wait": request.app[settings_key].max_wait,
            "retention": request.app[settings_key].retention,
            "schema_level": schema_level(),
        }
    )


@meta.get("/openapi.json", "This OpenAPI document", rule=READ, errors=())
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_openapi(request.app, routes, __version__))
