"""The OpenAPI 3 document, built from the route registry and the pydantic models."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .registry import RouteSpec, RouteTable
from .schemas import Error

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A WhatsNext token (`whatsnext tokens create`), required when the server runs with "
        "--auth; the role and projects of the token decide what it may do.",
    }
}


def security(spec: RouteSpec) -> list[dict[str, list[str]]]:
    """The route's OpenAPI security requirement: a bearer token (optional for a public route,
    ``/health``; with ``--auth`` off, no route needs one)."""
    if spec.rule.scope == "public":
        return [{}, {"bearer": []}]
    return [{"bearer": []}]


INTEGER_QUERY = frozenset({"after", "attempt", "before", "limit", "offset", "tail"})
"""Query parameters that are integers wherever they appear (``query_int`` reads them)."""
BOOLEAN_QUERY = frozenset({"follow"})
NUMBER_QUERY = frozenset({"wait"})
"""Query parameters that are numbers of seconds (``query_number`` reads them)."""
ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1}
ERROR_DESCRIPTIONS = {
    400: "Malformed request: the body is not JSON",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed on this path (the Allow header lists those that are)",
    409: "Conflict",
    413: "Request body too large",
    415: "The body is not application/json",
    422: "Invalid input: details name the field",
    429: "Too many failed authentications from this address, or too many open streams: retry after "
    "Retry-After seconds",
    503: "The database is unavailable right now: retry after Retry-After seconds",
}
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _query_param(name: str, description: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if name in INTEGER_QUERY:
        schema = {"type": "integer", "format": "int64"}
    elif name in BOOLEAN_QUERY:
        schema = {"type": "boolean"}
    elif name in NUMBER_QUERY:
        schema = {"type": "number", "minimum": 0, "maximum": 3600}
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _path_param(name: str) -> dict[str, Any]:
    if name.endswith("_id"):
        return {"name": name, "in": "path", "required": True, "schema": dict(ID)}
    param: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    if name == "project":
        param["description"] = "The project's name or id."
    return param


def statuses(spec: RouteSpec) -> list[int]:
    """Every error status the route can answer: its own, and those the server answers for any
    route of its kind (a body: 400, 413, 415, 422; a path or query parameter: 422; an id: 404;
    anything that reads the database: 503)."""
    codes = set(spec.errors) | {405}
    if spec.body is not None:
        codes |= {400, 413, 422}
    if spec.method in _WITH_BODY:
        codes.add(415)
    if spec.query or "{" in spec.path:
        codes.add(422)
    if re.search(r"\{\w+\}", spec.path):
        codes.add(404)
    if spec.path != "/openapi.json":
        codes.add(503)
    if spec.rule.scope != "public":
        codes |= {401, 403}  # with --auth: no valid token; a role or project that does not allow it
        codes.add(429)  # with --auth: too many bad tokens from the address (or too many open streams)
    return sorted(codes)


def build_openapi(app: web.Application, table: RouteTable, version: str) -> dict[str, Any]:
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    specs = [spec for spec, _ in table.specs if spec.published and (spec.method, spec.path) in served]
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
            "security": security(spec),
        }
        params = [_path_param(name) for name in re.findall(r"\{(\w+)\}", spec.path)]
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
        for media, what in spec.streams.items():
            ok.setdefault("content", {})[media] = {"schema": {"type": "string", "description": what}}
        op["responses"][str(spec.status)] = ok
        for code, when in spec.also.items():
            op["responses"][str(code)] = {**ok, "description": when}
        for code in statuses(spec):
            answer: dict[str, Any] = {
                "description": ERROR_DESCRIPTIONS.get(code, "Error"),
                "content": {"application/json": {"schema": ref(Error)}},
            }
            if code in (429, 503):
                answer["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
            elif code == 405:
                answer["headers"] = {"Allow": {"schema": {"type": "string"}}}
            op["responses"][str(code)] = answer
        paths.setdefault(spec.path, {})[spec.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "WhatsNext",
            "version": version,
            "description": "Job queue with dependencies and CPU/GPU-aware scheduling.",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }
