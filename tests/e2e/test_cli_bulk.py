"""Many jobs at once from the command line: `jobs cancel|retry|rm ID...` and their filters, `jobs
wait` and its exit codes with a real worker, `jobs ls --watch` that follows a whole selection (not
the page it shows) and `--sort`, and the job counts they read (GET /projects/{p}/jobs/counts)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT
from helpers import PYTHON, RECORD, cli

MISSING = 999_999_999


def _srv(api: Any) -> Any:
    class _S:
        url = api.base

    return _S()


async def _queue(api: Any, p: str, names: list[str], group: str | None = None, **fields: Any) -> list[int]:
    body: Any = [{"name": n, "task": "t", **fields} for n in names]
    if group is not None:
        body = {"group": group, "jobs": body}
    return list((await api.ok("POST", f"/projects/{p}/jobs/batch", body))["ids"])


async def _claim(api: Any, p: str, n: int = 1) -> list[dict[str, Any]]:
    """Claim ``n`` jobs as a worker would (oldest first): they are RUNNING."""
    out = await api.ok("POST", f"/projects/{p}/claim", {"worker_name": "test", "max_jobs": n, "free_cpu": n})
    assert len(out["jobs"]) == n, out
    return list(out["jobs"])


async def _status(api: Any, job_id: int) -> str:
    return str((await api.ok("GET", f"/jobs/{job_id}"))["status"])


def _spawn(api: Any, *args: str) -> subprocess.Popen[str]:
    """`whatsnext ARGS` as a real process, its output read line by line as it comes."""
    return subprocess.Popen(
        [sys.executable, "-m", "whatsnext", "--server", api.base, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


async def _line(proc: subprocess.Popen[str], stream: Any) -> str:
    """The next line a process prints (bounded: a test never hangs on it); the process's errors
    when it ended instead."""
    line = str(await asyncio.wait_for(asyncio.to_thread(stream.readline), 60))
    if not line:
        code, out, err = await _finish(proc)
        raise AssertionError(f"the command ended ({code}) before printing a line:\n{out}\n{err}")
    return line


async def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(asyncio.to_thread(proc.communicate), 60)
    return proc.returncode, out, err


# ---------------------------------------------------------------- counts


async def test_counts_take_the_list_filters(api: Any, project: dict[str, Any]) -> None:
    p = project["name"]
    await _queue(api, p, ["a", "b", "c"], group="g", parameters={"lr": 0.1})
    await _queue(api, p, ["d"], parameters={"lr": 0.2})
    await _claim(api, p)
    q = f"/projects/{p}/jobs/counts"
    assert await api.ok("GET", q) == {"counts": {"RUNNING": 1, "PENDING": 3}, "total": 4}
    assert await api.ok("GET", f"{q}?group=g&status=pending") == {"counts": {"PENDING": 2}, "total": 2}
    assert (await api.ok("GET", f"{q}?where=" + json.dumps({"lr": 0.2})))["total"] == 1
    assert await api.ok("GET", f"{q}?group=nope") == {"counts": {}, "total": 0}
    status, body = await api.get(f"{q}?status=done")
    assert status == 422 and body["error"]["details"]["field"] == "status"
    status, body = await api.get(f"{q}?where=[1]")
    assert status == 422 and body["error"]["details"]["field"] == "where"
    status, body = await api.get("/projects/no-such-project-here/jobs/counts")
    assert status == 404 and body["error"]["details"]["field"] == "project"


# ---------------------------------------------------------------- cancel, retry, rm


async def test_cancel_several_ids(api: Any, project: dict[str, Any]) -> None:
    srv, p = _srv(api), project["name"]
    a, b, c = await _queue(api, p, ["a", "b", "c"])
    out = cli(srv, "jobs", "cancel", str(a), str(b), str(c))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"job {a}: cancelled",
        f"job {b}: cancelled",
        f"job {c}: cancelled",
        "3 jobs: 3 cancelled",
    ]
    assert [await _status(api, i) for i in (a, b, c)] == ["CANCELLED"] * 3

    # One of each: pending, running, already ended, no such job. The refusal makes it exit 1.
    first, pending = await _queue(api, p, ["running", "pending"])
    running = (await _claim(api, p))[0]["id"]
    assert running == first  # the oldest is handed out first
    out = cli(srv, "jobs", "cancel", str(pending), str(running), str(a), str(MISSING))
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"job {a}: already CANCELLED",
        f"job {running}: running; its worker will stop it",
        f"job {pending}: cancelled",
        f"job {MISSING}: not found",
        "4 jobs: 1 refused, 1 stopping, 1 cancelled, 1 not found",
    ]
    assert await _status(api, pending) == "CANCELLED" and await _status(api, running) == "RUNNING"
    # Only missing ones: exit 4. JSON: one entry per job.
    out = cli(srv, "jobs", "cancel", str(MISSING), str(MISSING - 1), "--json")
    assert out.returncode == 4
    data = json.loads(out.stdout)
    assert [(j["id"], j["ok"], j["error"]["status"]) for j in data["jobs"]] == [
        (MISSING - 1, False, 404),
        (MISSING, False, 404),
    ]
    # One id keeps the answer it always had.
    d = (await _queue(api, p, ["d"]))[0]
    out = cli(srv, "jobs", "cancel", str(d), "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {"id": d, "status": "CANCELLED"}
    out = cli(srv, "jobs", "cancel", str(d))
    assert out.returncode == 1 and f"job {d} is already CANCELLED" in out.stderr
    # Ids and a filter together, or neither: a usage error.
    out = cli(srv, "jobs", "cancel", str(d), "--project", p, "--group", "g")
    assert out.returncode == 2 and "not both" in out.stderr
    out = cli(srv, "jobs", "cancel", "--project", p)
    assert out.returncode == 2 and "give job ids, or filters" in out.stderr
    out = cli(srv, "jobs", "cancel", "--project", p, "--status", "runing")
    assert out.returncode == 2 and "'runing' is not a status" in out.stderr


async def test_cancel_and_retry_by_filter(api: Any, project: dict[str, Any]) -> None:
    srv, p = _srv(api), project["name"]
    hot = await _queue(api, p, ["h1", "h2", "h3"], group="hp", parameters={"lr": 0.9})
    cool = await _queue(api, p, ["c1"], group="hp", parameters={"lr": 0.1})
    other = await _queue(api, p, ["o1"], group="other", parameters={"lr": 0.9})
    ran = (await _claim(api, p))[0]
    assert ran["id"] == hot[0]
    await api.ok("POST", f"/jobs/{ran['id']}/complete", {"attempt": ran["attempt"]})

    dry = cli(srv, "jobs", "cancel", "--project", p, "--group", "hp", "--where", "lr=0.9", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "cancelling 2 job(s)" in dry.stdout and "1 more match but have already ended" in dry.stdout
    assert "--dry-run: nothing cancelled" in dry.stdout and await _status(api, hot[1]) == "PENDING"
    out = cli(srv, "jobs", "cancel", "--project", p, "--group", "hp", "--where", "lr=0.9")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == (
        f"cancelling 2 job(s) of project {p} (--group hp --where lr=0.9); 1 more match but have already ended"
    )
    assert lines[1:] == [f"job {hot[1]}: cancelled", f"job {hot[2]}: cancelled", "2 jobs: 2 cancelled"]
    assert await _status(api, cool[0]) == "PENDING" and await _status(api, other[0]) == "PENDING"

    # Retry the cancelled ones of the group by status: the completed one is left alone.
    out = cli(
        srv, "jobs", "retry", "--project", p, "--group", "hp", "--status", "cancelled,completed", "--json"
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["matched"], data["left_alone"], data["counts"]) == (3, 1, {"retried": 2})
    assert [await _status(api, i) for i in hot] == ["COMPLETED", "PENDING", "PENDING"]
    # Nothing matches: nothing to do, and that is no error.
    out = cli(srv, "jobs", "retry", "--project", p, "--group", "hp", "--status", "failed")
    assert (
        out.returncode == 0 and out.stdout == f"no job of project {p} matches (--group hp --status failed)\n"
    )
    out = cli(srv, "jobs", "cancel", "--project", p, "--status", "completed")
    assert out.returncode == 0 and out.stdout.startswith("nothing to cancel: the 1 job(s) of project")


async def test_retry_several_ids_with_what_they_blocked(api: Any, project: dict[str, Any]) -> None:
    srv, p = _srv(api), project["name"]
    up, side = await _queue(api, p, ["up", "side"])
    down = (await api.ok("POST", f"/projects/{p}/jobs", {"name": "down", "task": "t", "depends": [up]}))["id"]
    for job in await _claim(api, p, 2):
        await api.ok("POST", f"/jobs/{job['id']}/fail", {"attempt": job["attempt"], "error": "boom"})
    assert [await _status(api, i) for i in (up, side, down)] == ["FAILED", "FAILED", "BLOCKED"]
    completed = (await _queue(api, p, ["done"]))[0]
    job = (await _claim(api, p))[0]
    await api.ok("POST", f"/jobs/{job['id']}/complete", {"attempt": job["attempt"]})

    # Retrying `up` releases `down`: its own retry finds it back in the queue, and that is done.
    out = cli(srv, "jobs", "retry", str(down), str(up), str(side), str(completed))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"job {up}: ") and lines[0].endswith(" job(s) back in the queue")
    assert lines[1:] == [
        f"job {side}: 1 job(s) back in the queue",
        f"job {down}: back in the queue already (with a job retried before it)",
        f"job {completed}: COMPLETED: only FAILED, CANCELLED or BLOCKED jobs can be retried",
        "4 jobs: 3 retried, 1 refused",
    ]
    assert [await _status(api, i) for i in (up, side, down)] == ["PENDING"] * 3


async def test_rm_a_group(api: Any, project: dict[str, Any]) -> None:
    srv, p = _srv(api), project["name"]
    ids = await _queue(api, p, [f"s{i}" for i in range(5)], group="sweep")
    keep = await _queue(api, p, ["k"], group="keep")
    running = (await _claim(api, p))[0]["id"]
    assert running == ids[0]

    # Removing what a filter selects needs --yes where nobody can be asked.
    out = cli(srv, "jobs", "rm", "--project", p, "--group", "sweep")
    assert out.returncode == 2 and "this would remove 4 job(s): add --yes" in out.stderr
    listed = cli(srv, "jobs", "ls", "--project", p, "--group", "sweep", "--json")
    assert len(json.loads(listed.stdout)["jobs"]) == 5
    out = cli(srv, "jobs", "rm", "--project", p, "--group", "sweep", "--yes")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("removing 4 job(s)") and "1 more match but are running" in lines[0]
    assert lines[1:] == [f"job {i}: removed" for i in reversed(ids[1:])] + ["4 jobs: 4 removed"]
    left = json.loads(cli(srv, "jobs", "ls", "--project", p, "--json").stdout)["jobs"]
    assert sorted(j["id"] for j in left) == sorted([running, *keep])
    # Several ids: the running one is refused (exit 1), the others go.
    a, b = await _queue(api, p, ["a", "b"])
    out = cli(srv, "jobs", "rm", str(a), str(running), str(b))
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"job {b}: removed",
        f"job {a}: removed",
        f"job {running}: running: cancel it instead",
        "3 jobs: 2 removed, 1 refused",
    ]


# ---------------------------------------------------------------- wait


async def _task(srv: Any, p: str, out: Path) -> None:
    made = cli(
        srv, "tasks", "add", "t", "--project", p, "--command",
        f"{PYTHON} {RECORD} --out {out} --exit {{code}}",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr


def _work(srv: Any, p: str) -> None:
    worked = cli(srv, "worker", "--project", p, "--cpus", "4", "--gpus", "none")
    assert worked.returncode == 0, worked.stderr


async def test_wait_exit_codes_with_a_worker(api: Any, project: dict[str, Any], tmp_path: Path) -> None:
    srv, p = _srv(api), project["name"]
    await _task(srv, p, tmp_path)
    good = await _queue(api, p, ["g1", "g2", "g3"], group="good", parameters={"code": 0})
    bad = await _queue(api, p, ["b1", "b2"], group="bad", parameters={"code": 0})
    bad += await _queue(api, p, ["b3"], group="bad", parameters={"code": 3})
    blocked = (
        await api.ok(
            "POST",
            f"/projects/{p}/jobs",
            {"name": "after", "task": "t", "depends": [bad[2]], "parameters": {"code": 0}},
        )
    )["id"]
    gone = (await _queue(api, p, ["gone"], parameters={"code": 0}))[0]
    assert cli(srv, "jobs", "cancel", str(gone)).returncode == 0

    # The wait starts before the worker: it has seen the jobs unfinished, and ends only after.
    waiting = _spawn(api, "jobs", "wait", "--project", p, "--group", "good")
    assert (await _line(waiting, waiting.stderr)).startswith(
        "waiting for group good: 0 of 3 done (pending 3)"
    )
    waiting_bad = _spawn(api, "jobs", "wait", str(bad[0]), str(bad[2]), str(blocked))
    assert (await _line(waiting_bad, waiting_bad.stderr)).startswith("waiting for the jobs: 0 of 3 done")
    _work(srv, p)
    code, out, _ = await _finish(waiting)
    assert code == 0 and out.strip() == "group good: 3 of 3 done (completed 3)"
    code, out, _ = await _finish(waiting_bad)
    assert code == 5, out
    assert out.splitlines() == [
        "the jobs: 3 of 3 done (completed 1, failed 1, blocked 1)",
        f"not completed: {bad[2]} (FAILED), {blocked} (BLOCKED)",
    ]
    assert [await _status(api, i) for i in good] == ["COMPLETED"] * 3

    # Each outcome its code: failed 5 (before cancelled and blocked), cancelled 6, blocked 7.
    assert cli(srv, "jobs", "wait", "--project", p, "--group", "bad").returncode == 5
    assert cli(srv, "jobs", "wait", str(gone)).returncode == 6
    assert cli(srv, "jobs", "wait", str(blocked), str(good[0])).returncode == 7
    assert cli(srv, "jobs", "wait", str(gone), str(blocked)).returncode == 6
    out = cli(srv, "jobs", "wait", *map(str, good), "--json")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["counts"] == {"COMPLETED": 3} and data["statuses"] == {str(i): "COMPLETED" for i in good}
    # No such job or group: 4 at once.
    out = cli(srv, "jobs", "wait", str(good[0]), str(MISSING))
    assert out.returncode == 4 and f"job(s) {MISSING} not found" in out.stderr
    out = cli(srv, "jobs", "wait", "--project", p, "--group", "nope")
    assert out.returncode == 4 and "not found" in out.stderr
    # A job nobody runs: the timeout ends the wait, exit 8.
    idle = (await _queue(api, p, ["idle"], parameters={"code": 0}))[0]
    out = cli(srv, "jobs", "wait", str(idle), str(good[0]), "--timeout", "0.3")
    assert out.returncode == 8 and out.stdout.startswith("timed out after 0.3s: the jobs: 1 of 2 done")
    assert cli(srv, "jobs", "wait", "--project", p).returncode == 2

    # The SDK's Project.wait is what the command uses.
    from whatsnext.api.client import AsyncServer

    async with AsyncServer(api.base) as server:
        pr = await server.get_project(p)
        assert (await pr.wait(group="good")).completed
        ended = await pr.wait([bad[0], bad[2]])
        assert not ended.completed and ended.counts == {"COMPLETED": 1, "FAILED": 1}
        try:
            await pr.wait([idle], timeout=0.2)
        except TimeoutError:
            pass
        else:
            raise AssertionError("a wait on a job nobody runs ended")


# ---------------------------------------------------------------- ls --watch, --sort


async def test_ls_watch_follows_the_whole_group(api: Any, project: dict[str, Any]) -> None:
    """A group larger than --limit: the page may be all finished while a job of the group runs;
    the watch goes on until the whole group has ended."""
    p = project["name"]
    ids = await _queue(api, p, [f"w{i}" for i in range(5)], group="wide")
    job = (await _claim(api, p))[0]
    assert job["id"] == ids[0]  # the oldest: beyond a newest-first page of 2
    assert (
        cli(_srv(api), "jobs", "cancel", "--project", p, "--group", "wide", "--status", "pending").returncode
        == 0
    )

    for order in (["--sort", "-id"], []):
        watch = _spawn(
            api,
            "jobs",
            "ls",
            "--project",
            p,
            "--group",
            "wide",
            "--limit",
            "2",
            "--watch",
            "--every",
            "0.05",
            *order,
        )
        frame = []
        while not (line := await _line(watch, watch.stdout)).rstrip().endswith("Ctrl-C to stop)"):
            frame.append(line.rstrip())
        assert frame[0].startswith("group wide  [") and "4/5 done (running 1, cancelled 4)" in frame[0]
        rows = [line.split()[0] for line in frame[3:] if line and line[0].isdigit()]
        if order:  # newest first: the running job is not on the page
            assert rows == [str(ids[4]), str(ids[3])]
        else:  # running first
            assert rows == [str(ids[0]), str(ids[4])]
        assert "(2 of 5 shown; --limit N shows more)" in frame
        # The page is all finished, the group is not: another frame follows, not "all done".
        assert (await _line(watch, watch.stdout)).startswith("group wide  [")
        if not order:
            await api.ok("POST", f"/jobs/{job['id']}/complete", {"attempt": job["attempt"]})
        else:
            watch.terminate()
            await _finish(watch)
            continue
        code, out, _ = await _finish(watch)
        assert code == 0 and out.rstrip().endswith("all done")
        assert "5/5 done (completed 1, cancelled 4)" in out


async def test_ls_watch_counts_a_selection_and_sort(api: Any, project: dict[str, Any]) -> None:
    srv, p = _srv(api), project["name"]
    ids = await _queue(api, p, [f"r{i}" for i in range(4)], group="res")
    jobs = await _claim(api, p, 4)
    losses = {ids[0]: 0.5, ids[1]: 0.1, ids[2]: 0.3}
    for job in jobs:
        loss = losses.get(job["id"])
        await api.ok(
            "POST",
            f"/jobs/{job['id']}/complete",
            {"attempt": job["attempt"], "result": {"loss": loss} if loss is not None else None},
        )
    listed = cli(srv, "jobs", "ls", "--project", p, "--group", "res", "--sort", "result.loss", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)["jobs"]] == [ids[1], ids[2], ids[0], ids[3]]
    listed = cli(
        srv, "jobs", "ls", "--project", p, "--sort", "-result.loss", "--limit", "2", "--columns", "=id,result"
    )
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:3]] == [str(ids[0]), str(ids[2])]
    assert "(2 of 4 shown; --limit N shows more)" in listed.stdout
    listed = cli(srv, "jobs", "ls", "--project", p, "--sort", "name", "--json")
    assert [j["name"] for j in json.loads(listed.stdout)["jobs"]] == ["r0", "r1", "r2", "r3"]
    bad = cli(srv, "jobs", "ls", "--project", p, "--sort", "nope")
    assert bad.returncode == 2 and "--sort 'nope': no such column" in bad.stderr
    bad = cli(srv, "jobs", "ls", "--project", p, "--sort", "name.x")
    assert bad.returncode == 2 and "only result.KEY and params.KEY" in bad.stderr

    # A watch of a selection (no group) draws the bar of the whole selection and ends with it.
    watched = cli(srv, "jobs", "ls", "--project", p, "--status", "completed", "--limit", "1", "--watch")
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.splitlines()[0].endswith("4/4 done (completed 4)")
    assert watched.stdout.rstrip().endswith("all done")
    watched = cli(srv, "jobs", "ls", "--project", p, "--status", "failed", "--watch")
    assert watched.stdout.rstrip().endswith("no jobs match")
