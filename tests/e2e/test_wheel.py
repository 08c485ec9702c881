"""The wheel built from the repository installs into a fresh venv and `whatsnext server` starts."""

from __future__ import annotations

import asyncio
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import aiohttp
from conftest import ROOT, create_database, drop_database, free_port, wait_http


async def test_wheel_installs_and_serves(tmp_path: Path, pg_root_url: str) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
        ],
        check=True,
        cwd=tmp_path,
    )
    [wheel] = dist.glob("whatsnext-*.whl")

    env_dir = tmp_path / "venv"
    await asyncio.to_thread(venv.create, env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        check=True,
    )
    # Dependencies come from the test environment (no network); the package itself only from the wheel:
    # a plain path entry does not process the editable install's .pth, so the repository is not importable.
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    where = subprocess.run(
        [str(py), "-c", "import whatsnext, pathlib; print(pathlib.Path(whatsnext.__file__).parent)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where
    assert (Path(where) / "sql" / "migrations" / "0001_schema.sql").is_file()
    assert (Path(where) / "sql" / "queries" / "jobs.sql").is_file()
    assert (Path(where) / "sql" / "functions" / "wn_end_attempts.sql").is_file()
    assert (Path(where) / "sql" / "migrations" / "RELEASED.sha256").is_file()

    url = await create_database(pg_root_url, "wn_wheel")
    port = free_port()
    proc = subprocess.Popen(
        [str(env_dir / "bin" / "whatsnext"), "server", "--port", str(port)],
        env={**os.environ, "WHATSNEXT_DATABASE_URL": url},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", 60)
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{port}/projects", json={"name": "wheel"}) as r:
                assert r.status == 201
    finally:
        proc.terminate()
        out = (await asyncio.to_thread(proc.communicate, timeout=20))[0].decode()
        await drop_database(pg_root_url, url)
    assert proc.returncode == 0, out
    assert "schema upgraded" in out and "0005_state_machine" in out
