"""Limits per client address on real servers: failed authentications (at the API and at the
dashboard's sign-in form) are answered 429 past ``--auth-failures-per-minute`` while valid tokens
go on working; open streams (live updates, log follows) are capped per client and per server; one
poller of the job history feeds every open dashboard page; a short admin token is refused."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ROOT, Api, ServerProcess, wait_until

from whatsnext.api.server.dashboard import live
from whatsnext.api.server.errors import ApiError
from whatsnext.api.server.keys import store_key
from whatsnext.api.server.limits import AuthFailures, StreamSlots
from whatsnext.api.server.roles import Principal

ADMIN = "limits-admin-" + uuid.uuid4().hex
LIMIT = 5
READ_TIMEOUT = 20


async def auth_server(server_factory: Any, tmp_path: Path, *extra: str) -> ServerProcess:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN + "\n")
    srv: ServerProcess = await server_factory(
        "--auth", "--admin-token-file", str(token_file), "--auth-failures-per-minute", str(LIMIT), *extra
    )
    return srv


def retry_after(resp: aiohttp.ClientResponse) -> int:
    seconds = int(resp.headers["Retry-After"])
    assert 1 <= seconds <= 60
    return seconds


# ---------------------------------------------------------------- failed authentications


async def test_bad_tokens_are_limited_and_a_valid_token_is_not(
    server_factory: Any, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    srv = await auth_server(server_factory, tmp_path)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with http.post(
        srv.url + "/tokens", json={"name": "unused", "role": "viewer"}, headers=admin
    ) as resp:
        unused = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    statuses = []
    for i in range(40):
        async with http.get(srv.url + "/projects", headers={"Authorization": f"Bearer wnt_wrong{i}"}) as resp:
            statuses.append(resp.status)
            body = await resp.json()
            if resp.status == 429:
                assert body["error"]["code"] == "too_many_requests"
                assert body["error"]["details"]["retry_after"] == retry_after(resp)
            else:
                assert body["error"]["code"] == "unauthorized" and "Retry-After" not in resp.headers
        if i % 10 == 0:  # a valid token from the same address keeps working meanwhile
            async with http.get(srv.url + "/projects", headers=admin) as resp:
                assert resp.status == 200
    assert statuses == [401] * LIMIT + [429] * (40 - LIMIT)
    # A valid token that never worked from this address is not even looked up while the address
    # is limited: ignoring the 429s makes guessing no faster (a right guess is refused too).
    async with http.get(srv.url + "/projects", headers=unused) as resp:
        assert resp.status == 429 and retry_after(resp)
    # Every route that authenticates says the same while the address is limited, /health included
    # (its answer would otherwise tell a valid token from a bad one); without a token it answers.
    async with http.get(srv.url + "/health", headers={"Authorization": "Bearer wnt_wrong"}) as resp:
        assert resp.status == 429
    async with http.get(srv.url + "/ui/", headers={"Authorization": "Bearer wnt_wrong"}) as resp:
        assert resp.status == 429
    async with http.get(srv.url + "/health") as resp:
        assert resp.status == 200
    async with http.get(srv.url + "/projects") as resp:
        assert resp.status == 401  # no token at all is not a guess
    async with http.get(srv.url + "/health", headers=admin) as resp:
        assert resp.status == 200


async def _login_form(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url + "/ui/login") as resp:
        assert resp.status == 200
        page = await resp.text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


async def test_the_login_form_is_limited_too(server_factory: Any, tmp_path: Path) -> None:
    srv = await auth_server(server_factory, tmp_path)
    async with aiohttp.ClientSession() as session:
        # The admin token works from this address before it is limited; the viewer's never does.
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with session.post(
            srv.url + "/tokens", json={"name": "v", "role": "viewer"}, headers=admin
        ) as resp:
            unused = (await resp.json())["token"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        csrf = await _login_form(session, srv.url)
        statuses = []
        for i in range(3 * LIMIT):
            form = {"csrf": csrf, "token": f"wnt_wrong{i}", "next": "/ui/"}
            async with session.post(srv.url + "/ui/login", data=form, allow_redirects=False) as resp:
                statuses.append(resp.status)
                text = await resp.text()
                if resp.status == 429:
                    retry_after(resp)
                    assert "too many failed authentications" in text
        assert statuses == [401] * LIMIT + [429] * (2 * LIMIT)
        # A valid token that never worked from the limited address is refused like a guess...
        form = {"csrf": csrf, "token": unused, "next": "/ui/"}
        async with session.post(srv.url + "/ui/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 429 and retry_after(resp)
        # ...while one that did still signs in.
        form = {"csrf": csrf, "token": ADMIN, "next": "/ui/"}
        async with session.post(srv.url + "/ui/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
    # The address is limited at the API as well: the count is one per address.
    async with aiohttp.ClientSession() as session:
        async with session.get(srv.url + "/projects", headers={"Authorization": "Bearer x"}) as resp:
            assert resp.status == 429


def test_failures_are_counted_over_a_sliding_minute() -> None:
    now = [0.0]
    failures = AuthFailures(3, max_addresses=2, clock=lambda: now[0])
    for _ in range(3):
        failures.failed("a")
    with pytest.raises(ApiError) as refused:
        failures.failed("a")
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "60"}
    now[0] = 59.5
    with pytest.raises(ApiError) as refused:
        failures.failed("a")
    assert refused.value.headers == {"Retry-After": "1"}
    now[0] = 60.0
    failures.failed("a")  # the oldest failure left the window: one more is allowed
    failures.failed("b")
    failures.failed("c")  # memory is bounded: the address that failed least recently is forgotten
    assert len(failures) == 2


# ---------------------------------------------------------------- streams


@asynccontextmanager
async def opened(
    session: aiohttp.ClientSession, url: str, first_line: bool = True
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A stream held open (its answer begun, its first line read if it has one at once), closed
    when the block ends."""
    resp = await session.get(url, timeout=aiohttp.ClientTimeout(total=None))
    try:
        assert resp.status == 200, await resp.text()
        if first_line:
            assert await asyncio.wait_for(resp.content.readline(), READ_TIMEOUT)
        yield resp
    finally:
        resp.close()


async def test_streams_are_capped_per_client_and_per_server(
    server_factory: Any, http: aiohttp.ClientSession
) -> None:
    srv = await server_factory("--max-streams-per-client", "2", "--max-streams", "3")
    api = Api(srv.url, http)
    pname = f"streams-{uuid.uuid4().hex[:6]}"
    await api.ok("POST", "/projects", {"name": pname})
    job = await api.ok("POST", f"/projects/{pname}/jobs", {"name": "j", "task": "t"})
    follow = f"{srv.url}/jobs/{job['id']}/logs?follow=1&format=text"
    events = f"{srv.url}/ui/events"
    # A second client address on the loopback network (Linux routes all of 127/8 to lo).
    other = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
    async with other, AsyncExitStack() as stack:
        first = await stack.enter_async_context(opened(http, events))
        await stack.enter_async_context(opened(http, follow, first_line=False))  # a log follow counts too
        async with http.get(events) as resp:
            assert resp.status == 429 and retry_after(resp)
            body = await resp.json()
            assert body["error"]["code"] == "too_many_requests"
            assert "--max-streams-per-client" in body["error"]["message"]
        async with http.get(follow) as resp:
            assert resp.status == 429
        async with opened(other, events):
            async with other.get(events) as resp:
                assert resp.status == 429
                assert "--max-streams)" in (await resp.json())["error"]["message"]
            # Requests that do not stream are not counted.
            async with other.get(srv.url + f"/jobs/{job['id']}/logs") as resp:
                assert resp.status == 200
        # The other client's stream closed: the server frees its slot once it notices.
        first.close()

        async def slot_free() -> bool:
            resp = await http.get(events)
            resp.close()
            return resp.status == 200

        await wait_until(slot_free, timeout=10, what="a closed stream frees its slot")


async def test_a_cli_follow_waits_retry_after_and_says_so(
    server_factory: Any, http: aiohttp.ClientSession
) -> None:
    srv = await server_factory("--max-streams-per-client", "1")
    api = Api(srv.url, http)
    pname = f"follow-{uuid.uuid4().hex[:6]}"
    await api.ok("POST", "/projects", {"name": pname})
    job = await api.ok("POST", f"/projects/{pname}/jobs", {"name": "j", "task": "t"})
    env = {**os.environ, "WHATSNEXT_SERVER": srv.url}
    async with opened(http, f"{srv.url}/ui/events") as holder:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "whatsnext", "jobs", "logs", str(job["id"]), "-f",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            said = await asyncio.wait_for(proc.stderr.readline(), READ_TIMEOUT)
            assert b"retrying in 2 s" in said and b"--max-streams-per-client" in said, said
            holder.close()
            await api.ok("POST", f"/jobs/{job['id']}/cancel", {})
            _, err = await asyncio.wait_for(proc.communicate(), READ_TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert f"job {job['id']} CANCELLED" in err.decode()


# ---------------------------------------------------------------- one poller for every page


async def test_every_open_page_hears_of_a_change(server: ServerProcess, http: aiohttp.ClientSession) -> None:
    api = Api(server.url, http)
    pname = f"live-{uuid.uuid4().hex[:6]}"
    project = await api.ok("POST", "/projects", {"name": pname})
    async with AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(opened(http, f"{server.url}/ui/events?project={project['id']}"))
            for _ in range(5)
        ]
        job = await api.ok("POST", f"/projects/{pname}/jobs", {"name": "j", "task": "t"})
        for resp in streams:
            while (
                line := await asyncio.wait_for(resp.content.readline(), READ_TIMEOUT)
            ) != b"event: change\n":
                assert line in (b"data: {}\n", b"\n", b": keep-alive\n"), line
            data = await asyncio.wait_for(resp.content.readline(), READ_TIMEOUT)
            assert data == b'data: {"jobs":[' + str(job["id"]).encode() + b"]}\n"


class _History:
    """A job history that hands out one change, and counts its reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.read = asyncio.Event()
        self.rows = [{"kind": "event", "id": 7, "project_id": 1, "job_id": 42}]

    async def events_head(self) -> tuple[int, int]:
        return 6, 0

    async def events_since(self, *, after: int, after_job: int, limit: int) -> list[dict[str, Any]]:
        self.reads += 1
        self.read.set()
        rows = [r for r in self.rows if r["id"] > after]
        return rows


async def test_one_poller_feeds_every_stream() -> None:
    from aiohttp import web

    app = web.Application()
    history = _History()
    app[store_key] = type("S", (), {"dashboard": history})()  # type: ignore[misc]
    feed = live.LiveFeed(app)
    everyone = Principal(None, "t", "admin", None)
    others = Principal(1, "o", "viewer", frozenset({2}))
    watchers = [live.Watcher(everyone, None, None) for _ in range(4)]
    watchers += [
        live.Watcher(everyone, 1, 42),
        live.Watcher(everyone, 3, None),
        live.Watcher(others, None, None),
    ]
    for w in watchers:
        await feed.join(w)
    await asyncio.wait_for(watchers[0].wake.wait(), 5)
    assert feed.pollers == 1 and history.reads == feed.polls >= 1
    assert [w.take() for w in watchers] == [[42]] * 5 + [[], []]
    for w in watchers:
        feed.leave(w)
    await asyncio.wait_for(feed._task, 5)  # type: ignore[arg-type]  # no stream: the poller ends
    reads = history.reads
    history.read.clear()
    await feed.join(watchers[0])  # a new stream starts a new poller
    await asyncio.wait_for(history.read.wait(), 5)
    assert feed.pollers == 2 and history.reads == reads + 1
    await feed.close()


def test_stream_slots_are_given_back() -> None:
    slots = StreamSlots(per_client=2, total=3)
    with slots.slot("a"), slots.slot("a"):
        with pytest.raises(ApiError) as refused, slots.slot("a"):
            pass
        assert refused.value.status == 429
        with slots.slot("b"):
            with pytest.raises(ApiError), slots.slot("c"):
                pass
    assert slots.open == 0 and slots.by_client == {}


# ---------------------------------------------------------------- the admin token


async def test_a_short_admin_token_is_refused_at_start(tmp_path: Path, database_url: str) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text("x" * 31 + "\n")
    env = {**os.environ, "WHATSNEXT_DATABASE_URL": database_url}
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "whatsnext", "server", "--auth", "--admin-token-file", str(token_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 2 and "at least 32 characters" in r.stderr, r.stderr
