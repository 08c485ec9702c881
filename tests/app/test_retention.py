"""Retention: finished jobs older than the retention go with their history, output, artifact
records and dependency rows, in batches, by one server at a time; jobs an unfinished job depends
on and the members of an unfinished group stay; worker rows gone as long and expired dashboard
sessions go too. ``POST /prune`` (admin) and ``whatsnext prune`` run it by hand, the server's
loop with ``--retention``.

Nothing is waited out: finished_at and last_seen are backdated in SQL, and the loop's body runs
once by hand. Everything runs on a database of this module's own (a prune of every project would
otherwise reach other tests' jobs)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from conftest import Api, ServerProcess, create_database, drop_database
from helpers import cli, spawn_worker

from whatsnext.api.server import retention
from whatsnext.api.server.config import Settings
from whatsnext.api.server.keys import store_key
from whatsnext.api.server.retention import KINDS, prune, retention_pass
from whatsnext.api.server.routes import prune as prune_route

ADMIN = "wnt_retention_admin_" + uuid.uuid4().hex
DAY = 86400.0
LONG_AGO = "10 days"
"""How long ago the old jobs of these tests finished (prunes here keep 7 days)."""


@dataclass
class World:
    """The application in this process on this module's database (with --auth: the admin token
    is ``ADMIN``)."""

    api: Api
    url: str
    database_url: str
    app: web.Application

    async def sql(self, query: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def project(self) -> str:
        name = f"ret-{uuid.uuid4().hex[:8]}"
        await self.api.ok("POST", "/projects", {"name": name})
        await self.api.ok("POST", "/tasks/", {"name": "t", "project_id": name})
        return name

    async def worker(self, project: str) -> int:
        return int(
            (await self.api.ok("POST", "/workers", {"name": "w", "project": project, "cpu": 64}))["id"]
        )

    async def submit(self, project: str, **fields: Any) -> int:
        body = {"name": fields.pop("name", "j"), "task": "t", **fields}
        return int((await self.api.ok("POST", f"/projects/{project}/jobs", body))["id"])

    async def claim(self, project: str, worker: int, job: int) -> None:
        out = await self.api.ok(
            "POST", f"/projects/{project}/claim", {"worker_id": worker, "max_jobs": 1, "wait": 0}
        )
        assert [j["id"] for j in out["jobs"]] == [job]

    async def run(
        self, project: str, worker: int, *, fail: bool = False, output: bool = True, **fields: Any
    ) -> int:
        """A job that ran to its end on ``worker``: with output lines, a declared output and a
        checkpoint (``output``), completed or failed."""
        job = await self.submit(project, **fields)
        await self.claim(project, worker, job)
        report: dict[str, Any] = {"attempt": 1}
        if output:
            await self.api.ok("POST", f"/jobs/{job}/logs", {"attempt": 1, "lines": ["one", "two", "three"]})
            artifact = [{"direction": "out", "uri": f"/data/{job}.csv", "missing": True}]
            await self.api.ok("POST", f"/jobs/{job}/artifacts?attempt=1", artifact)
            report["checkpoint"] = f"/ckpt/{job}"
        if fail:
            await self.api.ok("POST", f"/jobs/{job}/fail", {**report, "error": "boom"})
        else:
            await self.api.ok("POST", f"/jobs/{job}/complete", report)
        return job

    async def backdate(self, *jobs: int, ago: str = LONG_AGO) -> None:
        n = await self.sql(
            "WITH u AS (UPDATE jobs SET finished_at = now() - $2::text::interval WHERE id = ANY ($1) "
            "AND finished_at IS NOT NULL RETURNING 1) SELECT count(*) FROM u",
            list(jobs),
            ago,
        )
        assert n == len(jobs), "only finished jobs are backdated"

    async def rows(self, jobs: list[int]) -> dict[str, int]:
        """The rows these jobs have, by kind (as a prune counts them)."""
        counts = {}
        for kind, query in (
            ("jobs", "SELECT count(*) FROM jobs WHERE id = ANY ($1)"),
            ("events", "SELECT count(*) FROM job_events WHERE job_id = ANY ($1)"),
            ("logs", "SELECT count(*) FROM job_logs WHERE job_id = ANY ($1)"),
            ("artifacts", "SELECT count(*) FROM artifacts WHERE job_id = ANY ($1)"),
            (
                "dependencies",
                "SELECT count(*) FROM job_dependencies WHERE job_id = ANY ($1) OR depends_on = ANY ($1)",
            ),
            ("log_state", "SELECT count(*) FROM job_log_state WHERE job_id = ANY ($1)"),
        ):
            counts[kind] = int(await self.sql(query, jobs))
        return counts

    async def prune(self, project: str | None, **body: Any) -> dict[str, Any]:
        payload = {"older_than": "7d", **body}
        if project is not None:
            payload["project"] = project
        return dict(await self.api.ok("POST", "/prune", payload))

    async def status_of(self, job: int) -> str | None:
        return await self.sql("SELECT status FROM jobs WHERE id = $1", job)


@pytest.fixture(scope="module")
async def database(pg_root_url: str) -> AsyncIterator[str]:
    from whatsnext.api.server import schema

    url = await create_database(pg_root_url, "wn_retention")
    await asyncio.to_thread(schema.upgrade, url)
    yield url
    await drop_database(pg_root_url, url)


async def _world(database: str, http: aiohttp.ClientSession, settings: Settings) -> AsyncIterator[World]:
    from aiohttp.test_utils import TestServer

    from whatsnext.api.server.app import create_app

    app = create_app(settings, database)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        yield World(Api(base, http), base, database, app)
    finally:
        await server.close()


@pytest.fixture(scope="module")
async def world(database: str, http: aiohttp.ClientSession) -> AsyncIterator[World]:
    async for w in _world(database, http, Settings(database_url=database)):
        yield w


@pytest.fixture(scope="module")
async def guarded(database: str, http: aiohttp.ClientSession) -> AsyncIterator[World]:
    """The application with --auth (the admin token: ``ADMIN``)."""
    async for w in _world(database, http, Settings(database_url=database, auth=True, admin_token=ADMIN)):
        yield w


# ---------------------------------------------------------------- what goes, what stays


async def test_prune_deletes_old_jobs_with_history_output_artifacts_and_dependencies(world: World) -> None:
    p = await world.project()
    w = await world.worker(p)
    first = await world.run(p, w)
    second = await world.run(p, w, depends=[first])
    failed = await world.run(p, w, fail=True)
    recent = await world.run(p, w)
    old = [first, second, failed]
    await world.backdate(*old)
    before = await world.rows(old)
    # Three output lines, one declared output and one checkpoint each; the dependency of second on first.
    assert before == {
        "jobs": 3,
        "events": before["events"],
        "logs": 9,
        "artifacts": 6,
        "dependencies": 1,
        "log_state": 3,
    }
    assert before["events"] >= 6  # RUNNING and its end, per job

    dry = await world.prune(p, dry_run=True)
    counts = {k: before[k] for k in ("jobs", "events", "logs", "artifacts", "dependencies")}
    assert dry["counts"] == {**counts, "workers": 0, "sessions": 0, "groups": 0, "allocations": 0}
    assert dry["dry_run"] is True and dry["done"] is True
    assert await world.rows(old) == before, "a dry run deletes nothing"

    done = await world.prune(p)
    assert done["counts"] == dry["counts"]
    assert done["done"] is True and done["busy"] is False and done["dry_run"] is False
    assert done["older_than"] == 7 * DAY and done["project"] == p
    assert await world.rows(old) == dict.fromkeys(before, 0)
    for job in old:
        status, body = await world.api.get(f"/jobs/{job}")
        assert status == 404, body
    # A job finished within the retention stays, with everything it has.
    assert (await world.rows([recent]))["jobs"] == 1
    assert (await world.rows([recent]))["logs"] == 3
    assert (await world.prune(p))["counts"]["jobs"] == 0


async def test_a_finished_job_an_unfinished_job_depends_on_stays(world: World) -> None:
    p = await world.project()
    w = await world.worker(p)
    upstream = await world.run(p, w, output=False)
    failed = await world.run(p, w, fail=True, output=False)
    gate = await world.submit(p, name="gate")  # never runs: the dependant stays PENDING
    pending = await world.submit(p, name="pending", depends=[upstream, gate])
    blocked = await world.submit(p, name="blocked", depends=[failed])
    assert await world.status_of(blocked) == "BLOCKED"
    await world.backdate(upstream, failed)

    dry = await world.prune(p, dry_run=True)
    assert dry["counts"]["jobs"] == 0
    assert (await world.prune(p))["counts"]["jobs"] == 0
    assert (await world.rows([upstream, failed, blocked, pending]))["jobs"] == 4
    # A BLOCKED job is not finished: neither it nor what it waits for goes, however old.
    await world.sql("UPDATE jobs SET created_at = now() - interval '30 days' WHERE id = $1", blocked)
    assert (await world.prune(p))["counts"]["jobs"] == 0

    # Once the dependant is finished (cancelled now: within the retention), its upstream may go.
    await world.api.ok("POST", f"/jobs/{pending}/cancel")
    assert await world.status_of(pending) == "CANCELLED"
    done = await world.prune(p)
    assert done["counts"]["jobs"] == 1 and done["counts"]["dependencies"] == 1
    assert await world.status_of(upstream) is None
    assert await world.status_of(pending) == "CANCELLED"
    status, ups = await world.api.get(f"/jobs/{pending}/dependencies")
    assert status == 200 and [u["id"] for u in ups["upstream"]] == [gate], ups


async def test_a_group_with_an_unfinished_member_keeps_every_member(world: World) -> None:
    p = await world.project()
    w = await world.worker(p)
    group = f"sweep-{uuid.uuid4().hex[:6]}"
    members = [await world.run(p, w, output=False, group=group) for _ in range(2)]
    running = await world.submit(p, name="still", group=group)
    await world.claim(p, w, running)
    await world.backdate(*members)

    assert (await world.prune(p, dry_run=True))["counts"]["jobs"] == 0
    assert (await world.prune(p))["counts"] == dict.fromkeys(KINDS, 0)
    assert (await world.rows(members))["jobs"] == 2

    # The last member ends: the old members go, the group stays for the member within the retention.
    await world.api.ok("POST", f"/jobs/{running}/complete", {"attempt": 1})
    done = await world.prune(p)
    assert done["counts"]["jobs"] == 2 and done["counts"]["groups"] == 0
    got = await world.api.ok("GET", f"/projects/{p}/groups/{group}")
    assert got["total"] == 1

    # Its last member old too: the group, left empty, goes with it.
    await world.backdate(running)
    assert (await world.prune(p, dry_run=True))["counts"]["groups"] == 1
    done = await world.prune(p)
    assert done["counts"]["jobs"] == 1 and done["counts"]["groups"] == 1
    status, _ = await world.api.get(f"/projects/{p}/groups/{group}")
    assert status == 404


async def test_what_may_still_run_keeps_everything_upstream_of_it(world: World) -> None:
    p = await world.project()
    w = await world.worker(p)
    # first <- failed <- blocked: a retry of failed reads first's result, so first stays too.
    first = await world.run(p, w, output=False)
    failed = await world.run(p, w, fail=True, output=False, depends=[first])
    blocked = await world.submit(p, name="blocked", depends=[failed])
    assert await world.status_of(blocked) == "BLOCKED"
    # source <- member of a group with a running member: a retry of the group reads source.
    group = f"g-{uuid.uuid4().hex[:6]}"
    source = await world.run(p, w, output=False)
    member = await world.run(p, w, output=False, group=group, depends=[source])
    running = await world.submit(p, name="still", group=group)
    await world.claim(p, w, running)
    # lone <- done: nothing unfinished downstream, both go.
    lone = await world.run(p, w, output=False)
    done = await world.run(p, w, output=False, depends=[lone])
    await world.backdate(first, failed, source, member, lone, done)

    assert (await world.prune(p, dry_run=True))["counts"]["jobs"] == 2
    assert (await world.prune(p))["counts"]["jobs"] == 2
    assert [await world.status_of(j) for j in (lone, done)] == [None, None]
    kept = [first, failed, blocked, source, member, running]
    assert (await world.rows(kept))["jobs"] == len(kept)


async def test_a_dry_run_counts_page_by_page_what_the_batches_delete(world: World) -> None:
    p = await world.project()
    w = await world.worker(p)
    group = f"g-{uuid.uuid4().hex[:6]}"
    jobs = [await world.run(p, w, group=group if i % 2 else None) for i in range(7)]
    await world.backdate(*jobs)
    store = world.app[store_key]
    # Pages of two jobs: the group's three members spread over pages; it counts once, on the page
    # of its last member.
    dry = await prune(store, older_than=7 * DAY, project=p, dry_run=True, batch=2)
    assert dry.done and dry.batches == 4
    assert dry.counts["jobs"] == 7 and dry.counts["groups"] == 1 and dry.counts["logs"] == 21
    assert (await world.rows(jobs))["jobs"] == 7
    # The same counted over requests that each stop after one page.
    paged = await prune(store, older_than=7 * DAY, project=p, dry_run=True, batch=2, budget=0)
    while not paged.done:
        more = await prune(
            store, older_than=7 * DAY, project=p, dry_run=True, batch=2, budget=0, after=paged.after
        )
        more.add(paged.counts)
        more.batches += paged.batches
        paged = more
    assert paged.counts == dry.counts and paged.batches == 4
    real = await prune(store, older_than=7 * DAY, project=p, batch=2)
    assert real.counts == dry.counts
    assert (await world.rows(jobs))["jobs"] == 0


async def test_batches_go_on_until_nothing_is_left_and_one_server_prunes_at_a_time(world: World) -> None:
    p = await world.project()
    n = 1203
    ids = [
        int(i)
        for i in await _fetch(
            world,
            "INSERT INTO jobs (project_id, task_id, name, status, attempt, finished_at) "
            "SELECT p.id, t.id, 'bulk', 'COMPLETED', 1, now() - interval '10 days' - make_interval(secs => g) "
            "FROM generate_series(1, $2) g, projects p JOIN tasks t ON t.project_id = p.id "
            "WHERE p.name = $1 RETURNING id",
            p,
            n,
        )
    ]
    oldest = await _fetch(
        world, "SELECT id FROM jobs WHERE id = ANY ($1) ORDER BY finished_at LIMIT 500", ids
    )
    store = world.app[store_key]

    # Another server holds the batch lock: this one deletes nothing and says so.
    conn = await asyncpg.connect(world.database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('whatsnext.retention'))")
            held = await prune(store, older_than=7 * DAY, project=p)
            assert held.busy and not held.done and held.counts["jobs"] == 0
            waited = await prune(store, older_than=7 * DAY, project=p, budget=0.5, wait_busy=True)
            assert waited.busy and waited.batches == 0
    finally:
        await conn.close()

    # A request's time runs out after its first batch: not done; the next call goes on from there.
    first = await prune(store, older_than=7 * DAY, project=p, batch=500, budget=0)
    assert (first.batches, first.counts["jobs"], first.done) == (1, 500, False)
    assert first.after is not None and first.after[1] == oldest[-1]
    assert (await world.rows(oldest))["jobs"] == 0  # the oldest go first
    rest = await prune(store, older_than=7 * DAY, project=p, batch=500, after=first.after)
    assert (rest.batches, rest.counts["jobs"], rest.done, rest.after) == (2, n - 500, True, None)
    assert (await world.rows(ids))["jobs"] == 0


async def _fetch(world: World, query: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(world.database_url)
    try:
        return [r[0] for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


# ---------------------------------------------------------------- the loop, workers, sessions


async def test_the_loop_deletes_old_jobs_workers_and_expired_sessions(world: World, tmp_path: Path) -> None:
    p = await world.project()
    # A real worker runs a job and leaves (OFFLINE) when idle.
    job = await world.submit(p, parameters={"out": str(tmp_path)})
    proc = spawn_worker(world.url, p, tmp_path / "worker.log", "--idle-timeout", "1")
    try:
        await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (tmp_path / "worker.log").read_text()
    assert await world.status_of(job) == "COMPLETED"
    gone = int(await world.sql("SELECT worker_id FROM jobs WHERE id = $1", job))
    assert await world.sql("SELECT status FROM workers WHERE id = $1", gone) == "OFFLINE"
    # Another worker last heard from long ago; one that ran a job that is kept; one that still runs
    # a job (its lease not yet out); and a live one.
    lost = await world.worker(p)
    holder = await world.worker(p)
    busy = await world.worker(p)
    live = await world.worker(p)
    kept = await world.submit(p, name="kept")
    await world.claim(p, holder, kept)
    await world.api.ok("POST", f"/jobs/{kept}/complete", {"attempt": 1})
    running = await world.submit(p, name="running")
    await world.claim(p, busy, running)
    await world.submit(p, name="waits", depends=[kept, await world.submit(p, name="gate")])
    await world.sql(
        "UPDATE workers SET last_seen = now() - interval '1 hour' WHERE id = ANY ($1)",
        [gone, lost, holder, busy],
    )
    await world.backdate(job, kept, ago="1 minute")
    expired, fresh = os.urandom(32), os.urandom(32)
    await world.sql(
        "INSERT INTO ui_sessions (hash, admin_hash, expires_at) VALUES "
        "($1, $3, now() - interval '1 second'), ($2, $3, now() + interval '1 hour')",
        expired,
        fresh,
        hashlib.sha256(ADMIN.encode()).digest(),
    )

    ran_by = (await world.api.ok("GET", f"/jobs/{kept}"))["worker_name"]
    assert ran_by
    pruned = await retention_pass(world.app[store_key], Settings(retention=20.0))
    assert not pruned.busy and pruned.done
    assert pruned.counts["jobs"] >= 1 and pruned.counts["workers"] >= 2 and pruned.counts["sessions"] >= 1
    assert await world.status_of(job) is None
    assert await world.status_of(kept) == "COMPLETED"
    remaining = await _fetch(
        world, "SELECT id FROM workers WHERE id = ANY ($1)", [gone, lost, holder, busy, live]
    )
    assert sorted(remaining) == sorted([busy, live])
    # The kept job keeps the name of the worker that ran it.
    ran = await world.api.ok("GET", f"/jobs/{kept}")
    assert ran["worker_id"] is None and ran["worker_name"] == ran_by, ran
    sessions = await _fetch(world, "SELECT hash FROM ui_sessions WHERE hash = ANY ($1)", [expired, fresh])
    assert sessions == [fresh]
    # A project's prune leaves workers and sessions alone.
    assert (await world.prune(p, older_than=1))["counts"] == dict.fromkeys(KINDS, 0)


async def test_allocations_that_ended_long_ago_go(world: World) -> None:
    """Allocations (workers started on SLURM or RUN:AI) that ended before the cutoff go with a
    prune of every project; running ones and recent ones stay."""
    p = await world.project()
    queue = await world.sql(
        "INSERT INTO alloc_queues (name, backend, project_ids, time_limit, max_workers) "
        "VALUES ($1, 'slurm', ARRAY[wn_project_id($2)], 3600, 2) RETURNING id",
        f"q-{p}",
        p,
    )
    ids = await _fetch(
        world,
        "INSERT INTO allocations (queue_id, name, state, time_limit, ended_at) VALUES "
        "($1, 'finished', 'FINISHED', 60, now() - interval '1 hour'), "
        "($1, 'failed', 'FAILED', 60, now() - interval '1 hour'), "
        "($1, 'cancelled', 'CANCELLED', 60, NULL), "
        "($1, 'running', 'RUNNING', 60, NULL), "
        "($1, 'recent', 'FINISHED', 60, now()) RETURNING id",
        queue,
    )
    # Never ended on record: as old as its last change.
    await world.sql("UPDATE allocations SET updated_at = now() - interval '1 hour' WHERE id = $1", ids[2])
    # A project's prune leaves them alone; a dry run counts them.
    assert (await world.prune(p, older_than=60))["counts"]["allocations"] == 0
    dry = await world.api.ok("POST", "/prune", {"older_than": 60, "dry_run": True})
    assert dry["counts"]["allocations"] >= 3
    pruned = await retention_pass(world.app[store_key], Settings(retention=60.0))
    assert not pruned.busy and pruned.done and pruned.counts["allocations"] >= 3
    assert await _fetch(world, "SELECT name FROM allocations WHERE queue_id = $1 ORDER BY id", queue) == [
        "running",
        "recent",
    ]


async def test_a_worker_many_kept_jobs_still_name_stays(world: World) -> None:
    """No batch rewrites many jobs: a worker row goes when at most a batch of jobs still name it."""
    p = await world.project()
    heavy, light = await world.worker(p), await world.worker(p)
    gate = await world.submit(p, name="gate", required_cpu=1000)  # never runs
    ran = [await world.run(p, heavy, output=False) for _ in range(3)] + [
        await world.run(p, light, output=False)
    ]
    await world.submit(p, name="waits", depends=[*ran, gate])  # keeps them all
    await world.backdate(*ran, ago="1 minute")
    await world.sql(
        "UPDATE workers SET last_seen = now() - interval '1 hour' WHERE id = ANY ($1)", [heavy, light]
    )

    pruned = await prune(world.app[store_key], older_than=20, batch=2)
    assert pruned.done
    remaining = await _fetch(world, "SELECT id FROM workers WHERE id = ANY ($1)", [heavy, light])
    assert remaining == [heavy]
    assert (await world.rows(ran))["jobs"] == 4


async def test_fair_share_usage_does_not_change_when_jobs_go(world: World) -> None:
    p = await world.project()
    w = await world.worker(p)
    job = await world.run(p, w, output=False)
    await world.sql("UPDATE jobs SET started_at = finished_at - interval '1 hour' WHERE id = $1", job)
    await world.backdate(job)
    query = (
        "SELECT sum(usage) FROM project_usage WHERE project_id = (SELECT id FROM projects WHERE name = $1)"
    )
    before = await world.sql(query, p)
    assert (await world.prune(p))["counts"]["jobs"] == 1
    assert await world.sql(query, p) == before


# ---------------------------------------------------------------- the API, the CLI, the setting


async def test_prune_is_for_admins_and_names_a_bad_field(guarded: World, http: aiohttp.ClientSession) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}

    async def as_(token: str, body: Any) -> tuple[int, Any]:
        async with http.post(
            guarded.url + "/prune", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            return resp.status, await resp.json()

    async with http.post(
        guarded.url + "/projects", json={"name": f"g-{uuid.uuid4().hex[:6]}"}, headers=admin
    ):
        pass
    tokens = {}
    for role in ("operator", "viewer", "submitter"):
        async with http.post(
            guarded.url + "/tokens",
            json={"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role},
            headers=admin,
        ) as resp:
            assert resp.status == 201
            tokens[role] = (await resp.json())["token"]
    for role, token in tokens.items():
        status, body = await as_(token, {"older_than": "30d", "dry_run": True})
        assert status == 403, (role, body)
        assert body["error"]["details"]["field"] == "role"
    status, body = await as_(ADMIN, {"older_than": "3650d", "dry_run": True})
    assert status == 200 and body["dry_run"] is True, body

    for bad, field in (
        ({"older_than": "soon"}, "older_than"),
        ({"older_than": -1}, "older_than"),
        ({"older_than": 0}, "older_than"),
        ({"older_than": "1e999"}, "older_than"),
        ({}, "older_than"),
        ({"older_than": "7d", "dry_run": "maybe"}, "dry_run"),
        ({"older_than": "7d", "project": ""}, "project"),
        ({"older_than": "7d", "keep": True}, "keep"),
        ({"older_than": "7d", "after": "yesterday"}, "after"),
        ({"older_than": "7d", "after": "2026-01-01T00:00:00/12"}, "after"),  # no time zone
    ):
        status, body = await as_(ADMIN, bad)
        assert status == 422, (bad, body)
        assert body["error"]["details"][0]["field"].split(".")[0] == field, (bad, body)
    status, body = await as_(ADMIN, {"older_than": "7d", "project": f"nope-{uuid.uuid4().hex[:6]}"})
    assert status == 404 and body["error"]["details"]["field"] == "project", body


async def test_prune_command(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    p = await world.project()
    w = await world.worker(p)
    jobs = [await world.run(p, w) for _ in range(2)]
    await world.backdate(*jobs)
    server = SimpleNamespace(url=world.url)
    # One job per batch and one batch per request: the command goes on from each answer's next.
    monkeypatch.setattr(retention, "BATCH", 1)
    monkeypatch.setattr(retention, "DRY_BATCH", 1)
    monkeypatch.setattr(prune_route, "REQUEST_BUDGET", 0)
    first = await world.prune(p, dry_run=True)
    assert first["done"] is False and first["next"] and first["counts"]["jobs"] == 1

    dry = await asyncio.to_thread(cli, server, "prune", "--older-than", "7d", "--project", p, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete (dry run, nothing deleted): finished more than 7d ago, project " + p in dry.stdout
    assert [line.split()[-1] for line in dry.stdout.splitlines() if line.startswith("jobs ")] == ["2"]
    assert (await world.rows(jobs))["jobs"] == 2

    done = await asyncio.to_thread(cli, server, "prune", "--older-than", "1w", "--project", p)
    assert done.returncode == 2 and "1w" in done.stderr  # not a duration: a usage error
    done = await asyncio.to_thread(cli, server, "prune", "--older-than", "7d", "--project", p, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["counts"]["jobs"] == 2 and out["counts"]["logs"] == 6 and out["done"] is True
    assert out["batches"] >= 2
    assert (await world.rows(jobs))["jobs"] == 0

    helped = await asyncio.to_thread(cli, server, "prune", "--help")
    assert "whatsnext prune --older-than 30d --dry-run" in helped.stdout
    missing = await asyncio.to_thread(cli, server, "prune", "--project", p)
    assert missing.returncode == 2 and "--older-than" in missing.stderr


async def test_status_says_whether_a_retention_is_set(
    world: World, database: str, server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    none = await asyncio.to_thread(cli, SimpleNamespace(url=world.url), "status")
    assert none.returncode == 0, none.stderr
    assert "retention" in none.stdout and "none: finished jobs are kept forever" in none.stdout

    srv: ServerProcess = await server_factory("--retention", "20s", database=database)
    health = await Api(srv.url, world.api.session).ok("GET", "/health")
    assert health["retention"] == 20
    shown = await asyncio.to_thread(cli, srv, "status")
    assert "finished jobs are deleted 20s after they finish" in shown.stdout, shown.stdout
    assert "retention" in srv.log()

    refused = await asyncio.to_thread(cli, None, "server", "--retention", "soon")
    assert refused.returncode == 2 and "soon" in refused.stderr
    monkeypatch.setenv("WHATSNEXT_RETENTION", "30d")
    assert Settings.from_env().retention == 30 * DAY
