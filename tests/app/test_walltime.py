"""Walltime is the job's timeout: a worker registers when its time ends (shown with it), and a
claim with ``time_left`` that finds nothing says which pending job does not fit and why (its
timeout), so that a worker that stops when its project is done does not wait for it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aiohttp.test_utils import TestClient
from helpers import call


async def _project(client: TestClient) -> str:
    name = f"wall-{uuid.uuid4().hex[:8]}"
    assert (await call(client, "POST", "/projects", {"name": name}))[0] == 201
    return name


async def _register(client: TestClient, project: str, **fields: Any) -> dict[str, Any]:
    body = {"name": f"w-{uuid.uuid4().hex[:6]}", "project": project, "cpu": 4, **fields}
    status, out = await call(client, "POST", "/workers", body)
    assert status == 201, out
    return dict(out)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_a_worker_registers_when_its_time_ends(client: TestClient) -> None:
    p = await _project(client)
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    ending = await _register(client, p, deadline=end.isoformat())
    assert _at(ending["deadline"]) == end
    # A time with another zone is the same instant.
    other_zone = end.astimezone(timezone(timedelta(hours=2)))
    assert _at((await _register(client, p, deadline=other_zone.isoformat()))["deadline"]) == end
    endless = await _register(client, p)
    assert endless["deadline"] is None
    status, listed = await call(client, "GET", f"/workers?project={p}")
    assert status == 200
    shown = {w["id"]: w["deadline"] for w in listed["workers"]}
    assert _at(shown[ending["id"]]) == end and shown[endless["id"]] is None
    status, out = await call(client, "POST", "/workers", {"name": "w", "project": p, "deadline": "soon"})
    assert status == 422 and "deadline" in str(out)


async def test_an_idle_claim_names_the_job_whose_timeout_does_not_fit(client: TestClient) -> None:
    p = await _project(client)
    status, out = await call(
        client, "POST", f"/projects/{p}/jobs", {"name": "long", "task": "t", "timeout": 3600}
    )
    assert status == 201, out
    long = out["id"]
    body = {"worker_name": "w", "free_cpu": 4, "max_jobs": 4, "idle_summary": True}
    status, out = await call(client, "POST", f"/projects/{p}/claim", {**body, "time_left": 590})
    assert status == 200 and out["jobs"] == []
    idle = out["idle"]
    assert idle["pending"] == 1 and idle["runnable"] is False
    assert idle["unfit"]["id"] == long and idle["unfit"]["timeout"] == 3600
    # With time enough (or no end), the same job is runnable and handed out.
    status, out = await call(client, "POST", f"/projects/{p}/claim", {**body, "time_left": 3600})
    assert [j["id"] for j in out["jobs"]] == [long]
