"""The SDK and the worker against a real server, with real subprocess jobs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, ServerProcess, wait_until
from helpers import PYTHON, RECORD, cli, max_overlap, records, spawn_worker, wait_for_file

from whatsnext.api.client import (
    AsyncServer,
    Client,
    CLIFormatter,
    Conflict,
    ConnectionError,
    Job,
    JobSpec,
    NotFound,
    PythonFormatter,
    Server,
    ValidationError,
)


def recorder(out: Path) -> CLIFormatter:
    return CLIFormatter(executable=PYTHON, script=RECORD)


def params(out: Path, **extra: Any) -> dict[str, Any]:
    return {"out": str(out), **extra}


async def run_worker(client: Client, forever: bool = False, timeout: float = 60) -> Any:
    return await asyncio.wait_for(client.work_async(forever), timeout)


async def test_sdk_submit_and_inspect(server: ServerProcess) -> None:
    srv = AsyncServer(server.url)
    project = await srv.create_project(f"sdk-{os.getpid()}-{id(srv)}", "sdk test")
    assert (await srv.get_project(project.name)).id == project.id
    job = Job(name="process-data", task="data-pipeline", parameters={"input": "file.csv", "format": "json"})
    await project.append_queue(job)
    assert job.id is not None and job.status == "PENDING"
    more = await project.extend_queue(
        [Job(name=f"m{i}", task="t", parameters={"i": i}, priority=i) for i in range(3)]
    )
    assert all(j.id for j in more)
    queue = await project.get_queue()
    assert [j.name for j in queue] == ["m2", "m1", "process-data", "m0"]
    popped = await project.pop_queue(0)
    assert popped.name == "m2"
    await project.remove_queue(more[1])
    assert [j.name for j in await project.get_queue()] == ["process-data", "m0"]
    assert await project.clear_queue() == 2
    assert await project.get_queue() == []
    await project.set_description("changed")
    assert await project.get_description() == "changed"
    await project.set_status("ARCHIVED")
    assert project.status == "ARCHIVED" and project.last_updated is not None
    with pytest.raises(Conflict, match="archived"):
        await project.append_queue(Job(name="x", task="t"))
    with pytest.raises(NotFound, match="not found"):
        await srv.get_project("no-such-project-anywhere")
    with pytest.raises(ValidationError) as err:
        await srv.create_project("123")
    assert "name" in str(err.value.details)
    await srv.close()
    dead = AsyncServer("127.0.0.1", 1)
    with pytest.raises(ConnectionError) as unreachable:
        await dead.list_projects()
    assert "127.0.0.1:1" in str(unreachable.value) and unreachable.value.url
    await dead.close()


async def test_sync_api_inside_running_loop(server: ServerProcess) -> None:
    # This test body runs inside an event loop, like a notebook cell: the sync API must still work.
    srv = Server(server.url)
    project = srv.create_project(f"sync-{os.getpid()}")
    job = project.append_queue(Job(name="a", task="t", parameters={"x": 1}))
    assert isinstance(job.id, int)
    assert job.refresh().status == "PENDING"
    assert [p.name for p in srv.list_projects()].count(project.name) == 1
    assert project.get_status() == "ACTIVE"
    assert project.set_name(project.name + "-renamed").name.endswith("-renamed")


async def test_python_formatter_result(server: ServerProcess, project: dict) -> None:
    async def double(x: int) -> dict[str, int]:
        return {"double": 2 * x}

    def plain(x: int) -> int:
        return x + 1

    srv = AsyncServer(server.url)
    p = await srv.get_project(project["name"])
    a, b = Job("a", "double", {"x": 21}), Job("b", "double", {"y": 1})
    await p.extend_queue([a, b])
    summary = await run_worker(Client("t", "py", p, PythonFormatter(double), available_cpu=2))
    assert (summary.completed, summary.failed) == (1, 1)
    assert (await a.refresh_async()).result == {"double": 42}
    await b.refresh_async()
    assert b.status == "FAILED" and "cannot call" in (b.error or "")
    c = await p.append_queue(Job("c", "plain", {"x": 1}))
    await run_worker(Client("t", "py2", p, PythonFormatter(plain)))
    assert (await c.refresh_async()).result == 2


async def test_a_python_function_gets_a_checkpoint_directory_only_when_it_can_see_it(
    server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    seen: list[tuple[str | None, bool]] = []

    def plain(x: int) -> int:
        return x

    def with_job(x: int, job: JobSpec) -> int:
        seen.append((job.checkpoint_dir, os.path.isdir(job.checkpoint_dir or "")))
        return x

    root = tmp_path / "ck"
    p = await AsyncServer(server.url).get_project(project["name"])
    await p.extend_queue([Job(f"a{i}", "plain", {"x": i}) for i in range(3)])
    summary = await run_worker(Client("t", "py", p, PythonFormatter(plain), checkpoint_root=root))
    assert summary.completed == 3 and not root.exists()  # nothing can see it: nothing is made

    job = await p.append_queue(Job("b", "with_job", {"x": 1}))
    summary = await run_worker(
        Client("t", "py2", p, PythonFormatter(with_job, pass_job=True), checkpoint_root=root)
    )
    folder = root / project["name"] / str(job.id)
    assert summary.completed == 1 and seen == [(str(folder), True)]
    assert not folder.exists()  # it wrote nothing there: the directory went with the attempt


async def test_capacity_three_at_a_time(server: ServerProcess, project: dict, tmp_path: Path) -> None:
    srv = AsyncServer(server.url)
    p = await srv.get_project(project["name"])
    jobs = [Job(f"j{i}", "sleep", params(tmp_path, sleep=1.5)) for i in range(6)]
    await p.extend_queue(jobs)
    summary = await run_worker(Client("t", "w3", p, recorder(tmp_path), available_cpu=3))
    assert summary.completed == 6
    recs = records(tmp_path)
    assert len(recs) == 6
    intervals = [(r["start"], r["end"]) for r in recs.values()]
    assert max_overlap(intervals) == 3
    span = max(e for _, e in intervals) - min(s for s, _ in intervals)
    assert 3.0 <= span < 6.0, span  # two waves of 1.5 s, not six


async def test_job_needing_two_cpus_waits_for_a_free_slot(
    server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    srv = AsyncServer(server.url)
    p = await srv.get_project(project["name"])
    small = Job("small", "t", params(tmp_path, sleep=1.0), priority=5)
    big = Job("big", "t", params(tmp_path), required_cpu=2)
    await p.extend_queue([small, big])
    summary = await run_worker(Client("t", "w2", p, recorder(tmp_path), available_cpu=2))
    assert summary.completed == 2
    recs = records(tmp_path)
    assert recs[big.id]["start"] >= recs[small.id]["end"], "the 2-CPU job ran while only 1 CPU was free"


async def test_missing_parameter_fails_only_that_job(
    server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    srv = AsyncServer(server.url)
    p = await srv.get_project(project["name"])
    good = Job("good", "t", {"out": str(tmp_path), "who": "x"})
    bad = Job("bad", "t", {"out": str(tmp_path)})
    await p.extend_queue([good, bad])
    fmt = CLIFormatter(template=f"{PYTHON} {RECORD} --out {{out}} --who {{who}}")
    summary = await run_worker(Client("t", "wt", p, fmt, available_cpu=2))
    assert (summary.completed, summary.failed) == (1, 1)
    await bad.refresh_async()
    assert bad.status == "FAILED" and "missing parameter 'who'" in bad.error
    assert (await good.refresh_async()).status == "COMPLETED"


async def test_shell_metacharacters_reach_the_program_literally(
    server: ServerProcess, project: dict, tmp_path: Path
) -> None:
    srv = AsyncServer(server.url)
    p = await srv.get_project(project["name"])
    nasty = "a b; touch PWNED && echo $(whoami) `id` | cat > x * ' \" \\ \n"
    job = await p.append_queue(Job("nasty", "t", {"out": str(tmp_path), "value": nasty}))
    tmpl = await p.append_queue(Job("tmpl", "u", {"out": str(tmp_path), "value": nasty}))
    await run_worker(Client("t", "wm", p, recorder(tmp_path), available_cpu=1))
    fmt = CLIFormatter(template=f"{PYTHON} {RECORD} --out {{out}} --value {{value}}")
    await run_worker(Client("t", "wm2", p, fmt, available_cpu=1))
    recs = records(tmp_path)
    for j in (job, tmpl):
        argv = recs[j.id]["argv"]
        assert argv[argv.index("--value") + 1] == nasty
    assert not list(tmp_path.glob("PWNED")) and not Path("PWNED").exists()


async def test_formatter_rendering() -> None:
    f = CLIFormatter(executable="python", script="process.py")
    assert (
        f.format("t", {"input": "file.csv", "format": "json"})
        == "python process.py --input file.csv --format json"
    )
    t = CLIFormatter(template="python train.py --lr {lr} --epochs {epochs}")
    assert t.format("t", {"lr": 0.1, "epochs": 3}) == "python train.py --lr 0.1 --epochs 3"
    assert t.argv("t", {"lr": "1 2", "epochs": 3}) == ["python", "train.py", "--lr", "1 2", "--epochs", "3"]
    s = CLIFormatter(template="echo {msg} > out.txt", shell=True)
    assert s.format("t", {"msg": "a; rm -rf /"}) == "echo 'a; rm -rf /' > out.txt"
    with pytest.raises(ValueError):
        CLIFormatter(template="python {unclosed")
    assert t.execute("true") == 0 and t.execute("false") == 1


async def test_sigterm_drains_and_reports(
    server: ServerProcess, api: Api, project: dict, tmp_path: Path
) -> None:
    p = project["name"]
    go = tmp_path / "go"
    first = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "first", "task": "t", "parameters": params(tmp_path, **{"wait-for": str(go)})},
    )
    second = await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "second", "task": "t", "parameters": params(tmp_path)}
    )
    worker = spawn_worker(server.url, p, tmp_path / "worker.log", "--cpus", "1", "--forever")
    try:
        await wait_for_file(tmp_path / f"{first['id']}.started")
        worker.send_signal(signal.SIGTERM)
        await wait_until(lambda: _logged(tmp_path, "signal received"), what="the worker to take the signal")
        go.touch()
        code = await asyncio.to_thread(worker.wait, 30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 0, (tmp_path / "worker.log").read_text()
    assert (await api.ok("GET", f"/jobs/{first['id']}"))["status"] == "COMPLETED"
    assert (await api.ok("GET", f"/jobs/{second['id']}"))["status"] == "PENDING"  # claimed no more
    workers = (await api.ok("GET", f"/workers?project={p}"))["workers"]
    assert [w["status"] for w in workers] == ["OFFLINE"]


async def _logged(tmp: Path, text: str) -> bool:
    return text in (tmp / "worker.log").read_text()


async def test_report_survives_server_restart(database_url: str, http, project: dict, tmp_path: Path) -> None:
    srv = await ServerProcess(database_url).start()
    api = Api(srv.url, http)
    p = project["name"]
    go = tmp_path / "go"
    job = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "long", "task": "t", "parameters": params(tmp_path, **{"wait-for": str(go)})},
    )
    worker = spawn_worker(srv.url, p, tmp_path / "worker.log", "--cpus", "1")
    restarted: ServerProcess | None = None
    try:
        await wait_for_file(tmp_path / f"{job['id']}.started")
        assert await srv.stop() == 0
        go.touch()
        await wait_for_file(tmp_path / f"{job['id']}.json")  # the job finished while the server was down
        await wait_until(lambda: _logged(tmp_path, "report not delivered"), what="a failed report attempt")
        restarted = await ServerProcess(database_url, port=srv.port).start()
        code = await asyncio.to_thread(worker.wait, 60)
        assert code == 0, (tmp_path / "worker.log").read_text()
        final = await Api(restarted.url, http).ok("GET", f"/jobs/{job['id']}")
        assert final["status"] == "COMPLETED" and final["exit_code"] == 0
        assert "job" in (final["log_tail"] or "")
    finally:
        if worker.poll() is None:
            worker.kill()
        if restarted is not None:
            await restarted.stop()


async def test_cli_commands(server: ServerProcess, tmp_path: Path) -> None:
    name = f"cli-{os.getpid()}"
    r = cli(server, "projects", "add", name, "-d", "from the cli")
    assert r.returncode == 0 and f"created project {name}" in r.stdout, r.stderr
    r = cli(server, "projects", "ls", "--json")
    assert name in [p["name"] for p in json.loads(r.stdout)["projects"]]
    r = cli(server, "projects", "ls")
    assert "NAME" in r.stdout and name in r.stdout
    r = cli(server, "tasks", "add", "train", "--project", name, "--cpus", "2", "--json")
    assert json.loads(r.stdout)["required_cpu"] == 2
    r = cli(
        server,
        "jobs",
        "add",
        "data-pipeline",
        "--project",
        name,
        "--name",
        "process-data",
        "--param",
        "input=file.csv",
        "--param",
        "format=json",
        "--param",
        "n=3",
        "--json",
    )
    job = json.loads(r.stdout)
    assert job["parameters"] == {"input": "file.csv", "format": "json", "n": 3}
    r = cli(server, "jobs", "add", "train", "--project", name, "--depends", str(job["id"]), "--json")
    dependent = json.loads(r.stdout)
    assert dependent["depends"] == [job["id"]] and dependent["required_cpu"] == 2
    r = cli(server, "queue", "ls", "--project", name)
    assert "process-data" in r.stdout and r.stdout.index("process-data") < r.stdout.index("train")
    r = cli(server, "jobs", "ls", "--project", name, "--status", "pending", "--json")
    assert {j["id"] for j in json.loads(r.stdout)["jobs"]} == {job["id"], dependent["id"]}
    r = cli(server, "jobs", "show", str(job["id"]))
    assert "process-data" in r.stdout and "PENDING" in r.stdout
    r = cli(server, "jobs", "show", "999999999")
    assert r.returncode == 4 and "not found" in r.stderr
    r = cli(server, "jobs", "cancel", str(dependent["id"]), "--json")
    assert json.loads(r.stdout)["status"] == "CANCELLED"
    r = cli(server, "jobs", "rm", str(dependent["id"]))
    assert r.returncode == 0, r.stderr
    r = cli(server, "worker", "--project", name, "--command", f"{PYTHON} -c pass")
    assert r.returncode == 0, r.stderr
    assert "1 completed" in r.stderr
    r = cli(server, "projects", "show", name, "--json")
    assert json.loads(r.stdout)["jobs"] == {"COMPLETED": 1}
    r = cli(server, "queue", "clear", "--project", name)
    assert r.returncode == 0
    r = cli(server, "projects", "archive", name)
    assert r.returncode == 0 and "archived" in r.stdout
    r = cli(server, "jobs", "add", "x", "--project", name)
    assert r.returncode == 1 and "archived" in r.stderr
    r = cli(server, "status", "--json")
    assert json.loads(r.stdout)["status"] == "ok"
    r = cli(server, "jobs", "add", "x", "--project", name, "--param", "novalue")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "whatsnext", "--server", "http://127.0.0.1:1", "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 3 and "cannot reach" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_every_cli_command_has_help_with_an_example() -> None:
    from whatsnext.cli import build_parser

    parser = build_parser()
    leaves: list[list[str]] = []

    def walk(p: Any, path: list[str]) -> None:
        subs = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            leaves.append(path)
            return
        for name, child in subs[0].choices.items():
            walk(child, [*path, name])

    walk(parser, [])
    assert len(leaves) >= 19
    for path in leaves:
        r = cli(None, *path, "--help")
        assert r.returncode == 0, path
        assert "example" in r.stdout and "whatsnext " in r.stdout, path
    # And once as a user's shell runs it.
    r = subprocess.run(
        [sys.executable, "-m", "whatsnext", "jobs", "add", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0
    assert "example" in r.stdout and "whatsnext jobs add" in r.stdout


async def test_parameter_sweep(server: ServerProcess, api: Api, project: dict) -> None:
    p = await AsyncServer(server.url).get_project(project["name"])
    root = await p.append_queue(Job("prepare", "prep"))
    jobs = await p.sweep("train", grid={"lr": [0.1, 0.01], "bs": [32, 64]}, depends=[root])
    assert sorted(j.name for j in jobs) == sorted(
        ["train[lr=0.1,bs=32]", "train[lr=0.1,bs=64]", "train[lr=0.01,bs=32]", "train[lr=0.01,bs=64]"]
    )
    for job in jobs:
        data = await api.ok("GET", f"/jobs/{job.id}")
        assert data["depends"] == [root.id] and data["unmet_deps"] == 1
    assert {tuple(sorted(j.parameters.items())) for j in jobs} == {
        (("bs", b), ("lr", lr)) for lr in (0.1, 0.01) for b in (32, 64)
    }
    r = cli(
        server,
        "jobs",
        "sweep",
        "eval",
        "--project",
        project["name"],
        "--grid",
        "seed=1,2,3",
        "--param",
        "data=x.csv",
        "--depends",
        str(root.id),
        "--json",
    )
    out = json.loads(r.stdout)
    assert out["count"] == 3 and out["names"] == ["eval[seed=1]", "eval[seed=2]", "eval[seed=3]"]
    third = await api.ok("GET", f"/jobs/{out['ids'][2]}")
    assert third["parameters"] == {"data": "x.csv", "seed": 3} and third["depends"] == [root.id]


async def test_python_formatter_cancel_and_timeout() -> None:
    from whatsnext.api.client import RunContext

    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    fmt = PythonFormatter(forever)
    ctx = RunContext()
    run = asyncio.create_task(fmt.run(JobSpec(1, "j", "t", {}), ctx))
    await asyncio.wait_for(started.wait(), 5)
    ctx.request_cancel("cancelled")
    out = await asyncio.wait_for(run, 5)
    assert (out.status, out.error) == ("CANCELLED", "cancelled")
    out = await asyncio.wait_for(fmt.run(JobSpec(2, "j", "t", {}), RunContext(timeout=0.05)), 5)
    assert (out.status, out.error) == ("FAILED", "timeout")


async def test_python_formatter_stops_leave_the_jobs_task_alone() -> None:
    """An async job function runs in the job's own task: a stop is taken back once the function
    returned, a stop after it returned does nothing, and the worker's own teardown still cancels."""
    from whatsnext.api.client import RunContext

    started = asyncio.Event()

    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "swallowed"  # a function that ignores the cancel still counts as stopped
        return "never"

    async def quick() -> int:
        return 7

    async def job(fmt: PythonFormatter, ctx: RunContext) -> tuple[Any, bool]:
        out = await fmt.run(JobSpec(1, "j", "t", {}), ctx)
        ctx.request_cancel("late")  # the function has returned: nothing to stop
        # the job's task goes on (it reports next): no cancellation is pending on it
        return out, asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    ctx = RunContext()
    run = asyncio.create_task(job(PythonFormatter(stubborn), ctx))
    await asyncio.wait_for(started.wait(), 5)
    ctx.request_cancel("cancelled")
    out, clean = await asyncio.wait_for(run, 5)
    assert (out.status, out.error, clean) == ("CANCELLED", "cancelled", True)

    out, clean = await asyncio.wait_for(job(PythonFormatter(quick), RunContext()), 5)
    assert (out.status, out.result, clean) == ("COMPLETED", 7, True)

    started.clear()
    teardown = asyncio.create_task(PythonFormatter(stubborn).run(JobSpec(2, "j", "t", {}), RunContext()))
    await asyncio.wait_for(started.wait(), 5)
    teardown.cancel()
    with pytest.raises(asyncio.CancelledError):
        await teardown
