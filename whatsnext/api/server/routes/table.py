"""The route table every route module registers on (below them, so that none imports the package
that imports it)."""

from __future__ import annotations

from ..registry import RouteTable

routes = RouteTable()

__all__ = ["routes"]
