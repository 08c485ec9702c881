"""The route table every route module registers on (below them, so that none imports the package
that imports it)."""

from __future__ import annotations

from typing import Any

from ..registry import RouteTable
from ..roles import WORK_OWN_JOB

routes = RouteTable()

OWN_ATTEMPT: dict[str, Any] = {"rule": WORK_OWN_JOB, "errors": (400, 404, 409, 422)}
"""The options of a route on which a worker reports about an attempt of a job it holds: 409 when
that attempt is no longer the job's current one."""

__all__ = ["OWN_ATTEMPT", "routes"]
