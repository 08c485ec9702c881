""" "Why is it not running?" on a job's page, for what sharing the pool holds a job to: its
concurrency key at its limit, its project's quota reached, and other projects served first by
fair share (named only to a viewer who may see them)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pool_world import ADMIN, PoolServer, pool_server

from whatsnext.api.server.dashboard.why import explain, unnamed

ROOM = "has room for it"


@pytest.fixture(scope="module")
async def pool(pg_root_url: str) -> AsyncIterator[PoolServer]:
    async with pool_server(pg_root_url) as srv:
        yield srv


async def reasons(pool: PoolServer, job_id: int, token: str = ADMIN) -> list[str]:
    """The reasons the job's page gives, in order."""
    status, text = await pool.page(token, f"/ui/jobs/{job_id}")
    assert status == 200, text
    section = text.split('id="why"', 1)[1].split("</ul>", 1)[0]
    return [re.sub(r"\s+", " ", r).strip() for r in re.findall(r"<li>(.*?)</li>", section, re.S)]


async def test_a_concurrency_key_at_its_limit(pool: PoolServer) -> None:
    p, p_id = await pool.project("key")
    worker = await pool.worker(cpu=8, project=p)
    jobs = await pool.jobs(p, 3)
    await pool.sql(
        "UPDATE jobs SET concurrency_key = 'licence-x', concurrency_limit = 2 WHERE project_id = $1", p_id
    )
    claimed = await pool.claim(p, worker, cpu=8)
    assert [j["id"] for j in claimed] == jobs[:2]  # the key's limit holds the third back
    assert await reasons(pool, jobs[2]) == ["concurrency key licence-x: 2 of 2 running"]

    # A running job with a smaller limit for the key holds for everyone.
    await pool.sql("UPDATE jobs SET concurrency_limit = 3 WHERE id = $1", jobs[2])
    await pool.sql("UPDATE jobs SET concurrency_limit = 1 WHERE id = $1", jobs[0])
    assert await reasons(pool, jobs[2]) == ["concurrency key licence-x: 2 of 1 running"]
    await pool.sql("UPDATE jobs SET concurrency_limit = 3 WHERE project_id = $1", p_id)
    [why] = await reasons(pool, jobs[2])
    assert ROOM in why  # under the limit: nothing but the next claim


async def test_a_project_quota_reached(pool: PoolServer) -> None:
    p, p_id = await pool.project("quota")
    worker = await pool.worker(cpu=8, gpus=4, project=p)
    jobs = await pool.jobs(p, 3, required_accelerators=1)
    await pool.sql("UPDATE projects SET max_gpus = 2 WHERE id = $1", p_id)
    claimed = await pool.claim(p, worker, cpu=8, gpus=4)
    assert [j["id"] for j in claimed] == jobs[:2]
    assert await reasons(pool, jobs[2]) == ["project quota: 2 of 2 GPUs in use"]

    await pool.sql("UPDATE projects SET max_gpus = NULL, max_cpus = 2, max_running = 2 WHERE id = $1", p_id)
    assert await reasons(pool, jobs[2]) == [
        "project quota: 2 of 2 CPUs in use",
        "project quota: 2 of 2 jobs running",
    ]
    await pool.sql(
        "UPDATE projects SET max_cpus = NULL, max_running = NULL, max_gpus = 3 WHERE id = $1", p_id
    )
    await pool.sql("UPDATE jobs SET required_accelerators = 2 WHERE id = $1", jobs[2])
    assert await reasons(pool, jobs[2]) == ["project quota: 2 of 3 GPUs in use, the job needs 2"]
    await pool.sql("UPDATE projects SET max_gpus = 1 WHERE id = $1", p_id)
    assert await reasons(pool, jobs[2]) == ["project quota: the job needs 2 GPUs, the quota allows 1"]


async def test_waiting_for_the_fair_share(pool: PoolServer) -> None:
    a, a_id = await pool.project("heavy")
    b, _ = await pool.project("light")
    # Project a ran a 1-GPU job for an hour on a worker of its own.
    own = await pool.worker(cpu=2, gpus=1, project=a)
    await pool.jobs(a, 1, required_accelerators=1)
    [done] = await pool.claim(a, own, cpu=2, gpus=1)
    await pool.run_for_an_hour(done)
    [waiting] = await pool.jobs(a, 1, required_accelerators=1)
    # Alone on a worker of its project, the job goes at the next claim.
    [why] = await reasons(pool, waiting)
    assert ROOM in why

    # A worker shared by both projects, and project b has a job waiting too: b goes first.
    shared = await pool.worker(cpu=4, gpus=2, projects=[a, b])
    [first] = await pool.jobs(b, 1, required_accelerators=1)
    usage = await pool.sql("SELECT usage FROM wn_project_usage(ARRAY[$1::bigint])", a_id)
    expected = (
        f"waiting for project {a}'s fair share: usage {usage / 3600:.2f} GPU-hours (weighted) vs share 1; "
        f"projects ahead: {b} (0.00 GPU-hours, share 1)"
    )
    assert await reasons(pool, waiting) == [expected]

    # A viewer of project a only learns that another project goes first, not which.
    viewer = await pool.token("viewer", [a])
    assert await reasons(pool, waiting, viewer) == [
        f"waiting for project {a}'s fair share: usage {usage / 3600:.2f} GPU-hours (weighted) vs share 1; "
        "projects ahead: 1 other project"
    ]
    status, text = await pool.page(viewer, f"/ui/jobs/{waiting}")
    assert status == 200 and b not in text

    # The claim agrees: a claim of one job for both projects takes b's. With b's job running and
    # nothing more of b waiting, a's job goes next.
    body = {"worker_id": shared, "projects": [a, b], "free_cpu": 4, "free_accelerators": 2, "max_jobs": 1}
    claimed = (await pool.root.ok("POST", "/claim", body))["jobs"]
    assert [(j["id"], j["project"]) for j in claimed] == [(first, b)]
    [why] = await reasons(pool, waiting)
    assert ROOM in why


def test_a_few_projects_ahead_are_named_and_the_rest_counted() -> None:
    job: dict[str, Any] = {
        "status": "PENDING",
        "unmet_deps": 0,
        "required_cpu": 1,
        "required_accelerators": 0,
        "required_tags": [],
    }
    worker = {"name": "w", "cpu": 4, "accelerators": 0, "used_cpu": 0, "used_accelerators": 0}
    ahead = [{"id": i, "name": f"q{i}", "share": 2.0, "usage": 360.0 * i} for i in range(8)]
    pool = {"project": "p", "share": 0.5, "usage": 7200.0, "ahead": ahead, "concurrency_key": None}
    why = explain(
        job,
        [],
        [worker | {"tags": [], "online": True}],
        0,
        datetime.now(UTC),
        300,
        unnamed(pool, lambda i: i != 3),
    )
    assert why is not None and why.reasons == [
        "waiting for project p's fair share: usage 2.00 GPU-hours (weighted) vs share 0.5; projects ahead: "
        "q0 (0.00 GPU-hours, share 2), q1 (0.10 GPU-hours, share 2), q2 (0.20 GPU-hours, share 2), "
        "q4 (0.40 GPU-hours, share 2), q5 (0.50 GPU-hours, share 2), 3 other projects"
    ]


async def test_no_live_worker_has_time_enough_for_its_timeout(pool: PoolServer) -> None:
    p, _ = await pool.project("walltime")
    end = datetime.now(UTC) + timedelta(seconds=600)
    await pool.worker(cpu=8, project=p, deadline=end.isoformat())
    await pool.worker(cpu=8, project=p, deadline=(end - timedelta(seconds=300)).isoformat())
    [long] = await pool.jobs(p, 1, timeout=3600)
    [why] = await reasons(pool, long)
    assert re.fullmatch(
        r"the job needs 3600 s \(its timeout\); the live workers that could run it have at most "
        r"5[89]\d s left",
        why,
    ), why
    [short] = await pool.jobs(p, 1, timeout=60)
    [why] = await reasons(pool, short)
    assert ROOM in why
    # A worker without an end could run it: then the job only waits for its next claim.
    await pool.worker(cpu=8, project=p)
    [why] = await reasons(pool, long)
    assert ROOM in why


def test_a_worker_short_of_time_is_never_the_closest() -> None:
    job: dict[str, Any] = {
        "status": "PENDING",
        "unmet_deps": 0,
        "required_cpu": 4,
        "required_accelerators": 0,
        "required_tags": [],
        "timeout": 3600.0,
    }
    base = {"accelerators": 0, "used_accelerators": 0, "tags": [], "online": True}
    ending = base | {"name": "ending", "cpu": 8, "used_cpu": 0, "time_left": 100.0}
    busy = base | {"name": "busy", "cpu": 8, "used_cpu": 6, "time_left": None}
    why = explain(job, [], [ending, busy], 0, datetime.now(UTC), 300)
    assert why is not None and why.closest is not None and why.closest.name == "busy"
    assert why.reasons == [
        "no online worker has enough free capacity now (the job needs 4 CPUs, 0 GPUs); "
        "closest: busy, which lacks 2 more free CPUs"
    ]
