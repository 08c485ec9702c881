"""A job program for tests: records its argv, environment and timing, then sleeps or fails on request.

Usage: record.py --out DIR [--sleep S] [--exit N] [--wait-for FILE] [anything else...]
Writes DIR/<WHATSNEXT_JOB_ID>.json with argv, start/end times and the GPU ids it was given.
"""

import json
import os
import sys
import threading
import time
from pathlib import Path


def arg(name, default=None):
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


def publish(path, data):
    """Write ``path`` whole or not at all: a test that sees the file reads all of it."""
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(data))
    os.replace(part, path)


out = Path(arg("--out", "."))
job = os.environ.get("WHATSNEXT_JOB_ID", "x")
record = {
    "argv": sys.argv[1:],
    "job": job,
    "pid": os.getpid(),
    "start": time.time(),
    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "order": os.environ.get("CUDA_DEVICE_ORDER"),
    "attempt": os.environ.get("WHATSNEXT_ATTEMPT"),
    "project": os.environ.get("WHATSNEXT_PROJECT"),
}
publish(out / f"{job}.started", record)
print(f"job {job} started", flush=True)
wait_for = arg("--wait-for")
if wait_for:
    while not Path(wait_for).exists():
        threading.Event().wait(0.02)  # the test creates the file when the job may go on
threading.Event().wait(float(arg("--sleep", "0")))  # the job's own work
record["end"] = time.time()
publish(out / f"{job}.json", record)
print(f"job {job} done", flush=True)
sys.exit(int(arg("--exit", "0")))
