"""Debian's nginx and PgBouncer for the tests that put servers behind a balancer or a pooler.

When a program is missing and we are root on Debian/Ubuntu, ``scripts/local-proxies.sh install``
installs it (once per test run); where that is impossible the tests are skipped with the reason,
and where it should have worked but did not, they fail with the script's output. Each test then
runs its own nginx or PgBouncer process on loopback ports, with a configuration of its own.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = REPO / "scripts" / "local-proxies.sh"
NGINX_CONF = REPO / "docs" / "nginx-whatsnext.conf"
NGINX = "/usr/sbin/nginx"
PGBOUNCER = "/usr/sbin/pgbouncer"
POLL = 0.05


@dataclass(frozen=True)
class ProxyStatus:
    ok: bool
    skip_reason: str | None = None
    error: str | None = None


def _installed() -> bool:
    return all(os.access(p, os.X_OK) for p in (NGINX, PGBOUNCER))


@functools.cache
def ensure_proxies() -> ProxyStatus:
    """Install nginx and pgbouncer if needed and possible (cached: one attempt per test run)."""
    if _installed():
        return ProxyStatus(ok=True)
    if os.geteuid() != 0:
        return ProxyStatus(
            ok=False,
            skip_reason="nginx/pgbouncer are missing and installing them needs root: "
            "run `sudo scripts/local-proxies.sh install` and run the tests again",
        )
    if shutil.which("apt-get") is None or not Path("/etc/debian_version").exists():
        return ProxyStatus(
            ok=False,
            skip_reason="nginx/pgbouncer are missing and scripts/local-proxies.sh can only install "
            "them on Debian/Ubuntu (apt-get); install them and run the tests again",
        )
    try:
        proc = subprocess.run(
            ["bash", str(INSTALL_SCRIPT), "install"], capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired as exc:
        return ProxyStatus(ok=False, error=f"{INSTALL_SCRIPT} did not finish in {exc.timeout:.0f} s")
    if proc.returncode != 0 or not _installed():
        output = (proc.stdout + proc.stderr).strip()[-3000:]
        return ProxyStatus(ok=False, error=f"{INSTALL_SCRIPT} exited {proc.returncode}:\n{output}")
    return ProxyStatus(ok=True)


def require_proxies() -> None:
    """Skip (cannot install here) or fail (install failed) unless nginx and pgbouncer are available."""
    status = ensure_proxies()
    if status.skip_reason:
        print(f"skipped: {status.skip_reason}")
        pytest.skip(status.skip_reason)
    if status.error:
        pytest.fail(status.error)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    """Wait until a loopback port accepts connections, or fail with the program's log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"exited with {proc.returncode} during startup:\n{log.read_text(errors='replace')}"
            )
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            pass
        if loop.time() > deadline:
            raise TimeoutError(f"port {port} did not open in {timeout}s:\n{log.read_text(errors='replace')}")
        await asyncio.sleep(POLL)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# ---------------------------------------------------------------- PgBouncer


def postgres_address(url: str) -> tuple[str, int, str]:
    """(host or socket directory, port, user) of a PostgreSQL URL, as PgBouncer's [databases] wants."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or (query.get("host") or ["/var/run/postgresql"])[0]
    port = parts.port or int((query.get("port") or ["0"])[0])
    if not port and host.startswith("/"):
        sockets = sorted(Path(host).glob(".s.PGSQL.*"))
        sockets = [s for s in sockets if not s.name.endswith(".lock")]
        port = int(sockets[0].name.rsplit(".", 1)[1]) if sockets else 5432
    return host, port or 5432, parts.username or "postgres"


class PgBouncer:
    """A PgBouncer process in front of one PostgreSQL server, on a loopback port."""

    def __init__(self, postgres_url: str, pool_mode: str = "transaction", pool_size: int = 2) -> None:
        self.host, self.pg_port, self.user = postgres_address(postgres_url)
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wn-pgbouncer-"))
        self.dir.chmod(0o755)  # read by the unprivileged user PgBouncer runs as under root
        self.log_path = self.dir / "pgbouncer.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        """The URL of ``database`` through the pooler."""
        return urlunsplit(("postgresql", f"{self.user}@127.0.0.1:{self.port}", "/" + database, "", ""))

    async def start(self) -> PgBouncer:
        users = self.dir / "users.txt"
        users.write_text(f'"{self.user}" ""\n')
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={self.host} port={self.pg_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        for path in (users, ini):
            path.chmod(0o644)
        cmd = [PGBOUNCER]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root: run it as the owner of PostgreSQL's socket directory
            # (only that user may connect there), or as nobody for a server reached over TCP.
            owner = pwd.getpwuid(Path(self.host).stat().st_uid).pw_name if self.host.startswith("/") else ""
            cmd += ["-u", owner if owner and owner != "root" else "nobody"]
        self.proc = subprocess.Popen(
            [*cmd, str(ini)], stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT
        )
        await wait_for_port(self.port, self.proc, self.log_path)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- nginx


def nginx_site(backends: list[int], listen: int) -> str:
    """docs/nginx-whatsnext.conf as documented, with the test's ports."""
    text = NGINX_CONF.read_text()
    ports = iter(backends)
    text, n = re.subn(r"(?m)^(    server 127\.0\.0\.1:)\d+", lambda m: f"{m.group(1)}{next(ports)}", text)
    assert n == len(backends), f"docs/nginx-whatsnext.conf has {n} upstream servers, the test {len(backends)}"
    text, n = re.subn(r"listen 127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{listen};", text)
    assert n == 1, "docs/nginx-whatsnext.conf: no `listen 127.0.0.1:PORT;` line"
    return text


class Nginx:
    """nginx running docs/nginx-whatsnext.conf (ports replaced) in the foreground, on a loopback port."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="wn-nginx-"))
        self.log_path = self.dir / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> Nginx:
        (self.dir / "site.conf").write_text(nginx_site(self.backends, self.port))
        d = self.dir
        (d / "nginx.conf").write_text(
            f"pid {d}/nginx.pid;\n"
            f"error_log {d}/error.log warn;\n"
            "worker_processes 1;\n"
            + ("user root;\n" if os.geteuid() == 0 else "")
            + "events { worker_connections 1024; }\n"
            "http {\n"
            f"    access_log {d}/access.log;\n"
            f"    client_body_temp_path {d}/body;\n"
            f"    proxy_temp_path {d}/proxy;\n"
            f"    fastcgi_temp_path {d}/fastcgi;\n"
            f"    uwsgi_temp_path {d}/uwsgi;\n"
            f"    scgi_temp_path {d}/scgi;\n"
            f"    include {d}/site.conf;\n"
            "}\n"
        )
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
            stdout=(d / "stdout.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        await wait_for_port(self.port, self.proc, d / "stdout.log")
        return self

    def access_log(self) -> str:
        path = self.dir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
