"""The fault soak's workload and faults, drawn from one seed before anything runs.

Both are plain data (printed and saved with the results), so a run can be told apart from another
by its seed alone; only the moments the processes react at differ from one run to the next.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

PROJECT = "soak"
TASK = "soak"
ODD_OUTPUT = ("binary", "big", "longline", "unicode", "lookalike", "closed")
"""The odd outputs of :mod:`bench.soak_job`."""
ODD_LABELS = (
    "plain",
    "ünïcødé ✓ 日本語",
    "quote \" and ' and `back` $(not run) ; && |",
    "--looks-like-an-option",
    "{braces} %s %d \\n",
    " leading and trailing spaces ",
)
"""Values of the ``label`` parameter: passed as one argument, never through a shell."""
FAIL_CODE = 3
"""The exit code of the jobs meant to fail."""


@dataclasses.dataclass(frozen=True)
class Workload:
    waves: list[list[dict[str, Any]]]
    """Batches of job submissions (``POST /projects/{p}/jobs/batch`` bodies), in order."""
    fails: dict[str, bool]
    """Whether each job's program fails (by job name)."""
    depends: dict[str, list[str]]
    """The jobs each job depends on (by name; always inside its own batch)."""

    @property
    def jobs(self) -> int:
        return len(self.fails)

    @property
    def edges(self) -> int:
        return sum(len(ups) for ups in self.depends.values())


def make_workload(
    seed: int, jobs: int, waves: int, task: str, fail_rate: float = 0.02, long_rate: float = 0.02
) -> Workload:
    """About ``jobs`` jobs (a shape is never cut) in ``waves`` batches: single jobs, chains,
    diamonds (a root, children, a join) and fan-ins; bodies of 0.05 to 0.5 s, but ``long_rate``
    of them 3 to 8 s (longer than a lease of 4 s: only those can still run when their lease
    runs out); one job in ten with odd output; ``fail_rate`` of them exit non-zero."""
    rng = random.Random(f"workload-{seed}")
    per_wave = max(1, jobs // max(1, waves))
    out: list[list[dict[str, Any]]] = []
    fails: dict[str, bool] = {}
    depends: dict[str, list[str]] = {}
    total = 0

    def job(wave: int, ups: list[str]) -> dict[str, Any]:
        name = f"s{seed}-w{wave}-j{len(fails)}"
        fail = rng.random() < fail_rate
        fails[name] = fail
        depends[name] = list(ups)
        body: dict[str, Any] = {
            "name": name,
            "task": task,
            "priority": rng.choice((0, 0, 0, 1, 2)),
            "parameters": {
                "sleep": round(
                    rng.uniform(3.0, 8.0) if rng.random() < long_rate else rng.uniform(0.05, 0.5), 3
                ),
                "noise": rng.choice(ODD_OUTPUT) if rng.random() < 0.1 else "none",
                "exit": FAIL_CODE if fail else 0,
                "label": rng.choice(ODD_LABELS),
            },
        }
        if ups:
            body["depends"] = list(ups)
        return body

    while total < jobs:
        wave = len(out)
        batch: list[dict[str, Any]] = []
        while len(batch) < per_wave and total + len(batch) < jobs:
            shape = rng.random()
            if shape < 0.45:
                batch.append(job(wave, []))
            elif shape < 0.70:  # a chain
                prev: list[str] = []
                for _ in range(rng.randint(2, 5)):
                    batch.append(job(wave, prev))
                    prev = [batch[-1]["name"]]
            elif shape < 0.90:  # a diamond
                root = job(wave, [])
                children = [job(wave, [root["name"]]) for _ in range(rng.randint(2, 6))]
                batch += [root, *children, job(wave, [c["name"] for c in children])]
            else:  # a fan-in
                tops = [job(wave, []) for _ in range(rng.randint(3, 6))]
                batch += [*tops, job(wave, [t["name"] for t in tops])]
        out.append(batch)
        total += len(batch)
    return Workload(out, fails, depends)


@dataclasses.dataclass(frozen=True)
class Fault:
    kind: str
    """``worker_kill`` (SIGKILL, restarted after ``hold``), ``worker_term`` (SIGTERM: it drains,
    exits, and is restarted), ``worker_term_twice`` (two SIGTERMs 0.2 s apart), ``server_kill``
    (SIGKILL, restarted after ``hold``), ``server_stop`` (SIGSTOP, SIGCONT after ``hold``),
    ``db_restart`` (PostgreSQL stopped at once, started again after ``hold``)."""
    target: int
    """The worker's or server's index (0 for the database)."""
    at: float
    """Seconds after the start of the faults (a fault that comes late waits for the one before)."""
    hold: float


FAULT_MIX = {
    "worker_kill": 8,
    "worker_term": 6,
    "worker_term_twice": 1,
    "server_kill": 4,
    "server_stop": 4,
    "db_restart": 1,
}
"""Faults of each kind in a full run; ``--quick`` halves them (at least one of each)."""


def make_faults(
    seed: int, duration: float, lease: float, workers: int, servers: int, scale: float = 1.0
) -> list[Fault]:
    """The faults of a run, spread over ``duration`` seconds at random moments (about evenly, so
    that they do not pile up), each kind in :data:`FAULT_MIX` times ``scale`` (at least once)."""
    rng = random.Random(f"faults-{seed}")
    kinds = [k for k, n in FAULT_MIX.items() for _ in range(max(1, round(n * scale)))]
    rng.shuffle(kinds)
    step = duration / (len(kinds) + 1)
    faults: list[Fault] = []
    for i, kind in enumerate(kinds):
        at = round(step * (i + 1) + rng.uniform(-0.3, 0.3) * step, 2)
        if kind == "worker_kill":
            target, hold = rng.randrange(workers), rng.uniform(0.5, 2.0)
        elif kind in ("worker_term", "worker_term_twice"):
            target, hold = rng.randrange(workers), 0.0
        elif kind == "server_kill":  # sometimes shorter than the lease, sometimes longer
            target, hold = rng.randrange(servers), rng.uniform(1.0, 2.5 * lease)
        elif kind == "server_stop":  # always longer than the lease
            target, hold = rng.randrange(servers), lease + rng.uniform(1.5, 6.0)
        else:  # db_restart: down for two leases and more
            target, hold = 0, 2 * lease + rng.uniform(2.0, 5.0)
        faults.append(Fault(kind, target, max(1.0, at), round(hold, 2)))
    return sorted(faults, key=lambda f: f.at)
