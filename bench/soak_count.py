"""What the fault soak counts, from the records its job bodies left and the servers' logs.

Pure functions over plain values, so that they can be tested without processes
(``tests/unit/test_bench_soak.py``). A *body* is one process of the job program
(:mod:`bench.soak_job`): one attempt of a job as it actually ran.

* **Overlapping bodies**: two bodies of one job that ran at the same time. A body *runs* while it
  writes its lines (one per step of work); a gap longer than ``gap`` seconds between two lines
  means it was suspended (or starved), and a body that was killed ran until its last line.
* **Repeated bodies**: a body of a job started after another body of that job had completed its
  work (written its ``end`` line with exit code 0). Split by cause: the worker that ran the
  completed body was killed (while the body ran or before it could report); its server was away
  while the other one served (the queue could not tell the worker from a dead one); or neither
  (the work was done and the queue could have known it).
* **DAG order violations**: a body of a job started before any body of a job it depends on had
  completed.
* **Final states** against what the workload asks: a job whose program exits non-zero ends
  FAILED, what depends on it (transitively) BLOCKED, every other job COMPLETED.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

GAP = 0.3
"""Seconds without a line after which a body counts as not running (its steps are 0.02 s)."""
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "BLOCKED"})
SERVER_ERROR_EVENTS = frozenset({"unhandled error", "database error", "database driver error"})
"""Server log events that go with an HTTP 500 answer."""


@dataclasses.dataclass(frozen=True)
class Body:
    """One run of the job program, read from its record."""

    job: int
    attempt: int
    pid: int
    worker: int
    """The grandparent process: the worker (the parent is the job's supervisor)."""
    start: float
    ticks: tuple[float, ...] = ()
    end: float | None = None
    exit_code: int | None = None

    @property
    def completed(self) -> bool:
        """The body did all its work and meant to exit 0."""
        return self.end is not None and self.exit_code == 0

    @property
    def last(self) -> float:
        """The last time it is known to have run."""
        return self.end if self.end is not None else (self.ticks[-1] if self.ticks else self.start)


def parse_body(text: str) -> Body | None:
    """A record as :mod:`bench.soak_job` writes it (None when even its first line is missing or
    cut; a last line cut by a kill is ignored)."""
    lines = text.split("\n")
    try:
        head = json.loads(lines[0])
    except ValueError:
        return None
    ticks: list[float] = []
    end: float | None = None
    code: int | None = None
    for line in lines[1:]:
        if line.startswith("end "):
            parts = line.split()
            if len(parts) == 3:
                end, code = float(parts[1]), int(parts[2])
            continue
        try:
            ticks.append(float(line))
        except ValueError:
            continue
    return Body(
        job=int(head["job"]),
        attempt=int(head["attempt"]),
        pid=int(head["pid"]),
        worker=int(head.get("gppid") or 0),
        start=float(head["start"]),
        ticks=tuple(ticks),
        end=end,
        exit_code=code,
    )


def segments(body: Body, gap: float = GAP) -> list[tuple[float, float]]:
    """The spans during which ``body`` ran: its start, lines and end, split where two consecutive
    ones are more than ``gap`` seconds apart."""
    points = [body.start, *body.ticks] + ([body.end] if body.end is not None else [])
    spans: list[tuple[float, float]] = []
    first = last = points[0]
    for t in points[1:]:
        if t - last > gap:
            spans.append((first, last))
            first = t
        last = t
    spans.append((first, last))
    return spans


def overlap_seconds(a: Body, b: Body, gap: float = GAP) -> float:
    """How long ``a`` and ``b`` both ran at once."""
    total = 0.0
    for a0, a1 in segments(a, gap):
        for b0, b1 in segments(b, gap):
            total += max(0.0, min(a1, b1) - max(a0, b0))
    return total


@dataclasses.dataclass(frozen=True)
class Overlap:
    job: int
    attempts: tuple[int, int]
    pids: tuple[int, int]
    seconds: float
    same_worker: bool


def by_job(bodies: Iterable[Body]) -> dict[int, list[Body]]:
    out: dict[int, list[Body]] = defaultdict(list)
    for body in bodies:
        out[body.job].append(body)
    for runs in out.values():
        runs.sort(key=lambda b: (b.start, b.pid))
    return dict(out)


def overlaps(bodies: Iterable[Body], gap: float = GAP) -> list[Overlap]:
    """Every pair of bodies of one job that ran at the same time."""
    found: list[Overlap] = []
    for job, runs in sorted(by_job(bodies).items()):
        for i, a in enumerate(runs):
            for b in runs[i + 1 :]:
                if b.start > a.last + gap:
                    continue
                seconds = overlap_seconds(a, b, gap)
                if seconds > 0:
                    found.append(
                        Overlap(
                            job,
                            (a.attempt, b.attempt),
                            (a.pid, b.pid),
                            round(seconds, 3),
                            a.worker == b.worker,
                        )
                    )
    return found


@dataclasses.dataclass(frozen=True)
class Repeat:
    job: int
    completed_attempt: int
    again_attempt: int
    cause: str
    """``worker_killed``: the worker of the completed body was killed (or died) after the body
    started and before the new start (a body may finish just after its worker died: nobody is
    left to report it); ``server_away``: its server was away (killed or paused) between the
    body's end and the new start while the other one served (a partition: the queue lost the
    worker); ``other``."""


def repeats(
    bodies: Iterable[Body],
    killed_workers: Mapping[int, float] | None = None,
    cut_off: Mapping[int, Sequence[tuple[float, float]]] | None = None,
) -> list[Repeat]:
    """Each job with a body that started after one of its bodies had completed (the first such
    pair per job). ``killed_workers`` gives when each worker pid that was killed died, ``cut_off``
    when its server was away (epoch seconds, as the bodies' times)."""
    found: list[Repeat] = []
    for job, runs in sorted(by_job(bodies).items()):
        done = [b for b in runs if b.completed]
        if not done:
            continue
        first = min(done, key=lambda b: b.end or 0.0)
        end = first.end
        assert end is not None
        again = [b for b in runs if b is not first and b.start > end]
        if not again:
            continue
        killed = (killed_workers or {}).get(first.worker)
        if killed is not None and first.start < killed < again[0].start:
            cause = "worker_killed"
        elif any(t0 < again[0].start and t1 > end for t0, t1 in (cut_off or {}).get(first.worker, ())):
            cause = "server_away"
        else:
            cause = "other"
        found.append(Repeat(job, first.attempt, again[0].attempt, cause))
    return found


def dag_violations(bodies: Iterable[Body], edges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each dependency ``(upstream, downstream)`` whose downstream job had a body start before any
    body of the upstream job had completed (or with no completed upstream body at all)."""
    runs = by_job(bodies)
    found: list[tuple[int, int]] = []
    for up, down in edges:
        started = [b.start for b in runs.get(down, [])]
        if not started:
            continue
        ends = [b.end for b in runs.get(up, []) if b.completed and b.end is not None]
        if not ends or min(started) < min(ends):
            found.append((up, down))
    return found


def expected_states(fails: Mapping[str, bool], depends: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """What each job (by name) should end as: FAILED when its program fails, BLOCKED when a job it
    depends on (transitively) fails, else COMPLETED. ``depends`` must be acyclic."""
    out: dict[str, str] = {}

    def state(name: str) -> str:
        if name not in out:
            ups = [state(up) for up in depends.get(name, ())]
            if any(s != "COMPLETED" for s in ups):
                out[name] = "BLOCKED"
            else:
                out[name] = "FAILED" if fails[name] else "COMPLETED"
        return out[name]

    for name in fails:
        state(name)
    return out


def state_table(expected: Mapping[str, str], actual: Mapping[str, str]) -> dict[str, Any]:
    """Jobs per final state, expected and actual; how many differ; which are not ended (stuck)."""
    states = sorted(set(expected.values()) | set(actual.values()))
    counts = {
        s: {
            "expected": sum(1 for v in expected.values() if v == s),
            "actual": sum(1 for v in actual.values() if v == s),
        }
        for s in states
    }
    wrong = sorted(n for n, s in expected.items() if actual.get(n) != s)
    stuck = sorted(n for n, s in actual.items() if s not in TERMINAL)
    return {
        "states": counts,
        "wrong": len(wrong),
        "wrong_jobs": wrong[:50],
        "stuck": len(stuck),
        "stuck_jobs": stuck[:50],
    }


@dataclasses.dataclass
class LogCount:
    lines: int = 0
    non_json: int = 0
    errors: int = 0
    """Records at level error or above."""
    http_500: int = 0
    """Records of the errors that answer HTTP 500."""
    samples: list[str] = dataclasses.field(default_factory=list)
    """Some of the lines that are not JSON, and some error records."""

    def add(self, other: LogCount) -> None:
        self.lines += other.lines
        self.non_json += other.non_json
        self.errors += other.errors
        self.http_500 += other.http_500
        self.samples += other.samples[: max(0, 20 - len(self.samples))]


def count_log(text: str, samples: int = 5) -> LogCount:
    """A server's log: lines that are not JSON objects, error records, those that go with a 500."""
    count = LogCount()
    for line in text.splitlines():
        if not line.strip():
            continue
        count.lines += 1
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            count.non_json += 1
            if len(count.samples) < samples:
                count.samples.append(line[:300])
            continue
        if str(record.get("level", "")).lower() in {"error", "critical", "exception"}:
            count.errors += 1
            if record.get("event") in SERVER_ERROR_EVENTS:
                count.http_500 += 1
            if len(count.samples) < samples:
                count.samples.append(line[:300])
    return count
