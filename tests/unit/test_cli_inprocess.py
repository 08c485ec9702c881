"""The CLI package's shape: help without an HTTP library, command modules built on the toolkit
alone, and `jobs add` sending the request it always sent (now built by the SDK's Job)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import cli

import whatsnext.cli.toolkit

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "whatsnext" / "cli"
HEAVY = ("aiohttp", "requests", "httpx", "pydantic", "orjson")


def test_help_imports_no_http_library() -> None:
    code = (
        "import contextlib, io, sys\n"
        "from whatsnext.cli import build_parser, main\n"
        "build_parser()\n"
        "for argv in (['--help'], ['jobs', '--help'], ['jobs', 'add', '--help'], ['worker', '--help'], []):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "sdk = sorted(m for m in sys.modules if m.startswith('whatsnext.api'))\n"
        "print(','.join(heavy + sdk))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
    assert "aiohttp" not in out.stdout


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of each import at the top of a module (not those inside functions)."""
    found: list[tuple[int, str]] = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and not node.module:
                found += [(1, alias.name) for alias in node.names]
            else:
                found.append((node.level, node.module or ""))
        elif isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
    return found


def test_command_modules_stand_on_the_toolkit_alone() -> None:
    modules = sorted(p for p in CLI.glob("*.py") if p.name != "__init__.py")
    assert {p.stem for p in modules} >= {"toolkit", "jobs", "groups", "logs", "tokens", "server", "worker"}
    for path in modules:
        lines = len(path.read_text().splitlines())
        assert lines <= 600, f"{path.name} has {lines} lines"
        for level, name in _imports(path):
            if level == 1:  # a sibling: only the toolkit
                assert name == "toolkit", f"{path.name} imports .{name}"
            elif level == 2:  # the package's own definitions; the SDK only inside the commands
                assert name in ("models", "limits", "durations"), f"{path.name} imports ..{name} at the top"
            else:
                assert name.split(".")[0] not in (*HEAVY, "whatsnext"), f"{path.name} imports {name}"
    assert len((CLI / "__init__.py").read_text().splitlines()) <= 600


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """What the commands would send to the server (through the toolkit, or the SDK's submissions);
    each request is answered as a job."""
    from whatsnext.api.client.http import Http

    requests: list[tuple[str, str, Any]] = []

    def call(args: Any, method: str, path: str, json_body: Any = None, **params: Any) -> Any:
        requests.append((method, path, json_body))
        body = json_body or {}
        return {"id": 7, "name": body.get("name"), "task": body.get("task"), "status": "PENDING"}

    async def request(self: Http, method: str, path: str, json: Any = None, **options: Any) -> Any:
        return call(None, method, path, json)

    monkeypatch.setattr(whatsnext.cli.toolkit, "call", call)
    monkeypatch.setattr(Http, "request", request)
    return requests


def without_retry_key(body: dict[str, Any]) -> dict[str, Any]:
    """A submitted job without the key the SDK gives a submission it may send again."""
    key = body.pop("unique_key")
    assert key.startswith("retry:") and key.endswith(":0"), key
    return body


def test_jobs_add_sends_what_it_always_sent(sent: list[tuple[str, str, Any]]) -> None:
    r = cli(None, "jobs", "add", "train", "--project", "demo")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "queued job 7 (train, task train): PENDING\n"
    sent[:] = [(method, path, without_retry_key(body)) for method, path, body in sent]
    assert sent == [
        ("POST", "/projects/demo/jobs", {"name": "train", "task": "train", "parameters": {}, "priority": 0})
    ]
    sent.clear()
    r = cli(
        None, "jobs", "add", "train", "--project", "my demo", "--name", "t1", "--param", "lr=0.1",
        "--param", "tag=x", "--priority", "5", "--depends", "12", "--depends", "13:finished", "--cpus", "4",
        "--num-gpus", "2", "--group", "g", "--max-attempts", "3", "--max-lost", "1", "--retry-delay", "2.5",
        "--timeout", "60", "--input", "a.csv", "--output", "out/{lr}.pt", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == 7
    sent[:] = [(method, path, without_retry_key(body)) for method, path, body in sent]
    assert sent == [
        (
            "POST",
            "/projects/my%20demo/jobs",
            {
                "name": "t1",
                "task": "train",
                "parameters": {"lr": 0.1, "tag": "x"},
                "priority": 5,
                "depends": [12, {"id": 13, "on": "finished"}],
                "required_accelerators": 2,
                "group": "g",
                "required_cpu": 4,
                "max_attempts": 3,
                "max_lost": 1,
                "retry_delay": 2.5,
                "timeout": 60.0,
                "inputs": ["a.csv"],
                "outputs": ["out/{lr}.pt"],
            },
        )
    ]
    sent.clear()
    r = cli(None, "jobs", "add", "eval", "--project", "demo", "--gpus", "1")
    assert r.returncode == 0 and "--num-gpus" in r.stderr
    assert without_retry_key(sent[0][2]) == {
        "name": "eval",
        "task": "eval",
        "parameters": {},
        "priority": 0,
        "required_accelerators": 1,
    }


def test_a_bad_parameter_is_a_usage_error_before_any_request(sent: list[tuple[str, str, Any]]) -> None:
    r = cli(None, "jobs", "add", "x", "--param", "novalue")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
    assert sent == []


def test_a_group_without_its_command_shows_the_group_help() -> None:
    r = cli(None, "jobs")
    assert r.returncode == 2
    assert "usage: whatsnext jobs" in r.stdout and "add" in r.stdout and "logs" in r.stdout
