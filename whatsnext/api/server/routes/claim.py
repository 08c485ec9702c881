"""The hot path: claims (with long-poll), of one project or of several (fair share between them)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from ....wire import ClaimArgs, wn_claim_json, wn_pool_claim_json
from ..config import Settings
from ..errors import invalid
from ..http import client_gone, json_response, parse_body
from ..keys import hub_key, settings_key, store_key
from ..metrics import Metrics, metrics_key
from ..notify import CLOSED, FINISHED, Handed, Wakeup
from ..roles import Rule
from ..schemas import ClaimRequest, ClaimResponse
from ..sharing import resolve_pool
from ..store import Store
from ..tokens import principal
from .table import routes

workers = routes.section("workers")

EMPTY = b'{"jobs":[]}'
WAITING_FULL_RETRY = 5
"""Seconds a claim refused for lack of room to wait is asked to wait before it asks again."""
NO_IDLE: dict[str, Any] = {"pending": 0, "running": 0, "delayed": 0, "runnable": False, "unfit": None}


@dataclass(slots=True)
class Target:
    """What a claim takes jobs from: one project (``key``, as the path names it; its id once
    looked up) or several (``pool``: ``ids``, None for every project, and the names the claim
    gave with their ids)."""

    key: str | None = None
    project_id: int | None = None
    pool: bool = False
    ids: tuple[int, ...] | None = None
    names: dict[str, int] = field(default_factory=dict)

    async def claim(self, store: Store, args: ClaimArgs) -> list[dict[str, Any]]:
        if self.pool:
            return await store.sharing.claim(projects=None if self.ids is None else list(self.ids), args=args)
        return await store.jobs.claim(project=self.key or "", args=args)

    async def next_available_in(self, store: Store) -> float | None:
        """Seconds until a delayed job becomes eligible (and the project's id, looked up once)."""
        if self.pool:
            return await store.sharing.next_available_in(
                projects=None if self.ids is None else list(self.ids)
            )
        info = await store.projects.resolve(project=self.key or "")
        self.project_id = info["id"]
        return info["next_available_in"]

    async def idle(self, store: Store, body: ClaimRequest) -> dict[str, Any]:
        """What is pending and running (for a worker that stops when its projects are done)."""
        if not self.pool:
            if self.project_id is None:
                self.project_id = (await store.projects.resolve(project=self.key or ""))["id"]
            return await _idle(store, self.project_id, body)
        busy = await store.sharing.busy(projects=None if self.ids is None else list(self.ids))
        total = dict(NO_IDLE)
        for project_id in busy:
            row = await _idle(store, project_id, body)
            for count in ("pending", "running", "delayed"):
                total[count] += row[count]
            total["runnable"] = total["runnable"] or row["runnable"]
            total["unfit"] = total["unfit"] or row["unfit"]
        return total

    def waits_on(self) -> int | tuple[int, ...] | None:
        return self.ids if self.pool else self.project_id

    def claim_json(self, args: ClaimArgs) -> dict[str, Any]:
        if self.pool:
            return wn_pool_claim_json(self.ids, args)
        return wn_claim_json(self.project_id or 0, args)

    async def claimed(self, request: web.Request, rows: list[dict[str, Any]], lease: float) -> None:
        metrics = request.app[metrics_key]
        if not self.pool:
            await metrics.jobs_claimed(request, self.key or "", rows, lease)
            return
        by_project: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_project.setdefault(row["project"], []).append(row)
        for project, its in by_project.items():
            await metrics.jobs_claimed(request, project, its, lease)


def _runs_jobs(body: ClaimRequest) -> bool:
    """Whether the claiming worker has some of its capacity in use: it runs jobs."""
    return body.free_cpu < _total_cpu(body) or body.free_accelerators < _total_accelerators(body)


async def _idle(store: Store, project_id: int, body: ClaimRequest) -> dict[str, Any]:
    return await store.projects.idle(
        project_id=project_id,
        total_cpu=_total_cpu(body),
        total_accelerators=_total_accelerators(body),
        tags=body.tags,
        tasks=body.tasks,
        with_command=body.with_command,
        time_left=body.time_left,
    )


async def _nothing(store: Store, target: Target, body: ClaimRequest) -> web.Response:
    """The answer when there is nothing to hand out (with what is pending and running, if asked)."""
    if not body.idle_summary:
        return web.Response(body=EMPTY, content_type="application/json")
    return json_response({"jobs": [], "idle": await target.idle(store, body)})


def claim_actor(request: web.Request) -> str | None:
    """Who a claim's RUNNING events name: under --auth the token that claimed (never a name the
    worker chose: that is the event's worker); without auth None, the worker's name."""
    who = principal(request)
    return None if who is None else who.name


def claim_args(body: ClaimRequest, settings: Settings, actor: str | None = None) -> ClaimArgs:
    """What the claim hands to ``wn_claim`` (by the claim's own field names): here, and for a
    submission that runs it on its behalf (``wn_enqueue``, through :func:`wn_claim_json`)."""
    return {
        "worker_id": body.worker_id,
        "worker_name": body.worker_name,
        "free_cpu": body.free_cpu,
        "free_accelerators": body.free_accelerators,
        "total_cpu": _total_cpu(body),
        "total_accelerators": _total_accelerators(body),
        "tags": body.tags,
        "max_jobs": body.max_jobs,
        "lease_seconds": settings.lease_seconds,
        "starvation_seconds": settings.starvation_seconds,
        "tasks": body.tasks,
        "with_command": body.with_command,
        "actor": actor,
        "time_left": body.time_left,
    }


def _total_cpu(body: ClaimRequest) -> int:
    return body.total_cpu if body.total_cpu is not None else body.free_cpu


def _total_accelerators(body: ClaimRequest) -> int:
    return body.total_accelerators if body.total_accelerators is not None else body.free_accelerators


@workers.post(
    "/projects/{project}/claim",
    "Claim eligible jobs that fit the worker's free capacity; long-polls up to `wait` seconds",
    rule=Rule("work", "claim", unmasked=True),
    body=ClaimRequest,
    response=ClaimResponse,
)
async def claim(request: web.Request) -> web.Response:
    body = await parse_body(request, ClaimRequest)
    if body.projects is not None or body.all_projects:
        field_name = "projects" if body.projects is not None else "all_projects"
        raise invalid(
            f"{field_name} is for POST /claim: this claim takes jobs of the project in its path", field_name
        )
    return await _serve(request, body, Target(key=request.match_info["project"]))


@workers.post(
    "/claim",
    "Claim eligible jobs of several projects (`projects`, or `all_projects`), shared between them by "
    "fair share; long-polls up to `wait` seconds",
    rule=Rule("work", "pool", unmasked=True),
    body=ClaimRequest,
    response=ClaimResponse,
    errors=(400, 403, 404, 422),
)
async def claim_pool(request: web.Request) -> web.Response:
    body = await parse_body(request, ClaimRequest)
    pool = await resolve_pool(request, body.projects, body.all_projects, principal(request))
    return await _serve(request, body, Target(pool=True, ids=pool.ids, names=pool.keys))


async def _serve(request: web.Request, body: ClaimRequest, target: Target) -> web.Response:
    """Claim; when nothing fits, wait (up to ``wait``) for a notification that something might,
    and claim again."""
    app = request.app
    store, hub, settings = app[store_key], app[hub_key], app[settings_key]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait, settings.max_wait)
    tags = frozenset(body.tags)
    args = claim_args(body, settings, claim_actor(request))
    arrived = loop.time()
    woken: Wakeup = None
    while True:
        if woken is not None and client_gone(request):
            # The worker gave up waiting: claiming now would hand jobs to nobody. The wake-up it
            # received goes to the next waiter that fits.
            hub.hand_on(woken)
            return web.Response(body=EMPTY, content_type="application/json")
        generation = hub.generation
        leased_after = loop.time() - arrived  # the leases begin in the claim's transaction, later
        rows = await target.claim(store, args)
        if rows:
            await target.claimed(request, rows, settings.lease_seconds)
            return json_response({"jobs": rows, "waited": round(leased_after, 3)})
        # Found nothing although woken: another claim (here or on another server) was faster.
        # The wake-up is not passed on: each server woke its own fitting waiter for that job.
        woken = None
        remaining = deadline - loop.time()
        if remaining <= 0 or hub.closing:
            return await _nothing(store, target, body)
        timeout = remaining
        next_available_in = await target.next_available_in(store)
        if next_available_in is not None:
            timeout = max(0.0, min(timeout, next_available_in + 0.005))
        if hub.generation != generation:
            woken = None
            continue  # something changed while we looked: look again before sleeping
        if body.idle_summary and not _runs_jobs(body):
            # (A worker that runs jobs has something running: waiting is never pointless for
            # it, and the summary, a read of every pending and running job, is not made.)
            idle = await target.idle(store, body)
            if not idle["running"] and not idle["runnable"]:
                # Nothing runs and nothing this worker could take: waiting would change nothing.
                return json_response({"jobs": [], "idle": idle})
            if hub.generation != generation:
                continue
        if hub.waiting() >= settings.max_waiting_claims:
            # As many claims wait here as this server takes: the worker comes back later.
            body_out = {"jobs": [], "retry_after": WAITING_FULL_RETRY}
            return web.Response(
                body=orjson.dumps(body_out),
                content_type="application/json",
                headers={"Retry-After": str(WAITING_FULL_RETRY)},
            )
        Metrics.claim_waits(request)
        keys = target.names if target.pool else {target.key or "": target.project_id or 0}
        # A submission that runs this claim does it after the wait below begins.
        leased_after = loop.time() - arrived
        woken = await hub.wait(
            target.waits_on(),
            timeout,
            cpu=body.free_cpu,
            gpus=body.free_accelerators,
            tags=tags,
            idle=body.idle_summary,
            keys=keys,
            claim=partial(target.claim_json, args),
            gone=partial(client_gone, request),
        )
        if isinstance(woken, Handed):
            # A submission on this server ran this claim in its own transaction.
            if client_gone(request):
                await store.jobs.release_unread(woken.rows)
                return web.Response(body=EMPTY, content_type="application/json")
            await target.claimed(request, woken.rows, settings.lease_seconds)
            return json_response({"jobs": woken.rows, "waited": round(leased_after, 3)})
        if woken is CLOSED:
            return await _nothing(store, target, body)
        if woken is None and timeout >= remaining:
            # The whole wait passed without a wake-up for a job this claim could take: looking
            # again would find nothing (a missed notification wakes every waiter at reconnect).
            return await _nothing(store, target, body)
        if woken is FINISHED:
            deadline = loop.time()  # claim once more, then tell the worker what is left
