"""The fault soak's job program: records when its body runs, prints odd output, exits as told.

``python -S soak_job.py --out DIR --sleep S --noise KIND --exit N --label TEXT``

Appends to ``DIR/<job id>.<attempt>.<pid>`` one line when the body starts (a JSON object: job,
attempt, pid, its parent and grandparent: the supervisor and the worker), then one line with the
time after each step of :data:`STEP` seconds of work, and a last line ``end <time> <exit code>``
when its body is done. A body that is suspended writes nothing meanwhile and one that is killed
stops writing: the lines say when it really ran (see :mod:`bench.soak_count`).

The work is ``S`` seconds of steps, counted in steps and not on the clock, so a body that was
suspended does the rest of its work when it resumes. Standard library only, and imported by
nothing: it runs under whatever checkout is being soaked.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

STEP = 0.02
"""Seconds of work between two lines of the record."""


def arg(name: str, default: str) -> str:
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


def parent_of(pid: int) -> int:
    """The parent of ``pid`` (0 when it is gone), from ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def noise(kind: str, rng: random.Random) -> None:
    """Output a job may well produce, written before the work."""
    out = sys.stdout.buffer
    if kind == "binary":  # NUL bytes, invalid UTF-8, no newline
        out.write(bytes(rng.randrange(256) for _ in range(4096)))
    elif kind == "big":  # 2 MiB of lines
        line = b"x" * 127 + b"\n"
        for _ in range(16384):
            out.write(line)
    elif kind == "longline":  # 512 KiB without a newline, on stderr
        sys.stderr.buffer.write(b"y" * 524288)
        sys.stderr.flush()
    elif kind == "unicode":  # emoji, right-to-left, combining marks, colours, progress bars
        for i in range(50):
            text = f"\x1b[3{i % 8}m{i:3d}% \u2588\u2591 \U0001f680 \u05e9\u05dc\u05d5\u05dd e\u0301\x1b[0m\r"
            out.write(text.encode())
        out.write("\n\u202etxet desrever\u202c\n".encode())
    elif kind == "lookalike":  # lines that look like the worker's own logs and markers
        out.write(b'{"event": "job finished", "level": "error", "status": "FAILED"}\n')
        out.write(b"Traceback (most recent call last):\n  (not really)\n")
        out.write(b"WHATSNEXT_RESULT=nothing\n")
    elif kind == "closed":  # stdout and stderr closed early
        out.write(b"closing my output\n")
        out.flush()
        os.close(1)
        os.close(2)
        return
    out.flush()


def main() -> None:
    out_dir = arg("--out", ".")
    seconds = float(arg("--sleep", "0.1"))
    code = int(arg("--exit", "0"))
    job = os.environ.get("WHATSNEXT_JOB_ID", "0")
    attempt = os.environ.get("WHATSNEXT_ATTEMPT", "0")
    pid = os.getpid()
    ppid = os.getppid()
    head = {
        "job": int(job),
        "attempt": int(attempt),
        "pid": pid,
        "ppid": ppid,
        "gppid": parent_of(ppid),
        "start": time.time(),
    }
    fd = os.open(f"{out_dir}/{job}.{attempt}.{pid}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, (json.dumps(head) + "\n").encode())
    noise(arg("--noise", "none"), random.Random(pid))
    steps = max(1, round(seconds / STEP))
    for _ in range(steps):
        time.sleep(STEP)
        os.write(fd, b"%.4f\n" % time.time())
    os.write(fd, b"end %.4f %d\n" % (time.time(), code))
    os.close(fd)
    sys.exit(code)


if __name__ == "__main__":
    main()
