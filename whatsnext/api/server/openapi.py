"""Route metadata and the OpenAPI 3 document built from it and the pydantic models."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .schemas import Error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    query: dict[str, str] = field(default_factory=dict)
    errors: tuple[int, ...] = (400, 404, 422)


class RouteTable:
    """Collects handlers with their specs; `install` adds them to an aiohttp router."""

    def __init__(self) -> None:
        self.specs: list[tuple[RouteSpec, Handler]] = []

    def route(
        self,
        method: str,
        path: str,
        summary: str,
        *,
        tag: str,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        query: dict[str, str] | None = None,
        errors: tuple[int, ...] = (400, 404, 422),
    ) -> Callable[[Handler], Handler]:
        spec = RouteSpec(method, path, summary, tag, body, response, status, query or {}, errors)

        def register(handler: Handler) -> Handler:
            self.specs.append((spec, handler))
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for spec, handler in self.specs:
            app.router.add_route(spec.method, spec.path, handler)


def _query_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


def build_openapi(app: web.Application, table: RouteTable, version: str) -> dict[str, Any]:
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    specs = [spec for spec, _ in table.specs if (spec.method, spec.path) in served]
    models: set[type[BaseModel]] = {Error}
    for spec in specs:
        for model in (spec.body, spec.response):
            if model is not None:
                models.add(model)
    ordered = sorted(models, key=lambda m: m.__name__)
    keys, defs = models_json_schema(
        [(m, "validation") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    schemas = defs.get("$defs", {})

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return keys[(model, "validation")]

    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        op: dict[str, Any] = {
            "summary": spec.summary,
            "tags": [spec.tag],
            "operationId": re.sub(r"[^a-zA-Z0-9]+", "_", f"{spec.method}_{spec.path}").strip("_"),
            "responses": {},
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"\{(\w+)\}", spec.path)
        ]
        params += [_query_param(n, d) for n, d in spec.query.items()]
        if params:
            op["parameters"] = params
        if spec.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(spec.body)}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if spec.response is not None:
            ok["content"] = {"application/json": {"schema": ref(spec.response)}}
        op["responses"][str(spec.status)] = ok
        for code in spec.errors:
            op["responses"][str(code)] = {
                "description": {
                    400: "Malformed request",
                    401: "Unauthorized",
                    404: "Not found",
                    409: "Conflict",
                    422: "Invalid input",
                }.get(code, "Error"),
                "content": {"application/json": {"schema": ref(Error)}},
            }
        paths.setdefault(spec.path, {})[spec.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "WhatsNext",
            "version": version,
            "description": "Job queue with dependencies and CPU/GPU-aware scheduling.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
