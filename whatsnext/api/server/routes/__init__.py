"""HTTP routes: each parses its input, runs one query, and answers JSON."""

from . import (  # noqa: F401  (register routes)
    alloc,
    artifacts,
    claim,
    groups,
    health,
    jobs,
    logs,
    metrics,
    projects,
    prune,
    reports,
    schedules,
    tasks,
    tokens,
    workers,
)
from .table import routes

__all__ = ["routes"]
