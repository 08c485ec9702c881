"""/metrics: each project's share, quotas and usage of the pool, as the database holds them, and
only its own projects' series for a token of some projects."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from pool_world import PoolServer, pool_server

USAGE = (
    "whatsnext_project_usage_gpu_seconds",
    "whatsnext_project_usage_cpu_seconds",
    "whatsnext_project_usage",
)
QUOTAS = ("whatsnext_project_quota_gpus", "whatsnext_project_quota_cpus", "whatsnext_project_quota_running")


@pytest.fixture(scope="module")
async def pool(pg_root_url: str) -> AsyncIterator[PoolServer]:
    async with pool_server(pg_root_url) as srv:
        yield srv


def an_hour(weight: float, half_life: float = 3600) -> float:
    """What an attempt of ``weight`` that ran for an hour adds, decayed as it ran (one half-life)."""
    return weight * half_life / math.log(2) * (1 - 2 ** (-3600 / half_life))


async def test_share_quotas_and_usage_per_project(pool: PoolServer) -> None:
    a, a_id = await pool.project("metrics-a")
    b, _ = await pool.project("metrics-b")
    await pool.sql("UPDATE projects SET share = 2.5, max_gpus = 8, max_running = 3 WHERE id = $1", a_id)

    s = await pool.fresh_gauges()
    assert s.get("whatsnext_project_share", project=a) == 2.5
    assert s.get("whatsnext_project_share", project=b) == 1
    assert s.get("whatsnext_project_quota_gpus", project=a) == 8
    assert s.get("whatsnext_project_quota_running", project=a) == 3
    assert s.get("whatsnext_project_quota_cpus", project=a) is None  # no CPU quota: no series
    for name in QUOTAS:
        assert s.get(name, project=b) is None
    for name in USAGE:
        assert s.get(name, project=a) == s.get(name, project=b) == 0

    # An attempt of 2 GPUs and 4 CPUs that ran for an hour (weight: its GPUs, more than 4 / 8).
    worker = await pool.worker(cpu=4, gpus=2, project=a)
    await pool.jobs(a, 1, required_cpu=4, required_accelerators=2)
    [job] = await pool.claim(a, worker, cpu=4, gpus=2)
    await pool.run_for_an_hour(job)
    await pool.sql("UPDATE projects SET max_gpus = NULL, max_cpus = 16 WHERE id = $1", a_id)

    s = await pool.fresh_gauges()
    assert s.get("whatsnext_project_usage_gpu_seconds", project=a) == pytest.approx(an_hour(2), rel=1e-3)
    assert s.get("whatsnext_project_usage_cpu_seconds", project=a) == pytest.approx(an_hour(4), rel=1e-3)
    assert s.get("whatsnext_project_usage", project=a) == pytest.approx(an_hour(2), rel=1e-3)
    assert s.get("whatsnext_project_usage", project=b) == 0
    assert s.get("whatsnext_project_quota_gpus", project=a) is None
    assert s.get("whatsnext_project_quota_cpus", project=a) == 16
    assert s.get("whatsnext_project_quota_running", project=a) == 3


async def test_a_token_of_some_projects_sees_only_their_pool_series(pool: PoolServer) -> None:
    a, a_id = await pool.project("seen")
    b, b_id = await pool.project("unseen")
    await pool.sql("UPDATE projects SET share = 3, max_running = 5 WHERE id = ANY ($1)", [a_id, b_id])
    worker = await pool.worker(cpu=2, project=b)
    await pool.jobs(b, 1, required_cpu=2)
    [job] = await pool.claim(b, worker, cpu=2)
    await pool.run_for_an_hour(job)
    everything = await pool.fresh_gauges()
    assert everything.get("whatsnext_project_usage_cpu_seconds", project=b) == pytest.approx(
        an_hour(2), rel=1e-3
    )
    assert everything.get("whatsnext_project_quota_running", project=b) == 5

    viewer = await pool.token("viewer", [a])
    mine = await pool.scrape(viewer)
    assert b not in mine.text
    assert mine.projects() == {a}
    assert mine.get("whatsnext_project_share", project=a) == 3
    assert mine.get("whatsnext_project_quota_running", project=a) == 5
    for name in USAGE:
        assert mine.get(name, project=a) == 0
        assert f"# TYPE {name} gauge" in mine.text  # the family stays, without other projects' samples
