"""Automatic allocation through the API: demand by shape with what no live worker could take,
allocation queues, the lease of a queue's loop and the allocations it records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from conftest import Api

QUEUE = {"backend": "slurm", "time_limit": 7200, "max_workers": 2, "worker_args": "--cpus 4"}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _project(api: Api) -> str:
    name = _name("alloc")
    await api.ok("POST", "/projects", {"name": name})
    return name


async def _jobs(api: Api, project: str, n: int, **needs: Any) -> list[int]:
    out = []
    for i in range(n):
        body = {"name": f"j{i}", "task": "t", **needs}
        out.append((await api.ok("POST", f"/projects/{project}/jobs", body))["id"])
    return out


async def _worker(api: Api, project: str, **fields: Any) -> int:
    body = {"name": _name("w"), "project": project, **fields}
    return int((await api.ok("POST", "/workers", body))["id"])


async def _sql(database_url: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def _shapes(demand: dict[str, Any]) -> dict[tuple[Any, ...], tuple[int, int]]:
    return {
        (s["cpu"], s["gpus"], tuple(s["tags"]), s["timeout"]): (s["pending"], s["unserved"])
        for s in demand["shapes"]
    }


GPU = (2, 1, ("a", "b"), 3600.0)
CPU = (1, 0, (), None)


async def test_demand_groups_eligible_jobs_by_shape_and_counts_what_no_live_worker_could_take(
    app_api: Api, database_url: str
) -> None:
    p = await _project(app_api)
    await _jobs(
        app_api, p, 2, required_cpu=2, required_accelerators=1, required_tags=["b", "a"], timeout=3600
    )
    await _jobs(
        app_api, p, 1, required_cpu=2, required_accelerators=1, required_tags=["a", "b"], timeout=3600
    )
    [first] = await _jobs(app_api, p, 1, required_cpu=1)
    await _jobs(app_api, p, 1, required_cpu=1, depends=[first])  # not eligible: waits for `first`
    demand = await app_api.ok("GET", f"/projects/{p}/demand")
    assert _shapes(demand) == {GPU: (3, 3), CPU: (1, 1)}
    assert demand["pending"] == 4 and demand["unserved"] == 4
    assert {s["project"] for s in demand["shapes"]} == {p}

    # a live worker too small for the GPU jobs serves the CPU job only
    await _worker(app_api, p, cpu=8, accelerators=0, tags=["a", "b"])
    assert _shapes(await app_api.ok("GET", f"/projects/{p}/demand")) == {GPU: (3, 3), CPU: (1, 0)}
    # one that fits but whose time ends in 10 minutes cannot take a job of an hour
    soon = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    short = await _worker(app_api, p, cpu=8, accelerators=2, tags=["a", "b", "c"], deadline=soon)
    assert _shapes(await app_api.ok("GET", f"/projects/{p}/demand")) == {GPU: (3, 3), CPU: (1, 0)}
    # with a day left it can
    later = datetime.now(UTC) + timedelta(days=1)
    await _sql(database_url, "UPDATE workers SET deadline = $2 WHERE id = $1", short, later)
    demand = await app_api.ok("GET", f"/projects/{p}/demand")
    assert _shapes(demand) == {GPU: (3, 0), CPU: (1, 0)} and demand["unserved"] == 0
    # not heard from for long: it no longer counts
    await _sql(database_url, "UPDATE workers SET last_seen = now() - interval '1 hour' WHERE id = $1", short)
    assert _shapes(await app_api.ok("GET", f"/projects/{p}/demand")) == {GPU: (3, 3), CPU: (1, 0)}


async def test_demand_of_several_projects_and_workers_of_several(app_api: Api) -> None:
    a, b, c = await _project(app_api), await _project(app_api), await _project(app_api)
    await _jobs(app_api, a, 2, required_cpu=1)
    await _jobs(app_api, b, 1, required_cpu=1)
    await _jobs(app_api, c, 1, required_cpu=1)
    demand = await app_api.ok("GET", f"/demand?project={a}&project={b}")
    assert {(s["project"], s["pending"], s["unserved"]) for s in demand["shapes"]} == {(a, 2, 2), (b, 1, 1)}
    await app_api.ok("POST", "/workers", {"name": "pool", "projects": [b, c], "cpu": 2})
    demand = await app_api.ok("GET", f"/demand?project={a}&project={b}&project={c}")
    assert {(s["project"], s["pending"], s["unserved"]) for s in demand["shapes"]} == {
        (a, 2, 2),
        (b, 1, 0),
        (c, 1, 0),
    }
    assert demand["pending"] == 4 and demand["unserved"] == 2
    everything = await app_api.ok("GET", "/demand")
    assert {a, b, c} <= {s["project"] for s in everything["shapes"]}
    status, body = await app_api.get("/demand?project=nope-" + uuid.uuid4().hex)
    assert status == 404 and body["error"]["details"]["field"] == "project"
    status, body = await app_api.get(f"/projects/nope-{uuid.uuid4().hex}/demand")
    assert status == 404 and body["error"]["details"]["field"] == "project"


async def test_queue_crud(app_api: Api) -> None:
    p, q = await _project(app_api), await _project(app_api)
    name = _name("gpu")
    body = {
        "name": name,
        **QUEUE,
        "projects": [p, q],
        "options": {"partition": "gpu", "gpus_per_worker": 1, "sbatch_args": ["--qos=low"]},
    }
    made = await app_api.ok("POST", "/alloc/queues", body, expect=201)
    assert made["name"] == name and made["projects"] == [p, q] and made["backend"] == "slurm"
    assert made["time_limit"] == 7200 and made["workers_per_alloc"] == 1 and made["idle_timeout"] == 300
    assert made["max_submits_per_minute"] == 4 and made["paused"] is False
    assert made["options"] == {"partition": "gpu", "gpus_per_worker": 1, "sbatch_args": ["--qos=low"]}
    assert made["allocations"] == {"QUEUED": 0, "RUNNING": 0, "FINISHED": 0, "FAILED": 0, "CANCELLED": 0}
    status, answer = await app_api.post("/alloc/queues", body)
    assert status == 409 and answer["error"]["details"]["field"] == "name"

    listed = {x["name"]: x for x in (await app_api.ok("GET", "/alloc/queues"))["queues"]}
    assert listed[name]["projects"] == [p, q]
    shown = await app_api.ok("GET", f"/alloc/queues/{name}")
    assert shown["recent"] == [] and shown["id"] == made["id"]

    changed = await app_api.ok(
        "PATCH", f"/alloc/queues/{name}", {"max_workers": 4, "projects": [q], "paused": True}
    )
    assert changed["max_workers"] == 4 and changed["projects"] == [q] and changed["paused"] is True
    changed = await app_api.ok("PATCH", f"/alloc/queues/{name}", {"last_error": "sbatch: invalid partition"})
    assert changed["last_error"] == "sbatch: invalid partition" and changed["last_error_at"] is not None
    changed = await app_api.ok("PATCH", f"/alloc/queues/{name}", {"last_error": None, "paused": False})
    assert changed["last_error"] is None and changed["last_error_at"] is None and changed["paused"] is False
    assert changed["max_workers"] == 4  # what is not given stays

    assert await app_api.ok("DELETE", f"/alloc/queues/{name}") == {"deleted": 1}
    status, answer = await app_api.get(f"/alloc/queues/{name}")
    assert status == 404 and answer["error"]["details"]["field"] == "name"
    status, answer = await app_api.delete(f"/alloc/queues/{name}")
    assert status == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"backend": "pbs"}, "backend"),
        ({"time_limit": 0}, "time_limit"),
        ({"time_limit": "2h"}, "time_limit"),
        ({"max_workers": 0}, "max_workers"),
        ({"workers_per_alloc": 3}, "workers_per_alloc"),
        ({"idle_timeout": -1}, "idle_timeout"),
        ({"max_submits_per_minute": 0}, "max_submits_per_minute"),
        ({"projects": []}, "projects"),
        ({"name": "a/b"}, "name"),
        ({"options": {"partiton": "gpu"}}, "options.partiton"),
        ({"options": {"gpus_per_worker": -1}}, "options.gpus_per_worker"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_a_bad_queue_is_refused_naming_the_field(
    app_api: Api, change: dict[str, Any], field: str
) -> None:
    p = await _project(app_api)
    body = {"name": _name("q"), **QUEUE, "projects": [p], **change}
    status, answer = await app_api.post("/alloc/queues", body)
    assert status == 422, answer
    assert answer["error"]["details"][0]["field"] == field, answer


async def test_queue_changes_are_checked(app_api: Api) -> None:
    p = await _project(app_api)
    name = _name("q")
    await app_api.ok("POST", "/alloc/queues", {"name": name, **QUEUE, "projects": [p]}, expect=201)
    for change, code, field in (
        ({}, 422, "body"),
        ({"name": "other"}, 422, "name"),
        ({"backend": "runai"}, 422, "backend"),
        ({"workers_per_alloc": 3}, 422, "workers_per_alloc"),
        ({"max_workers": 1, "workers_per_alloc": 2}, 422, "workers_per_alloc"),
        ({"projects": ["nope-" + uuid.uuid4().hex]}, 404, "projects"),
    ):
        status, answer = await app_api.patch(f"/alloc/queues/{name}", change)
        details = answer["error"]["details"]
        got = details[0]["field"] if isinstance(details, list) else details["field"]
        assert (status, got) == (code, field), (change, answer)
    status, answer = await app_api.patch(f"/alloc/queues/nope-{uuid.uuid4().hex}", {"paused": True})
    assert status == 404 and answer["error"]["details"]["field"] == "name"
    status, answer = await app_api.post(
        "/alloc/queues", {"name": _name("q"), **QUEUE, "projects": ["nope-" + uuid.uuid4().hex]}
    )
    assert status == 404 and answer["error"]["details"]["field"] == "projects"


async def test_the_loop_lease_is_held_by_one_holder_renewed_by_it_and_taken_once_expired(
    app_api: Api, database_url: str
) -> None:
    p = await _project(app_api)
    name = _name("q")
    await app_api.ok("POST", "/alloc/queues", {"name": name, **QUEUE, "projects": [p]}, expect=201)
    path = f"/alloc/queues/{name}/lease"
    first = await app_api.ok("POST", path, {"holder": "login1:100", "seconds": 60})
    assert first["holder"] == "login1:100"
    status, answer = await app_api.post(path, {"holder": "login2:200", "seconds": 60})
    assert status == 409
    details = answer["error"]["details"]
    assert details["field"] == "holder" and details["holder"] == "login1:100" and details["expires_at"]
    renewed = await app_api.ok("POST", path, {"holder": "login1:100", "seconds": 120})
    assert renewed["holder"] == "login1:100" and renewed["expires_at"] > first["expires_at"]
    queue = await app_api.ok("GET", f"/alloc/queues/{name}")
    assert queue["loop_holder"] == "login1:100" and queue["loop_expires_at"] == renewed["expires_at"]

    await _sql(
        database_url,
        "UPDATE alloc_queues SET loop_expires_at = now() - interval '1 second' WHERE name = $1",
        name,
    )
    taken = await app_api.ok("POST", path, {"holder": "login2:200", "seconds": 60})
    assert taken["holder"] == "login2:200"
    # the old holder's release does nothing; the new holder's frees it for anyone
    assert await app_api.ok("DELETE", f"{path}?holder=login1:100") == {"released": 0}
    assert await app_api.ok("DELETE", f"{path}?holder=login2:200") == {"released": 1}
    assert (await app_api.ok("POST", path, {"holder": "login3:300"}))["holder"] == "login3:300"

    status, answer = await app_api.delete(path)
    assert status == 422 and answer["error"]["details"]["field"] == "holder"
    for body, field in (({"seconds": 60}, "holder"), ({"holder": "x", "seconds": 0}, "seconds")):
        status, answer = await app_api.post(path, body)
        assert status == 422 and answer["error"]["details"][0]["field"] == field
    gone = f"/alloc/queues/nope-{uuid.uuid4().hex}/lease"
    assert (await app_api.post(gone, {"holder": "x"}))[0] == 404
    assert (await app_api.delete(gone + "?holder=x"))[0] == 404


async def test_allocations_lifecycle(app_api: Api) -> None:
    p = await _project(app_api)
    name = _name("q")
    await app_api.ok("POST", "/alloc/queues", {"name": name, **QUEUE, "projects": [p]}, expect=201)
    path = f"/alloc/queues/{name}/allocations"
    shape = {"cpu": 4, "gpus": 1, "tags": [], "timeout": 3600, "jobs": 3}
    made = await app_api.ok(
        "POST",
        path,
        {"name": "wn-q-1", "external_id": "4242", "workers": 1, "time_limit": 7200, "shape": shape},
        expect=201,
    )
    assert made["queue"] == name and made["state"] == "QUEUED" and made["shape"] == shape
    assert made["started_at"] is None and made["ended_at"] is None and made["submitted_at"]
    aid = made["id"]
    status, answer = await app_api.post(path, {"name": "dup", "external_id": "4242", "time_limit": 60})
    assert status == 409 and answer["error"]["details"]["field"] == "external_id"

    queued = await app_api.ok("PATCH", f"/allocations/{aid}", {"reason": "Priority"})
    assert queued["state"] == "QUEUED" and queued["reason"] == "Priority"
    running = await app_api.ok("PATCH", f"/allocations/{aid}", {"state": "RUNNING", "reason": None})
    assert running["started_at"] is not None and running["reason"] is None and running["ended_at"] is None
    again = await app_api.ok("PATCH", f"/allocations/{aid}", {"state": "RUNNING"})
    assert again["started_at"] == running["started_at"]
    other = await app_api.ok("POST", path, {"name": "wn-q-2", "time_limit": 7200}, expect=201)

    listed = await app_api.ok("GET", f"{path}?state=running")
    assert [a["id"] for a in listed["allocations"]] == [aid]
    assert [a["id"] for a in (await app_api.ok("GET", path))["allocations"]] == [other["id"], aid]
    queue = await app_api.ok("GET", f"/alloc/queues/{name}")
    assert queue["allocations"]["RUNNING"] == 1 and queue["allocations"]["QUEUED"] == 1
    assert [a["id"] for a in queue["recent"]] == [other["id"], aid]

    done = await app_api.ok("PATCH", f"/allocations/{aid}", {"state": "FINISHED", "reason": "idle"})
    assert done["ended_at"] is not None and done["started_at"] == running["started_at"]
    status, answer = await app_api.patch(f"/allocations/{aid}", {"state": "RUNNING"})
    assert status == 409 and answer["error"]["details"]["field"] == "state"
    assert (await app_api.ok("PATCH", f"/allocations/{aid}", {"reason": "idle exit"}))[
        "reason"
    ] == "idle exit"
    cancelled = await app_api.ok("PATCH", f"/allocations/{other['id']}", {"state": "CANCELLED"})
    assert cancelled["started_at"] is None and cancelled["ended_at"] is not None

    for body, field in (
        ({"name": "x"}, "time_limit"),
        ({"name": "x", "time_limit": 60, "state": "DONE"}, "state"),
        ({"name": "x", "time_limit": 60, "workers": 0}, "workers"),
    ):
        status, answer = await app_api.post(path, body)
        assert status == 422 and answer["error"]["details"][0]["field"] == field, answer
    status, answer = await app_api.patch(f"/allocations/{aid}", {})
    assert status == 422 and answer["error"]["details"]["field"] == "body"
    status, answer = await app_api.get(f"{path}?state=LOST")
    assert status == 422 and answer["error"]["details"]["field"] == "state"
    assert (await app_api.patch("/allocations/999999999", {"state": "FAILED"}))[0] == 404

    await app_api.ok("DELETE", f"/alloc/queues/{name}")
    assert (await app_api.patch(f"/allocations/{aid}", {"reason": "x"}))[0] == 404


async def test_the_openapi_document_describes_demand_and_allocation(app_api: Api) -> None:
    doc = await app_api.ok("GET", "/openapi.json")
    demand = doc["paths"]["/projects/{project}/demand"]["get"]
    assert demand["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Demand")
    assert {"shapes", "pending", "unserved"} <= set(doc["components"]["schemas"]["Demand"]["properties"])
    for path in ("/demand", "/alloc/queues", "/alloc/queues/{name}/lease", "/allocations/{alloc_id}"):
        assert path in doc["paths"], path
