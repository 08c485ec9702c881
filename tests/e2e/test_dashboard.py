"""The web dashboard: pages rendered by a real server over real jobs and workers, read without
JavaScript (plain HTTP) and driven in a real browser (Debian's chromium, headless, through
Playwright), plus its pure parts (why a job waits, the graph layout). Sessions live in the database."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import html
import os
import re
import shutil
import statistics
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from conftest import ROOT, Api, ServerProcess, create_database, drop_database, wait_until

from whatsnext.api.client import AsyncServer, Client, Job, PythonFormatter
from whatsnext.api.server.dashboard import dag
from whatsnext.api.server.dashboard.why import explain

CHROMIUM = "/usr/bin/chromium"
APT_LOCK = "/tmp/whatsnext-apt.lock"
"""Held while a test installs packages (also by scripts/local-proxies.sh and local-slurm.sh)."""
PLAYWRIGHT = "playwright==1.65.2"
"""The Playwright release checked against Debian's chromium (it drives the system browser; it
cannot download its own here)."""
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS_IMG = ROOT / "docs" / "img"
SHOTS_ENV = "WHATSNEXT_DOCS_SCREENSHOTS"
"""Set it to copy the screenshots the browser tests take into docs/img/."""
ADMIN = "dashboard-admin-" + uuid.uuid4().hex


# ---------------------------------------------------------------- pure parts


def _job(**kw: Any) -> dict[str, Any]:
    base = {
        "status": "PENDING",
        "unmet_deps": 0,
        "required_cpu": 1,
        "required_accelerators": 0,
        "required_tags": [],
        "available_at": None,
        "eligible_at": None,
    }
    return base | kw


def _worker(name: str, cpu: int, gpu: int, used_cpu: int = 0, used_gpu: int = 0, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "cpu": cpu,
        "accelerators": gpu,
        "used_cpu": used_cpu,
        "used_accelerators": used_gpu,
        "tags": kw.get("tags", []),
        "online": kw.get("online", True),
    }


def test_why_names_unmet_dependencies_and_the_closest_worker() -> None:
    now = datetime.now(UTC)
    upstream = [
        {"id": 1, "name": "prep", "status": "RUNNING"},
        {"id": 2, "name": "done", "status": "COMPLETED"},
    ]
    why = explain(_job(unmet_deps=1), upstream, [_worker("w", 4, 0)], 0, now, 300)
    assert why is not None and [u["id"] for u in why.unmet] == [1]
    assert "1 unmet dependency: #1 prep (RUNNING)" in why.reasons[0]

    big = _job(required_cpu=2, required_accelerators=4)
    why = explain(big, [], [_worker("small", 8, 2), _worker("busy", 8, 4, used_gpu=3)], 0, now, 300)
    assert why is not None and why.closest is not None
    assert why.closest.name == "busy" and "3 more free GPUs" in why.reasons[0]
    assert "can ever" not in why.reasons[0]
    assert "no online worker has enough free capacity now" in why.reasons[0]

    why = explain(big, [], [_worker("small", 8, 2), _worker("tiny", 2, 1)], 0, now, 300)
    assert why is not None and "can ever run it" in why.reasons[0]
    assert "the largest: small, 8 CPUs and 2 GPUs in all" in why.reasons[0]

    tagged = _job(required_tags=["a100"])
    why = explain(tagged, [], [_worker("plain", 8, 8)], 0, now, 300)
    assert why is not None and why.closest is not None and why.closest.missing_tags == ["a100"]

    why = explain(_job(), [], [_worker("gone", 8, 8, online=False)], 0, now, 300)
    assert why is not None and "no worker of this project is online" in why.reasons[0]

    later = now + timedelta(minutes=5)
    why = explain(_job(available_at=later, attempt=1), [], [_worker("w", 1, 0)], 0, now, 300)
    assert why is not None and why.retry_at == later and "retry delay" in why.reasons[0]
    # A job that never ran waits for its delayed start.
    why = explain(_job(available_at=later, attempt=0), [], [_worker("w", 1, 0)], 0, now, 300)
    assert why is not None and why.retry_at == later and "delayed start: not before" in why.reasons[0]

    starving = _job(eligible_at=now - timedelta(seconds=600), required_accelerators=1)
    why = explain(starving, [], [_worker("w", 4, 1, used_gpu=1)], 0, now, 300)
    assert why is not None and any("starvation guard" in r for r in why.reasons)

    why = explain(_job(), [], [_worker("w", 4, 0)], 3, now, 300)
    assert why is not None and "after 3 eligible jobs ahead" in why.reasons[0]
    assert explain(_job(status="RUNNING"), [], [], 0, now, 300) is None


def test_graph_levels_and_svg() -> None:
    nodes = [
        {"id": i, "name": f"n{i}", "status": s}
        for i, s in [(1, "COMPLETED"), (2, "RUNNING"), (3, "PENDING"), (4, "PENDING")]
    ]
    edges = [(1, 2), (2, 3), (1, 3), (1, 4)]
    assert dag.levels([1, 2, 3, 4], edges) == {1: 0, 2: 1, 3: 2, 4: 1}
    assert dag.levels([1, 2], [(1, 2), (2, 1)]).keys() == {1, 2}  # a cycle is cut, not followed forever
    svg = dag.svg(nodes, edges)
    assert svg.startswith("<svg") and svg.count("<path") == 4 and 'href="/ui/jobs/3"' in svg
    assert dag.COLOURS["RUNNING"] in svg


# ---------------------------------------------------------------- over HTTP, without JavaScript


async def _seed(url: str, name: str) -> dict[str, Any]:
    """A project with real history: a small DAG and a failing job run by a real worker; then a
    worker that stays online holding a GPU job, a job no worker can fit and one waiting on it."""
    server = AsyncServer(url)
    p = await server.create_project(name, "dashboard test")

    def work(mode: str, label: str, api_token: str = "") -> str:
        if mode == "fail":
            raise RuntimeError(f"{label} broke")
        return label.upper()

    prep = await p.append_queue(Job("prep", "prep", {"mode": "ok", "label": "prep", "api_token": "hunter2"}))
    train = await p.append_queue(
        Job("train", "train", {"mode": "ok", "label": "train"}, depends={prep.id: "prep"})
    )
    await p.append_queue(Job("bad", "train", {"mode": "fail", "label": "bad"}, max_attempts=1))
    summary = await Client("t", "dash-worker", p, PythonFormatter(work), available_cpu=2).work_async()
    assert (summary.completed, summary.failed) == (2, 1)

    gate = asyncio.Event()

    async def hold(label: str) -> str:
        await gate.wait()
        return label

    long = await p.append_queue(Job("long", "finetune", {"label": "long"}, required_accelerators=1))
    holder = Client("t", "gpu-node", p, PythonFormatter(hold), available_cpu=4, available_accelerators=[0, 1])
    holding = asyncio.create_task(holder.work_async(forever=True))
    big = await p.append_queue(Job("huge", "eval", {"label": "huge"}, required_accelerators=8))
    after = await p.append_queue(Job("after-huge", "eval", {"label": "x"}, depends={big.id: "huge"}))
    return {
        "prep": prep.id,
        "train": train.id,
        "long": long.id,
        "huge": big.id,
        "after": after.id,
        "server": server,
        "gate": gate,
        "holder": holder,
        "holding": holding,
    }


@pytest.fixture
async def seeded(server: ServerProcess, api: Api) -> AsyncIterator[dict[str, Any]]:
    name = f"dash-{uuid.uuid4().hex[:8]}"
    world = await _seed(server.url, name)
    world["name"] = name

    async def long_running() -> bool:
        return (await api.ok("GET", f"/jobs/{world['long']}"))["status"] == "RUNNING"

    await wait_until(long_running, timeout=20, what="the GPU job to start")
    yield world
    world["gate"].set()
    world["holder"].stop()
    await asyncio.wait_for(world["holding"], 30)
    await world["server"].close()


async def _html(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str]:
    async with http.get(url, allow_redirects=kw.pop("allow_redirects", True), **kw) as resp:
        return resp.status, html.unescape(await resp.text())


async def test_pages_render_on_the_server(
    server: ServerProcess, http: aiohttp.ClientSession, seeded: dict[str, Any]
) -> None:
    base, name = server.url, seeded["name"]
    status, text = await _html(http, base + "/")
    assert status == 200 and "<h2>Projects</h2>" in text and f'data-project="{name}"' in text
    row = text.split(f'data-project="{name}"')[1].split("</tr>")[0]
    assert '<td class="num">2</td>' in row  # completed in the last hour: prep and train
    status, text = await _html(http, f"{base}/ui/projects/{name}")
    assert status == 200
    assert re.search(r'data-status="COMPLETED">\s*<h3>.*?<span class="count">2</span>', text, re.S)
    assert '"api_token":"***"' in text and "hunter2" not in text  # secrets masked
    assert "<strong>6</strong> jobs match" in text
    status, text = await _html(http, f"{base}/ui/projects/{name}?status=FAILED")
    assert (
        "<strong>1</strong> job matches" in text
        and "bad" in text
        and "prep" not in text.split('id="jobs"')[1]
    )
    status, text = await _html(http, f"{base}/ui/projects/{name}?param=label=train")
    assert "<strong>1</strong> job matches" in text
    status, text = await _html(http, f"{base}/ui/projects/{name}?status=bogus")
    assert status == 422

    status, text = await _html(http, f"{base}/ui/jobs/{seeded['huge']}")
    assert status == 200 and "Why is it not running?" in text
    assert (
        "no online worker can ever run it" in text
        and "the largest: gpu-node, 4 CPUs and 2 GPUs in all" in text
    )
    status, text = await _html(http, f"{base}/ui/jobs/{seeded['long']}")
    assert re.search(r"<td>gpu-node</td><td>0</td>", text)  # the GPU id of the attempt
    status, text = await _html(http, f"{base}/ui/jobs/{seeded['after']}")
    assert f"#{seeded['huge']} huge" in text and "unmet dependency" in text
    status, text = await _html(http, f"{base}/ui/jobs/{seeded['train']}")
    assert status == 200 and 'id="attempts"' in text and "dash-worker" in text and "COMPLETED" in text
    assert f'href="/ui/jobs/{seeded["prep"]}" class="dep upstream"' in text
    status, text = await _html(http, f"{base}/ui/workers")
    assert status == 200 and "dash-worker" in text and 'data-worker="gpu-node"' in text
    assert re.search(r"1 / 2<div", text) and "(GPU 0)" in text
    status, text = await _html(http, f"{base}/ui/projects/{name}/graph")
    assert status == 200 and "<svg" in text and f'data-job="{seeded["train"]}"' in text
    status, text = await _html(http, f"{base}/ui/projects/{name}/groups")
    assert status == 200
    status, _ = await _html(http, f"{base}/ui/jobs/999999999")
    assert status == 404
    async with http.get(base + "/ui/static/htmx.min.js") as resp:
        assert resp.status == 200 and "htmx" in await resp.text()


async def test_forms_need_the_csrf_value_and_the_api_still_needs_json(
    server: ServerProcess, http: aiohttp.ClientSession, seeded: dict[str, Any]
) -> None:
    url = f"{server.url}/ui/projects/{seeded['name']}/actions"
    async with http.post(url, data={"do": "cancel:filter"}) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["details"]["field"] == "csrf"
    async with http.post(
        url, data={"do": "cancel:filter", "csrf": "x" * 30}, headers={"Cookie": "wn_csrf=" + "y" * 30}
    ) as resp:
        assert resp.status == 403
    # A cookie equal to the field (the double submit of old) is no proof: the value is an HMAC of
    # the browser's cookie under the servers' key.
    for cookie in ("wn_csrf", "wn_pre"):
        async with http.post(
            url, data={"do": "cancel:filter", "csrf": "x" * 30}, headers={"Cookie": f"{cookie}={'x' * 30}"}
        ) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["details"]["field"] == "csrf"
    # A form body anywhere else is still refused.
    async with http.post(f"{server.url}/projects/{seeded['name']}/jobs", data={"name": "x"}) as resp:
        assert resp.status == 415
    # A page elsewhere cannot post at all (Origin check).
    async with http.post(
        url, data={"do": "cancel:filter"}, headers={"Origin": "http://evil.example"}
    ) as resp:
        assert resp.status == 403


async def test_a_session_is_a_random_id_looked_up_in_the_database(
    server_factory: Any, http: aiohttp.ClientSession, database_url: str, tmp_path: Path
) -> None:
    """The cookie holds a random id (not the token, nothing signed): a made-up one, one whose
    record has expired, and one of an earlier release (a signed payload) all lead to the login."""
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN + "\n")
    srv = await server_factory("--auth", "--admin-token-file", str(token_file))
    async with http.get(srv.url + "/ui/login") as resp:
        pre = resp.cookies["wn_pre"].value
        csrf = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
    assert csrf is not None
    async with http.post(
        srv.url + "/ui/login",
        data={"csrf": csrf.group(1), "token": ADMIN, "next": "/ui/workers"},
        headers={"Cookie": f"wn_pre={pre}"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/ui/workers"
        session_id = resp.cookies["wn_session"].value
    assert ADMIN not in session_id and "." not in session_id and len(session_id) >= 40

    async def status(cookie: str) -> int:
        async with http.get(srv.url + "/ui/workers", headers={"Cookie": cookie}, allow_redirects=False) as r:
            return r.status

    assert await status(f"wn_session={session_id}") == 200
    assert await status(f"wn_session={session_id[:-2]}AA") == 303
    old_style = "eyJoIjoiMDAiLCJleHAiOjk5OTk5OTk5OTl9.c2lnbmF0dXJlLW9mLWFuLWVhcmxpZXItcmVsZWFzZQ"
    assert await status(f"wn_session={old_style}") == 303
    conn = await asyncpg.connect(database_url)
    try:
        digest = hashlib.sha256(session_id.encode()).digest()
        assert await conn.fetchval("SELECT admin_hash IS NOT NULL FROM ui_sessions WHERE hash = $1", digest)
        await conn.execute(
            "UPDATE ui_sessions SET expires_at = now() - interval '1 second' WHERE hash = $1", digest
        )
    finally:
        await conn.close()
    assert await status(f"wn_session={session_id}") == 303


async def test_live_stream_reports_changes(
    server: ServerProcess, http: aiohttp.ClientSession, api: Api, project: dict[str, Any]
) -> None:
    p = project["name"]
    async with http.get(f"{server.url}/ui/events?project={project['id']}") as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert await resp.content.readline() == b"event: hello\n"
        await resp.content.readline()
        await resp.content.readline()
        job = await api.ok("POST", f"/projects/{p}/jobs", {"name": "j", "task": "t"})
        event = await asyncio.wait_for(resp.content.readline(), 10)
        assert event == b"event: change\n"
        data = await resp.content.readline()
        assert str(job["id"]).encode() in data


async def test_project_page_with_100000_jobs_renders_under_200_ms(
    pg_root_url: str, server_factory: Any, http: aiohttp.ClientSession
) -> None:
    """Server-side render time (the page's Server-Timing header) of a project board over 100,000
    jobs: counts are aggregated in SQL and the table is one page."""
    url = await create_database(pg_root_url, "wn_dash_big")
    srv: ServerProcess | None = None
    try:
        srv = await server_factory(database=url)
        await Api(srv.url, http).ok("POST", "/projects", {"name": "big"})
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                """
                INSERT INTO tasks (project_id, name) SELECT id, 'train' FROM projects WHERE name = 'big';
                INSERT INTO job_groups (project_id, name) SELECT id, 'sweep' FROM projects WHERE name = 'big';
                INSERT INTO jobs (project_id, task_id, group_id, name, parameters, status, duration, result)
                SELECT p.id, t.id, CASE WHEN i % 2 = 0 THEN g.id END, 'job-' || i,
                       jsonb_build_object('lr', i % 10, 'seed', i),
                       (ARRAY['PENDING','RUNNING','COMPLETED','FAILED','CANCELLED','BLOCKED'])[1 + i % 6],
                       i % 100, jsonb_build_object('loss', i % 7)
                  FROM projects p JOIN tasks t ON t.project_id = p.id JOIN job_groups g ON g.project_id = p.id,
                       generate_series(1, 100000) i
                 WHERE p.name = 'big';
                ANALYZE jobs;
                """
            )
        finally:
            await conn.close()
        timings: dict[str, list[float]] = {}
        for path in (
            "/ui/projects/big",
            "/ui/projects/big?status=FAILED&group=sweep",
            "/ui/projects/big?param=lr=3",
            "/ui/",
        ):
            for _ in range(7):
                async with http.get(srv.url + path) as resp:
                    assert resp.status == 200
                    await resp.read()
                    match = re.search(r"dur=([0-9.]+)", resp.headers["Server-Timing"])
                    assert match is not None
                    timings.setdefault(path, []).append(float(match.group(1)))
        medians = {path: statistics.median(t[2:]) for path, t in timings.items()}
        print("server-side render, median ms over 5 warm requests, 100,000 jobs:", medians)
        for path, ms in medians.items():
            assert ms < 200, f"{path} took {ms:.1f} ms"
    finally:
        if srv is not None:
            await srv.stop()
        await drop_database(pg_root_url, url)


# ---------------------------------------------------------------- in a real browser


def _ensure_chromium() -> str | None:
    """Debian's chromium, installed with apt-get where missing and possible; else why not."""
    if Path(CHROMIUM).exists():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and cannot be installed here (needs root and apt-get)"
    # One installer at a time (the suite's other installers take the same lock; apt-get waits
    # for any other holder of dpkg's lock).
    with open(APT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if Path(CHROMIUM).exists():  # installed meanwhile by a test of another process
            return None
        for args in (["update", "-q"], ["install", "-y", "-q", "chromium"]):
            done = subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=600", *args],
                capture_output=True,
                text=True,
                timeout=900,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
            if done.returncode != 0:
                return f"installing chromium failed: {done.stderr[-500:]}"
    return None if Path(CHROMIUM).exists() else "apt-get installed no chromium"


def _ensure_playwright() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", PLAYWRIGHT],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            return f"installing {PLAYWRIGHT} failed: {done.stderr[-500:]}"
    return None


@contextlib.asynccontextmanager
async def headless_chromium() -> AsyncIterator[Any]:
    """Debian's Chromium driven by Playwright (installed on first use); the test is skipped, saying
    why, where neither can be installed."""
    reason = await asyncio.to_thread(_ensure_chromium) or await asyncio.to_thread(_ensure_playwright)
    if reason:
        print(f"browser tests skipped: {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        await b.close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with headless_chromium() as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-screenshots")


async def _shot(page: Any, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    if os.environ.get(SHOTS_ENV):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / f"dashboard-{name}.png")


async def _page(browser: Any) -> Any:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    return await context.new_page()


async def test_browser_views_and_click_through(
    browser: Any, server: ServerProcess, seeded: dict[str, Any], shots: Path
) -> None:
    page = await _page(browser)
    base, name = server.url, seeded["name"]
    await page.goto(base + "/")
    await page.wait_for_selector(f'tr[data-project="{name}"]')
    await page.wait_for_selector("body[data-live=live]")
    await _shot(page, shots, "overview")

    await page.click(f'tr[data-project="{name}"] a >> text={name}')
    await page.wait_for_selector("#kanban")
    assert await page.locator('.column[data-status="COMPLETED"] .kcard').count() == 2
    await _shot(page, shots, "board")

    # job -> its dependency -> back to the job, by clicking
    await page.click(f'#jobs a[href="/ui/jobs/{seeded["train"]}"] >> nth=0')
    await page.wait_for_selector("#attempts")
    await page.click("a.dep.upstream")
    await page.wait_for_url(f"**/ui/jobs/{seeded['prep']}")
    shown = await page.text_content("#parameters") or ""
    assert '"api_token": "***"' in shown and "hunter2" not in shown
    await page.click("a.dep.downstream")
    await page.wait_for_url(f"**/ui/jobs/{seeded['train']}")
    await _shot(page, shots, "job")

    await page.goto(f"{base}/ui/jobs/{seeded['after']}")
    await page.wait_for_selector("#why")
    await page.click(f"#why a.dep >> text=#{seeded['huge']} huge")
    await page.wait_for_url(f"**/ui/jobs/{seeded['huge']}")
    assert "the largest: gpu-node" in (await page.text_content("#why") or "")
    await _shot(page, shots, "why-pending")

    await page.goto(base + "/ui/workers")
    await page.wait_for_selector("#workers, #offline")
    await _shot(page, shots, "workers")
    await page.goto(f"{base}/ui/projects/{name}/graph")
    await page.wait_for_selector("svg.dag")
    await page.click(f'svg.dag a[data-job="{seeded["prep"]}"]')
    await page.wait_for_url(f"**/ui/jobs/{seeded['prep']}")
    await page.go_back()
    await page.wait_for_selector("svg.dag")
    await _shot(page, shots, "graph")
    await page.context.close()


async def test_browser_watches_a_job_complete_without_reload(
    browser: Any, server: ServerProcess, project: dict[str, Any], shots: Path
) -> None:
    p = await (srv := AsyncServer(server.url)).get_project(project["name"])
    try:
        gate = asyncio.Event()

        async def work(n: int) -> int:
            await gate.wait()
            return n * 2

        job = await p.append_queue(Job("watched", "t", {"n": 21}))
        page = await _page(browser)
        await page.goto(f"{server.url}/ui/jobs/{job.id}")
        await page.wait_for_selector("body[data-live=live]")
        assert await page.text_content("#job-status") == "PENDING"
        await page.evaluate("window.__sameDocument = true")
        worker = asyncio.create_task(Client("t", "live-worker", p, PythonFormatter(work)).work_async())
        await page.wait_for_selector("#job-status:text('RUNNING')", timeout=20_000)
        gate.set()
        await page.wait_for_selector("#job-status:text('COMPLETED')", timeout=20_000)
        assert await page.evaluate("window.__sameDocument") is True  # no reload happened
        assert "42" in (await page.text_content("#result") or "")
        await _shot(page, shots, "job-completed-live")
        summary = await asyncio.wait_for(worker, 30)
        assert summary.completed == 1
        await page.context.close()
    finally:
        await srv.close()


async def test_browser_cancels_everything_matching_the_filter(
    browser: Any, server: ServerProcess, api: Api, project: dict[str, Any], shots: Path
) -> None:
    name = project["name"]
    await api.ok(
        "POST",
        f"/projects/{name}/jobs/batch",
        {
            "group": "sweep-1",
            "jobs": [{"name": f"sweep-{i}", "task": "t", "parameters": {"lr": i}} for i in range(5)],
        },
    )
    await api.ok(
        "POST", f"/projects/{name}/jobs/batch", [{"name": f"keep-{i}", "task": "t"} for i in range(2)]
    )
    page = await _page(browser)
    await page.goto(f"{server.url}/ui/projects/{name}/groups")
    await page.wait_for_selector('tr[data-group="sweep-1"]')
    await _shot(page, shots, "groups")
    await page.goto(f"{server.url}/ui/projects/{name}")
    await page.fill("input[name=name]", "sweep")
    await page.click("#filters button[type=submit]")
    await page.wait_for_selector("#matching:has-text('5 jobs match')")
    await page.click("#cancel-all")
    await page.wait_for_selector("#confirm")
    assert await page.text_content("#confirm-count") == "5"
    assert "pending, blocked, running" in (await page.text_content("#confirm") or "")
    await _shot(page, shots, "confirm")
    await page.click("#confirm-button")
    await page.wait_for_selector(".notice:has-text('cancelled 5 of 5 jobs')")
    jobs = (await api.ok("GET", f"/projects/{name}/jobs"))["jobs"]
    statuses = {j["name"]: j["status"] for j in jobs}
    assert all(statuses[f"sweep-{i}"] == "CANCELLED" for i in range(5))
    assert statuses["keep-0"] == statuses["keep-1"] == "PENDING"
    await page.context.close()


async def test_browser_login_under_auth(
    browser: Any, server_factory: Any, http: aiohttp.ClientSession, tmp_path: Path, shots: Path
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN + "\n")
    srv = await server_factory("--auth", "--admin-token-file", str(token_file))
    admin = {"Authorization": f"Bearer {ADMIN}"}
    pname = f"auth-{uuid.uuid4().hex[:6]}"
    async with http.post(srv.url + "/projects", json={"name": pname}, headers=admin) as resp:
        assert resp.status == 201
    async with http.post(
        srv.url + "/tokens", json={"name": "watcher", "role": "viewer"}, headers=admin
    ) as resp:
        viewer_token = (await resp.json())["token"]
    async with http.get(srv.url + "/ui/", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith("/ui/login")

    page = await _page(browser)
    await page.goto(srv.url + f"/ui/projects/{pname}")
    await page.wait_for_selector("#token")
    await page.fill("#token", "wnt_not-a-real-token")
    await page.click("#sign-in")
    await page.wait_for_selector("[role=alert]")
    await _shot(page, shots, "login")
    await page.fill("#token", viewer_token)
    await page.click("#sign-in")
    await page.wait_for_url(f"**/ui/projects/{pname}")
    await page.wait_for_selector("#kanban")
    assert await page.locator("#cancel-all").count() == 0  # a viewer may not act
    csrf = await page.locator("input[name=csrf]").first.input_value()  # the sign-out form's
    refused = await page.request.post(
        f"{srv.url}/ui/projects/{pname}/actions", form={"csrf": csrf, "do": "cancel:filter"}
    )
    assert refused.status == 403 and (await refused.json())["error"]["details"]["field"] == "role"
    cookie = next(c for c in await page.context.cookies() if c["name"] == "wn_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and viewer_token not in cookie["value"]
    await page.goto(srv.url + "/ui/")
    await page.wait_for_selector(f'tr[data-project="{pname}"]')
    await page.click("text=Sign out")
    await page.wait_for_selector("#token")
    await page.context.close()

    # Operators see the actions; the session (in the database) works on another server too.
    async with http.post(srv.url + "/tokens", json={"name": "op", "role": "operator"}, headers=admin) as resp:
        op_token = (await resp.json())["token"]
    other = await server_factory("--auth", "--admin-token-file", str(token_file))
    page = await _page(browser)
    await page.goto(srv.url + "/ui/login")
    await page.fill("#token", op_token)
    await page.click("#sign-in")
    await page.wait_for_selector(f'tr[data-project="{pname}"]')
    # Cookies are per host, not per port: the browser sends the session to the other server too.
    await page.goto(other.url + f"/ui/projects/{pname}")
    await page.wait_for_selector("#cancel-all")
    await page.context.close()
