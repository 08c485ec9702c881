"""Submissions that never double: a job's unique key makes a second submission of it the job
already there (200, existing), a batch says which entries existed, the same key with other fields
is a 409 naming them, concurrent submissions of one key make one job, and the SDK keys its own
sends again so that a lost answer never doubles a batch. Also what a submission answers beside
its jobs: warnings about parameters the command never uses, and errors that name the field (in a
named batch too)."""

from __future__ import annotations

import asyncio
import json
import uuid
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from conftest import Api

from whatsnext.api.client import AsyncServer, Conflict, Job, ValidationError
from whatsnext.api.client.job import dedupe_key
from whatsnext.api.client.submit import SubmitWarning

ON_SUBMISSION = ("created_tasks", "existing", "warnings")
"""What a submission's answer says beside the job as GET /jobs/{id} shows it."""


async def new_project(api: Api) -> str:
    name = f"uk-{uuid.uuid4().hex[:8]}"
    await api.ok("POST", "/projects", {"name": name}, expect=201)
    return name


async def job_count(api: Api, project: str) -> int:
    return len((await api.ok("GET", f"/projects/{project}/jobs"))["jobs"])


def refused(status: int, body: Any, code: int, field: str) -> dict[str, Any]:
    """The error's details, after checking its status and the field it names."""
    assert status == code, body
    details = body["error"]["details"]
    assert details["field"] == field, body
    return dict(details)


# ---------------------------------------------------------------- one job, a batch


async def test_the_same_key_twice_is_one_job_answered_200_existing(app_api: Api) -> None:
    p = await new_project(app_api)
    job = {"name": "train", "task": "t", "parameters": {"lr": 0.1}, "unique_key": "train-lr-0.1"}
    status, first = await app_api.post(f"/projects/{p}/jobs", job)
    assert status == 201 and first["existing"] is False and first["unique_key"] == "train-lr-0.1"
    await app_api.ok("POST", f"/projects/{p}/claim", {"worker_name": "w"})  # it moves on meanwhile

    status, again = await app_api.post(f"/projects/{p}/jobs", job)
    assert status == 200, again
    assert again["existing"] is True and again["id"] == first["id"]
    shown = await app_api.ok("GET", f"/jobs/{first['id']}")
    assert {k: v for k, v in again.items() if k not in ON_SUBMISSION} == shown
    assert shown["status"] == "RUNNING", "the answer is the job as it is now"
    assert await job_count(app_api, p) == 1

    # A finished job keeps its key; deleting the job frees it.
    await app_api.ok("POST", f"/jobs/{first['id']}/complete", {"attempt": shown["attempt"]})
    assert (await app_api.post(f"/projects/{p}/jobs", job))[0] == 200
    await app_api.ok("DELETE", f"/projects/{p}/jobs/{first['id']}")
    status, fresh = await app_api.post(f"/projects/{p}/jobs", job)
    assert status == 201 and fresh["existing"] is False and fresh["id"] != first["id"]

    # Without a key, the same job is queued again, as always.
    plain = {k: v for k, v in job.items() if k != "unique_key"}
    assert (await app_api.post(f"/projects/{p}/jobs", plain))[0] == 201
    assert (await app_api.post(f"/projects/{p}/jobs", plain))[0] == 201
    assert await job_count(app_api, p) == 3


async def test_the_same_key_with_other_fields_is_a_409_naming_them(app_api: Api) -> None:
    p = await new_project(app_api)
    job = {"name": "train", "task": "t", "parameters": {"lr": 0.1}, "unique_key": "k"}
    first = await app_api.ok("POST", f"/projects/{p}/jobs", job, expect=201)

    status, body = await app_api.post(f"/projects/{p}/jobs", {**job, "parameters": {"lr": 0.2}})
    details = refused(status, body, 409, "unique_key")
    assert details["id"] == first["id"] and details["fields"] == ["parameters"]
    assert "parameters" in body["error"]["message"] and str(first["id"]) in body["error"]["message"]

    status, body = await app_api.post(f"/projects/{p}/jobs", {**job, "name": "other", "priority": 3})
    assert sorted(refused(status, body, 409, "unique_key")["fields"]) == ["name", "priority"]

    # In a batch, the entry is named by its index; nothing of the batch is queued.
    batch = [{"name": "new", "task": "t", "unique_key": "fresh"}, {**job, "parameters": {"lr": 0.3}}]
    status, body = await app_api.post(f"/projects/{p}/jobs/batch", batch)
    details = refused(status, body, 409, "1.unique_key")
    assert details["fields"] == ["parameters"] and details["id"] == first["id"]
    assert await job_count(app_api, p) == 1


async def test_a_batch_says_which_entries_existed(app_api: Api) -> None:
    p = await new_project(app_api)
    old = await app_api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "a", "task": "t", "unique_key": "a"}, expect=201
    )
    batch = [
        {"name": "a", "task": "t", "unique_key": "a"},
        {"name": "b", "task": "t", "unique_key": "b"},
        {"name": "c", "task": "t"},
    ]
    status, body = await app_api.post(f"/projects/{p}/jobs/batch", {"group": "g", "jobs": batch})
    assert refused(status, body, 409, "0.unique_key")["fields"] == ["group"], "job a is in no group"
    status, out = await app_api.post(f"/projects/{p}/jobs/batch", batch)
    assert status == 201, out
    assert out["existing"] == [True, False, False] and out["count"] == 3
    assert out["ids"][0] == old["id"] and len(set(out["ids"])) == 3
    assert (await app_api.ok("GET", f"/jobs/{out['ids'][1]}"))["unique_key"] == "b"

    # Every entry known: nothing is created, and the answer is 200.
    status, again = await app_api.post(f"/projects/{p}/jobs/batch", batch[:2])
    assert status == 200, again
    assert again["existing"] == [True, True] and again["ids"] == out["ids"][:2]
    assert await job_count(app_api, p) == 3


async def test_two_entries_of_one_batch_with_one_key_are_refused(app_api: Api) -> None:
    p = await new_project(app_api)
    batch = [
        {"name": "a", "task": "t", "unique_key": "x"},
        {"name": "b", "task": "t", "unique_key": "y"},
        {"name": "c", "task": "t", "unique_key": "x"},
    ]
    status, body = await app_api.post(f"/projects/{p}/jobs/batch", batch)
    details = refused(status, body, 422, "2.unique_key")
    assert details["first"] == 0 and "'x'" in body["error"]["message"]
    assert await job_count(app_api, p) == 0


async def test_concurrent_submissions_of_one_key_make_one_job(app_url: str, app_api: Api) -> None:
    p = await new_project(app_api)
    job = {"name": "once", "task": "t", "parameters": {"x": 1}, "unique_key": "once"}
    others = [{"name": f"o{i}", "task": "t", "unique_key": f"o{i}"} for i in range(20)]

    async def one(session: aiohttp.ClientSession) -> tuple[int, int]:
        status, body = await Api(app_url, session).post(f"/projects/{p}/jobs", job)
        return status, body["id"]

    async def batch(session: aiohttp.ClientSession, flip: bool) -> tuple[int, int]:
        entries = [*others, job] if flip else [job, *others]
        status, body = await Api(app_url, session).post(f"/projects/{p}/jobs/batch", entries)
        return status, body["ids"][-1 if flip else 0]

    # Two clients (two connection pools), each with several submissions in flight at once.
    async with aiohttp.ClientSession() as first, aiohttp.ClientSession() as second:
        answers = await asyncio.gather(
            *(one(first) for _ in range(4)),
            *(one(second) for _ in range(4)),
            batch(first, False),
            batch(second, True),
        )
    assert len({job_id for _, job_id in answers}) == 1, answers
    singles = [status for status, _ in answers[:8]]
    assert singles.count(201) <= 1 and set(singles) <= {200, 201}
    assert await job_count(app_api, p) == 21


# ---------------------------------------------------------------- warnings, strictness, groups


async def _task_with_command(api: Api, project: str) -> None:
    await api.ok(
        "POST",
        "/tasks/",
        {"name": "train", "project_id": project, "command": "python train.py --lr {lr} --steps {steps}"},
        expect=201,
    )


async def test_a_parameter_no_placeholder_uses_is_a_warning(app_api: Api) -> None:
    p = await new_project(app_api)
    await _task_with_command(app_api, p)
    params = {"lr": 0.1, "steps": 10, "stpes": 40}
    status, job = await app_api.post(
        f"/projects/{p}/jobs", {"name": "j", "task": "train", "parameters": params}
    )
    assert status == 201, job
    [warning] = job["warnings"]
    assert warning["field"] == "parameters.stpes" and "index" not in warning
    assert "stpes" in warning["message"] and "lr, steps" in warning["message"]

    batch = [
        {"name": "ok", "task": "train", "parameters": {"lr": 1, "steps": 1}},
        {"name": "typo", "task": "train", "parameters": params},
    ]
    out = await app_api.ok("POST", f"/projects/{p}/jobs/batch", batch, expect=201)
    assert [(w["index"], w["field"]) for w in out["warnings"]] == [(1, "1.parameters.stpes")]
    clean = await app_api.ok("POST", f"/projects/{p}/jobs/batch", batch[:1], expect=201)
    assert clean["warnings"] == []


async def test_a_strict_project_refuses_unused_parameters_naming_them(
    app_api: Api, database_url: str
) -> None:
    p = await new_project(app_api)
    await _task_with_command(app_api, p)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE projects SET strict_parameters = true WHERE name = $1", p)
    finally:
        await conn.close()
    params = {"lr": 0.1, "steps": 10, "stpes": 40}
    status, body = await app_api.post(
        f"/projects/{p}/jobs", {"name": "j", "task": "train", "parameters": params}
    )
    details = refused(status, body, 422, "parameters.stpes")
    assert details["unused"] == ["stpes"]
    batch = [{"name": "ok", "task": "train", "parameters": {"lr": 1, "steps": 1}}]
    batch.append({"name": "typo", "task": "train", "parameters": params})
    status, body = await app_api.post(f"/projects/{p}/jobs/batch", batch)
    refused(status, body, 422, "1.parameters.stpes")
    assert await job_count(app_api, p) == 0


async def test_a_group_dependency_on_an_unknown_group_names_depends(app_api: Api) -> None:
    p = await new_project(app_api)
    status, body = await app_api.post(
        f"/projects/{p}/jobs", {"name": "agg", "task": "t", "depends": [{"group": "hp1", "on": "finished"}]}
    )
    assert refused(status, body, 422, "depends")["group"] == "hp1"
    assert "hp1" in body["error"]["message"]
    batch = [{"name": "a", "task": "t"}, {"name": "agg", "task": "t", "depends": [{"group": "nope"}]}]
    status, body = await app_api.post(f"/projects/{p}/jobs/batch", batch)
    refused(status, body, 422, "1.depends")


# ---------------------------------------------------------------- errors that name the field


async def test_an_unknown_field_is_named_in_both_shapes_of_batch(app_api: Api) -> None:
    p = await new_project(app_api)
    wrong = {"name": "a", "task": "t", "stpes": 40}
    for body, field in (
        ({"group": "g", "jobs": [{"name": "ok", "task": "t"}, wrong]}, "jobs.1.stpes"),
        ([wrong], "0.stpes"),
        ({"group": "g"}, "jobs"),
        ({"group": "g", "jobs": [], "extra": 1}, "jobs"),
    ):
        status, answer = await app_api.post(f"/projects/{p}/jobs/batch", body)
        assert status == 422, answer
        error = answer["error"]
        assert error["details"][0]["field"] == field, answer
        assert error["message"].startswith(f"{field}: "), answer
        assert "valid array" not in error["message"] and "should be an object" not in error["message"]
    status, answer = await app_api.post(f"/projects/{p}/jobs/batch", 5)
    assert (
        status == 422
        and "a batch is a list of jobs, or an object {group, jobs}" in answer["error"]["message"]
    )


# ---------------------------------------------------------------- the SDK


async def test_the_sdk_finds_existing_jobs_and_dedupes_a_sweep(app_url: str, app_api: Api) -> None:
    name = await new_project(app_api)
    grid = {"lr": [0.1, 0.01], "bs": [32, 64]}
    async with AsyncServer(app_url) as server:
        project = await server.get_project(name)
        first = await project.sweep("train", grid, dedupe=True)
        assert not any(job.existing for job in first)
        again = await project.sweep("train", grid, dedupe=True)
        assert [job.id for job in again] == [job.id for job in first]
        assert all(job.existing for job in again) and all(job.status is None for job in again)
        shown = await server.get_job(int(first[0].id or 0))
        assert shown.unique_key == dedupe_key("train", first[0].parameters)
        groups = await project.groups()
        assert [(g["name"], g["total"]) for g in groups] == [(shown.data["group"], 4)]
        assert shown.data["group"].startswith("train-sweep-")

        # One job, by its own key; its status is read back.
        one = await project.append_queue(Job("single", "train", {"x": 1}, unique_key="single-1"))
        same = await project.append_queue(Job("single", "train", {"x": 1}, unique_key="single-1"))
        assert (one.existing, same.existing, same.id, same.status) == (False, True, one.id, "PENDING")
        with pytest.raises(Conflict) as conflict:
            await project.append_queue(Job("single", "train", {"x": 2}, unique_key="single-1"))
        assert conflict.value.details["fields"] == ["parameters"]

        # A dedupe key counts the task and parameters only: another name is another job's name.
        renamed = Job("renamed", "train", {"lr": 0.1, "bs": 32}, dedupe=True)
        with pytest.raises(Conflict) as conflict:
            await project.append_queue(renamed)
        assert conflict.value.details["fields"] == ["name"]
    assert await job_count(app_api, name) == 5


async def test_the_sdk_sends_dependencies_with_conditions_and_groups(app_url: str, app_api: Api) -> None:
    name = await new_project(app_api)
    async with AsyncServer(app_url) as server:
        project = await server.get_project(name)
        members = await project.extend_queue([Job(f"m{i}", "train") for i in range(3)], group="hp1")
        prep = await project.append_queue(Job("prep", "t"))
        agg = Job(
            "agg",
            "t",
            depends=[(prep, "failure"), members[0]],
            depends_group=("hp1", "finished"),
        )
        await project.append_queue(agg)
        on = {d["id"]: d["on"] for d in (await app_api.ok("GET", f"/jobs/{agg.id}"))["depends_on"]}
        assert on == {
            prep.id: "failure",
            members[0].id: "success",
            members[1].id: "finished",
            members[2].id: "finished",
        }
        with pytest.raises(ValidationError) as refused_:
            await project.append_queue(Job("x", "t", depends_group="nope"))
        assert refused_.value.details["field"] == "depends"
    with pytest.raises(ValueError, match="success, finished, failure"):
        Job("x", "t", depends=[(1, "done")]).to_request()


async def test_the_sdk_warns_of_unused_parameters(app_url: str, app_api: Api) -> None:
    name = await new_project(app_api)
    await _task_with_command(app_api, name)
    async with AsyncServer(app_url) as server:
        project = await server.get_project(name)
        with pytest.warns(SubmitWarning, match="parameters.stpes"):
            job = await project.append_queue(Job("j", "train", {"lr": 1, "steps": 2, "stpes": 3}))
        assert [w["field"] for w in job.warnings] == ["parameters.stpes"]
        batch = [
            Job("ok", "train", {"lr": 1, "steps": 2}),
            Job("typo", "train", {"lr": 1, "steps": 2, "x": 3}),
        ]
        with pytest.warns(SubmitWarning, match=r"1\.parameters\.x"):
            await project.extend_queue(batch)
        assert (batch[0].warnings, [w["field"] for w in batch[1].warnings]) == ([], ["1.parameters.x"])
        with warnings.catch_warnings():
            warnings.simplefilter("error", SubmitWarning)
            await project.append_queue(Job("clean", "train", {"lr": 1, "steps": 2}))


# ---------------------------------------------------------------- a lost answer


class LosingProxy:
    """A proxy in front of the application that forwards each submission, and for the first
    ``lose`` of them drops the connection instead of passing the answer on (the jobs were queued,
    the client never hears it); the first ``unavailable`` ones it answers 503 itself (nothing
    queued), as the server does while its database is away. It keeps every body it was sent."""

    def __init__(self, target: str, lose: int) -> None:
        self.target = target
        self.lose = lose
        self.unavailable = 0
        self.bodies: list[Any] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if body:
            self.bodies.append(json.loads(body))
        if self.unavailable > 0 and request.path.endswith(("/jobs", "/jobs/batch")):
            self.unavailable -= 1
            error = {"error": {"code": "unavailable", "message": "the database is not available right now"}}
            return web.json_response(error, status=503, headers={"Retry-After": "0"})
        headers = {"Content-Type": "application/json"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.target + request.path_qs, data=body, headers=headers
            ) as resp,
        ):
            raw, status = await resp.read(), resp.status
        if self.lose > 0 and request.path.endswith(("/jobs", "/jobs/batch")):
            self.lose -= 1
            assert request.transport is not None
            request.transport.close()  # the answer is lost on the way back
        return web.Response(body=raw, status=status, content_type="application/json")


@pytest.fixture
async def losing_proxy(app_url: str) -> AsyncIterator[LosingProxy]:
    proxy = LosingProxy(app_url, lose=0)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    proxy.url = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        await runner.cleanup()


async def test_a_lost_answer_never_doubles_a_batch(losing_proxy: LosingProxy, app_api: Api) -> None:
    name = await new_project(app_api)
    async with AsyncServer(losing_proxy.url) as server:
        project = await server.get_project(name)
        losing_proxy.lose = 1
        jobs = [Job(f"j{i}", "t", {"i": i}) for i in range(5)] + [Job("own", "t", unique_key="own-key")]
        await project.extend_queue(jobs, group="g")
        assert losing_proxy.lose == 0 and len(losing_proxy.bodies) == 2  # two sends
        first, second = losing_proxy.bodies
        assert first == second, "the second send is the first again, keys and all"
        keys = [entry["unique_key"] for entry in first["jobs"]]
        assert keys[-1] == "own-key" and all(k.startswith("retry:") for k in keys[:-1])
        assert len(set(keys)) == 6
        assert not any(job.existing for job in jobs[:-1]), "this submission made them"
        assert jobs[-1].existing, "the key of its own: the server said existing, as it was (the lost send)"
        assert len({job.id for job in jobs}) == 6

        losing_proxy.lose = 1
        one = await project.append_queue(Job("single", "t"))
        assert one.existing is False and one.unique_key is None
    assert await job_count(app_api, name) == 7

    # A submission larger than retry_keys_up_to whose jobs have no keys is not keyed: a lost
    # answer is then an error saying the jobs may be queued (they are: once), a 503 is sent again.
    losing_proxy.bodies.clear()
    async with AsyncServer(losing_proxy.url, retry_keys_up_to=2) as server:
        project = await server.get_project(name)
        losing_proxy.lose = 1
        with pytest.raises(ConnectionError) as lost:
            await project.extend_queue([Job(f"big{i}", "t") for i in range(3)])
        assert "the 3 jobs may have been queued" in "".join(getattr(lost.value, "__notes__", []))
        assert len(losing_proxy.bodies) == 1 and "unique_key" not in losing_proxy.bodies[0][0]
        assert await job_count(app_api, name) == 10

        losing_proxy.unavailable = 1
        resent = await project.extend_queue([Job(f"later{i}", "t") for i in range(3)])
        assert len(losing_proxy.bodies) == 3 and losing_proxy.bodies[1] == losing_proxy.bodies[2]
        assert len({job.id for job in resent}) == 3
        assert await job_count(app_api, name) == 13

        # Keyed by dedupe, a large submission is safe to send again after a lost answer.
        losing_proxy.lose = 1
        deduped = await project.extend_queue([Job(f"d{i}", "t", {"i": i}) for i in range(3)], dedupe=True)
        assert losing_proxy.bodies[-1] == losing_proxy.bodies[-2] and len(losing_proxy.bodies) == 5
        assert all(job.existing for job in deduped), "their own keys: the lost send made them"
        assert await job_count(app_api, name) == 16

    # Retries off: a lost answer is an error, and no key is added.
    losing_proxy.bodies.clear()
    async with AsyncServer(losing_proxy.url, retries=0) as server:
        project = await server.get_project(name)
        losing_proxy.lose = 1
        with pytest.raises(ConnectionError):
            await project.extend_queue([Job("lost", "t")])
        assert "unique_key" not in losing_proxy.bodies[-1][0]
    assert await job_count(app_api, name) == 17
