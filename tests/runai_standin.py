"""A stand-in ``runai`` for the allocator's tests: the commands the RUN:AI formatter's stand-in
answers (``training submit/describe/logs/delete``, CLI v2), for several workloads at once, and it
runs each workload's ``--command -- ARGV`` as a local process, as a container would: ``describe``
says Pending (while ``hold`` is set), Running, then Succeeded or Failed with its exit code; ``delete``
stops it; ``logs`` prints its output. Every call is recorded."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

SCRIPT = """\
#!{python}
import json, os, signal, subprocess, sys
from pathlib import Path

here = Path({root!r})
with (here / "calls.log").open("a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args and args[0] == "training":
    args = args[1:]
verb, name = args[0], args[1]
state = json.loads((here / "state.json").read_text())
folder = here / "workloads" / name

def start():
    argv = json.loads((folder / "argv.json").read_text())
    out = (folder / "out.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, str(folder), *argv],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    (folder / "pid").write_text(str(proc.pid))

RUN = (
    "import subprocess, sys; from pathlib import Path; "
    "rc = subprocess.call(sys.argv[2:]); Path(sys.argv[1], 'rc').write_text(str(rc))"
)

if verb == "submit":
    if state.get("submit_error"):
        print(state["submit_error"], file=sys.stderr)
        sys.exit(1)
    folder.mkdir(parents=True)
    argv = args[args.index("--") + 1:]
    (folder / "argv.json").write_text(json.dumps(argv))
    if not state.get("hold"):
        start()
    print("The job has been submitted successfully")
elif not folder.exists() or (folder / "deleted").exists():
    print(f"workload {{name}} not found", file=sys.stderr)
    sys.exit(1)
elif verb == "describe":
    if not (folder / "pid").exists():
        if not state.get("hold"):
            start()
        status, code = "Pending", None
    elif (folder / "rc").exists():
        code = int((folder / "rc").read_text())
        status = "Succeeded" if code == 0 else "Failed"
    else:
        status, code = "Running", None
    pods = [{{"name": name + "-0-0", "status": status}}]
    if code is not None:
        pods[0]["containers"] = [{{"name": "main", "exitCode": code}}]
    print(json.dumps({{"general": {{"name": name, "status": status}}, "pods": pods}}))
elif verb == "logs":
    log = folder / "out.log"
    sys.stdout.write(log.read_text() if log.exists() else "")
elif verb == "delete":
    if (folder / "pid").exists() and not (folder / "rc").exists():
        try:
            os.killpg(int((folder / "pid").read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
    (folder / "deleted").touch()
    print("deleted")
"""


class RunaiStandIn:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "workloads").mkdir(exist_ok=True)
        self.bin = root / "runai"
        self.bin.write_text(SCRIPT.format(python=sys.executable, root=str(root)))
        self.bin.chmod(0o755)
        (root / "calls.log").touch()
        self.set(hold=False)

    def set(self, **state: Any) -> None:
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.root / "state.json")

    def calls(self, verb: str | None = None) -> list[list[str]]:
        found = [json.loads(line) for line in (self.root / "calls.log").read_text().splitlines()]
        return [c for c in found if verb is None or verb in c[:2]]

    def workloads(self) -> list[str]:
        return sorted(p.name for p in (self.root / "workloads").iterdir())

    def stop_all(self) -> None:
        """Stop what still runs (a test that failed half way)."""
        for folder in (self.root / "workloads").iterdir():
            if (folder / "pid").exists() and not (folder / "rc").exists():
                try:
                    os.killpg(int((folder / "pid").read_text()), signal.SIGKILL)
                except ProcessLookupError:
                    pass
