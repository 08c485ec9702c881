"""What a web page elsewhere cannot do to a server, checked on real server processes: a page of
another origin (another port, scheme or host of the same machine included) can neither call the
API nor post the dashboard's forms; a CSRF value it plants in a cookie never passes; signing out
and revoking a token end dashboard sessions on every server; every dashboard answer carries the
headers that keep it out of frames and inline scripts; cookies are Secure over HTTPS, including
behind a trusted proxy and only then. One test drives a real browser (Debian's chromium)."""

from __future__ import annotations

import html
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from conftest import ROOT, ServerProcess
from test_dashboard import headless_chromium

from whatsnext.api.server.browser import client_address, is_https, request_origin
from whatsnext.api.server.config import Settings, SettingsError, parse_origin
from whatsnext.api.server.keys import settings_key

ADMIN = "browser-safety-admin-" + uuid.uuid4().hex
LAB = "https://lab.example.org"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser-safety") / "admin-token"
    path.write_text(ADMIN + "\n")
    return path


@pytest.fixture(scope="module")
async def servers(database_url: str, token_file: Path) -> AsyncIterator[dict[str, ServerProcess]]:
    """Without --auth; two with --auth on one database (sharing the admin token); one with --auth
    behind a trusted proxy (the tests' own address, 127.0.0.1, plays the proxy)."""
    auth = ("--auth", "--admin-token-file", str(token_file), "--cors-origin", LAB)
    made = {
        "open": ServerProcess(database_url, "--cors-origin", LAB, "--allowed-host", "wn.example"),
        "auth": ServerProcess(database_url, *auth),
        "auth2": ServerProcess(database_url, *auth),
        "proxied": ServerProcess(
            database_url, *auth, "--trusted-proxy", "127.0.0.1/32", "--allowed-host", "wn.example"
        ),
    }
    started: list[ServerProcess] = []
    try:
        for srv in made.values():
            started.append(await srv.start())
        yield made
    finally:
        for srv in started:
            await srv.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps no cookies: each test says which cookies it sends."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class Browser:
    """A browser's cookies for one server, kept by hand (so that a test can replay or plant one)."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base
        self.cookies: dict[str, str] = {}
        self.set_cookies: dict[str, str] = {}
        """The raw Set-Cookie header of each cookie last set."""

    def _take(self, resp: aiohttp.ClientResponse) -> None:
        for raw in resp.headers.getall("Set-Cookie", []):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(raw)
            for name, morsel in parsed.items():
                self.set_cookies[name] = raw
                if morsel.value and morsel["max-age"] != "0":
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, Any]:
        async with self.http.get(
            self.base + path, headers=self._headers(headers), allow_redirects=False
        ) as r:
            self._take(r)
            return r.status, html.unescape(await r.text()), r.headers

    async def post(
        self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, str, Any]:
        async with self.http.post(
            self.base + path, data=form, headers=self._headers(headers), allow_redirects=False
        ) as r:
            self._take(r)
            return r.status, html.unescape(await r.text()), r.headers

    async def csrf(self, path: str = "/ui/") -> str:
        """The CSRF value the page's forms carry."""
        status, text, _ = await self.get(path)
        assert status == 200, (path, status, text[:300])
        found = re.search(r'name="csrf" value="([^"]+)"', text)
        assert found is not None, text[:500]
        return found.group(1)

    async def sign_in(self, token: str) -> None:
        csrf = await self.csrf("/ui/login")
        status, text, headers = await self.post("/ui/login", {"csrf": csrf, "token": token, "next": "/ui/"})
        assert status == 303 and headers["Location"] == "/ui/", (status, text[:300])
        assert "wn_session" in self.cookies


async def _token(http: aiohttp.ClientSession, srv: ServerProcess, role: str) -> dict[str, Any]:
    async with http.post(
        srv.url + "/tokens",
        json={"name": f"{role}-{uuid.uuid4().hex[:8]}", "role": role},
        headers=bearer(ADMIN),
    ) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def _project_with_jobs(
    http: aiohttp.ClientSession, srv: ServerProcess, token: str | None, n: int
) -> str:
    name = f"bs-{uuid.uuid4().hex[:8]}"
    async with http.post(srv.url + "/projects", json={"name": name}, headers=bearer(token)) as resp:
        assert resp.status == 201, await resp.text()
    batch = [{"name": f"j{i}", "task": "t"} for i in range(n)]
    async with http.post(f"{srv.url}/projects/{name}/jobs/batch", json=batch, headers=bearer(token)) as resp:
        assert resp.status == 201, await resp.text()
    return name


async def _statuses(
    http: aiohttp.ClientSession, srv: ServerProcess, token: str | None, project: str
) -> set[str]:
    async with http.get(f"{srv.url}/projects/{project}/jobs", headers=bearer(token)) as resp:
        assert resp.status == 200
        return {j["status"] for j in (await resp.json())["jobs"]}


# ---------------------------------------------------------------- origins


@pytest.mark.parametrize("which", ["open", "auth"])
async def test_only_the_exact_own_origin_or_a_listed_one_may_call(
    servers: dict[str, ServerProcess], http: aiohttp.ClientSession, which: str
) -> None:
    srv = servers[which]
    token = ADMIN if which == "auth" else None
    port = srv.port
    others = [
        f"http://127.0.0.1:{_free_port()}",  # another port of the same host
        "http://localhost:9",
        "https://127.0.0.1",  # another scheme
        f"https://127.0.0.1:{port}",
        f"http://localhost:{port}",  # another host name (the request was made to 127.0.0.1)
        "http://evil.example",
        "null",
    ]
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    for origin in others:
        async with http.options(srv.url + "/projects", headers={**preflight, "Origin": origin}) as resp:
            assert resp.status == 403, origin
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with http.post(
            srv.url + "/projects",
            json={"name": f"o-{uuid.uuid4().hex[:8]}"},
            headers={"Origin": origin, **bearer(token)},
        ) as resp:
            assert resp.status == 403, origin
            body = await resp.json()
            assert (
                body["error"]["code"] == "forbidden_origin" and body["error"]["details"]["field"] == "Origin"
            )

    own = f"http://127.0.0.1:{port}"
    async with http.post(
        srv.url + "/projects",
        json={"name": f"o-{uuid.uuid4().hex[:8]}"},
        headers={"Origin": own, **bearer(token)},
    ) as resp:
        assert resp.status == 201
    # The default port of the scheme may be left out on either side.
    for host, origin in (("127.0.0.1", "http://127.0.0.1:80"), ("127.0.0.1:80", "http://127.0.0.1")):
        async with http.get(
            srv.url + "/projects", headers={"Host": host, "Origin": origin, **bearer(token)}
        ) as resp:
            assert resp.status == 200, (host, origin)
    # A listed origin gets CORS answers.
    async with http.options(srv.url + "/projects", headers={**preflight, "Origin": LAB}) as resp:
        assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == LAB
    async with http.get(srv.url + "/projects", headers={"Origin": LAB, **bearer(token)}) as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == LAB


async def test_a_named_host_is_its_own_origin_only_at_the_request_s_scheme_and_port(
    servers: dict[str, ServerProcess], http: aiohttp.ClientSession
) -> None:
    srv = servers["open"]  # --allowed-host wn.example
    named = {"Host": f"wn.example:{srv.port}"}
    async with http.get(
        srv.url + "/projects", headers={**named, "Origin": f"http://wn.example:{srv.port}"}
    ) as resp:
        assert resp.status == 200
    for origin in ("http://wn.example:9", "https://wn.example", f"https://wn.example:{srv.port}"):
        async with http.get(srv.url + "/projects", headers={**named, "Origin": origin}) as resp:
            assert resp.status == 403, origin
    # Reached at 127.0.0.1, a page of wn.example (any port) is another origin.
    async with http.get(srv.url + "/projects", headers={"Origin": f"http://wn.example:{srv.port}"}) as resp:
        assert resp.status == 403


def test_a_wildcard_or_a_malformed_cors_origin_is_refused_at_start() -> None:
    env = {**os.environ, "WHATSNEXT_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    for flags, needle in (
        (("--cors-origin", "*"), "--cors-origin '*' is not a web origin"),
        (("--cors-origin", "https://lab.example.org/app"), "scheme://host[:port]"),
        (("--cors-origin", "lab.example.org"), "--cors-origin"),
        (("--trusted-proxy", "nginx"), "--trusted-proxy 'nginx'"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "whatsnext", "server", *flags],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )
        assert run.returncode == 2 and needle in run.stderr, (flags, run.stderr)
    settings = Settings(
        cors_origins=["https://lab.example.org:8443", "http://[::1]:8000"], trusted_proxies=["10.0.0.0/8"]
    )
    settings.check()
    with pytest.raises(SettingsError):
        Settings(cors_origins=["https://*.example.org"]).check()
    assert parse_origin("HTTPS://Lab.Example.org") == ("https", "lab.example.org", 443)
    assert parse_origin("http://[::1]:8000") == ("http", "::1", 8000)
    assert parse_origin("http://h:99999") is None and parse_origin("ftp://h") is None


# ---------------------------------------------------------------- proxies


def _request(headers: dict[str, str], peer: str, proxies: list[str], secure: bool = False) -> web.Request:
    app = web.Application()
    app[settings_key] = Settings(trusted_proxies=proxies)

    class Transport:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"peername": (peer, 50000)}.get(name, default)

    return make_mocked_request(
        "GET",
        "/ui/",
        headers=headers,
        app=app,
        transport=Transport(),
        sslcontext=object() if secure else None,
    )


def test_forwarding_headers_are_believed_from_trusted_proxies_only() -> None:
    forwarded = {
        "Host": "10.0.0.5:8000",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "wn.example",
        "X-Forwarded-For": "6.6.6.6, 203.0.113.7, 10.0.0.2",
    }
    trusted = ["10.0.0.0/24"]
    req = _request(forwarded, "10.0.0.1", trusted)
    assert is_https(req) and request_origin(req) == ("https", "wn.example", 443)
    # The last address that is not a trusted proxy: the one the client could not forge.
    assert client_address(req) == "203.0.113.7"
    # The same headers from any other peer are ignored.
    req = _request(forwarded, "192.0.2.9", trusted)
    assert not is_https(req) and request_origin(req) == ("http", "10.0.0.5", 8000)
    assert client_address(req) == "192.0.2.9"
    req = _request(forwarded, "10.0.0.1", [])
    assert client_address(req) == "10.0.0.1" and not is_https(req)
    # Through trusted proxies only: the leftmost address; garbage stops the walk.
    req = _request({"Host": "h", "X-Forwarded-For": "10.0.0.9, 10.0.0.3"}, "10.0.0.1", trusted)
    assert client_address(req) == "10.0.0.9"
    req = _request({"Host": "h", "X-Forwarded-For": "1.2.3.4, junk"}, "10.0.0.1", trusted)
    assert client_address(req) == "10.0.0.1"
    req = _request({"Host": "h"}, "10.0.0.1", trusted, secure=True)
    assert is_https(req) and request_origin(req) == ("https", "h", 443)


async def test_cookies_are_secure_over_https_from_a_trusted_proxy_only(
    servers: dict[str, ServerProcess], http: aiohttp.ClientSession
) -> None:
    proxied, direct = servers["proxied"], servers["auth"]
    https = {"X-Forwarded-Proto": "https"}

    behind = Browser(http, proxied.url)
    await behind.get("/ui/login", headers=https)
    assert "Secure" in behind.set_cookies["wn_pre"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', (await behind.get("/ui/login", headers=https))[1])
    assert csrf is not None
    status, _, _ = await behind.post(
        "/ui/login", {"csrf": csrf.group(1), "token": ADMIN, "next": "/ui/"}, headers=https
    )
    assert status == 303 and "Secure" in behind.set_cookies["wn_session"]

    plain = Browser(http, proxied.url)
    await plain.get("/ui/login")
    assert "Secure" not in plain.set_cookies["wn_pre"]

    untrusted = Browser(http, direct.url)  # the same header from a peer that is not a trusted proxy
    await untrusted.get("/ui/login", headers=https)
    assert "Secure" not in untrusted.set_cookies["wn_pre"]
    await untrusted.sign_in(ADMIN)
    assert "Secure" not in untrusted.set_cookies["wn_session"]

    # Behind the proxy, the page's origin is the one the proxy was reached at.
    forwarded = {**https, "X-Forwarded-Host": "wn.example", **bearer(ADMIN)}
    async with http.get(
        proxied.url + "/projects", headers={**forwarded, "Origin": "https://wn.example"}
    ) as resp:
        assert resp.status == 200
    async with http.get(proxied.url + "/projects", headers={**forwarded, "Origin": proxied.url}) as resp:
        assert resp.status == 403
    async with http.get(
        direct.url + "/projects", headers={**forwarded, "Origin": "https://wn.example"}
    ) as resp:
        assert resp.status == 403  # not believed from an untrusted peer


# ---------------------------------------------------------------- sessions and CSRF


async def test_signing_out_ends_the_session_on_every_server(
    servers: dict[str, ServerProcess], http: aiohttp.ClientSession
) -> None:
    one, two = servers["auth"], servers["auth2"]
    operator = await _token(http, one, "operator")
    browser = Browser(http, one.url)
    await browser.sign_in(operator["token"])
    assert operator["token"] not in browser.cookies["wn_session"]
    status, text, _ = await browser.get("/ui/")
    assert status == 200 and operator["name"] in text
    stolen = dict(browser.cookies)
    elsewhere = Browser(http, two.url)
    elsewhere.cookies = dict(stolen)
    assert (await elsewhere.get("/ui/"))[0] == 200  # the session is in the database: any server knows it

    csrf = await browser.csrf()
    status, _, headers = await browser.post("/ui/logout", {"csrf": csrf})
    assert status == 303 and headers["Location"] == "/ui/login"
    assert "wn_session" not in browser.cookies

    for base in (one.url, two.url):  # replaying the old cookie after signing out
        replay = Browser(http, base)
        replay.cookies = dict(stolen)
        status, _, headers = await replay.get("/ui/workers")
        assert status == 303 and headers["Location"].startswith("/ui/login"), base

    # The bootstrap admin token's sessions work the same way.
    admin = Browser(http, two.url)
    await admin.sign_in(ADMIN)
    assert (await admin.get("/ui/"))[0] == 200


async def test_signing_out_from_another_page_is_refused(
    servers: dict[str, ServerProcess], http: aiohttp.ClientSession
) -> None:
    srv = servers["auth"]
    viewer = await _token(http, srv, "viewer")
    browser = Browser(http, srv.url)
    await browser.sign_in(viewer["token"])
    status, _, _ = await browser.post("/ui/logout", {"csrf": "made-up-" + "x" * 30})
    assert status == 403
    assert (await browser.get("/ui/"))[0] == 200  # still signed in


async def test_revoking_a_token_ends_its_dashboard_sessions(
    servers: dict[str, ServerProcess], http: aiohttp.ClientSession
) -> None:
    one, two = servers["auth"], servers["auth2"]
    viewer = await _token(http, one, "viewer")
    browsers = [Browser(http, one.url), Browser(http, two.url)]
    for b in browsers:
        await b.sign_in(viewer["token"])
        assert (await b.get("/ui/"))[0] == 200
    async with http.delete(f"{one.url}/tokens/{viewer['id']}", headers=bearer(ADMIN)) as resp:
        assert resp.status == 200
    for b in browsers:
        status, _, headers = await b.get("/ui/")
        assert status == 303 and headers["Location"].startswith("/ui/login")
        async with http.get(
            b.base + "/ui/events", headers={"Cookie": f"wn_session={b.cookies['wn_session']}"}
        ) as r:
            assert r.status == 401


@pytest.mark.parametrize("which", ["open", "auth"])
async def test_a_planted_csrf_cookie_never_passes(
    servers: dict[str, ServerProcess], http: aiohttp.ClientSession, which: str
) -> None:
    """A page on another port can set cookies for the host (cookies do not separate ports) and
    post a form with a value of its choosing: the value is not the session's HMAC, so 403."""
    srv = servers[which]
    token = ADMIN if which == "auth" else None
    project = await _project_with_jobs(http, srv, token, 3)
    victim = Browser(http, srv.url)
    if which == "auth":
        operator = await _token(http, srv, "operator")
        await victim.sign_in(operator["token"])
    real = await victim.csrf(f"/ui/projects/{project}")
    planted = "planted-" + uuid.uuid4().hex
    attack = {"do": "cancel:filter", "confirm": "yes", "csrf": planted}
    forged = Browser(http, srv.url)
    forged.cookies = {**victim.cookies, "wn_csrf": planted, "wn_pre": planted}
    status, text, _ = await forged.post(f"/ui/projects/{project}/actions", attack)
    assert status == 403 and json.loads(text)["error"]["details"]["field"] == "csrf", text
    # The old double submit (cookie equal to the field) is no more: with no session cookie either.
    bare = Browser(http, srv.url)
    bare.cookies = {"wn_csrf": planted, "wn_pre": planted}
    status, _, _ = await bare.post(f"/ui/projects/{project}/actions", attack)
    assert status in (303, 403)
    if which == "open":
        assert status == 403
    # The session's own value from another session is refused too.
    if which == "auth":
        other = Browser(http, srv.url)
        await other.sign_in(ADMIN)
        status, _, _ = await other.post(f"/ui/projects/{project}/actions", {**attack, "csrf": real})
        assert status == 403
    assert await _statuses(http, srv, token, project) == {"PENDING"}
    # The page's own value works (no Origin header: a form post without JavaScript, by curl).
    status, _, headers = await victim.post(f"/ui/projects/{project}/actions", {**attack, "csrf": real})
    assert status == 303 and "cancelled+3+of+3" in headers["Location"]
    assert await _statuses(http, srv, token, project) == {"CANCELLED"}


# ---------------------------------------------------------------- headers


async def test_every_dashboard_answer_carries_the_page_headers(
    servers: dict[str, ServerProcess], http: aiohttp.ClientSession
) -> None:
    auth, open_ = servers["auth"], servers["open"]
    project = await _project_with_jobs(http, open_, None, 1)
    answers = [
        (auth, "/ui/login", 200),
        (auth, "/ui/", 303),
        (auth, "/", 302),
        (open_, "/ui/", 200),
        (open_, f"/ui/projects/{project}", 200),
        (open_, f"/ui/projects/{project}/groups", 200),
        (open_, "/ui/workers", 200),
        (open_, "/ui/jobs/999999999", 404),
        (open_, "/ui/static/dashboard.css", 200),
    ]
    for srv, path, expected in answers:
        async with http.get(srv.url + path, allow_redirects=False) as resp:
            assert resp.status == expected, (path, resp.status)
            csp = resp.headers.get("Content-Security-Policy", "")
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert resp.headers.get("X-Frame-Options") == "DENY", path
            assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
            assert resp.headers.get("Referrer-Policy") == "same-origin", path
            if resp.content_type == "text/html":
                text = await resp.text()
                # Nothing the policy would block: no inline style or script, htmx told not to add its style.
                assert " style=" not in text and "<style" not in text, path
                assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
                assert '"includeIndicatorStyles": false' in html.unescape(text), path


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Any]:
    async with headless_chromium() as b:
        yield b


async def test_a_page_on_another_port_cannot_act_for_a_signed_in_browser(
    chromium: Any, servers: dict[str, ServerProcess], http: aiohttp.ClientSession
) -> None:
    """Signed in to the dashboard on port P, the browser opens a page served from another port of
    the same host, which plants a CSRF cookie for the host and auto-submits a cancel form to P."""
    srv = servers["auth"]
    project = await _project_with_jobs(http, srv, ADMIN, 3)
    operator = await _token(http, srv, "operator")
    target = f"{srv.url}/ui/projects/{project}/actions"
    planted = "planted-" + uuid.uuid4().hex
    attack_page = f"""<!doctype html><html><body>
<form id="f" method="post" action="{target}">
<input name="do" value="cancel:filter"><input name="confirm" value="yes"><input name="csrf" value="{planted}">
</form>
<script>
document.cookie = "wn_csrf={planted}; path=/";
document.cookie = "wn_pre={planted}; path=/";
document.getElementById("f").submit();
</script></body></html>"""

    async def evil(_: web.Request) -> web.Response:
        return web.Response(text=attack_page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", evil)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    context = await chromium.new_context()
    try:
        page = await context.new_page()
        await page.goto(srv.url + "/ui/login")
        await page.fill("#token", operator["token"])
        await page.click("#sign-in")
        await page.wait_for_selector("h2")
        cookies = {c["name"]: c for c in await context.cookies()}
        assert "wn_session" in cookies

        async with page.expect_response(target) as answer:
            await page.goto(f"http://127.0.0.1:{port}/")
        response = await answer.value
        assert response.status == 403
        body = await response.json()
        assert body["error"]["code"] == "forbidden_origin", body
        # The planted cookies reached the server's host (the attack was real), yet nothing happened.
        names = {c["name"] for c in await context.cookies(srv.url)}
        assert {"wn_session", "wn_csrf"} <= names
        assert await _statuses(http, srv, ADMIN, project) == {"PENDING"}
    finally:
        await context.close()
        await runner.cleanup()
