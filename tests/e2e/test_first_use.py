"""A researcher's first hour: tasks carry their commands, typos cost nothing, re-runnable scripts,
failure reasons in plain sight. Real server, real worker subprocesses."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import PYTHON, RECORD, Result, cli, records

REPO = Path(__file__).resolve().parents[2]


def worker(server: Any, project: str, *extra: str, cwd: Path | None = None) -> Result:
    """A `whatsnext worker` that exits when the project has nothing left for it."""
    return cli(server, "worker", "--project", project, "--cpus", "4", "--gpus", "none", *extra, cwd=cwd)


def recorded(out: Path, marker: str) -> list[dict[str, Any]]:
    return [r for r in records(out).values() if marker in r["argv"]]


async def make_task(api: Any, project: str, name: str, command: str | None, **extra: Any) -> dict[str, Any]:
    return await api.ok("POST", "/tasks/", {"name": name, "project_id": project, "command": command, **extra})


async def test_task_command_is_checked_when_stored(api: Any, project: dict[str, Any]) -> None:
    p = project["name"]
    status, body = await api.post("/tasks/", {"name": "bad", "project_id": p, "command": "python x.py {0}"})
    assert status == 422 and body["error"]["details"]["field"] == "command"
    status, body = await api.post(
        "/tasks/", {"name": "quoted", "project_id": p, "command": "echo '{msg}'", "shell": True}
    )
    assert status == 422 and "{msg}" in body["error"]["message"]
    task = await make_task(api, p, "ok", "echo {msg} | tr a b", shell=True, defaults={"msg": "a"})
    assert task["shell"] is True and task["command"].startswith("echo")


async def test_missing_placeholder_is_refused_at_submit(api: Any, project: dict[str, Any]) -> None:
    p = project["name"]
    await make_task(api, p, "train", "python train.py --lr {lr} --epochs {epochs}", defaults={"epochs": 3})
    status, body = await api.post(f"/projects/{p}/jobs", {"name": "j", "task": "train", "parameters": {}})
    assert status == 422
    assert "'lr'" in body["error"]["message"] and body["error"]["details"]["missing"] == ["lr"]
    status, body = await api.post(
        f"/projects/{p}/jobs/batch",
        [{"name": "a", "task": "train", "parameters": {"lr": 0.1}}, {"name": "b", "task": "train"}],
    )
    assert status == 422 and body["error"]["details"]["field"] == "1.parameters"
    job = await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "j", "task": "train", "parameters": {"lr": 0.1}}
    )
    assert job["status"] == "PENDING" and job["created_tasks"] == []


async def test_worker_runs_each_job_with_its_task_command(
    api: Any, project: dict[str, Any], tmp_path: Path
) -> None:
    p = project["name"]
    base = f"{shlex.quote(PYTHON)} {shlex.quote(RECORD)} --out {shlex.quote(str(tmp_path))}"
    await make_task(api, p, "prepare", f"{base} --step prepare --input {{input}}")
    await make_task(
        api, p, "train", f"{base} --step train --lr {{lr}} --epochs {{epochs}}", defaults={"epochs": 2}
    )
    await make_task(api, p, "evaluate", f"{base} --step evaluate")
    await api.ok(
        "POST",
        f"/projects/{p}/jobs/batch",
        [
            {"name": "prep", "task": "prepare", "parameters": {"input": "data.csv"}},
            {"name": "t1", "task": "train", "parameters": {"lr": 0.1}, "depends": ["prep"]},
            {"name": "t2", "task": "train", "parameters": {"lr": 0.01, "epochs": 5}, "depends": ["prep"]},
            {"name": "eval", "task": "evaluate", "depends": ["t1", "t2"]},
        ],
    )
    # Only prepare and train: evaluate stays pending.
    done = worker(api_server(api), p, "--task", "prepare,train")
    assert done.returncode == 0, done.stderr
    assert "job started" in done.stderr
    assert [r["argv"][-2:] for r in recorded(tmp_path, "prepare")] == [["--input", "data.csv"]]
    trains = sorted(r["argv"][r["argv"].index("--lr") :] for r in recorded(tmp_path, "train"))
    assert trains == [["--lr", "0.01", "--epochs", "5"], ["--lr", "0.1", "--epochs", "2"]]
    assert recorded(tmp_path, "evaluate") == []
    pending = (await api.ok("GET", f"/projects/{p}/jobs?status=pending"))["jobs"]
    assert [j["name"] for j in pending] == ["eval"]
    done = worker(api_server(api), p)
    assert done.returncode == 0, done.stderr
    assert len(recorded(tmp_path, "evaluate")) == 1


async def test_explicit_script_wins_over_the_task_command(
    api: Any, project: dict[str, Any], tmp_path: Path
) -> None:
    p = project["name"]
    await make_task(api, p, "train", "no-such-program {lr}")
    await api.ok("POST", f"/projects/{p}/jobs", {"name": "j", "task": "train", "parameters": {"lr": 1}})
    done = worker(api_server(api), p, "--script", RECORD, "--executable", PYTHON, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (job,) = (await api.ok("GET", f"/projects/{p}/jobs"))["jobs"]
    assert job["status"] == "COMPLETED" and records(tmp_path)[job["id"]]["argv"] == ["--lr", "1"]


async def test_typos_stop_the_worker_before_any_claim(
    api: Any, project: dict[str, Any], tmp_path: Path
) -> None:
    p = project["name"]
    (tmp_path / "train.py").write_text("print('hi')\n")
    await api.ok("POST", f"/projects/{p}/jobs", {"name": "j", "task": "train"})
    done = worker(api_server(api), p, "--script", "trian.py", cwd=tmp_path)
    assert done.returncode == 2
    assert "script 'trian.py' not found" in done.stderr and "did you mean 'train.py'" in done.stderr
    done = worker(api_server(api), p, "--command", "pythn train.py --lr {lr}", cwd=tmp_path)
    assert done.returncode == 2 and "'pythn' not found" in done.stderr
    done = worker(api_server(api), p, "--command", "python train.py --lr {lr", cwd=tmp_path)
    assert done.returncode == 2 and "bad template" in done.stderr
    # No --script and no task with a command: say what to do.
    done = worker(api_server(api), p, cwd=tmp_path)
    assert done.returncode == 2 and "has a command" in done.stderr and "--script" in done.stderr
    done = worker(api_server(api), p, "--task", "trian", cwd=tmp_path)
    assert done.returncode == 2 and "did you mean 'train'" in done.stderr
    (job,) = (await api.ok("GET", f"/projects/{p}/jobs"))["jobs"]
    assert job["status"] == "PENDING" and job["attempt"] == 0


async def test_a_job_that_cannot_be_formatted_fails_without_retries(
    api: Any, project: dict[str, Any], tmp_path: Path
) -> None:
    p = project["name"]
    await api.ok("POST", "/tasks/", {"name": "t", "project_id": p, "max_attempts": 5})
    await api.ok("POST", f"/projects/{p}/jobs", {"name": "j", "task": "t", "parameters": {"a": 1}})
    done = worker(api_server(api), p, "--command", f"{PYTHON} {RECORD} --out {tmp_path} --b {{b}}")
    assert done.returncode == 0, done.stderr
    (job,) = (await api.ok("GET", f"/projects/{p}/jobs"))["jobs"]
    assert job["status"] == "FAILED" and job["attempt"] == 1
    assert "missing parameter 'b'" in job["error"]


async def test_failure_reason_carries_the_last_output_lines(
    api: Any, project: dict[str, Any], tmp_path: Path
) -> None:
    p = project["name"]
    script = tmp_path / "boom.py"
    script.write_text(
        "import sys\nprint('loading data')\nprint()\n"
        "print('ValueError: lr must be positive', file=sys.stderr)\nsys.exit(2)\n"
    )
    await make_task(api, p, "boom", f"{PYTHON} {script} --lr {{lr}}")
    job = await api.ok("POST", f"/projects/{p}/jobs", {"name": "j", "task": "boom", "parameters": {"lr": -1}})
    done = worker(api_server(api), p)
    assert done.returncode == 0, done.stderr
    got = await api.ok("GET", f"/jobs/{job['id']}")
    assert got["status"] == "FAILED"
    assert got["error"].startswith("exit code 2")
    assert got["error"].endswith("loading data\nValueError: lr must be positive")
    shown = cli(api_server(api), "jobs", "show", str(job["id"]))
    assert "ValueError: lr must be positive" in shown.stdout and "loading data" in shown.stdout


async def test_unknown_task_notice_and_strict_projects(api: Any, project: dict[str, Any]) -> None:
    p = project["name"]
    srv = api_server(api)
    await make_task(api, p, "train", None, required_accelerators=1)
    added = cli(srv, "jobs", "add", "trian", "--project", p)
    assert added.returncode == 0, added.stderr
    assert "new task 'trian': 1 CPU, 0 GPUs (did you mean 'train'?)" in added.stderr
    again = cli(srv, "jobs", "add", "trian", "--project", p)
    assert "new task" not in again.stderr
    strict = cli(srv, "projects", "add", p + "-strict", "--strict")
    assert strict.returncode == 0, strict.stderr
    cli(srv, "tasks", "add", "train", "--project", p + "-strict")
    refused = cli(srv, "jobs", "add", "trian", "--project", p + "-strict")
    assert refused.returncode == 1
    assert "unknown task 'trian'" in refused.stderr and "did you mean 'train'" in refused.stderr
    ok = cli(srv, "jobs", "add", "train", "--project", p + "-strict")
    assert ok.returncode == 0 and "new task" not in ok.stderr


async def test_sdk_notice_on_stderr(api: Any, project: dict[str, Any]) -> None:
    code = (
        "from whatsnext.api.client import Server, Job\n"
        f"pr = Server({api.base!r}).get_project({project['name']!r})\n"
        "pr.create_task('prepare')\n"
        "pr.append_queue(Job(name='x', task='prepar', parameters={}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "new task 'prepar': 1 CPU, 0 GPUs (did you mean 'prepare'?)" in out.stderr


async def test_scripts_can_be_run_again(api: Any, tmp_path: Path) -> None:
    name = f"rerun-{tmp_path.name[-8:]}".replace("_", "-")
    code = (
        "from whatsnext.api.client import Server\n"
        f"s = Server({api.base!r})\n"
        f"pr = s.create_project({name!r}, exist_ok=True)\n"
        "t = pr.create_task('train', command='python train.py --lr {lr}', required_accelerators=1, exist_ok=True)\n"
        "print(pr.id, t['id'])\n"
    )
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    srv = api_server(api)
    again = cli(srv, "projects", "add", name, "--exist-ok")
    assert again.returncode == 0 and "project exists" in again.stdout
    refused = cli(srv, "projects", "add", name)
    assert refused.returncode == 1
    task = cli(srv, "tasks", "add", "train", "--project", name, "--exist-ok", "--json")
    assert json.loads(task.stdout)["command"] == "python train.py --lr {lr}"


async def test_tasks_add_cli_with_command_and_old_gpus_spelling(api: Any, project: dict[str, Any]) -> None:
    srv, p = api_server(api), project["name"]
    made = cli(
        srv, "tasks", "add", "train", "--project", p, "--command", "python train.py --lr {lr}",
        "--default", "lr=0.1", "--cpus", "2", "--num-gpus", "1", "--json",
    )  # fmt: skip
    task = json.loads(made.stdout)
    assert (task["required_cpu"], task["required_accelerators"], task["defaults"]) == (2, 1, {"lr": 0.1})
    old = cli(srv, "tasks", "add", "eval", "--project", p, "--gpus", "2")
    assert old.returncode == 0 and "2 GPU" in old.stdout and "--num-gpus" in old.stderr
    bad = cli(srv, "tasks", "add", "x", "--project", p, "--command", "python x.py {}")
    assert bad.returncode == 1 and "command" in bad.stderr


async def test_a_waiting_worker_says_why_nothing_fits(api: Any, project: dict[str, Any]) -> None:
    p = project["name"]
    await api.ok("POST", f"/projects/{p}/jobs", {"name": "big", "task": "t", "required_accelerators": 2})
    done = worker(api_server(api), p, "--script", RECORD, "--executable", PYTHON)
    assert done.returncode == 0, done.stderr
    assert "nothing left that this worker can run" in done.stderr
    assert "needs 2 GPUs, this worker has 0" in done.stderr
    srv = api_server(api)
    proc = subprocess.Popen(
        [sys.executable, "-m", "whatsnext", "--server", srv.url, "worker", "--project", p, "--forever",
         "--gpus", "none", "--script", RECORD, "--executable", PYTHON],
        stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "no pending job fits this worker" in line:
                assert "needs 2 GPUs, this worker has 0" in line
                break
        else:
            raise AssertionError("the waiting worker never said why nothing fits")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_worker_gpu_options() -> None:
    from whatsnext.cli import build_parser
    from whatsnext.cli.worker import worker_gpus

    def gpus(*argv: str) -> Any:
        return worker_gpus(build_parser().parse_args(["worker", *argv]))

    assert gpus("--gpus", "3") == ["3"]
    assert gpus("--gpus", "0,2") == ["0", "2"]
    assert gpus("--gpus", "none") == []
    assert gpus("--gpus", "all") is None
    assert gpus() is None
    assert gpus("--gpu-count", "2") == 2


def api_server(api: Any) -> Any:
    """The server behind ``api``, as cli wants it (anything with a ``url``)."""

    class _S:
        url = api.base

    return _S()
