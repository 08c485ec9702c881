"""Concurrency keys: a task or a job carries a key and a limit (together), a job without its own
takes its task's, every view shows them, bad ones are refused naming the field, and claims hand
out at most the limit of jobs with one key at once in a project."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any

import orjson
import pydantic
import pytest
from conftest import Api
from helpers import cli

from whatsnext.api.client import AsyncServer, Job, Server
from whatsnext.api.server.schemas import JOB_ENTRIES, JobBatch

PAIR = {"concurrency_key": "licence-x", "concurrency_limit": 2}


async def new_project(api: Api) -> str:
    name = f"ck-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": name}, expect=201)
    return name


def assert_refused(status: int, body: Any, field: str, first: bool = True) -> None:
    """A 422 whose details name ``field`` (``first``: as the first detail, and in the message)."""
    assert status == 422, body
    details = body["error"]["details"]
    if first:
        assert details[0]["field"] == field, body
        assert field.rsplit(".", 1)[-1] in body["error"]["message"], body
    else:
        assert field in [d["field"] for d in details], body


def pair(job: dict[str, Any]) -> tuple[Any, Any]:
    return job["concurrency_key"], job["concurrency_limit"]


# ---------------------------------------------------------------- setting and showing


async def test_a_task_carries_a_pair_and_its_jobs_take_it(app_api: Api) -> None:
    project = await new_project(app_api)
    task = await app_api.ok("POST", "/tasks/", {"name": "sim", "project_id": project, **PAIR}, expect=201)
    assert pair(task) == ("licence-x", 2)
    plain = await app_api.ok("POST", "/tasks/", {"name": "plain", "project_id": project}, expect=201)
    assert pair(plain) == (None, None)
    listed = {t["name"]: pair(t) for t in (await app_api.ok("GET", f"/projects/{project}/tasks"))["tasks"]}
    assert listed == {"sim": ("licence-x", 2), "plain": (None, None)}

    inherited = await app_api.ok(
        "POST", f"/projects/{project}/jobs", {"name": "a", "task": "sim"}, expect=201
    )
    assert pair(inherited) == ("licence-x", 2)
    own = await app_api.ok(
        "POST",
        f"/projects/{project}/jobs",
        {"name": "b", "task": "sim", "concurrency_key": "dataset-y", "concurrency_limit": 1},
        expect=201,
    )
    assert pair(own) == ("dataset-y", 1), "a job's own pair replaces its task's, both values"
    none = await app_api.ok("POST", f"/projects/{project}/jobs", {"name": "c", "task": "plain"}, expect=201)
    assert pair(none) == (None, None)
    for job, expected in ((inherited, ("licence-x", 2)), (own, ("dataset-y", 1)), (none, (None, None))):
        assert pair(await app_api.ok("GET", f"/jobs/{job['id']}")) == expected


async def test_a_batch_sets_and_inherits_pairs_with_and_without_dependencies(app_api: Api) -> None:
    project = await new_project(app_api)
    await app_api.ok("POST", "/tasks/", {"name": "sim", "project_id": project, **PAIR}, expect=201)
    for extra in ({}, {"depends": ["first"]}):  # the second batch takes the path with dependencies
        out = await app_api.ok(
            "POST",
            f"/projects/{project}/jobs/batch",
            [
                {"name": "first", "task": "sim"},
                {"name": "own", "task": "sim", "concurrency_key": "k2", "concurrency_limit": 5, **extra},
                {"name": "other", "task": "new-task", **extra},
            ],
            expect=201,
        )
        jobs = [await app_api.ok("GET", f"/jobs/{i}") for i in out["ids"]]
        assert [pair(j) for j in jobs] == [("licence-x", 2), ("k2", 5), (None, None)]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"concurrency_key": "k"}, "concurrency_limit"),
        ({"concurrency_limit": 2}, "concurrency_key"),
        ({"concurrency_key": "k", "concurrency_limit": None}, "concurrency_limit"),
        ({"concurrency_key": "", "concurrency_limit": 2}, "concurrency_key"),
        ({"concurrency_key": "k" * 201, "concurrency_limit": 2}, "concurrency_key"),
        ({"concurrency_key": 7, "concurrency_limit": 2}, "concurrency_key"),
        ({"concurrency_key": "k", "concurrency_limit": 0}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": -1}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": 1.5}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": "2"}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": True}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": 2**31}, "concurrency_limit"),
    ],
)
async def test_bad_pairs_are_refused_naming_the_field(
    app_api: Api, fields: dict[str, Any], field: str
) -> None:
    project = await new_project(app_api)
    status, body = await app_api.post("/tasks/", {"name": "t", "project_id": project, **fields})
    assert_refused(status, body, field)
    status, body = await app_api.post(f"/projects/{project}/jobs", {"name": "j", "task": "t", **fields})
    assert_refused(status, body, field)
    batch = [{"name": "ok", "task": "t"}, {"name": "j", "task": "t", **fields}]
    status, body = await app_api.post(f"/projects/{project}/jobs/batch", batch)
    assert_refused(status, body, f"1.{field}")
    status, body = await app_api.post(f"/projects/{project}/jobs/batch", {"group": "g", "jobs": batch})
    # A body of either form: the details say what is wrong with each (the list form first).
    assert_refused(status, body, f"jobs.1.{field}", first=False)
    assert (await app_api.ok("GET", f"/projects/{project}/jobs"))["jobs"] == [], "nothing was queued"


@pytest.mark.parametrize(
    "job",
    [
        {"concurrency_key": "k", "concurrency_limit": 2},
        {"concurrency_key": "k"},
        {"concurrency_limit": 2},
        {"concurrency_key": None, "concurrency_limit": None},
        {"concurrency_key": "", "concurrency_limit": 2},
        {"concurrency_key": "k", "concurrency_limit": 0},
        {"concurrency_key": "k", "concurrency_limit": 2.0},
    ],
)
def test_the_fast_validation_judges_pairs_as_the_model_does(job: dict[str, Any]) -> None:
    raw = orjson.dumps([{"name": "a", "task": "t", **job}])
    context = {"plain": True, "max_parameters_bytes": None}
    try:
        model = [
            j.model_dump(exclude_unset=True)
            for j in JobBatch.model_validate_json(raw, context=context).jobs_and_group()[0]
        ]
    except pydantic.ValidationError:
        model = None
    try:
        fast = JOB_ENTRIES.validate_json(raw, context=context)
    except pydantic.ValidationError:
        fast = None
    assert fast == model


# ---------------------------------------------------------------- claims


async def claim(api: Api, project: str, worker: str = "w1") -> list[dict[str, Any]]:
    """What one claim with room for ten jobs (and CPUs and GPUs to spare) is handed."""
    body = {"worker_name": worker, "free_cpu": 64, "free_accelerators": 8, "max_jobs": 10}
    return list((await api.ok("POST", f"/projects/{project}/claim", body, expect=200))["jobs"])


async def test_claims_run_at_most_the_limit_of_jobs_with_one_key(app_api: Api) -> None:
    project = await new_project(app_api)
    keyed = [{"name": f"k{i}", "task": "sim", **PAIR} for i in range(5)]
    await app_api.ok("POST", f"/projects/{project}/jobs/batch", keyed, expect=201)

    first = await claim(app_api, project)
    assert [j["name"] for j in first] == ["k0", "k1"], "two of the key, though ten would fit"
    assert await claim(app_api, project, "w2") == [], "no other worker gets one while two run"

    # Jobs without the key, or with another, are not held back by it.
    await app_api.ok(
        "POST",
        f"/projects/{project}/jobs/batch",
        [
            {"name": "free", "task": "sim"},
            {"name": "other", "task": "sim", "concurrency_key": "licence-z", "concurrency_limit": 1},
        ],
        expect=201,
    )
    assert {j["name"] for j in await claim(app_api, project, "w2")} == {"free", "other"}

    done = first[0]
    await app_api.ok("POST", f"/jobs/{done['id']}/complete", {"attempt": done["attempt"]}, expect=200)
    again = await claim(app_api, project, "w3")
    assert [j["name"] for j in again] == ["k2"], "one more once one of the two completed"
    assert await claim(app_api, project, "w3") == []

    # Reports in a batch free the key the same way.
    reports = [{"id": j["id"], "attempt": j["attempt"], "status": "COMPLETED"} for j in (first[1], again[0])]
    answer = await app_api.ok("POST", "/jobs/reports", reports, expect=200)
    assert [r["code"] for r in answer["results"]] == [200, 200]
    assert [j["name"] for j in await claim(app_api, project, "w4")] == ["k3", "k4"]
    assert await claim(app_api, project, "w4") == []


async def test_the_smallest_limit_holds_while_the_stricter_jobs_run(app_api: Api) -> None:
    project = await new_project(app_api)
    keyed = [{"name": f"k{i}", "task": "sim", **PAIR} for i in range(2)]
    await app_api.ok("POST", f"/projects/{project}/jobs/batch", keyed, expect=201)
    assert len(await claim(app_api, project)) == 2
    looser = {"name": "looser", "task": "sim", "concurrency_key": "licence-x", "concurrency_limit": 5}
    await app_api.ok("POST", f"/projects/{project}/jobs", looser, expect=201)
    assert await claim(app_api, project, "w2") == [], "two run with limit 2: the job with limit 5 waits"


async def test_the_smallest_limit_holds_within_one_claim(app_api: Api) -> None:
    project = await new_project(app_api)
    jobs = [
        {"name": "k0", "task": "sim", **PAIR},
        {"name": "k1", "task": "sim", **PAIR},
        {"name": "looser", "task": "sim", "concurrency_key": "licence-x", "concurrency_limit": 5},
    ]
    await app_api.ok("POST", f"/projects/{project}/jobs/batch", jobs, expect=201)
    assert [j["name"] for j in await claim(app_api, project)] == ["k0", "k1"]


async def test_the_key_counts_within_one_project(app_api: Api) -> None:
    one, two = await new_project(app_api), await new_project(app_api)
    for project in (one, two):
        jobs = [{"name": f"k{i}", "task": "sim", **PAIR} for i in range(3)]
        await app_api.ok("POST", f"/projects/{project}/jobs/batch", jobs, expect=201)
    assert len(await claim(app_api, one)) == 2
    assert len(await claim(app_api, two)) == 2, "the same key in another project is another key"


# ---------------------------------------------------------------- CLI and SDK


async def run_cli(app_url: str, *args: str) -> Any:
    """``whatsnext ARGS`` against the application in this process (in a thread: the application
    answers on this loop while the command waits)."""
    return await asyncio.to_thread(cli, SimpleNamespace(url=app_url), *args)


async def test_the_cli_sets_pairs_on_tasks_and_jobs(app_url: str, app_api: Api) -> None:
    project = await new_project(app_api)
    pair_args = ("--concurrency-key", "licence-x", "--concurrency-limit", "2")
    made = await run_cli(app_url, "tasks", "add", "sim", "--project", project, *pair_args)
    assert made.returncode == 0, made.stderr
    assert "at most 2 at once with key licence-x" in made.stdout

    added = await run_cli(app_url, "jobs", "add", "sim", "--project", project, "--json")
    assert added.returncode == 0, added.stderr
    assert pair(json.loads(added.stdout)) == ("licence-x", 2)
    own = await run_cli(
        app_url,
        "jobs",
        "add",
        "sim",
        "--project",
        project,
        "--concurrency-key",
        "dataset-y",
        "--concurrency-limit",
        "1",
        "--json",
    )
    assert own.returncode == 0, own.stderr
    job = json.loads(own.stdout)
    assert pair(job) == ("dataset-y", 1)
    shown = await run_cli(app_url, "jobs", "show", str(job["id"]))
    assert "concurrency_key        dataset-y" in shown.stdout
    assert "concurrency_limit      1" in shown.stdout

    swept = await run_cli(
        app_url, "jobs", "sweep", "sim", "--project", project, "--grid", "a=1,2", *pair_args, "--json"
    )
    assert swept.returncode == 0, swept.stderr
    for job_id in json.loads(swept.stdout)["ids"]:
        assert pair(await app_api.ok("GET", f"/jobs/{job_id}")) == ("licence-x", 2)

    half = await run_cli(app_url, "jobs", "add", "sim", "--project", project, "--concurrency-key", "k")
    assert half.returncode == 2 and "--concurrency-key needs --concurrency-limit" in half.stderr
    zero = await run_cli(
        app_url,
        "tasks",
        "add",
        "t0",
        "--project",
        project,
        "--concurrency-key",
        "k",
        "--concurrency-limit",
        "0",
    )
    assert zero.returncode == 1 and "concurrency_limit" in zero.stderr

    helped = await run_cli(app_url, "jobs", "add", "--help")
    assert "--concurrency-key licence-x --concurrency-limit 2" in helped.stdout


async def test_the_sdk_sets_pairs_on_tasks_and_jobs(app_url: str, app_api: Api) -> None:
    name = await new_project(app_api)
    async with AsyncServer(app_url) as server:
        project = await server.get_project(name)
        task = await project.create_task("sim", concurrency_key="licence-x", concurrency_limit=2)
        assert pair(task) == ("licence-x", 2)
        job = await project.append_queue(Job("a", "sim"))
        assert (job.concurrency_key, job.concurrency_limit) == ("licence-x", 2)
        own = await project.append_queue(Job("b", "sim", concurrency_key="k", concurrency_limit=1))
        assert (own.concurrency_key, own.concurrency_limit) == ("k", 1)

    def sync_facade() -> list[tuple[Any, Any]]:
        sync = Server(app_url)
        try:
            project = sync.get_project(name)
            project.create_task("other", concurrency_key="licence-z", concurrency_limit=3)
            jobs = project.extend_queue(
                [Job("c", "other"), Job("d", "sim", concurrency_key="q", concurrency_limit=4)]
            )
            swept = project.sweep("sim", {"x": [1]}, concurrency_key="s", concurrency_limit=1)
            return [(j.refresh().concurrency_key, j.concurrency_limit) for j in (*jobs, *swept)]
        finally:
            sync.close()

    assert await asyncio.to_thread(sync_facade) == [("licence-z", 3), ("q", 4), ("s", 1)]
