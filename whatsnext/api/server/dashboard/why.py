"""Why a pending job is not running: read off the job, its upstream jobs and the workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Candidate:
    """A worker measured against a job: what it lacks (nothing: it fits now)."""

    name: str
    online: bool
    free_cpu: int
    free_gpu: int
    cpu: int
    gpu: int
    missing_tags: list[str]
    short_cpu: int
    short_gpu: int

    @property
    def fits_now(self) -> bool:
        return self.online and not self.missing_tags and self.short_cpu == 0 and self.short_gpu == 0

    def lacks(self) -> str:
        parts = []
        if self.missing_tags:
            parts.append("tags " + ", ".join(self.missing_tags))
        if self.short_cpu:
            parts.append(f"{self.short_cpu} more free CPU{'s' if self.short_cpu > 1 else ''}")
        if self.short_gpu:
            parts.append(f"{self.short_gpu} more free GPU{'s' if self.short_gpu > 1 else ''}")
        return " and ".join(parts) or "nothing"


@dataclass
class Why:
    """The reasons, most decisive first; ``closest`` is the online worker nearest to fitting."""

    reasons: list[str] = field(default_factory=list)
    unmet: list[dict[str, Any]] = field(default_factory=list)
    closest: Candidate | None = None
    retry_at: datetime | None = None


def _distance(c: Candidate) -> tuple[int, int, int]:
    return (len(c.missing_tags), c.short_gpu, c.short_cpu)


def explain(
    job: dict[str, Any],
    upstream: list[dict[str, Any]],
    workers: list[dict[str, Any]],
    ahead: int,
    now: datetime,
    starvation_seconds: float,
) -> Why | None:
    """The reasons a PENDING job waits (None for a job in any other status)."""
    if job["status"] != "PENDING":
        return None
    why = Why()
    if job["unmet_deps"] > 0:
        why.unmet = [u for u in upstream if u["status"] != "COMPLETED"]
        names = ", ".join(f"#{u['id']} {u['name']} ({u['status']})" for u in why.unmet)
        why.reasons.append(
            f"waiting for {job['unmet_deps']} unmet dependenc{'y' if job['unmet_deps'] == 1 else 'ies'}: {names}"
        )
    available = job.get("available_at")
    if available is not None and available > now:
        why.retry_at = available
        why.reasons.append(f"retry delay: not before {available.isoformat(timespec='seconds')}")
    need_cpu, need_gpu = job["required_cpu"], job["required_accelerators"]
    need_tags = list(job.get("required_tags") or [])
    candidates = []
    for w in workers:
        free_cpu = w["cpu"] - w["used_cpu"]
        free_gpu = w["accelerators"] - w["used_accelerators"]
        candidates.append(
            Candidate(
                name=w["name"],
                online=bool(w["online"]),
                free_cpu=free_cpu,
                free_gpu=free_gpu,
                cpu=w["cpu"],
                gpu=w["accelerators"],
                missing_tags=[t for t in need_tags if t not in (w["tags"] or [])],
                short_cpu=max(0, need_cpu - free_cpu),
                short_gpu=max(0, need_gpu - free_gpu),
            )
        )
    online = [c for c in candidates if c.online]
    need = f"{need_cpu} CPU{'s' if need_cpu != 1 else ''}, {need_gpu} GPU{'s' if need_gpu != 1 else ''}"
    if need_tags:
        need += ", tags " + ", ".join(need_tags)
    if not online:
        why.reasons.append(f"no worker of this project is online (the job needs {need})")
    elif not any(c.fits_now for c in online):
        big_enough = [c for c in online if not c.missing_tags and c.cpu >= need_cpu and c.gpu >= need_gpu]
        why.closest = (
            min(big_enough, key=_distance)
            if big_enough
            else max(online, key=lambda c: (-len(c.missing_tags), c.gpu, c.cpu))
        )
        if big_enough:
            why.reasons.append(
                f"no online worker has enough free capacity now (the job needs {need}); "
                f"closest: {why.closest.name}, which lacks {why.closest.lacks()}"
            )
        else:
            why.reasons.append(
                f"no online worker can ever run it (the job needs {need}); "
                f"the largest: {why.closest.name}, {why.closest.cpu} CPUs and {why.closest.gpu} GPUs in all"
                + (
                    f", without tags {', '.join(why.closest.missing_tags)}"
                    if why.closest.missing_tags
                    else ""
                )
            )
    elif not why.reasons:
        fit = next(c for c in online if c.fits_now)
        why.reasons.append(
            f"{fit.name} has room for it: it is handed out at that worker's next claim"
            + (f", after {ahead} eligible job{'s' if ahead != 1 else ''} ahead of it" if ahead else "")
        )
    eligible_at = job.get("eligible_at")
    if not job["unmet_deps"] and eligible_at is not None:
        waited = (now - eligible_at).total_seconds()
        if waited > starvation_seconds:
            why.reasons.append(
                f"eligible for {int(waited)} s, past the starvation guard ({int(starvation_seconds)} s): "
                "smaller jobs no longer overtake it on workers it fits"
            )
    return why
