"""The reference documents' examples, as written, against a server on localhost:8000."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import ServerProcess, create_database, drop_database
from helpers import Result
from helpers import cli as in_process

SUBMIT_AND_RUN = """
from whatsnext.api.client import Server, Job
# Connect
server = Server("localhost", 8000)
project = server.get_project("my-project")
# Queue a job
job = Job(
name="process-data",
task="data-pipeline",
parameters={"input": "file.csv", "format": "json"}
)
project.append_queue(job)

from whatsnext.api.client import Client, CLIFormatter
# Create worker
formatter = CLIFormatter(executable="python", script="process.py")
client = Client(
entity="team",
name="worker-1",
project=project,
formatter=formatter
)
# Process jobs
client.work()

# Job B depends on Job A
job_a = Job(name="job-a", task="step1", parameters={})
project.append_queue(job_a)
job_b = Job(
name="job-b",
task="step2",
parameters={},
depends={job_a.id: "job-a"} # Wait for job_a
)
project.append_queue(job_b)

import requests
# Create a task with resource requirements
requests.post("http://localhost:8000/tasks/", json={
"name": "gpu-training",
"project_id": 1,
"required_cpu": 8,
"required_accelerators": 4
})
# Worker specifies available resources
client = Client(
entity="team", name="worker-2", project=project, formatter=formatter,
available_cpu=16,
available_accelerators=4
)
client.work()
print("JOB", job.id, job_a.id, job_b.id)
"""

PROCESS = """
import json, os, sys
with open(f"ran-{os.environ['WHATSNEXT_JOB_ID']}.json", "w") as fh:
    json.dump(sys.argv[1:], fh)
"""


def port_8000_free() -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8000))
        except OSError:
            return False
    return True


@pytest.fixture
async def server_8000(pg_root_url: str) -> AsyncIterator[ServerProcess]:
    if not port_8000_free():
        pytest.skip("port 8000 is in use here: the reference examples connect to localhost:8000")
    url = await create_database(pg_root_url, "wn_seed")  # fresh: the examples expect project id 1
    srv = await ServerProcess(url, port=8000).start()
    yield srv
    await srv.stop()
    await drop_database(pg_root_url, url)


def example_env() -> dict[str, str]:
    """The user's shell: `python` is this interpreter, no WhatsNext variables set."""
    env = {k: v for k, v in os.environ.items() if k not in ("WHATSNEXT_SERVER", "WHATSNEXT_PROJECT")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def cli(*args: str, cwd: Path) -> Result:
    """`whatsnext ARGS` in this process, in the user's shell's environment (see example_env)."""
    env = example_env()
    unset = {k: None for k in os.environ if k not in env}
    return in_process(None, *args, cwd=cwd, env={**unset, **env})


def shell(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`whatsnext ARGS` as the user's shell runs it."""
    env = example_env()
    return subprocess.run(
        [sys.executable, "-m", "whatsnext", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


async def test_reference_examples_run_as_written(server_8000: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "process.py").write_text(PROCESS)
    r = cli("projects", "add", "my-project", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # Check server status / List projects
    r = cli("status", cwd=tmp_path)
    assert r.returncode == 0 and "ok" in r.stdout
    r = cli("projects", "ls", cwd=tmp_path)
    assert r.returncode == 0 and "my-project" in r.stdout
    # Python: submit, run, dependencies, resources
    (tmp_path / "seed.py").write_text(textwrap.dedent(SUBMIT_AND_RUN))
    r = subprocess.run(
        [sys.executable, "seed.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=example_env(),
    )
    assert r.returncode == 0, r.stderr
    job_id, a_id, b_id = (int(x) for x in r.stdout.split("JOB", 1)[1].split())
    assert json.loads((tmp_path / f"ran-{job_id}.json").read_text()) == [
        "--input",
        "file.csv",
        "--format",
        "json",
    ]
    ran_a = (tmp_path / f"ran-{a_id}.json").stat().st_mtime
    ran_b = (tmp_path / f"ran-{b_id}.json").stat().st_mtime
    assert ran_b >= ran_a
    tasks = cli("tasks", "ls", "--project", "my-project", "--json", cwd=tmp_path)
    gpu = [t for t in json.loads(tasks.stdout)["tasks"] if t["name"] == "gpu-training"]
    assert gpu and (gpu[0]["required_cpu"], gpu[0]["required_accelerators"]) == (8, 4)
    # CLI: add a job (quick example, then the full one), then run a worker
    r = cli("jobs", "add", "my-task", "--param", "input=data.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli(
        "jobs",
        "add",
        "data-pipeline",
        "--project",
        "my-project",
        "--name",
        "process-data",
        "--param",
        "input=file.csv",
        "--param",
        "format=json",
        "--json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    cli_job = json.loads(r.stdout)["id"]
    r = shell("worker", "--project", "my-project", "--script", "process.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / f"ran-{cli_job}.json").read_text()) == [
        "--input",
        "file.csv",
        "--format",
        "json",
    ]
