"""``whatsnext schedules add|ls|show|pause|resume|rm`` against the application in this process."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any

from conftest import Api
from helpers import cli


async def run_cli(app_url: str, *args: str) -> Any:
    """``whatsnext ARGS`` in a thread: the application answers on this loop while it waits."""
    return await asyncio.to_thread(cli, SimpleNamespace(url=app_url), *args)


async def test_schedule_commands(app_url: str, app_api: Api) -> None:
    p = f"cs-{uuid.uuid4().hex[:8]}"
    await app_api.ok("POST", "/projects", {"name": p})
    made = await run_cli(
        app_url,
        "schedules",
        "add",
        "nightly",
        "--project",
        p,
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Berlin",
        "--task",
        "eval",
        "--param",
        "split=val",
        "--param",
        "seed=3",
        "--cpus",
        "2",
        "--timeout",
        "1h",
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("schedule nightly: cron 0 2 * * * (Europe/Berlin), next run ")
    s = await app_api.ok("GET", f"/projects/{p}/schedules/nightly")
    assert s["job"] == {
        "task": "eval",
        "parameters": {"split": "val", "seed": 3},
        "priority": 0,
        "required_cpu": 2,
        "timeout": 3600.0,
    }
    assert (s["cron"], s["timezone"], s["overlap"]) == ("0 2 * * *", "Europe/Berlin", "skip")

    made = await run_cli(
        app_url,
        "schedules",
        "add",
        "refresh",
        "--project",
        p,
        "--every",
        "15m",
        "--task",
        "fetch",
        "--job-name",
        "fetch-data",
        "--allow-overlap",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    refresh = json.loads(made.stdout)
    assert (refresh["every"], refresh["overlap"], refresh["job"]["name"]) == (900, "allow", "fetch-data")

    listed = await run_cli(app_url, "schedules", "ls", "--project", p)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "WHEN", "NEXT"]
    assert lines[1].startswith("nightly") and "cron 0 2 * * * (Europe/Berlin)" in lines[1]
    assert lines[2].startswith("refresh") and "every 15m" in lines[2]

    paused = await run_cli(app_url, "schedules", "pause", "nightly", "--project", p)
    assert paused.returncode == 0 and paused.stdout.strip() == "schedule nightly: paused"
    listed = await run_cli(app_url, "schedules", "ls", "--project", p)
    assert "paused" in listed.stdout.splitlines()[1]
    resumed = await run_cli(app_url, "schedules", "resume", "nightly", "--project", p)
    assert resumed.returncode == 0 and resumed.stdout.startswith("schedule nightly: resumed, next run ")
    shown = await run_cli(app_url, "schedules", "show", "nightly", "--project", p)
    assert shown.returncode == 0 and "task eval" in shown.stdout and "overlap     skip" in shown.stdout

    removed = await run_cli(app_url, "schedules", "rm", "refresh", "--project", p)
    assert removed.returncode == 0 and "removed schedule refresh" in removed.stdout
    assert [x["name"] for x in (await app_api.ok("GET", f"/projects/{p}/schedules"))["schedules"]] == [
        "nightly"
    ]
    gone = await run_cli(app_url, "schedules", "rm", "refresh", "--project", p)
    assert gone.returncode == 4, gone


async def test_schedule_commands_refuse_bad_input(app_url: str, app_api: Api) -> None:
    p = f"cs-{uuid.uuid4().hex[:8]}"
    await app_api.ok("POST", "/projects", {"name": p})
    bad = await run_cli(
        app_url, "schedules", "add", "s", "--project", p, "--cron", "0 25 * * *", "--task", "t"
    )
    assert bad.returncode == 1 and "hour: 25 is out of range 0-23" in bad.stderr
    bad = await run_cli(app_url, "schedules", "add", "s", "--project", p, "--every", "1.5", "--task", "t")
    assert bad.returncode == 2 and "--every takes whole seconds" in bad.stderr
    both = await run_cli(
        app_url, "schedules", "add", "s", "--project", p, "--every", "5", "--cron", "* * * * *", "--task", "t"
    )
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    neither = await run_cli(app_url, "schedules", "add", "s", "--project", p, "--task", "t")
    assert neither.returncode == 2 and "one of the arguments --cron --every is required" in neither.stderr
    zone = await run_cli(
        app_url,
        "schedules",
        "add",
        "s",
        "--project",
        p,
        "--cron",
        "@daily",
        "--timezone",
        "Moon/Base",
        "--task",
        "t",
    )
    assert zone.returncode == 1 and "unknown time zone 'Moon/Base'" in zone.stderr
    assert (await app_api.ok("GET", f"/projects/{p}/schedules"))["schedules"] == []
