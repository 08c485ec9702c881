"""Allocation under --auth and where it shows: a queue needs manage on every project it serves (a
token of some projects sees and touches only the queues of its own projects), demand held to the
token's projects, allocations by state in /metrics, the dashboard's allocation page, and "why is
it not running?" naming the allocation requested for a job."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pool_world import ADMIN, PoolServer, pool_server

from whatsnext.api.server.dashboard.why import allocation_reason, explain


@pytest.fixture(scope="module")
async def pool(pg_root_url: str) -> AsyncIterator[PoolServer]:
    async with pool_server(pg_root_url) as srv:
        yield srv


def queue_body(*projects: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"q-{uuid.uuid4().hex[:8]}",
        "backend": "slurm",
        "projects": list(projects),
        "time_limit": 7200,
        "max_workers": 2,
        **extra,
    }


async def reasons(pool: PoolServer, job_id: int, token: str = ADMIN) -> list[str]:
    status, text = await pool.page(token, f"/ui/jobs/{job_id}")
    assert status == 200, text
    section = text.split('id="why"', 1)[1].split("</ul>", 1)[0]
    return [re.sub(r"\s+", " ", r).strip() for r in re.findall(r"<li>(.*?)</li>", section, re.S)]


async def test_a_queue_needs_manage_on_every_project_it_serves(pool: PoolServer) -> None:
    a, _ = await pool.project("mine")
    b, _ = await pool.project("theirs")
    operator = pool.api(await pool.token("operator", [a]))
    viewer_a = pool.api(await pool.token("viewer", [a]))
    submitter = pool.api(await pool.token("submitter"))

    status, body = await operator.post("/alloc/queues", queue_body(a, b))
    assert status == 403 and body["error"]["details"]["field"] == "projects"
    status, body = await operator.post("/alloc/queues", queue_body(a, "nope-" + uuid.uuid4().hex))
    assert status == 403 and body["error"]["details"]["field"] == "projects"  # not told it does not exist
    status, body = await submitter.post("/alloc/queues", queue_body(a))
    assert status == 403 and body["error"]["details"]["field"] == "role"
    mine = (await operator.ok("POST", "/alloc/queues", queue_body(a), expect=201))["name"]
    both = (await pool.root.ok("POST", "/alloc/queues", queue_body(a, b), expect=201))["name"]

    # a token of some projects lists and reads only the queues all of whose projects it covers
    for client in (operator, viewer_a):
        names = {q["name"] for q in (await client.ok("GET", "/alloc/queues"))["queues"]}
        assert mine in names and both not in names
        assert (await client.get(f"/alloc/queues/{both}"))[0] == 403
        assert (await client.get(f"/alloc/queues/{both}/allocations"))[0] == 403
    assert {mine, both} <= {q["name"] for q in (await pool.root.ok("GET", "/alloc/queues"))["queues"]}

    for method, path, body in (
        ("PATCH", f"/alloc/queues/{both}", {"paused": True}),
        ("DELETE", f"/alloc/queues/{both}", None),
        ("POST", f"/alloc/queues/{both}/lease", {"holder": "h:1"}),
        ("DELETE", f"/alloc/queues/{both}/lease?holder=h:1", None),
        ("POST", f"/alloc/queues/{both}/allocations", {"name": "x", "time_limit": 60}),
        ("PATCH", f"/alloc/queues/{mine}", {"projects": [a, b]}),  # it cannot widen its own queue
    ):
        status, answer = await operator.call(method, path, json=body)
        assert status == 403, (method, path, answer)
        assert answer["error"]["details"]["field"] == "projects"
    made = await pool.root.ok("POST", f"/alloc/queues/{both}/allocations", {"name": "x", "time_limit": 60})
    status, answer = await operator.patch(f"/allocations/{made['id']}", {"reason": "Priority"})
    assert status == 403 and answer["error"]["details"]["field"] == "projects"
    assert (await viewer_a.patch(f"/alloc/queues/{mine}", {"paused": True}))[0] == 403  # read only

    # its own queue it manages in full
    assert (await operator.ok("PATCH", f"/alloc/queues/{mine}", {"paused": True}))["paused"] is True
    assert (await operator.ok("POST", f"/alloc/queues/{mine}/lease", {"holder": "h:1"}))["holder"] == "h:1"
    mine_alloc = await operator.ok(
        "POST", f"/alloc/queues/{mine}/allocations", {"name": "y", "time_limit": 60}, expect=201
    )
    assert (await operator.ok("PATCH", f"/allocations/{mine_alloc['id']}", {"state": "RUNNING"}))[
        "state"
    ] == "RUNNING"
    assert await operator.ok("DELETE", f"/alloc/queues/{mine}") == {"deleted": 1}


async def test_demand_is_held_to_the_projects_of_the_token(pool: PoolServer) -> None:
    a, _ = await pool.project("mine")
    b, _ = await pool.project("theirs")
    await pool.jobs(a, 2)
    await pool.jobs(b, 1)
    viewer = pool.api(await pool.token("viewer", [a]))
    demand = await viewer.ok("GET", "/demand")
    assert {s["project"] for s in demand["shapes"]} == {a} and demand["pending"] == 2
    status, body = await viewer.get(f"/demand?project={b}")
    assert status == 403 and body["error"]["details"]["field"] == "project"
    status, body = await viewer.get(f"/demand?project=nope-{uuid.uuid4().hex}")
    assert status == 403 and body["error"]["details"]["field"] == "project"
    assert (await viewer.get(f"/projects/{b}/demand"))[0] == 403
    assert (await viewer.ok("GET", f"/projects/{a}/demand"))["unserved"] == 2
    everything = await pool.root.ok("GET", f"/demand?project={a}&project={b}")
    assert everything["pending"] == 3


async def test_allocations_by_state_are_gauges(pool: PoolServer) -> None:
    a, _ = await pool.project("gauge")
    q = (await pool.root.ok("POST", "/alloc/queues", queue_body(a), expect=201))["name"]
    empty = (await pool.root.ok("POST", "/alloc/queues", queue_body(a), expect=201))["name"]
    path = f"/alloc/queues/{q}/allocations"
    ids = [(await pool.root.ok("POST", path, {"name": f"n{i}", "time_limit": 60}))["id"] for i in range(4)]
    await pool.root.ok("PATCH", f"/allocations/{ids[0]}", {"state": "RUNNING"})
    await pool.root.ok("PATCH", f"/allocations/{ids[1]}", {"state": "FAILED", "reason": "sbatch failed"})
    s = await pool.fresh_gauges()
    assert s.get("whatsnext_allocations", queue=q, state="QUEUED") == 2
    assert s.get("whatsnext_allocations", queue=q, state="RUNNING") == 1
    assert s.get("whatsnext_allocations", queue=q, state="FAILED") == 1
    assert s.get("whatsnext_allocations", queue=q, state="CANCELLED") == 0
    assert s.get("whatsnext_allocations", queue=empty, state="QUEUED") == 0
    await pool.root.ok("DELETE", f"/alloc/queues/{q}")
    assert (await pool.fresh_gauges()).get("whatsnext_allocations", queue=q, state="QUEUED") is None


async def test_the_allocation_page_lists_queues_and_their_latest_allocations(pool: PoolServer) -> None:
    a, _ = await pool.project("page")
    b, _ = await pool.project("hidden")
    q = (await pool.root.ok("POST", "/alloc/queues", queue_body(a), expect=201))["name"]
    other = (await pool.root.ok("POST", "/alloc/queues", queue_body(b), expect=201))["name"]
    await pool.root.ok(
        "PATCH", f"/alloc/queues/{q}", {"last_error": "sbatch: error: invalid partition specified"}
    )
    made = await pool.root.ok(
        "POST",
        f"/alloc/queues/{q}/allocations",
        {"name": "wn-page-1", "external_id": "777", "time_limit": 60, "reason": "Priority"},
    )
    status, text = await pool.page(ADMIN, "/ui/alloc")
    assert status == 200, text
    assert '<a href="/ui/alloc">Allocation</a>' in text
    section = text.split(f'data-queue="{q}"', 1)[1].split("</section>", 1)[0]
    assert "invalid partition specified" in section and "queued 1, running 0" in section
    cells = re.search(rf'<tr data-allocation="{made["id"]}">(.*?)</tr>', section, re.S)
    assert cells is not None
    words = [
        re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", cells.group(1), re.S)
    ]
    assert words[1:5] == ["wn-page-1", "777", "QUEUED", "Priority"]
    assert f'data-queue="{other}"' in text

    viewer = await pool.token("viewer", [a])
    status, text = await pool.page(viewer, "/ui/alloc")
    assert status == 200 and f'data-queue="{q}"' in text and other not in text


async def test_why_names_the_allocation_requested_for_a_job(pool: PoolServer) -> None:
    p, _ = await pool.project("why")
    [job] = await pool.jobs(p, 1, required_cpu=4, required_accelerators=1, timeout=3600)
    q = (await pool.root.ok("POST", "/alloc/queues", queue_body(p), expect=201))["name"]
    path = f"/alloc/queues/{q}/allocations"
    shape = {"cpu": 8, "gpus": 1, "tags": [], "timeout": 3600, "jobs": 1}
    # too small, too short, or ended: none of these is for the job
    await pool.root.ok("POST", path, {"name": "small", "time_limit": 7200, "shape": {**shape, "gpus": 0}})
    await pool.root.ok("POST", path, {"name": "short", "time_limit": 600, "shape": shape})
    ended = await pool.root.ok("POST", path, {"name": "ended", "time_limit": 7200, "shape": shape})
    await pool.root.ok("PATCH", f"/allocations/{ended['id']}", {"state": "CANCELLED"})
    assert not any("allocation" in r for r in await reasons(pool, job))

    await pool.root.ok(
        "POST", path, {"name": "wn-why-1", "time_limit": 7200, "shape": shape, "reason": "Priority"}
    )
    got = await reasons(pool, job)
    assert got[0].startswith("no worker of this project is online")
    assert (
        f"an allocation has been requested for it (queue {q}, allocation wn-why-1: QUEUED, reason Priority)"
        in got
    )
    # a viewer of the project reads it too
    assert any("allocation wn-why-1" in r for r in await reasons(pool, job, await pool.token("viewer", [p])))

    # a worker that takes it now: no word of the allocation
    await pool.worker(cpu=8, gpus=1, project=p)
    assert not any("allocation" in r for r in await reasons(pool, job))


def test_allocation_reason_names_the_first_and_counts_the_others() -> None:
    first = {"queue": "gpu", "name": "wn-gpu-2", "state": "RUNNING", "reason": None}
    other = {"queue": "gpu", "name": "wn-gpu-3", "state": "QUEUED", "reason": "Resources"}
    assert (
        allocation_reason([first])
        == "an allocation has been requested for it (queue gpu, allocation wn-gpu-2: RUNNING)"
    )
    assert allocation_reason([other, first, first]).endswith("QUEUED, reason Resources), and 2 others")
    job = {"status": "PENDING", "unmet_deps": 0, "required_cpu": 1, "required_accelerators": 0}
    why = explain(job, [], [], 0, datetime.now(UTC), 3600, None, [first])
    assert why is not None and why.reasons[-1].startswith("an allocation has been requested")
