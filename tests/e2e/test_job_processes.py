"""A job's processes live and die with their job and their worker (the supervisor around each job)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import Api, ServerProcess
from helpers import PYTHON, spawn_worker, wait_for_condition, wait_for_file

from whatsnext.api.client.formatters.base import RunContext
from whatsnext.api.client.process import SUPERVISOR, run_process

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")

# A job that starts a child, which starts a grandchild; each writes its pid and then waits forever.
TREE_JOB = """\
import argparse, os, subprocess, sys, threading
p = argparse.ArgumentParser()
p.add_argument("--dir")
p.add_argument("--level", type=int, default=0)
a = p.parse_args()
if a.level < 2:
    subprocess.Popen([sys.executable, __file__, "--dir", a.dir, "--level", str(a.level + 1)])
path = os.path.join(a.dir, f"pid-{a.level}")
with open(path + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(path + ".tmp", path)
threading.Event().wait()  # runs until it is killed
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no longer runs: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_worker_killed_leaves_none_of_its_jobs_processes(
    server: ServerProcess, api: Api, project: dict, tmp_path: Path
) -> None:
    job = tmp_path / "tree.py"
    job.write_text(TREE_JOB)
    p = project["name"]
    await api.ok(
        "POST", f"/projects/{p}/jobs", {"name": "tree", "task": "t", "parameters": {"dir": str(tmp_path)}}
    )
    log = tmp_path / "worker.log"
    worker = spawn_worker(server.url, p, log, "--cpus", "1", "--forever", script=job)
    pids: list[int] = []
    try:
        for level in range(3):
            await wait_for_file(tmp_path / f"pid-{level}", timeout=60)
            pids.append(int((tmp_path / f"pid-{level}").read_text()))
        supervisor = parent_of(pids[0])
        assert supervisor != worker.pid and parent_of(supervisor) == worker.pid
        pids.append(supervisor)
        assert all(alive(pid) for pid in pids)

        os.kill(worker.pid, signal.SIGKILL)  # the worker alone, as the OOM killer does
        worker.wait(timeout=10)

        await wait_for_condition(
            lambda: not any(alive(pid) for pid in pids), 10, "the job's processes to end"
        )
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        kill_all(pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
async def test_the_starting_thread_ending_is_not_the_worker_dying(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG fires when the starting *thread* ends; the job must go on while the worker lives."""
    job = tmp_path / "job.py"
    job.write_text(
        "import os, signal, sys\n"
        f"d = {str(tmp_path)!r}\n"
        "signal.signal(signal.SIGUSR1, lambda *a: open(os.path.join(d, 'usr1'), 'w').close())\n"
        "signal.signal(signal.SIGUSR2, lambda *a: sys.exit(5))\n"
        "open(os.path.join(d, 'ready'), 'w').close()\n"
        "while True:\n"
        "    signal.pause()\n"
    )
    ctl_r, ctl_w = os.pipe()
    started: dict[str, object] = {}

    def start() -> None:
        started["thread"] = threading.get_native_id()
        started["proc"] = subprocess.Popen(
            [sys.executable, "-I", "-S", SUPERVISOR, str(ctl_r), str(os.getpid()), "1", PYTHON, str(job)],
            pass_fds=(ctl_r,),
            start_new_session=True,
        )

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    os.close(ctl_r)
    proc = started["proc"]
    assert isinstance(proc, subprocess.Popen)
    try:
        await wait_for_condition(
            lambda: not Path(f"/proc/self/task/{started['thread']}").exists(), 10, "the thread to end"
        )
        await wait_for_file(tmp_path / "ready")
        # Each byte on the control pipe is a signal for the job's group. The supervisor handles the
        # starting thread's death before it reads the second byte: were it taken for the worker's
        # death, the job would get SIGTERM and not exit 5.
        os.write(ctl_w, bytes([signal.SIGUSR1]))
        await wait_for_file(tmp_path / "usr1")
        os.write(ctl_w, bytes([signal.SIGUSR2]))
        assert proc.wait(timeout=20) == 5
    finally:
        os.close(ctl_w)  # end of file: the supervisor stops the job (when a check above failed)
        if proc.poll() is None:
            proc.wait(timeout=20)


async def test_exit_status_is_the_jobs() -> None:
    ok = await run_process([PYTHON, "-c", "print('fine')"], RunContext())
    assert (ok.status, ok.exit_code, ok.log_tail) == ("COMPLETED", 0, "fine\n")
    three = await run_process("echo failing; exit 3", RunContext(), shell=True)
    assert (three.status, three.exit_code, three.error) == ("FAILED", 3, "exit code 3")
    killed = await run_process("kill -TERM $$", RunContext(), shell=True)
    assert (killed.status, killed.exit_code, killed.error) == ("FAILED", -15, "killed by signal 15")
    missing = await run_process(["/no/such/program"], RunContext())
    assert (missing.status, missing.exit_code) == ("FAILED", 127) and "could not start" in (
        missing.error or ""
    )


async def test_what_a_job_leaves_running_ends_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "background"
    # The background process keeps the output pipe open: the job still ends when its shell does.
    out = await run_process(f"sleep 3600 & echo $! > {pid_file}; echo started", RunContext(), shell=True)
    assert (out.status, out.log_tail) == ("COMPLETED", "started\n")
    pid = int(pid_file.read_text())
    await wait_for_condition(lambda: not alive(pid), 10, "the background process to end")


async def test_timeout_stops_a_job_that_ignores_sigterm_and_floods(tmp_path: Path) -> None:
    flood = "import signal, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    sys.stdout.write('x' * 999 + '\\n')\n"
    started = time.monotonic()
    out = await run_process([PYTHON, "-c", flood], RunContext(timeout=1.0, grace=0.5))
    assert (out.status, out.error, out.exit_code) == ("FAILED", "timeout", -9)
    assert time.monotonic() - started < 15
    assert "x" * 999 + "\n" in out.log_tail
