"""The pool page's figures, from the rows of ``dash_pool``: each project's usage in hours and its
part of the pool (of all usage, of the GPUs running now); the projects the viewer may not see
come as one row without a name."""

from __future__ import annotations

from typing import Any

OTHERS = "others"
"""The name shown for the projects the viewer may not see, summed."""


def _part(value: float | None, total: float | None) -> float | None:
    """``value`` as a percentage of ``total`` (None when the total is nothing)."""
    if not total or total <= 0:
        return None
    return 100.0 * float(value or 0) / float(total)


def quota_text(row: dict[str, Any]) -> str:
    """A project's quotas in words (``8 GPUs, 3 running``); empty without any."""
    parts = [
        f"{row[key]} {what}"
        for key, what in (("max_gpus", "GPUs"), ("max_cpus", "CPUs"), ("max_running", "running"))
        if row.get(key) is not None
    ]
    return ", ".join(parts)


def pool_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The page's context: ``projects`` (the row of the others last, named :data:`OTHERS`),
    the pool's totals and its half-life in seconds (None with no project at all)."""
    first = rows[0] if rows else {}
    total_usage = float(first.get("total_usage") or 0)
    total_gpus = int(first.get("total_running_gpus") or 0)
    projects = []
    for r in rows:
        projects.append(
            {
                "name": r["name"] if r["id"] is not None else OTHERS,
                "others": r["id"] is None,
                "share": r["share"],
                "quota": quota_text(r),
                "running_jobs": int(r["running_jobs"] or 0),
                "running_gpus": int(r["running_gpus"] or 0),
                "running_cpus": int(r["running_cpus"] or 0),
                "gpu_hours": float(r["gpu_seconds"] or 0) / 3600,
                "cpu_hours": float(r["cpu_seconds"] or 0) / 3600,
                "usage_part": _part(r["usage"], total_usage),
                "gpu_part": _part(r["running_gpus"], total_gpus),
            }
        )
    return {
        "projects": projects,
        "total_usage_hours": total_usage / 3600,
        "total_running_gpus": total_gpus,
        "total_running_cpus": int(first.get("total_running_cpus") or 0),
        "half_life": first.get("half_life"),
    }
