"""Jobs print anything at any rate and still reach their true outcome (a real worker and server)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Api, ServerProcess, wait_until
from helpers import spawn_worker, wait_for_file

from whatsnext.api.client.logship import LogShipper
from whatsnext.api.client.process import MAX_LINE, LineSplitter

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the worker runs jobs in POSIX process groups")

OUTPUT_JOB = r"""
import argparse, os, sys
p = argparse.ArgumentParser()
p.add_argument("--mode")
p.add_argument("--code", type=int, default=0)
p.add_argument("--dir", default="")
a = p.parse_args()
out = sys.stdout.buffer
if a.mode == "nul":
    out.write(b"before\x00after\n\xff\xfe not utf-8 \x00\x00\nlast line\n")
elif a.mode == "long-line":
    out.write(b"L" * 1_000_000 + b"\nafter the long line\n")
elif a.mode == "progress":  # 4 MB of progress bar redraws, never a newline
    i = size = 0
    while size < 4_000_000:
        bar = b"progress %8d\r" % i
        out.write(bar)
        size += len(bar)
        i += 1
    out.write(b"progress done")
elif a.mode == "no-newline":
    out.write(b"N" * 100_000)
elif a.mode == "flood":
    with open(os.path.join(a.dir, "flood.pid"), "w") as f:
        f.write(str(os.getpid()))
    line = b"F" * 1000 + b"\x00\n"
    while True:
        out.write(line)
out.flush()
sys.exit(a.code)
"""

FINITE = {
    # name: (parameters, status, exit code, texts the log tail holds)
    "nul": (
        {"mode": "nul"},
        "COMPLETED",
        0,
        ["before\ufffdafter\n\ufffd\ufffd not utf-8 \ufffd\ufffd\nlast line\n"],
    ),
    "nul-failing": ({"mode": "nul", "code": 3}, "FAILED", 3, ["before\ufffdafter"]),
    "long-line": ({"mode": "long-line"}, "COMPLETED", 0, ["L" * 1000, " bytes cut]\nafter the long line\n"]),
    "progress": ({"mode": "progress"}, "COMPLETED", 0, ["progress done\n"]),
    "no-newline": ({"mode": "no-newline"}, "COMPLETED", 0, ["N" * 1000, " bytes cut]\n"]),
}


def test_line_splitting() -> None:
    lines = LineSplitter(max_line=100)
    assert lines.feed(b"one\r\ntwo\nthree\r") == ["one", "two", "three"]
    assert lines.feed(b"\nfour\x00\xff") == []  # the \n completes the \r\n of "three"
    assert lines.feed(b"x" * 500 + b"\n") == ["four\ufffd\ufffd" + "x" * 54 + " [... 446 bytes cut]"]
    assert lines.feed(b"10%\r20%\r30%\r") == ["30%"]  # redraws overwritten within one read
    assert lines.feed(b"40%\rdone") == ["40%"] and lines.close() == ["done"] and lines.close() == []
    assert all(len(line.encode()) <= MAX_LINE for line in LineSplitter().feed(b"y" * 10 * MAX_LINE + b"\n"))


async def _round_trip() -> None:
    """What a request costs the caller here: one turn of the event loop (a future resolved on the
    loop's next pass), during which the flooding job's output keeps arriving."""
    loop = asyncio.get_running_loop()
    turn = loop.create_future()
    loop.call_soon(turn.set_result, None)
    await turn


class FloodedServer:
    """Takes every batch of lines; each one it takes, the flooding job has printed as much again."""

    def __init__(self) -> None:
        self.lines: dict[int, list[str]] = {}
        self.flood: Callable[[str], None] | None = None

    async def post(self, path: str, body: list[dict[str, Any]], timeout: float | None = None) -> Any:
        assert path == "/jobs/logs"
        await _round_trip()
        for entry in body:
            self.lines.setdefault(entry["id"], []).extend(entry["lines"])
        if self.flood is not None:
            for _ in range(300):
                self.flood("F" * 100)
        return {"results": [{"id": entry["id"], "code": 200} for entry in body]}


async def test_a_job_that_ends_beside_a_flood_has_its_lines_sent_at_once() -> None:
    """The worker sends the last lines of a job that ended before its report; a job beside it
    printing without pause (its buffer always due) does not hold them up until the flush times out."""
    server = FloodedServer()
    shipper = LogShipper(server)  # type: ignore[arg-type]
    flood, quiet = shipper.open(1, 1), shipper.open(2, 1)
    for _ in range(300):
        flood("F" * 100)
    server.flood = flood
    sender = asyncio.create_task(shipper.run())
    try:
        await wait_until(lambda: asyncio.sleep(0, bool(server.lines)), what="the first batch")
        quiet("last words")
        await asyncio.wait_for(shipper.finish(2, timeout=60), 10)
        assert server.lines[2] == ["last words"]
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender


async def test_output_of_any_shape(server: ServerProcess, api: Api, project: dict, tmp_path: Path) -> None:
    p = project["name"]
    script = tmp_path / "output.py"
    script.write_text(OUTPUT_JOB)
    ids: dict[str, int] = {}
    for name, (parameters, *_) in FINITE.items():
        ids[name] = (
            await api.ok("POST", f"/projects/{p}/jobs", {"name": name, "task": "t", "parameters": parameters})
        )["id"]
    flood = await api.ok(
        "POST",
        f"/projects/{p}/jobs",
        {"name": "flood", "task": "t", "parameters": {"mode": "flood", "dir": str(tmp_path)}},
    )
    log = tmp_path / "worker.log"
    worker = spawn_worker(server.url, p, log, "--cpus", str(len(FINITE) + 1), script=script)
    try:
        finished = ("COMPLETED", "FAILED", "CANCELLED")

        async def all_finished() -> bool:
            for jid in ids.values():
                if (await api.ok("GET", f"/jobs/{jid}"))["status"] not in finished:
                    return False
            return True

        await wait_until(all_finished, timeout=120, what="the finite jobs to finish")
        # Their lines reached the server before their reports, the flood running beside them.
        lines = [x["line"] for x in (await api.ok("GET", f"/jobs/{ids['nul']}/logs"))["lines"]]
        assert lines == ["before\ufffdafter", "\ufffd\ufffd not utf-8 \ufffd\ufffd", "last line"]
        await wait_for_file(tmp_path / "flood.pid", timeout=60)
        flood_pid = int((tmp_path / "flood.pid").read_text())
        assert (await api.ok("GET", f"/jobs/{flood['id']}"))["status"] == "RUNNING"

        loop = asyncio.get_running_loop()
        asked = loop.time()
        await api.ok("POST", f"/jobs/{flood['id']}/cancel")
        worker.send_signal(signal.SIGUSR1)  # its next heartbeat, which carries the cancel, now
        # The worker stops the job and, the queue being empty, exits.
        assert await asyncio.to_thread(worker.wait, 30) == 0, log.read_text()[-3000:]
        assert loop.time() - asked < 15
        stopped = await api.ok("GET", f"/jobs/{flood['id']}")
        assert stopped["status"] == "CANCELLED"
        assert "\x00" not in (stopped["log_tail"] or "")
        with pytest.raises(ProcessLookupError):
            os.kill(flood_pid, 0)  # gone (reaped by its supervisor)

        for name, (_, status, code, texts) in FINITE.items():
            job = await api.ok("GET", f"/jobs/{ids[name]}")
            assert (job["status"], job["exit_code"]) == (status, code), (name, job)
            tail = job["log_tail"] or ""
            assert "\x00" not in tail and all(text in tail for text in texts), (name, tail[-500:])
        long = [x["line"] for x in (await api.ok("GET", f"/jobs/{ids['long-line']}/logs"))["lines"]]
        assert long[-1] == "after the long line" and long[0].startswith("L" * 1000)
        assert long[0].endswith(" bytes cut]")
        assert all(len(line) <= MAX_LINE for line in long)
        bars = [x["line"] for x in (await api.ok("GET", f"/jobs/{ids['progress']}/logs"))["lines"]]
        assert bars[-1] == "progress done" and len(bars) < 1000  # redraws read together are one line
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
