"""Why a pending job is not running: read off the job, its upstream jobs, the workers, what
sharing the pool holds it to (its concurrency key, its project's quotas and fair share) and the
allocations requested for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

NAMED_AHEAD = 5
"""Projects ahead in the fair share named by name; the rest are counted."""


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
    time_left: float | None = None
    """Seconds until the worker's time ends (None: no end)."""
    short_time: bool = False
    """Its time left is shorter than the job's timeout: it does not take the job."""

    @property
    def fits_now(self) -> bool:
        return (
            self.online
            and not self.missing_tags
            and self.short_cpu == 0
            and self.short_gpu == 0
            and not self.short_time
        )

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
    pool: dict[str, Any] | None = None,
    allocations: list[dict[str, Any]] | None = None,
) -> Why | None:
    """The reasons a PENDING job waits (None for a job in any other status). ``pool`` is what
    sharing the pool holds the job to (``dash_why_pool``, after :func:`unnamed`); ``allocations``
    those requested for it (``dash_why_alloc``: queued or running, of a queue serving its project,
    of a shape it fits), named when no online worker fits it now."""
    if job["status"] != "PENDING":
        return None
    why = Why()
    if job["unmet_deps"] > 0:
        # Waiting for upstream jobs that have not ended (a met dependency may be on a failed one).
        why.unmet = [u for u in upstream if u["status"] in ("PENDING", "RUNNING")]
        names = ", ".join(f"#{u['id']} {u['name']} ({u['status']})" for u in why.unmet)
        why.reasons.append(
            f"waiting for {job['unmet_deps']} unmet dependenc{'y' if job['unmet_deps'] == 1 else 'ies'}: {names}"
        )
    available = job.get("available_at")
    if available is not None and available > now:
        why.retry_at = available
        what = "retry delay" if job.get("attempt") else "delayed start"
        why.reasons.append(f"{what}: not before {available.isoformat(timespec='seconds')}")
    need_cpu, need_gpu = job["required_cpu"], job["required_accelerators"]
    need_tags = list(job.get("required_tags") or [])
    timeout = job.get("timeout")
    candidates = []
    for w in workers:
        free_cpu = w["cpu"] - w["used_cpu"]
        free_gpu = w["accelerators"] - w["used_accelerators"]
        left = w.get("time_left")
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
                time_left=left,
                short_time=timeout is not None and left is not None and left < timeout,
            )
        )
    online = [c for c in candidates if c.online]
    need = f"{need_cpu} CPU{'s' if need_cpu != 1 else ''}, {need_gpu} GPU{'s' if need_gpu != 1 else ''}"
    if need_tags:
        need += ", tags " + ", ".join(need_tags)
    able = [c for c in online if not c.missing_tags and c.cpu >= need_cpu and c.gpu >= need_gpu]
    if not online:
        why.reasons.append(f"no worker of this project is online (the job needs {need})")
    elif able and all(c.short_time for c in able):
        # Walltime: workers that could run it, none with time enough left for its timeout.
        most = max(c.time_left or 0.0 for c in able)
        why.reasons.append(
            f"the job needs {int(timeout or 0)} s (its timeout); the live workers that could run it "
            f"have at most {max(0, int(most))} s left"
        )
    elif not any(c.fits_now for c in online):
        big_enough = [c for c in able if not c.short_time]
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
    if allocations and not any(c.fits_now for c in online):
        why.reasons.append(allocation_reason(allocations))
    if pool is not None:
        why.reasons += pool_reasons(job, pool)
    if not why.reasons:
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


def allocation_reason(allocations: list[dict[str, Any]]) -> str:
    """``an allocation has been requested for it (queue Q, allocation A: QUEUED, reason Priority)``,
    naming the first of ``allocations`` (running ones come first) and counting the others."""
    a = allocations[0]
    reason = f", reason {a['reason']}" if a.get("reason") else ""
    more = len(allocations) - 1
    return (
        f"an allocation has been requested for it (queue {a['queue']}, allocation {a['name']}: "
        f"{a['state']}{reason})" + (f", and {_plural(more, 'other', 'others')}" if more else "")
    )


def unnamed(pool: dict[str, Any], covers: Callable[[int], bool]) -> dict[str, Any]:
    """``pool`` with the names of the projects ahead that the viewer may not see left out."""
    ahead = [a if covers(a["id"]) else {**a, "name": None} for a in pool.get("ahead") or []]
    return {**pool, "ahead": ahead}


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} GPU-hours"


def pool_reasons(job: dict[str, Any], pool: dict[str, Any]) -> list[str]:
    """What sharing the pool holds a job to, in the order a claim checks it: its concurrency key
    at its limit, its project's quota reached, other projects served first by fair share."""
    reasons = []
    key, running, limit = pool.get("concurrency_key"), pool.get("key_running") or 0, pool.get("key_limit")
    if key is not None and limit is not None and running >= limit:
        reasons.append(f"concurrency key {key}: {running} of {limit} running")
    quotas = (
        ("GPUs", "in use", pool.get("running_gpus") or 0, pool.get("max_gpus"), job["required_accelerators"]),
        ("CPUs", "in use", pool.get("running_cpus") or 0, pool.get("max_cpus"), job["required_cpu"]),
        ("jobs", "running", pool.get("running_jobs") or 0, pool.get("max_running"), 1),
    )
    for what, state, used, quota, need in quotas:
        if quota is None or used + need <= quota:
            continue
        if need > quota:
            reasons.append(f"project quota: the job needs {need} {what}, the quota allows {quota}")
        elif used < quota:
            reasons.append(f"project quota: {used} of {quota} {what} {state}, the job needs {need}")
        else:
            reasons.append(f"project quota: {used} of {quota} {what} {state}")
    ahead = pool.get("ahead") or []
    if ahead:
        named = [a for a in ahead if a.get("name") is not None]
        parts = [f"{a['name']} ({_hours(a['usage'])}, share {a['share']:g})" for a in named[:NAMED_AHEAD]]
        others = len(ahead) - len(parts)
        if others:
            parts.append(_plural(others, "other project", "other projects"))
        reasons.append(
            f"waiting for project {pool['project']}'s fair share: usage {_hours(pool['usage'])} (weighted) "
            f"vs share {pool['share']:g}; projects ahead: {', '.join(parts)}"
        )
    return reasons
