"""Each route's happy path and its bad inputs: 4xx JSON errors naming the field, never a 500."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from conftest import Api


@pytest.fixture
def api(app_api: Api) -> Api:
    """Routes through the application in this process (no server process)."""
    return app_api


def assert_error(status: int, body: Any, expected: int, field: str | None = None) -> None:
    assert status == expected, body
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message", "details"} <= set(err)
    assert err["message"]
    if field is not None:
        text = str(err["details"]) + err["message"]
        assert field in text, f"{field!r} not named in {err}"


async def test_health(api: Api) -> None:
    body = await api.ok("GET", "/health")
    assert body["status"] == "ok"
    assert body["version"]
    assert body["database"].startswith("PostgreSQL")


async def test_project_crud(api: Api) -> None:
    name = f"crud-{uuid.uuid4().hex[:8]}"
    created = await api.ok("POST", "/projects", {"name": name, "description": "first"}, expect=201)
    assert created["name"] == name and created["status"] == "ACTIVE"
    by_name = await api.ok("GET", f"/projects/{name}")
    by_id = await api.ok("GET", f"/projects/{created['id']}")
    assert by_name["id"] == by_id["id"] == created["id"]
    assert by_name["jobs"] == {}

    listed = await api.ok("GET", "/projects")
    assert name in [p["name"] for p in listed["projects"]]

    renamed = await api.ok("PATCH", f"/projects/{name}", {"name": name + "-x", "description": "second"})
    assert renamed["name"] == name + "-x" and renamed["description"] == "second"
    archived = await api.ok("PATCH", f"/projects/{created['id']}", {"status": "ARCHIVED"})
    assert archived["status"] == "ARCHIVED"
    only_archived = await api.ok("GET", "/projects?status=archived")
    assert all(p["status"] == "ARCHIVED" for p in only_archived["projects"])
    assert created["id"] in [p["id"] for p in only_archived["projects"]]

    status, body = await api.post(f"/projects/{created['id']}/jobs", {"name": "j", "task": "t"})
    assert_error(status, body, 409, "archived")

    await api.ok("DELETE", f"/projects/{created['id']}")
    status, body = await api.get(f"/projects/{created['id']}")
    assert_error(status, body, 404, "project")


async def test_project_bad_inputs(api: Api, project: dict) -> None:
    status, body = await api.post("/projects", {"name": project["name"]})
    assert_error(status, body, 409, "name")
    status, body = await api.post("/projects", {"description": "no name"})
    assert_error(status, body, 422, "name")
    status, body = await api.post("/projects", {"name": "12345"})
    assert_error(status, body, 422, "name")
    status, body = await api.post("/projects", {"name": "x", "colour": "red"})
    assert_error(status, body, 422, "colour")
    status, body = await api.call("POST", "/projects", data=b"{not json")  # application/octet-stream
    assert_error(status, body, 415, "Content-Type")
    status, body = await api.call("POST", "/projects", data=b"")
    assert_error(status, body, 400, "body")
    status, body = await api.patch(f"/projects/{project['name']}", {"status": "DONE"})
    assert_error(status, body, 422, "status")
    status, body = await api.patch(f"/projects/{project['name']}", {})
    assert_error(status, body, 422)
    status, body = await api.get("/projects?status=nope")
    assert_error(status, body, 422, "status")
    status, body = await api.get("/projects/does-not-exist")
    assert_error(status, body, 404, "project")
    status, body = await api.get("/projects/99999999999999999999999")
    assert_error(status, body, 404, "project")
    status, body = await api.get("/no/such/route")
    assert_error(status, body, 404)
    status, body = await api.call("PUT", "/projects")
    assert_error(status, body, 405)


async def test_tasks(api: Api, project: dict) -> None:
    task = await api.ok(
        "POST",
        "/tasks/",
        {"name": "gpu-training", "project_id": project["id"], "required_cpu": 8, "required_accelerators": 4},
        expect=201,
    )
    assert task["required_cpu"] == 8 and task["required_accelerators"] == 4
    await api.ok("POST", "/tasks/", {"name": "by-name", "project_id": project["name"]}, expect=201)
    status, body = await api.post("/tasks/", {"name": "gpu-training", "project_id": project["id"]})
    assert_error(status, body, 409)
    status, body = await api.post("/tasks/", {"name": "x", "project_id": 99999999})
    assert_error(status, body, 404, "project")
    status, body = await api.post("/tasks/", {"name": "x", "project_id": project["id"], "required_cpu": -1})
    assert_error(status, body, 422, "required_cpu")
    # A job naming an unknown task creates it with defaults.
    await api.ok("POST", f"/projects/{project['name']}/jobs", {"name": "j", "task": "fresh"})
    tasks = (await api.ok("GET", f"/projects/{project['name']}/tasks"))["tasks"]
    by_name = {t["name"]: t for t in tasks}
    assert set(by_name) == {"gpu-training", "by-name", "fresh"}
    assert (by_name["fresh"]["required_cpu"], by_name["fresh"]["required_accelerators"]) == (1, 0)
    # Jobs inherit the task's requirements unless they override them.
    job = await api.ok("POST", f"/projects/{project['id']}/jobs", {"name": "t", "task": "gpu-training"})
    assert (job["required_cpu"], job["required_accelerators"]) == (8, 4)
    job = await api.ok(
        "POST",
        f"/projects/{project['id']}/jobs",
        {"name": "t2", "task": "gpu-training", "required_accelerators": 1},
    )
    assert (job["required_cpu"], job["required_accelerators"]) == (8, 1)


async def test_jobs_routes(api: Api, project: dict) -> None:
    p = project["name"]
    job = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {
            "name": "process-data",
            "task": "data-pipeline",
            "parameters": {"input": "file.csv", "format": "json"},
            "priority": 3,
        },
        expect=201,
    )
    assert job["status"] == "PENDING" and job["parameters"] == {"input": "file.csv", "format": "json"}
    assert job["task"] == "data-pipeline" and job["priority"] == 3 and job["attempt"] == 0
    got = await api.ok("GET", f"/jobs/{job['id']}")
    on_submission = ("created_tasks", "existing", "warnings")  # said on submission only
    assert got == {k: v for k, v in job.items() if k not in on_submission}
    batch = await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        [{"name": f"b{i}", "task": "step", "parameters": {"i": i}} for i in range(5)],
        expect=201,
    )
    assert batch["count"] == 5 and len(set(batch["ids"])) == 5

    listed = await api.ok("GET", f"/projects/{p}/jobs?limit=4")
    assert [j["id"] for j in listed["jobs"]] == sorted([job["id"], *batch["ids"]], reverse=True)[:4]
    page2 = await api.ok("GET", f"/projects/{p}/jobs?limit=4&before={listed['next_before']}")
    assert len(page2["jobs"]) == 2 and page2["next_before"] is None
    by_task = await api.ok("GET", f"/projects/{p}/jobs?task=data-pipeline")
    assert [j["id"] for j in by_task["jobs"]] == [job["id"]]
    pending = await api.ok("GET", f"/projects/{p}/jobs?status=pending&limit=1000")
    assert len(pending["jobs"]) == 6

    queue = (await api.ok("GET", f"/projects/{p}/queue"))["jobs"]
    assert [q["id"] for q in queue] == [job["id"], *batch["ids"]]  # priority 3 first, then FIFO

    deleted = await api.ok("DELETE", f"/projects/{p}/jobs/{batch['ids'][0]}")
    assert deleted == {"deleted": 1}
    status, body = await api.get(f"/jobs/{batch['ids'][0]}")
    assert_error(status, body, 404, "job")

    events = (await api.ok("GET", f"/jobs/{job['id']}/events"))["events"]
    assert [e["status"] for e in events] == ["PENDING"]

    cleared = await api.ok("DELETE", f"/projects/{p}/queue")
    assert cleared["deleted"] == 5
    assert (await api.ok("GET", f"/projects/{p}/queue"))["jobs"] == []
    assert (await api.ok("GET", f"/jobs/{job['id']}"))["status"] == "CANCELLED"
    counts = (await api.ok("GET", f"/projects/{p}"))["jobs"]
    assert counts == {"CANCELLED": 5}


async def test_jobs_bad_inputs(api: Api, project: dict) -> None:
    p = project["name"]
    status, body = await api.post(f"/projects/{p}/jobs", {"task": "t"})
    assert_error(status, body, 422, "name")
    status, body = await api.post(f"/projects/{p}/jobs", {"name": "x", "task": "t", "parameters": [1, 2]})
    assert_error(status, body, 422, "parameters")
    status, body = await api.post(f"/projects/{p}/jobs", {"name": "x", "task": "t", "priority": 2**40})
    assert_error(status, body, 422, "priority")
    status, body = await api.post(f"/projects/{p}/jobs", {"name": "x", "task": "t", "depends": [987654321]})
    assert_error(status, body, 422, "depends")
    status, body = await api.post(f"/projects/{p}/jobs", {"name": "x", "task": "t", "depends": ["nobody"]})
    assert_error(status, body, 422, "depends")
    status, body = await api.post("/projects/nope/jobs", {"name": "x", "task": "t"})
    assert_error(status, body, 404, "project")
    status, body = await api.post(f"/projects/{p}/jobs/batch", [])
    assert_error(status, body, 422)
    status, body = await api.post(f"/projects/{p}/jobs/batch", [{"name": "ok", "task": "t"}, {"name": "bad"}])
    assert_error(status, body, 422, "1.task")
    status, body = await api.post(f"/projects/{p}/jobs/batch", {"name": "x"})
    assert_error(status, body, 422)
    # Nothing of a refused batch was kept.
    assert (await api.ok("GET", f"/projects/{p}/jobs"))["jobs"] == []
    status, body = await api.get("/jobs/abc")
    assert_error(status, body, 422, "job_id")
    status, body = await api.get("/jobs/123456789012")
    assert_error(status, body, 404, "job")
    status, body = await api.get(f"/projects/{p}/jobs?status=weird")
    assert_error(status, body, 422, "status")
    status, body = await api.get(f"/projects/{p}/jobs?limit=0")
    assert_error(status, body, 422, "limit")
    status, body = await api.get(f"/projects/{p}/jobs?before=x")
    assert_error(status, body, 422, "before")
    status, body = await api.delete(f"/projects/{p}/jobs/123456789012")
    assert_error(status, body, 404, "job")


async def test_claim_and_reports(api: Api, project: dict) -> None:
    p = project["name"]
    job = await api.ok("POST", f"/projects/{p}/jobs", {"name": "a", "task": "t", "parameters": {"k": "v"}})
    claimed = (await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "w1", "free_cpu": 2}))["jobs"]
    assert [c["id"] for c in claimed] == [job["id"]]
    c = claimed[0]
    assert c["attempt"] == 1 and c["parameters"] == {"k": "v"} and c["task"] == "t" and c["name"] == "a"
    running = await api.ok("GET", f"/jobs/{job['id']}")
    assert running["status"] == "RUNNING" and running["worker_name"] == "w1"
    status, body = await api.delete(f"/projects/{p}/jobs/{job['id']}")
    assert_error(status, body, 409, "running")

    status, body = await api.post(f"/jobs/{job['id']}/complete", {"attempt": 2, "exit_code": 0})
    assert_error(status, body, 409, "attempt")
    assert (await api.ok("GET", f"/jobs/{job['id']}"))["status"] == "RUNNING"  # changed nothing
    done = await api.ok(
        "POST", f"/jobs/{job['id']}/complete", {"attempt": 1, "exit_code": 0, "result": {"n": 3}}
    )
    assert done == {"id": job["id"], "status": "COMPLETED"}
    final = await api.ok("GET", f"/jobs/{job['id']}")
    assert final["status"] == "COMPLETED" and final["result"] == {"n": 3} and final["exit_code"] == 0
    # The same report again (its first answer was lost on the way): the recorded status, no change.
    again = await api.ok("POST", f"/jobs/{job['id']}/complete", {"attempt": 1, "result": {"n": 4}})
    assert again == {"id": job["id"], "status": "COMPLETED"}
    assert (await api.ok("GET", f"/jobs/{job['id']}"))["result"] == {"n": 3}
    # Another outcome for the ended attempt: a conflict.
    status, body = await api.post(f"/jobs/{job['id']}/fail", {"attempt": 1, "error": "late"})
    assert_error(status, body, 409, "attempt")
    assert [e["status"] for e in (await api.ok("GET", f"/jobs/{job['id']}/events"))["events"]] == [
        "PENDING",
        "RUNNING",
        "COMPLETED",
    ]

    job2 = await api.ok("POST", f"/projects/{p}/jobs", {"name": "b", "task": "t"})
    [c2] = (await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "w1"}))["jobs"]
    failed = await api.ok(
        "POST", f"/jobs/{job2['id']}/fail", {"attempt": c2["attempt"], "exit_code": 3, "error": "boom"}
    )
    assert failed["status"] == "FAILED"
    final2 = await api.ok("GET", f"/jobs/{job2['id']}")
    assert final2["exit_code"] == 3 and final2["error"] == "boom"

    status, body = await api.post("/jobs/123456789012/complete", {"attempt": 1})
    assert_error(status, body, 404, "job")
    status, body = await api.post(f"/jobs/{job['id']}/complete", {"exit_code": 0})
    assert_error(status, body, 422, "attempt")
    status, body = await api.post(f"/projects/{p}/claim", {"free_cpu": -1})
    assert_error(status, body, 422, "free_cpu")
    status, body = await api.post(f"/projects/{p}/claim", {"wait": "soon"})
    assert_error(status, body, 422, "wait")
    status, body = await api.post("/projects/missing/claim", {})
    assert_error(status, body, 404, "project")
    assert (await api.ok("POST", f"/projects/{p}/claim", {}))["jobs"] == []


async def test_batch_reports(api: Api, project: dict) -> None:
    p = project["name"]
    ids = (
        await api.ok("POST", f"/projects/{p}/jobs/batch", [{"name": f"r{i}", "task": "t"} for i in range(3)])
    )["ids"]
    claimed = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 3, "max_jobs": 3}))["jobs"]
    assert sorted(c["id"] for c in claimed) == ids
    out = await api.ok(
        "POST",
        "/jobs/reports",
        [
            {"id": ids[0], "attempt": 1, "status": "COMPLETED", "exit_code": 0},
            {"id": ids[1], "attempt": 1, "status": "FAILED", "exit_code": 1, "error": "x"},
            {"id": ids[2], "attempt": 7, "status": "COMPLETED"},
            {"id": 123456789012, "attempt": 1, "status": "COMPLETED"},
        ],
    )
    assert [(r["id"], r["code"], r["status"]) for r in out["results"]] == [
        (ids[0], 200, "COMPLETED"),
        (ids[1], 200, "FAILED"),
        (ids[2], 409, "RUNNING"),
        (123456789012, 404, None),
    ]


@pytest.mark.parametrize("path", ["/projects", "/tasks/", "/workers"])
async def test_wrong_types_are_422(api: Api, path: str) -> None:
    status, body = await api.post(path, {"name": {"nested": True}})
    assert_error(status, body, 422, "name")


async def test_openapi_lists_every_route(api: Api) -> None:
    doc = await api.ok("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.")
    from whatsnext.api.server.routes import routes

    assert len(routes.specs) >= 20
    for spec, _handler in routes.specs:
        if not spec.published:  # an alias served beside its published path (/tasks beside /tasks/)
            assert spec.path not in doc["paths"]
            continue
        op = doc["paths"][spec.path][spec.method.lower()]
        assert op["summary"]
        ok = op["responses"][str(spec.status)]
        if spec.response is not None:
            ref = ok["content"]["application/json"]["schema"]["$ref"]
            assert ref.split("/")[-1] in doc["components"]["schemas"]
        if spec.body is not None:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.split("/")[-1] in doc["components"]["schemas"]
    # The server has no route that the document does not describe.
    from whatsnext.api.server.app import create_app
    from whatsnext.api.server.config import Settings

    app = create_app(Settings(), "postgresql://unused/none")
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    served = {(m, path) for m, path in served if path != "/" and not path.startswith("/ui/")}  # web pages
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    aliases = {(spec.method, spec.path) for spec, _ in routes.specs if not spec.published}
    assert served - aliases == documented


async def test_job_pages_can_leave_parameters_out(api: Api, project: dict) -> None:
    p = project["name"]
    big = {"blob": "x" * 200_000}
    await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        [{"name": f"j{i}", "task": "t", "parameters": big} for i in range(5)],
    )
    full = await api.ok("GET", f"/projects/{p}/jobs")
    assert all(j["parameters"] == big for j in full["jobs"])
    slim = await api.ok("GET", f"/projects/{p}/jobs?full=0")
    assert [j["id"] for j in slim["jobs"]] == [j["id"] for j in full["jobs"]]
    assert all(j["parameters"] is None and j["result"] is None for j in slim["jobs"])
    status, body = await api.get(f"/projects/{p}/jobs?full=maybe")
    assert_error(status, body, 422, "full")
