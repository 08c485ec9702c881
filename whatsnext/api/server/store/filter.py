"""The one job filter (``sql/functions/wn_job_filter.sql``): what GET /projects/{p}/jobs (and so
``whatsnext jobs ls``) and the dashboard's board and bulk actions select jobs by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


def _escaped(text: str) -> str:
    """``text`` with LIKE's own characters (``\\``, ``%``, ``_``) taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class JobFilter:
    """Which jobs of a project (None: any)."""

    statuses: tuple[str, ...] | None = None
    """The job is in one of these statuses."""
    task: str | None = None
    """Its task's name."""
    group: str | None = None
    """Its group, by name or by id."""
    name: str | None = None
    """A pattern its name matches: ``*`` matches anything; without ``*``, the exact name."""
    name_contains: str | None = None
    """Text its name contains, in any case (the dashboard's name box)."""
    parameters: dict[str, Any] | None = None
    """A JSON object its parameters contain."""
    worker: str | None = None
    """The worker that runs or ran it, by name."""

    @property
    def status(self) -> str | None:
        """The one status it asks for, if it asks for exactly one."""
        return self.statuses[0] if self.statuses and len(self.statuses) == 1 else None

    def args(self) -> dict[str, Any]:
        """The arguments of ``wn_job_filter`` (after the project) by the statements' names."""
        return {
            "statuses": list(self.statuses) if self.statuses else None,
            "task": self.task,
            "group": self.group,
            "name_like": _escaped(self.name).replace("*", "%") if self.name else None,
            "name_contains": f"%{_escaped(self.name_contains)}%" if self.name_contains else None,
            "where_params": orjson.dumps(self.parameters).decode() if self.parameters else None,
            "worker": self.worker,
        }
