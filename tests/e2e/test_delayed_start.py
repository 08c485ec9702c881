"""Delayed start: a job submitted with not_before or delay is not handed out before then, its
wait counts from then, and the dashboard says until when it waits."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from conftest import Api, ServerProcess
from helpers import PYTHON, cli

from whatsnext.api.client import AsyncServer, Client, CLIFormatter, Job


def field_of(body: dict[str, Any]) -> str:
    details = body["error"]["details"]
    return details["field"] if isinstance(details, dict) else details[0]["field"]


async def test_delayed_jobs_wait_until_their_time(
    server: ServerProcess, api: Api, project: dict[str, Any], database_url: str
) -> None:
    p = project["name"]
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    later = await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "at-two", "task": "t", "not_before": at.isoformat()}
    )
    assert datetime.fromisoformat(later["available_at"]) == at
    assert datetime.fromisoformat(later["eligible_at"]) == at  # its wait counts from then
    delayed = await api.ok(
        "POST", f"/projects/{p}/jobs/batch", [{"name": "in-an-hour", "task": "t", "delay": 3600}]
    )
    [delayed_id] = delayed["ids"]
    job = await api.ok("GET", f"/jobs/{delayed_id}")
    wait = datetime.fromisoformat(job["available_at"]) - datetime.fromisoformat(job["created_at"])
    assert timedelta(seconds=3599) <= wait <= timedelta(seconds=3601)
    now = await api.ok("POST", f"/projects/{p}/jobs", {"name": "now", "task": "t"})
    claimed = (await api.ok("POST", f"/projects/{p}/claim", {"free_cpu": 8, "max_jobs": 8}))["jobs"]
    assert [j["id"] for j in claimed] == [now["id"]]
    await api.ok("POST", f"/jobs/{now['id']}/complete", {"attempt": 1})
    async with api.session.get(f"{server.url}/ui/jobs/{later['id']}") as page:
        text = await page.text()
        assert page.status == 200 and "delayed start: not before" in text, text[:2000]

    # Its time comes (moved forward here rather than waited for): a real worker runs it, and only
    # it (the other delayed job, cancelled so that the worker has nothing left to wait for, never ran).
    await api.ok("POST", f"/jobs/{later['id']}/cancel")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE jobs SET available_at = now(), eligible_at = now() WHERE id = $1", delayed_id
        )
    finally:
        await conn.close()
    aproject = await AsyncServer(server.url).get_project(p)
    fmt = CLIFormatter(template=f'{PYTHON} -c "pass"')
    summary = await asyncio.wait_for(Client("t", "w", aproject, fmt, available_cpu=1).work_async(), 60)
    assert summary.completed == 1
    assert (await api.ok("GET", f"/jobs/{delayed_id}"))["status"] == "COMPLETED"
    job = await api.ok("GET", f"/jobs/{later['id']}")
    assert (job["status"], job["attempt"]) == ("CANCELLED", 0)


async def test_delayed_start_refusals_name_the_field(api: Api, project: dict[str, Any]) -> None:
    p = project["name"]
    for body, field in (
        ({"not_before": "2030-01-01T02:00:00+01:00", "delay": 5}, "delay"),
        ({"not_before": "2030-01-01T02:00:00"}, "not_before"),  # no offset: ambiguous
        ({"delay": -1}, "delay"),
        ({"delay": 10 * 365 * 86400}, "delay"),
    ):
        status, out = await api.post(f"/projects/{p}/jobs", {"name": "j", "task": "t", **body})
        assert status == 422 and field_of(out) == field, (body, out)
        status, out = await api.post(f"/projects/{p}/jobs/batch", [{"name": "j", "task": "t", **body}])
        assert status == 422 and field_of(out) == f"0.{field}", (body, out)
    assert (await api.ok("GET", f"/projects/{p}/jobs"))["jobs"] == []


async def test_delayed_start_from_the_sdk_and_the_cli(
    server: ServerProcess, api: Api, project: dict[str, Any]
) -> None:
    p = project["name"]
    aproject = await AsyncServer(server.url).get_project(p)
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    by_time = await aproject.append_queue(Job("at", "t", not_before=at))
    by_delay = await aproject.append_queue(Job("later", "t", delay=600))
    job = await api.ok("GET", f"/jobs/{by_time.id}")
    assert datetime.fromisoformat(job["available_at"]) == at
    job = await api.ok("GET", f"/jobs/{by_delay.id}")
    wait = datetime.fromisoformat(job["available_at"]) - datetime.fromisoformat(job["created_at"])
    assert timedelta(seconds=599) <= wait <= timedelta(seconds=601)

    out = cli(server, "jobs", "add", "t", "--project", p, "--not-before", at.isoformat(), "--json")
    assert out.returncode == 0, out.stderr
    assert datetime.fromisoformat(json.loads(out.stdout)["available_at"]) == at
    local = at.astimezone().replace(tzinfo=None)  # no zone: local time
    out = cli(server, "jobs", "add", "t", "--project", p, "--not-before", local.isoformat(), "--json")
    assert datetime.fromisoformat(json.loads(out.stdout)["available_at"]) == at
    out = cli(server, "jobs", "add", "t", "--project", p, "--delay", "1h", "--json")
    data = json.loads(out.stdout)
    wait = datetime.fromisoformat(data["available_at"]) - datetime.fromisoformat(data["created_at"])
    assert timedelta(seconds=3599) <= wait <= timedelta(seconds=3601)
    out = cli(server, "jobs", "add", "t", "--project", p, "--delay", "1h", "--not-before", at.isoformat())
    assert out.returncode == 2 and "not allowed with" in out.stderr
    out = cli(server, "jobs", "add", "t", "--project", p, "--not-before", "tomorrow")
    assert out.returncode == 2 and "is not a time" in out.stderr
