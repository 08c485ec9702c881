"""What one token learns of what it does not cover, under --auth: /metrics shows a token only its
own projects' series; a role that sees secret parameters masked cannot filter on them (a right
guess would answer the job, a wrong one nothing); the job history names the token that claimed,
never a name the worker chose."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from conftest import Api, ServerProcess, create_database, drop_database, wait_until
from test_auth import ADMIN, Client, World
from test_metrics import Scrape


@pytest.fixture(scope="module")
async def iso_server(
    pg_root_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerProcess]:
    """A server under --auth on a database of its own (its gauges show only this module's projects),
    computing the database gauges every tenth of a second."""
    url = await create_database(pg_root_url, "wn_isolation")
    token_file = tmp_path_factory.mktemp("isolation") / "admin-token"
    token_file.write_text(ADMIN + "\n")
    srv = await ServerProcess(
        url, "--auth", "--admin-token-file", str(token_file), "--metrics-interval", "0.1"
    ).start()
    yield srv
    await srv.stop()
    await drop_database(pg_root_url, url)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def scrape(client: Client) -> Scrape:
    h = {"Authorization": f"Bearer {client.token}"}
    async with client.session.get(client.base + "/metrics", headers=h) as resp:
        assert resp.status == 200, await resp.text()
        return Scrape(await resp.text())


def error_field(body: Any) -> str:
    return str(body["error"]["details"]["field"])


# ---------------------------------------------------------------- row 3: /metrics


async def test_metrics_show_a_token_only_the_series_of_its_projects(
    iso_server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    w = await World(iso_server, session).setup()
    beta_task = f"beta-task-{uuid.uuid4().hex[:6]}"
    await w.root.ok("POST", "/tasks", {"name": beta_task, "project_id": w.b, "required_cpu": 3})
    secret_job = (await w.root.ok("POST", f"/projects/{w.b}/jobs", {"name": "j", "task": beta_task}))["id"]
    worker_b = w.as_("worker_b")
    wid = (await worker_b.ok("POST", "/workers", {"name": "wb", "project": w.b, "cpu": 8}))["id"]
    claimed = await worker_b.ok("POST", f"/projects/{w.b}/claim", {"worker_id": wid, "free_cpu": 8})
    assert [j["id"] for j in claimed["jobs"]] == [secret_job]
    await worker_b.ok("POST", f"/jobs/{secret_job}/complete", {"attempt": 1, "duration": 2.0})
    await w.root.ok("POST", f"/projects/{w.b}/jobs", {"name": "waits", "task": beta_task})

    all_viewer = w.as_("viewer")  # a viewer of every project
    since = time.time()

    async def fresh() -> Scrape | None:
        s = await scrape(all_viewer)
        return s if s.get("whatsnext_metrics_computed_timestamp_seconds") > since else None

    everything = await wait_until(fresh, timeout=20, what="gauges computed after the workload")
    for project in (w.a, w.b):
        assert everything.has("whatsnext_jobs") and everything.get(
            "whatsnext_jobs_submitted_total", project=project
        )
    assert everything.get("whatsnext_jobs", project=w.b, status="COMPLETED") == 1
    assert everything.get("whatsnext_allocated_cpus", project=w.a) == 2  # World's two running jobs
    assert (
        everything.get("whatsnext_jobs_finished_total", project=w.b, task=beta_task, outcome="completed") == 1
    )

    viewer_a = Client(session, iso_server.url, (await w.token("viewer", [w.a]))["token"])
    mine = await scrape(viewer_a)
    # Nothing of project B: not its name, not its task, not its counts, allocation or waiting time.
    assert w.b not in mine.text and beta_task not in mine.text
    assert w.b not in mine.label_values()
    # Project A's series are all there, as the all-projects viewer sees them.
    assert mine.get("whatsnext_jobs", project=w.a, status="RUNNING") == 2
    assert mine.get("whatsnext_allocated_cpus", project=w.a) == 2
    assert mine.get("whatsnext_jobs_submitted_total", project=w.a) == everything.get(
        "whatsnext_jobs_submitted_total", project=w.a
    )
    assert mine.has("whatsnext_job_wait_seconds_bucket")
    # Server-wide series (no project label) stay: request counts by route template, claims.
    assert mine.has("whatsnext_http_requests_total") and mine.has("whatsnext_claims_total")
    assert mine.get("whatsnext_metrics_leader") == 1
    projects = {v for (_, labels) in mine.series for k, v in labels if k == "project"}
    assert projects == {w.a}

    # The worker token of project B sees B's series, and nothing of A.
    theirs = await scrape(worker_b)
    assert theirs.get("whatsnext_jobs", project=w.b, status="COMPLETED") == 1
    assert theirs.get("whatsnext_jobs_finished_total", project=w.b, task=beta_task, outcome="completed") == 1
    assert w.a not in theirs.text


# ---------------------------------------------------------------- row 4: filters on secrets


async def test_roles_that_see_secrets_masked_cannot_filter_on_them(
    iso_server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    w = await World(iso_server, session).setup()
    params = {"api_key": "k-123", "nested": {"db_password": "hunter2"}, "lr": 0.1}
    job_id = await w.job(params)
    viewer, operator = w.as_("viewer"), w.as_("operator")
    jobs = f"/projects/{w.a}/jobs?where="

    def where(value: Any) -> str:
        return jobs + quote(json.dumps(value))

    refused = (
        {"api_key": "k-123"},
        {"api_key": "wrong"},
        {"API_KEY": "k-123"},  # the patterns ignore case
        {"nested": {"db_password": "hunter2"}},
        {"lr": 0.1, "nested": {"db_password": "x"}},
        {"runs": [{"token": "x"}]},
    )
    for value in refused:
        status, body = await viewer.call("GET", where(value))
        assert status == 422 and error_field(body) == "where", (value, status, body)
        assert "secret" in body["error"]["message"]
    # A filter on what the viewer sees in full still works.
    status, body = await viewer.call("GET", where({"lr": 0.1}))
    assert status == 200 and [j["id"] for j in body["jobs"]] == [job_id]
    assert body["jobs"][0]["parameters"]["api_key"] == "***"
    # A role that may see secrets filters on them as before.
    found = await operator.ok("GET", where({"api_key": "k-123"}))
    assert [j["id"] for j in found["jobs"]] == [job_id]
    assert (await operator.ok("GET", where({"api_key": "wrong"})))["jobs"] == []
    found = await operator.ok("GET", where({"nested": {"db_password": "hunter2"}}))
    assert [j["id"] for j in found["jobs"]] == [job_id]

    # The dashboard's board: the same guess as a param filter.
    async def board(token: str | None, *pairs: tuple[str, str]) -> tuple[int, str]:
        url = f"{iso_server.url}/ui/projects/{w.a}?{urlencode(pairs)}"
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.text()

    for pair in (("param", "api_key=k-123"), ("param", 'nested={"db_password": "hunter2"}')):
        status, text = await board(w.tokens["viewer"], ("param", "lr=0.1"), pair)
        assert status == 422 and '"field":"param"' in text.replace(" ", ""), (pair, status, text)
    row = f'<tr data-job="{job_id}"'
    status, text = await board(w.tokens["viewer"], ("param", "lr=0.1"))
    assert status == 200 and row in text
    status, text = await board(w.tokens["operator"], ("param", "api_key=k-123"))
    assert status == 200 and row in text
    status, text = await board(w.tokens["operator"], ("param", "api_key=wrong"))
    assert status == 200 and row not in text


# ---------------------------------------------------------------- row 5: the history names the token


async def test_the_history_names_the_claiming_token_and_the_worker_apart(
    iso_server: ServerProcess, session: aiohttp.ClientSession
) -> None:
    w = await World(iso_server, session).setup()
    job_id = await w.job()
    claim = {"worker_id": w.worker_id, "worker_name": "admin-console", "free_cpu": 4}
    claimed = await w.worker_a.ok("POST", f"/projects/{w.a}/claim", claim)
    assert [j["id"] for j in claimed["jobs"]] == [job_id]
    reported = await w.worker_a.call(
        "POST", f"/jobs/{job_id}/complete", {"attempt": 1}, headers={"X-WhatsNext-Actor": "admin-console"}
    )
    assert reported[0] == 200, reported

    events = (await w.root.ok("GET", f"/jobs/{job_id}/events"))["events"]
    running = [e for e in events if e["status"] == "RUNNING"]
    assert len(running) == 1, events
    assert running[0]["actor"] == w.worker_a_name
    assert (running[0]["worker_id"], running[0]["worker"]) == (w.worker_id, "w")
    (completed,) = [e for e in events if e["status"] == "COMPLETED"]
    # The client's own name for itself comes after the token's, never in its place.
    assert completed["actor"] == f"{w.worker_a_name} (admin-console)"
    assert completed["worker"] == "w"
    assert all(not (e["actor"] or "").startswith("admin-console") for e in events), events

    # The dashboard's job page shows the worker apart from the token that acted.
    h = {"Authorization": f"Bearer {ADMIN}"}
    async with session.get(f"{iso_server.url}/ui/jobs/{job_id}", headers=h) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert f"worker w · by {w.worker_a_name}" in page

    # A claim that waits gets its job from the submission's transaction (wn_enqueue running the
    # claim): the same actor.
    waiting = asyncio.create_task(
        w.worker_a.ok("POST", f"/projects/{w.a}/claim", {**claim, "wait": 30, "max_jobs": 1})
    )

    async def claim_waits() -> bool:
        health = await w.root.ok("GET", "/health")
        return bool(health["waiting_claims"])

    await wait_until(claim_waits, timeout=20, what="the claim to wait")
    handed = await w.job()
    assert [j["id"] for j in (await waiting)["jobs"]] == [handed]
    events = (await w.root.ok("GET", f"/jobs/{handed}/events"))["events"]
    (running,) = [e for e in events if e["status"] == "RUNNING"]
    assert (running["actor"], running["worker"], running["reason"]) == (w.worker_a_name, "w", "admin-console")


async def test_without_auth_the_history_names_the_worker_and_filters_stay_open(
    api: Api, project: dict[str, Any]
) -> None:
    """No token, no other name to give: the worker's name is the claim's actor, as it always was;
    and anyone may filter on any parameter."""
    name = project["name"]
    await api.ok("POST", "/tasks", {"name": "t", "project_id": name})
    job_id = (
        await api.ok(
            "POST", f"/projects/{name}/jobs", {"name": "j", "task": "t", "parameters": {"api_key": "k"}}
        )
    )["id"]
    wid = (await api.ok("POST", "/workers", {"name": "reg", "project": name, "cpu": 2}))["id"]
    claimed = await api.ok(
        "POST", f"/projects/{name}/claim", {"worker_id": wid, "worker_name": "w1", "free_cpu": 2}
    )
    assert [j["id"] for j in claimed["jobs"]] == [job_id]
    events = (await api.ok("GET", f"/jobs/{job_id}/events"))["events"]
    assert [(e["status"], e["reason"], e["actor"], e["worker"]) for e in events] == [
        ("PENDING", "created", None, None),
        ("RUNNING", "w1", "w1", "reg"),
    ]
    found = await api.ok("GET", f"/projects/{name}/jobs?where=" + quote(json.dumps({"api_key": "k"})))
    assert [j["id"] for j in found["jobs"]] == [job_id]
