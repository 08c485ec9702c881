"""HTTP routes: each parses its input, runs one query, and answers JSON."""

from ..registry import RouteTable

routes = RouteTable()

from . import artifacts, claim, groups, health, jobs, logs, metrics, projects, tasks, tokens, workers  # noqa: E402,F401  (register routes)

__all__ = ["routes"]
