"""Make sure a real SLURM is reachable for the SLURM formatter's tests.

When ``sbatch``/``squeue`` are missing or the node is not up, and we are root on Debian/Ubuntu,
``scripts/local-slurm.sh start`` installs and starts a one-node cluster (once per test run).
Where that is impossible (not root, no apt-get) the tests are skipped with the reason; where it
should have worked but did not, they fail with the script's output.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
START_SCRIPT = REPO / "scripts" / "local-slurm.sh"
UP_STATES = ("idle", "mixed", "allocated", "completing")
OWN_CONF_MARK = "# Written by WhatsNext scripts/local-slurm.sh"
SCRIPT_SETTINGS = ("SchedulerParameters=batch_sched_delay=0",)
"""Lines of the script's slurm.conf that a cluster it started before they were added lacks."""


@dataclass(frozen=True)
class SlurmStatus:
    ok: bool
    skip_reason: str | None = None
    """Set when SLURM cannot be installed here: the tests should be skipped."""
    error: str | None = None
    """Set when installing or starting SLURM failed where it should work: the tests should fail."""


def slurm_is_up() -> bool:
    """True when the SLURM client tools exist and a node accepts jobs."""
    if not all(shutil.which(tool) for tool in ("sbatch", "squeue", "scontrol", "scancel", "sinfo")):
        return False
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = [line.strip().rstrip("*~#!%$@^-") for line in proc.stdout.splitlines()]
    return proc.returncode == 0 and any(state in UP_STATES for state in states)


def _cannot_install_reason() -> str | None:
    if os.geteuid() != 0:
        return (
            "SLURM is not running and installing it needs root: run `sudo make slurm` "
            "(scripts/local-slurm.sh start) and run the tests again"
        )
    if shutil.which("apt-get") is None or not Path("/etc/debian_version").exists():
        return (
            "SLURM is not running and scripts/local-slurm.sh can only install it on "
            "Debian/Ubuntu (apt-get); start a SLURM cluster and run the tests again"
        )
    return None


def _ours_with_another_configuration() -> bool:
    """True when the running cluster is one that scripts/local-slurm.sh configured, and the script
    would now write another configuration (e.g. quicker scheduling): starting it again applies it."""
    conf = Path("/etc/slurm/slurm.conf")
    try:
        written = conf.read_text()
    except OSError:
        return False
    return written.startswith(OWN_CONF_MARK) and not all(
        line in written.splitlines() for line in SCRIPT_SETTINGS
    )


@functools.cache
def ensure_slurm() -> SlurmStatus:
    """Start SLURM if needed and possible (cached: at most one attempt per test run)."""
    if slurm_is_up() and not (_cannot_install_reason() is None and _ours_with_another_configuration()):
        return SlurmStatus(ok=True)
    reason = _cannot_install_reason()
    if reason is not None:
        return SlurmStatus(ok=False, skip_reason=reason)
    try:
        proc = subprocess.run(
            ["bash", str(START_SCRIPT), "start"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return SlurmStatus(ok=False, error=f"{START_SCRIPT} start did not finish in {exc.timeout:.0f} s")
    if proc.returncode != 0 or not slurm_is_up():
        output = (proc.stdout + proc.stderr).strip()[-3000:]
        return SlurmStatus(
            ok=False, error=f"{START_SCRIPT} start exited {proc.returncode}, SLURM is not up:\n{output}"
        )
    return SlurmStatus(ok=True)


SLURM_LOCK = Path(tempfile.gettempdir()) / "whatsnext-tests-slurm.lock"
"""Held by the test using the cluster: tests of other files run in parallel processes."""


@contextlib.contextmanager
def held_slurm() -> Iterator[None]:
    """The one-node SLURM (started here if needed and possible), for the calling test alone: the
    test processes running in parallel would otherwise share its few CPUs, and a job of one test
    left waiting for resources by another's looks like a job SLURM requeued."""
    status = ensure_slurm()
    if status.skip_reason:
        pytest.skip(status.skip_reason)
    if status.error:
        pytest.fail(status.error)
    with SLURM_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
