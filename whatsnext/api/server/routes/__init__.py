"""HTTP routes: each parses its input, runs one query, and answers JSON."""

from . import artifacts, claim, groups, health, jobs, logs, metrics, projects, tasks, tokens, workers  # noqa: F401  (register routes)
from .table import routes

__all__ = ["routes"]
