"""The lean hot path keeps every guarantee of the slower one it replaced:

* a submission hands its jobs to a claim waiting on the same server in its own transaction (the
  claim's answer is what a claim of its own would have answered), only jobs that fit, and never
  to a claim whose client went away;
* jobs carry no foreign keys, yet a job of a task of another project is refused and deleting a
  project or a task deletes its jobs;
* the fast validation of submitted jobs takes and refuses what the model does, and the scan for
  unstorable values finds what the regular expression it replaced found.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import asyncpg
import orjson
import pydantic
import pytest
from aiohttp.test_utils import TestClient
from conftest import wait_until
from helpers import call
from hypothesis import given, settings
from hypothesis import strategies as st

from whatsnext.api.server import schema
from whatsnext.api.server.keys import hub_key, store_key
from whatsnext.api.server.notify import Handed
from whatsnext.api.server.schemas import JOB_ENTRIES, JobBatch, plain_entries, suspicious


async def new_project(client: TestClient) -> str:
    name = f"hot-{uuid.uuid4().hex[:8]}"
    assert (await call(client, "POST", "/projects", {"name": name}))[0] == 201
    return name


def waiting(client: TestClient) -> Any:
    async def check() -> bool:
        return client.app[hub_key].waiting() > 0

    return check


async def test_a_submission_hands_its_job_to_a_waiting_claim(client: TestClient) -> None:
    project = await new_project(client)
    claim = asyncio.create_task(
        call(client, "POST", f"/projects/{project}/claim", {"worker_name": "w1", "free_cpu": 2, "wait": 20})
    )
    await wait_until(waiting(client), what="the claim to wait")
    status, created = await call(client, "POST", f"/projects/{project}/jobs", {"name": "j", "task": "t"})
    assert status == 201
    # Handed out in the submission's own transaction: the job is already running when it answers.
    assert (created["status"], created["worker_name"], created["attempt"]) == ("RUNNING", "w1", 1)
    status, out = await asyncio.wait_for(claim, 10)
    assert status == 200 and [j["id"] for j in out["jobs"]] == [created["id"]]

    # The same answer a claim of its own gives.
    status, _ = await call(client, "POST", f"/jobs/{created['id']}/complete", {"attempt": 1})
    assert status == 200
    assert (await call(client, "POST", f"/projects/{project}/jobs", {"name": "k", "task": "t"}))[0] == 201
    status, plain = await call(
        client, "POST", f"/projects/{project}/claim", {"worker_name": "w1", "free_cpu": 2}
    )
    assert status == 200 and set(plain["jobs"][0]) == set(out["jobs"][0])
    handed = out["jobs"][0]
    assert (handed["task"], handed["parameters"], handed["required_cpu"]) == ("t", {}, 1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", handed["lease_expires_at"])
    events = (await call(client, "GET", f"/jobs/{created['id']}/events"))[1]["events"]
    assert [(e["status"], e["reason"]) for e in events] == [
        ("PENDING", "created"),
        ("RUNNING", "w1"),
        ("COMPLETED", None),
    ]


async def test_a_job_that_does_not_fit_the_waiting_claim_stays_queued(client: TestClient) -> None:
    project = await new_project(client)
    claim = asyncio.create_task(
        call(
            client, "POST", f"/projects/{project}/claim", {"worker_name": "small", "free_cpu": 1, "wait": 20}
        )
    )
    await wait_until(waiting(client), what="the claim to wait")
    big = {"name": "big", "task": "t", "required_cpu": 4}
    status, created = await call(client, "POST", f"/projects/{project}/jobs", big)
    assert status == 201 and created["status"] == "PENDING"
    assert not claim.done()
    await wait_until(waiting(client), what="the claim to wait again")
    status, small = await call(client, "POST", f"/projects/{project}/jobs", {"name": "small", "task": "t"})
    assert status == 201 and small["status"] == "RUNNING"
    status, out = await asyncio.wait_for(claim, 10)
    assert [j["name"] for j in out["jobs"]] == ["small"]


async def test_a_handed_job_whose_claim_went_away_goes_back_to_the_queue(client: TestClient) -> None:
    """A waiter whose request ended between the offer and the hand-off: the job is not left
    RUNNING for a worker that never heard of it."""
    project = await new_project(client)
    app = client.app
    hub, store = app[hub_key], app[store_key]
    info = await store.projects.resolve(project=project)
    args = {
        "project_id": info["id"],
        "worker_id": None,
        "worker_name": "gone",
        "free_cpu": 1,
        "free_acc": 0,
        "total_cpu": 1,
        "total_acc": 0,
        "tags": [],
        "max_jobs": 1,
        "lease": 60,
        "starve": 300,
        "tasks": None,
        "with_command": False,
    }
    wait = asyncio.create_task(
        hub.wait(info["id"], 20, cpu=1, keys={project: info["id"]}, claim=lambda: args)
    )
    await wait_until(waiting(client), what="the waiter")
    waiter = hub.offer(project)
    assert waiter is not None and hub.offer(project) is None, "an offered waiter is offered once"
    wait.cancel()
    await asyncio.gather(wait, return_exceptions=True)
    ids, _, claimed = await store.jobs.enqueue(
        project=project, jobs_json='[{"name": "j", "task": "t"}]', actor=None, claim=waiter.claim()
    )
    assert [r["id"] for r in claimed] == ids
    assert not waiter.hand(Handed(claimed))
    await store.jobs.release_unread(claimed)
    job = await store.jobs.get(job_id=ids[0])
    assert job is not None and (job["status"], job["lost"]) == ("PENDING", 1)


async def test_jobs_keep_their_parents_without_foreign_keys(database_url: str) -> None:
    await asyncio.to_thread(schema.upgrade, database_url)
    conn = await asyncpg.connect(database_url)
    tx = conn.transaction()
    await tx.start()
    try:
        a = await conn.fetchval(
            "INSERT INTO projects (name) VALUES ($1) RETURNING id", f"pa-{uuid.uuid4().hex}"
        )
        b = await conn.fetchval(
            "INSERT INTO projects (name) VALUES ($1) RETURNING id", f"pb-{uuid.uuid4().hex}"
        )
        task_a = await conn.fetchval("INSERT INTO tasks (project_id, name) VALUES ($1, 't') RETURNING id", a)
        task_b = await conn.fetchval("INSERT INTO tasks (project_id, name) VALUES ($1, 't') RETURNING id", b)
        insert = "INSERT INTO jobs (project_id, task_id, name) SELECT $1, $2, 'j' || g FROM generate_series(1, 3) g"
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="does not exist"):
            async with conn.transaction():
                await conn.execute(insert, a, task_b)  # a task of another project
        with pytest.raises(asyncpg.ForeignKeyViolationError, match="group"):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO jobs (project_id, task_id, name, group_id) VALUES ($1, $2, 'g', 999999)",
                    a,
                    task_a,
                )
        await conn.execute(insert, a, task_a)
        await conn.execute(insert, b, task_b)
        await conn.execute("DELETE FROM tasks WHERE id = $1", task_b)
        assert await conn.fetchval("SELECT count(*) FROM jobs WHERE project_id = $1", b) == 0
        await conn.execute("DELETE FROM projects WHERE id = $1", a)
        assert await conn.fetchval("SELECT count(*) FROM jobs WHERE project_id = $1", a) == 0
    finally:
        await tx.rollback()
        await conn.close()


async def test_deleting_a_project_waits_for_a_submission_in_flight(database_url: str) -> None:
    """The parents are locked by the insert: a concurrent delete takes the new jobs with it."""
    await asyncio.to_thread(schema.upgrade, database_url)
    name = f"race-{uuid.uuid4().hex[:8]}"
    submitter, deleter = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        project = await submitter.fetchval("INSERT INTO projects (name) VALUES ($1) RETURNING id", name)
        tx = submitter.transaction()
        await tx.start()
        await submitter.fetchval(
            "SELECT ids FROM wn_enqueue($1, $2::jsonb)", name, '[{"name": "j", "task": "t"}]'
        )
        delete = asyncio.create_task(deleter.execute("DELETE FROM projects WHERE id = $1", project))

        async def blocked() -> bool:
            return bool(
                await submitter.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                    deleter.get_server_pid(),
                )
            )

        await wait_until(blocked, what="the delete to wait for the submission")
        await tx.commit()
        await asyncio.wait_for(delete, 10)
        assert await submitter.fetchval("SELECT count(*) FROM jobs WHERE project_id = $1", project) == 0
    finally:
        await submitter.close()
        await deleter.close()


SUSPICIOUS = re.compile(rb"\\u0000|\x00|NaN|Infinity|[0-9]{19}|[eE][+-]?[0-9]{3}")
"""What ``suspicious`` looks for, as one regular expression (ten times slower)."""


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=60)
    | st.text(alphabet="0123456789eE+-.NaInfity\\u\x00 {}", max_size=60).map(str.encode)
)
def test_the_scan_for_unstorable_values_finds_what_the_pattern_finds(raw: bytes) -> None:
    assert suspicious(raw) == (SUSPICIOUS.search(raw) is not None)


BODIES: list[Any] = [
    [{"name": "a", "task": "t"}],
    [{"name": "a", "task": "t", "parameters": {"x": [1, 2.5, None]}, "priority": -3, "required_cpu": 2}],
    [{"name": "a", "task": "t", "depends": ["b"]}, {"name": "b", "task": "t", "group": "g"}],
    [{"name": "a", "task": "t", "required_tags": ["gpu"], "timeout": 5, "retry_delay": 0.5, "max_lost": 0}],
    [{"name": "a"}],
    [{"task": "t"}],
    [{"name": "", "task": "t"}],
    [{"name": "a", "task": "a/b"}],
    [{"name": "a", "task": "t", "bogus": 1}],
    [{"name": "a", "task": "t", "priority": 2**40}],
    [{"name": "a", "task": "t", "priority": "1"}],
    [{"name": "a", "task": "t", "required_cpu": -1}],
    [{"name": "a", "task": "t", "max_attempts": 0}],
    [{"name": "a", "task": "t", "parameters": []}],
    [{"name": "a", "task": "t", "timeout": 0}],
    [],
    [{"name": "a", "task": "t", "inputs": ["x"] * 1001}],
    [{"name": "a", "task": "t", "parameters": {"i": 1, "s": "x", "l": [{}]}, "priority": 5}] * 3,
    [{"name": "a", "task": "t", "priority": True}],
    [{"name": "a", "task": "t", "priority": 1.0}],
    [{"name": "a", "task": "t", "priority": 2**31}],
    [{"name": "a" * 501, "task": "t"}],
    [{"name": "a", "task": "12"}],
    [{"name": "a", "task": " t"}],
    [{"name": "a", "task": "t" * 201}],
    [{"name": "a", "task": "t", "parameters": None}],
    [{"name": 1, "task": "t"}],
    [["name", "task"]],
    {"name": "a", "task": "t"},
    [{"name": "a", "task": "t", "parameters": {"i": 1}, "unique_key": "retry:k:0"}] * 2,
    [{"name": "a", "task": "t", "unique_key": ""}],
    [{"name": "a", "task": "t", "unique_key": "k" * 401}],
    [{"name": "a", "task": "t", "unique_key": 5}],
]
PLAIN = [0, 17, 29]
"""Indexes of the BODIES in the shape the SDK sends for plain jobs (the fast path takes them)."""


@pytest.mark.parametrize("body", BODIES)
def test_fast_validation_takes_and_refuses_what_the_model_does(body: Any) -> None:
    raw = orjson.dumps(body)
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
    plain = plain_entries(raw)
    assert plain is None or plain == model, "the plain path takes only what the model takes, as it does"
    assert (plain is not None) == (BODIES.index(body) in PLAIN)


_VALUES = (
    st.text(max_size=8)
    | st.integers(min_value=-(2**33), max_value=2**33)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.dictionaries(st.text(max_size=3), st.integers(min_value=-(2**40), max_value=2**40), max_size=2)
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["name", "task", "parameters", "priority", "group", "unique_key"]), _VALUES
        ),
        max_size=4,
    )
)
def test_the_plain_path_agrees_with_the_model(body: list[dict[str, Any]]) -> None:
    raw = orjson.dumps(body)
    plain = plain_entries(raw)
    if plain is None:
        return  # the model path judges it
    model = [
        j.model_dump(exclude_unset=True)
        for j in JobBatch.model_validate_json(raw, context={"plain": True}).jobs_and_group()[0]
    ]
    assert plain == model
