"""The route registry: every route the server serves, with its handler, its rule (who may call
it, see ``roles``) and what the OpenAPI document says of it.

A route is declared once, where its handler is defined, in the section of its tag::

    tasks = routes.section("tasks")

    @tasks.post("/tasks/", "Create a task", rule=Rule("manage", "body_project"), body=TaskCreate,
                response=TaskOut, status=201)

The auth middleware finds the rule of the route a request reached here (:func:`rule_for`); a
route that is served without being registered is refused at start (:func:`check_served`) and,
should one slip through, answered 403. A leaf module: it imports no other module of the server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from .roles import Rule

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    summary: str
    tag: str
    rule: Rule
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    query: dict[str, str] = field(default_factory=dict)
    errors: tuple[int, ...] = (400, 404, 422)
    streams: dict[str, str] = field(default_factory=dict)
    """Other media types the success answer may take (a stream), with what they carry."""
    published: bool = True
    """False for what the OpenAPI document leaves out: an alias served beside the published path
    (``/tasks`` beside ``/tasks/``) and the dashboard's pages."""
    also: dict[int, str] = field(default_factory=dict)
    """Other success statuses the route answers with the same body, each with when."""


class UnregisteredRoute(RuntimeError):
    """A route is served that no registry declares: it has no rule, so it must not be served."""


class RouteTable:
    """Collects handlers with their specs; :meth:`install` adds them to an aiohttp application."""

    def __init__(self) -> None:
        self.specs: list[tuple[RouteSpec, Handler]] = []
        self.statics: list[tuple[RouteSpec, Path]] = []

    def route(
        self,
        method: str,
        path: str,
        summary: str,
        *,
        tag: str,
        rule: Rule,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        query: dict[str, str] | None = None,
        errors: tuple[int, ...] = (400, 404, 422),
        streams: dict[str, str] | None = None,
        published: bool = True,
        also: dict[int, str] | None = None,
    ) -> Callable[[Handler], Handler]:
        if not isinstance(rule, Rule):
            raise TypeError(f"{method} {path}: a route needs a Rule, got {rule!r}")
        spec = RouteSpec(
            method,
            path,
            summary,
            tag,
            rule,
            body,
            response,
            status,
            query or {},
            errors,
            streams or {},
            published,
            also or {},
        )

        def register(handler: Handler) -> Handler:
            self.specs.append((spec, handler))
            return handler

        return register

    def section(self, tag: str, **defaults: Any) -> Section:
        """The routes of one tag; ``defaults`` apply to each of them (``published=False``)."""
        return Section(self, tag, defaults)

    def static(self, prefix: str, directory: Path, summary: str, *, rule: Rule) -> None:
        """Files under ``directory`` served at ``prefix`` (GET and HEAD)."""
        self.statics.append((RouteSpec("GET", prefix, summary, "static", rule, published=False), directory))

    def install(self, app: web.Application) -> None:
        table = app.setdefault(registry_key, {})
        for spec, handler in self.specs:
            app.router.add_route(spec.method, spec.path, handler)
            table[(spec.method, spec.path)] = spec
        for spec, directory in self.statics:
            resource = app.router.add_static(spec.path, directory)
            for method in ("GET", "HEAD"):
                table[(method, resource.canonical)] = spec


class Section:
    """Declares routes with one tag, and the same defaults, in a :class:`RouteTable`: the keyword
    arguments of :meth:`route` are those of :meth:`RouteTable.route` but ``tag``."""

    def __init__(self, table: RouteTable, tag: str, defaults: dict[str, Any]) -> None:
        self.table = table
        self.tag = tag
        self.defaults = defaults

    def route(self, method: str, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.table.route(method, path, summary, tag=self.tag, **(self.defaults | options))

    def get(self, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, summary, **options)

    def post(self, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, summary, **options)

    def patch(self, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, summary, **options)

    def delete(self, path: str, summary: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, summary, **options)


registry_key = web.AppKey("registry", dict)
"""Every route the application serves, by (method, canonical path), with its spec."""

UNREGISTERED = Rule("tokens")
"""What a route nobody registered would need (nothing reaches it: it is refused, see below)."""


def spec_for(request: web.Request) -> RouteSpec | None:
    """The spec of the route the request reached (None: no route, the router answers 404/405)."""
    info = request.match_info
    if info.http_exception is not None:
        return None
    resource = info.route.resource
    if resource is None:
        return None
    found = request.app[registry_key].get((request.method, resource.canonical))
    if found is None:
        raise UnregisteredRoute(f"{request.method} {resource.canonical} is served without a rule")
    return found


def served(app: web.Application) -> list[tuple[str, str]]:
    """Every (method, canonical path) the application's router serves."""
    return [(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None]


def check_served(app: web.Application) -> None:
    """Refuse an application that serves a route without a rule."""
    table = app.get(registry_key, {})
    missing = sorted({key for key in served(app) if key not in table})
    if missing:
        raise UnregisteredRoute(f"routes served without a rule: {missing}")
