"""Live logs: the routes over HTTP, the worker's LogShipper against a real server, and real workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ROOT, Api, ServerProcess, wait_until
from helpers import PYTHON, RECORD, cli, running_job, wait_for_condition

from whatsnext.api.client import AsyncServer, Client, CLIFormatter
from whatsnext.api.client.http import Http
from whatsnext.api.client.joblogs import follow_logs, read_logs
from whatsnext.api.client.logship import CUT_MARK, LogShipper, dropped_marker
from whatsnext.limits import LOG_KEEP_LINES as KEEP_LINES

READ_TIMEOUT = 20.0


async def all_lines(api: Api, job_id: int) -> list[dict[str, Any]]:
    after, lines = 0, []
    while True:
        page = await api.ok("GET", f"/jobs/{job_id}/logs?after={after}&limit=1000")
        lines += page["lines"]
        after = page["last_id"]
        if len(page["lines"]) < 1000:
            return lines


class Stream:
    """A follow stream read event by event, each read bounded by READ_TIMEOUT."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def raw(self) -> bytes:
        return await asyncio.wait_for(self.resp.content.readline(), READ_TIMEOUT)

    async def event(self) -> dict[str, Any]:
        line = await self.raw()
        assert line, "the stream ended early"
        return dict(json.loads(line))

    async def until(self, predicate: Any) -> list[dict[str, Any]]:
        """Events up to and including the first one the predicate accepts."""
        seen = []
        while True:
            event = await self.event()
            seen.append(event)
            if predicate(event):
                return seen


@contextlib.asynccontextmanager
async def follow(
    http: aiohttp.ClientSession, base: str, job_id: int, query: str = ""
) -> AsyncIterator[Stream]:
    url = f"{base}/jobs/{job_id}/logs?follow=1{query}"
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=120)) as resp:
        assert resp.status == 200, await resp.text()
        yield Stream(resp)


@contextlib.asynccontextmanager
async def shipping(url: str, **options: Any) -> AsyncIterator[LogShipper]:
    http = Http(url)
    shipper = LogShipper(http, **options)
    task = asyncio.create_task(shipper.run())
    try:
        yield shipper
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await http.close()


# ---------------------------------------------------------------- routes


async def test_append_and_read_pages(api: Api, project: dict) -> None:
    job = await running_job(api, project)
    jid = job["id"]
    empty = await api.ok("GET", f"/jobs/{jid}/logs")
    assert empty == {"lines": [], "dropped": 0, "finished": False, "status": "RUNNING", "last_id": 0}
    out = await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": job["attempt"], "lines": ["a", "b", "c"]})
    assert out == {"id": jid, "status": "RUNNING", "appended": 3, "dropped": 0}
    await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": job["attempt"], "lines": ["d", "", "f\x00g"]})
    await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": job["attempt"], "lines": []})
    page = await api.ok("GET", f"/jobs/{jid}/logs")
    assert [x["line"] for x in page["lines"]] == ["a", "b", "c", "d", "", "f\ufffdg"]
    assert [x["seq"] for x in page["lines"]] == [1, 2, 3, 4, 5, 6]
    assert {x["attempt"] for x in page["lines"]} == {1}
    assert page["last_id"] == page["lines"][-1]["id"] and page["dropped"] == 0
    first = await api.ok("GET", f"/jobs/{jid}/logs?limit=2")
    assert [x["line"] for x in first["lines"]] == ["a", "b"]
    rest = await api.ok("GET", f"/jobs/{jid}/logs?after={first['last_id']}")
    assert [x["line"] for x in rest["lines"]] == ["c", "d", "", "f\ufffdg"]
    tail = await api.ok("GET", f"/jobs/{jid}/logs?tail=2")
    assert [x["line"] for x in tail["lines"]] == ["", "f\ufffdg"]
    nothing = await api.ok("GET", f"/jobs/{jid}/logs?after={page['last_id']}")
    assert nothing["lines"] == [] and nothing["last_id"] == page["last_id"]
    await api.ok("POST", f"/jobs/{jid}/complete", {"attempt": job["attempt"]})
    done = await api.ok("GET", f"/jobs/{jid}/logs")
    assert done["finished"] is True and done["status"] == "COMPLETED" and len(done["lines"]) == 6


async def test_stale_attempts_and_unknown_jobs(api: Api, project: dict) -> None:
    p = project["name"]
    pending = await api.ok("POST", f"/projects/{p}/jobs", {"name": "waits", "task": "t", "priority": -1})
    job = await running_job(api, project, "runs")
    jid = job["id"]
    status, body = await api.post(f"/jobs/{jid}/logs", {"attempt": 2, "lines": ["x"]})
    assert status == 409 and body["error"]["code"] == "stale_attempt"
    assert body["error"]["details"] == {"field": "attempt", "status": "RUNNING"}
    status, body = await api.post(f"/jobs/{pending['id']}/logs", {"attempt": 1, "lines": ["x"]})
    assert status == 409, "a job that never ran has no attempt to log for"
    status, body = await api.post("/jobs/987654321/logs", {"attempt": 1, "lines": ["x"]})
    assert status == 404 and body["error"]["details"]["field"] == "job_id"
    status, body = await api.get("/jobs/987654321/logs")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await api.get("/jobs/987654321/logs?follow=1")
    assert status == 404 and body["error"]["code"] == "not_found"
    # A requeued job is claimed again: the old attempt's lines are stale from then on.
    await api.ok("POST", f"/jobs/{jid}/fail", {"attempt": 1, "requeue": True})
    again = await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "test"})
    assert again["jobs"][0]["id"] == jid and again["jobs"][0]["attempt"] == 2
    status, _ = await api.post(f"/jobs/{jid}/logs", {"attempt": 1, "lines": ["late"]})
    assert status == 409
    await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 2, "lines": ["second"]})
    # Lines of the current attempt are still taken right after the report (a worker's last batch).
    await api.ok("POST", f"/jobs/{jid}/complete", {"attempt": 2})
    await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 2, "lines": ["last"]})
    lines = (await api.ok("GET", f"/jobs/{jid}/logs"))["lines"]
    assert [(x["attempt"], x["line"]) for x in lines] == [(2, "second"), (2, "last")]


async def test_append_for_several_jobs_at_once(api: Api, project: dict) -> None:
    a, b = await running_job(api, project, "a"), await running_job(api, project, "b")
    out = await api.ok(
        "POST",
        "/jobs/logs",
        [
            {"id": a["id"], "attempt": 1, "lines": ["a1", "a2"]},
            {"id": b["id"], "attempt": 5, "lines": ["stale"]},
            {"id": 987654321, "attempt": 1, "lines": ["nobody"]},
            {"id": b["id"], "attempt": 1, "lines": []},
        ],
    )
    assert [(r["id"], r["code"], r["appended"]) for r in out["results"]] == [
        (a["id"], 200, 2),
        (b["id"], 409, 0),
        (987654321, 404, 0),
        (b["id"], 200, 0),
    ]
    assert out["results"][1]["status"] == "RUNNING" and "stale" in out["results"][1]["message"]
    assert [x["line"] for x in await all_lines(api, a["id"])] == ["a1", "a2"]
    assert await all_lines(api, b["id"]) == []
    for bad, field in [
        ([], "body"),
        ([{"id": a["id"], "attempt": 1, "lines": ["x"] * 1001}], "0.lines"),
        ([{"id": a["id"], "attempt": 1, "lines": ["x"] * 1000}] * 11, "body"),
        ([{"id": 0, "attempt": 1, "lines": []}], "0.id"),
        ({"id": a["id"], "attempt": 1, "lines": []}, "body"),
    ]:
        status, body = await api.post("/jobs/logs", bad)
        assert status == 422, (field, body)
        assert body["error"]["details"][0]["field"] == field, body


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"attempt": 1, "lines": ["x"] * 1001}, 422, "lines"),
        ({"attempt": 1, "lines": ["x" * 65_537]}, 422, "lines.0"),
        ({"attempt": 0, "lines": ["x"]}, 422, "attempt"),
        ({"lines": ["x"]}, 422, "attempt"),
        ({"attempt": 1, "lines": "x"}, 422, "lines"),
        ({"attempt": 1, "lines": [1]}, 422, "lines.0"),
        ({"attempt": 1, "lines": [], "extra": 1}, 422, "extra"),
    ],
)
async def test_append_refuses_bad_input(api: Api, project: dict, body: Any, code: int, field: str) -> None:
    job = await running_job(api, project)
    status, out = await api.post(f"/jobs/{job['id']}/logs", body)
    assert status == code, out
    assert out["error"]["details"][0]["field"] == field
    status, out = await api.call("POST", f"/jobs/{job['id']}/logs", data=b"")
    assert status == 400 and out["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=-1", "after"),
        ("after=x", "after"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("tail=0", "tail"),
        ("follow=maybe", "follow"),
        ("follow=1&format=xml", "format"),
    ],
)
async def test_read_refuses_bad_queries(api: Api, project: dict, query: str, field: str) -> None:
    job = await running_job(api, project)
    status, out = await api.get(f"/jobs/{job['id']}/logs?{query}")
    assert status == 422 and out["error"]["details"]["field"] == field, out
    status, out = await api.get("/jobs/0/logs")
    assert status == 422 and out["error"]["details"]["field"] == "job_id"


async def test_keeps_the_newest_lines_and_counts_the_dropped(
    api: Api, http: aiohttp.ClientSession, server: ServerProcess, project: dict
) -> None:
    job = await running_job(api, project)
    jid, extra = job["id"], 500
    total = KEEP_LINES + extra
    for start in range(0, total, 1000):
        batch = [f"line {i + 1}" for i in range(start, min(start + 1000, total))]
        out = await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 1, "lines": batch})
    assert out["dropped"] == extra
    lines = await all_lines(api, jid)
    assert len(lines) == KEEP_LINES
    assert lines[0]["line"] == f"line {extra + 1}" and lines[0]["seq"] == extra + 1
    assert lines[-1]["line"] == f"line {total}" and lines[-1]["seq"] == total
    page = await api.ok("GET", f"/jobs/{jid}/logs?limit=1")
    assert page["dropped"] == extra
    await api.ok("POST", f"/jobs/{jid}/complete", {"attempt": 1})
    # A follower from the start is told how many lines it cannot get, then gets the rest.
    async with follow(http, server.url, jid, "&format=text") as stream:
        assert (await stream.raw()).decode() == f"[... {extra} earlier lines dropped ...]\n"
        assert (await stream.raw()).decode() == f"line {extra + 1}\n"
        rest = await asyncio.wait_for(stream.resp.text(), READ_TIMEOUT)
    assert rest.splitlines()[-1] == f"line {total}" and len(rest.splitlines()) == KEEP_LINES - 1
    async with follow(http, server.url, jid) as stream:
        assert await stream.event() == {"dropped": extra}
        events = await stream.until(lambda e: "finished" in e)
    assert len(events) == KEEP_LINES + 1 and events[-1] == {"finished": True, "status": "COMPLETED"}


async def test_follow_streams_new_lines_until_the_job_finishes(
    api: Api, http: aiohttp.ClientSession, server: ServerProcess, project: dict
) -> None:
    job = await running_job(api, project)
    jid = job["id"]
    await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 1, "lines": ["before"]})
    async with follow(http, server.url, jid) as stream:
        assert stream.resp.headers["Content-Type"].startswith("application/x-ndjson")
        first = await stream.event()
        assert first["line"] == "before" and first["seq"] == 1 and first["attempt"] == 1
        await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 1, "lines": ["one", "two"]})
        got = await stream.until(lambda e: e.get("line") == "two")
        assert [e["line"] for e in got] == ["one", "two"]
        await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 1, "lines": ["three"]})
        assert (await stream.event())["line"] == "three"
        await api.ok("POST", f"/jobs/{jid}/complete", {"attempt": 1})
        assert await stream.event() == {"finished": True, "status": "COMPLETED"}
        assert await stream.raw() == b""
    # Resuming after a line id gives only what follows it; a finished job's stream ends at once.
    async with follow(http, server.url, jid, f"&after={first['id']}&format=text") as stream:
        text = await asyncio.wait_for(stream.resp.text(), READ_TIMEOUT)
    assert text == "one\ntwo\nthree\n"
    async with follow(http, server.url, jid, "&tail=1") as stream:
        assert (await stream.event())["line"] == "three"
        assert (await stream.event())["finished"] is True


async def test_follow_shows_every_attempt(
    api: Api, http: aiohttp.ClientSession, server: ServerProcess, project: dict
) -> None:
    p = project["name"]
    job = await running_job(api, project)
    jid = job["id"]
    async with follow(http, server.url, jid, "&format=text") as stream:
        await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 1, "lines": ["try 1"]})
        assert await stream.raw() == b"try 1\n"
        await api.ok("POST", f"/jobs/{jid}/fail", {"attempt": 1, "requeue": True, "error": "preempted"})
        await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "test"})
        await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 2, "lines": ["try 2"]})
        assert await stream.raw() == b"[... attempt 2 ...]\n"
        assert await stream.raw() == b"try 2\n"
        await api.ok("POST", f"/jobs/{jid}/fail", {"attempt": 2, "error": "boom"})
        assert await stream.raw() == b""


async def test_follow_ends_when_the_server_stops(
    database_url: str, http: aiohttp.ClientSession, project: dict
) -> None:
    srv = await ServerProcess(database_url).start()
    try:
        api = Api(srv.url, http)
        job = await running_job(api, project)
        async with follow(http, srv.url, job["id"]) as stream:
            await api.ok("POST", f"/jobs/{job['id']}/logs", {"attempt": 1, "lines": ["x"]})
            assert (await stream.event())["line"] == "x"
            stopping = asyncio.ensure_future(srv.stop())
            assert await stream.event() == {"finished": False, "status": "RUNNING"}
            assert await stopping == 0
    finally:
        await srv.stop()


async def test_sdk_read_and_follow(api: Api, server: ServerProcess, project: dict) -> None:
    job = await running_job(api, project)
    jid = job["id"]
    srv = AsyncServer(server.url)
    try:
        for start in (0, 1000):
            batch = [f"l{i}" for i in range(start, min(start + 1000, 1500))]
            await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 1, "lines": batch})
        data = await read_logs(srv.http, jid, page=1000)
        assert [x["line"] for x in data["lines"]] == [f"l{i}" for i in range(1500)]
        assert [x["line"] for x in (await read_logs(srv.http, jid, tail=2))["lines"]] == ["l1498", "l1499"]
        seen: list[str] = []
        async for event in follow_logs(srv.http, jid, tail=1):
            if "line" in event:
                seen.append(event["line"])
                if event["line"] == "l1499":
                    await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 1, "lines": ["more"]})
                else:
                    await api.ok("POST", f"/jobs/{jid}/complete", {"attempt": 1})
            else:
                assert event == {"finished": True, "status": "COMPLETED"}
        assert seen == ["l1499", "more"]
    finally:
        await srv.close()


# ---------------------------------------------------------------- the worker's shipper


async def test_shipper_sends_batches_and_flushes(api: Api, server: ServerProcess, project: dict) -> None:
    job = await running_job(api, project)
    jid = job["id"]
    async with shipping(server.url, interval=0.05, batch_lines=100, max_line_chars=1000) as shipper:
        out = shipper.open(jid, job["attempt"])
        out("first\n")
        # Without a flush, a lone line still goes out after the interval.
        await wait_until(lambda: _lines_are(api, jid, ["first"]), what="the interval to send the first line")
        for i in range(450):
            out(f"n{i}")
        out("progress 10%\rprogress 50%\rprogress 100%\r")
        out("x" * 5000)
        await shipper.finish(jid)
        lines = [x["line"] for x in await all_lines(api, jid)]
        assert lines[:-1] == ["first", *[f"n{i}" for i in range(450)], "progress 100%"]
        assert len(lines[-1]) == 1000 and lines[-1] == "x" * (1000 - len(CUT_MARK)) + CUT_MARK
        assert shipper.delivered == 453 and shipper.dropped == 0
        out("after the end")  # a finished job's callback is a no-op
        assert await shipper.drain(5)
    assert len(await all_lines(api, jid)) == 453


async def _lines_are(api: Api, job_id: int, expected: list[str]) -> bool:
    return [x["line"] for x in await all_lines(api, job_id)] == expected


async def test_shipper_bounds_memory_and_says_what_it_dropped(
    api: Api, server: ServerProcess, project: dict
) -> None:
    job = await running_job(api, project)
    jid = job["id"]
    # Each "line NNN" costs 9 characters: the buffer holds the newest 100 lines.
    async with shipping(server.url, job_buffer_chars=900) as shipper:
        out = shipper.open(jid, job["attempt"])
        for i in range(250):
            out(f"line {i:03d}")  # no await in between: the sender cannot keep up
        await shipper.finish(jid)
    lines = [x["line"] for x in await all_lines(api, jid)]
    assert lines == [dropped_marker(150), *[f"line {i:03d}" for i in range(150, 250)]]
    assert shipper.dropped == 150 and shipper.delivered == 101


async def test_shipper_total_bound_drops_from_the_largest_buffer(
    api: Api, server: ServerProcess, project: dict
) -> None:
    a, b = await running_job(api, project, "a"), await running_job(api, project, "b")
    async with shipping(server.url, job_buffer_chars=420, total_buffer_chars=420) as shipper:
        out_a, out_b = shipper.open(a["id"], 1), shipper.open(b["id"], 1)
        for i in range(10):
            out_b(f"b {i:03d}")
        for i in range(70):
            out_a(f"a {i:03d}")
        await shipper.finish(a["id"])
        await shipper.finish(b["id"])
    assert [x["line"] for x in await all_lines(api, b["id"])] == [f"b {i:03d}" for i in range(10)]
    lines_a = [x["line"] for x in await all_lines(api, a["id"])]
    assert lines_a == [dropped_marker(10), *[f"a {i:03d}" for i in range(10, 70)]]


async def test_shipper_splits_large_backlogs_into_requests(
    api: Api, server: ServerProcess, project: dict
) -> None:
    jobs = [await running_job(api, project, f"j{i}") for i in range(3)]
    async with shipping(server.url, max_request_lines=10, max_request_chars=100) as shipper:
        outs = [shipper.open(j["id"], 1) for j in jobs]
        for i in range(25):
            for n, out in enumerate(outs):
                out(f"{n}:{i:02d}")
        await asyncio.gather(*(shipper.finish(j["id"]) for j in jobs))
        assert shipper.delivered == 75
    for n, job in enumerate(jobs):
        assert [x["line"] for x in await all_lines(api, job["id"])] == [f"{n}:{i:02d}" for i in range(25)]


async def test_shipper_drops_a_stale_attempt(api: Api, server: ServerProcess, project: dict) -> None:
    job = await running_job(api, project)
    async with shipping(server.url) as shipper:
        out = shipper.open(job["id"], job["attempt"] + 1)
        out("from an attempt the server does not know")
        started = time.monotonic()
        await shipper.finish(job["id"], timeout=30)
        assert time.monotonic() - started < 10
        assert shipper.discarded == 1 and shipper.delivered == 0
        out("ignored")
        assert await shipper.drain(5)
    assert await all_lines(api, job["id"]) == []


async def test_shipper_takes_lines_from_other_threads(api: Api, server: ServerProcess, project: dict) -> None:
    job = await running_job(api, project)
    async with shipping(server.url) as shipper:
        out = shipper.open(job["id"], job["attempt"])
        await wait_for_condition(lambda: shipper._loop is not None, 5, "the shipper to start")
        writer = threading.Thread(target=lambda: [out(f"t{i}") for i in range(100)])
        writer.start()
        await asyncio.to_thread(writer.join)

        # the lines reach the loop through call_soon_threadsafe
        def arrived() -> int:
            buf = shipper._jobs.get(job["id"])
            return shipper.delivered + (len(buf.lines) if buf is not None else 0)

        await wait_for_condition(lambda: arrived() >= 100, 5, "the lines to reach the shipper")
        await shipper.finish(job["id"])
    assert [x["line"] for x in await all_lines(api, job["id"])] == [f"t{i}" for i in range(100)]


async def test_shipper_keeps_lines_while_the_server_is_down(
    database_url: str, http: aiohttp.ClientSession, project: dict
) -> None:
    srv = await ServerProcess(database_url).start()
    restarted: ServerProcess | None = None
    try:
        api = Api(srv.url, http)
        job = await running_job(api, project)
        async with shipping(srv.url) as shipper:
            out = shipper.open(job["id"], job["attempt"])
            out("while up")
            assert await srv.stop() == 0
            out("while down")
            started = time.monotonic()
            await shipper.finish(job["id"], timeout=60)  # one failed try, then the report may go
            assert time.monotonic() - started < 20
            restarted = await ServerProcess(database_url, port=srv.port).start()
            assert await shipper.drain(60)
        lines = await all_lines(Api(restarted.url, http), job["id"])
        assert [x["line"] for x in lines] == ["while up", "while down"]
    finally:
        await srv.stop()
        if restarted is not None:
            await restarted.stop()


# ---------------------------------------------------------------- real workers


async def test_worker_ships_output_while_the_job_runs(
    http: aiohttp.ClientSession, server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    srv = AsyncServer(server.url)
    api = Api(server.url, http)
    p = project["name"]
    go = tmp_path / "go"
    job = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "talks", "task": "t", "parameters": {"out": str(tmp_path), "wait-for": str(go)}},
    )
    jid = job["id"]
    client = Client("t", "shipper", await srv.get_project(p), CLIFormatter(executable=PYTHON, script=RECORD))
    async with follow(http, server.url, jid) as stream:
        worker = asyncio.ensure_future(client.work_async())
        try:
            started = await stream.until(lambda e: e.get("line") == f"job {jid} started")
            assert started[-1]["attempt"] == 1  # the line arrived while the job still waits for `go`
            assert (await api.ok("GET", f"/jobs/{jid}"))["status"] == "RUNNING"
            go.touch()
            rest = await stream.until(lambda e: "finished" in e)
            assert rest[-1] == {"finished": True, "status": "COMPLETED"}
            assert [e["line"] for e in rest[:-1]] == [f"job {jid} done"]
            summary = await asyncio.wait_for(worker, 60)
        finally:
            worker.cancel()
    assert summary.completed == 1
    final = await api.ok("GET", f"/jobs/{jid}")
    assert final["status"] == "COMPLETED" and "done" in final["log_tail"]
    await srv.close()


async def test_worker_without_live_logs_sends_none(
    api: Api, server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    srv = AsyncServer(server.url)
    p = await srv.get_project(project["name"])
    job = await api.ok(
        "POST",
        f"/projects/{project['name']}/jobs",
        {"name": "quiet", "task": "t", "parameters": {"out": str(tmp_path)}},
    )
    fmt = CLIFormatter(executable=PYTHON, script=RECORD)
    summary = await asyncio.wait_for(Client("t", "q", p, fmt, live_logs=False).work_async(), 60)
    assert summary.completed == 1
    assert await all_lines(api, job["id"]) == []
    await srv.close()


async def test_cli_logs(api: Api, server: ServerProcess, project: dict) -> None:
    job = await running_job(api, project)
    jid = str(job["id"])
    r = await asyncio.to_thread(cli, server, "jobs", "logs", jid)
    assert r.returncode == 0 and r.stdout == "" and "no output yet" in r.stderr, r.stderr
    await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 1, "lines": ["hello", "world"]})
    r = await asyncio.to_thread(cli, server, "jobs", "logs", jid)
    assert r.returncode == 0 and r.stdout == "hello\nworld\n", r.stderr
    r = await asyncio.to_thread(cli, server, "jobs", "logs", jid, "--tail", "1")
    assert r.stdout == "world\n"
    r = await asyncio.to_thread(cli, server, "jobs", "logs", jid, "--json")
    assert [x["line"] for x in json.loads(r.stdout)["lines"]] == ["hello", "world"]
    # -f prints what is there, then what comes, and exits once the job is finished.
    env = {**os.environ, "WHATSNEXT_SERVER": server.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "whatsnext", "jobs", "logs", jid, "-f",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), READ_TIMEOUT) == b"hello\n"
        assert await asyncio.wait_for(proc.stdout.readline(), READ_TIMEOUT) == b"world\n"
        await api.ok("POST", f"/jobs/{jid}/logs", {"attempt": 1, "lines": ["live"]})
        assert await asyncio.wait_for(proc.stdout.readline(), READ_TIMEOUT) == b"live\n"
        await api.ok("POST", f"/jobs/{jid}/complete", {"attempt": 1})
        out, err = await asyncio.wait_for(proc.communicate(), READ_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0 and out == b"" and f"job {jid} COMPLETED" in err.decode()
    r = await asyncio.to_thread(cli, server, "jobs", "logs", "987654321")
    assert r.returncode == 4 and "not found" in r.stderr
    r = await asyncio.to_thread(cli, server, "jobs", "logs", "987654321", "-f")
    assert r.returncode == 4 and "not found" in r.stderr
