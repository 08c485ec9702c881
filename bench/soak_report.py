"""The fault soak's figures: reads what a run left (job records, logs, final states) through
:mod:`bench.soak_count` and prints them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bench.soak_count import (
    Body,
    LogCount,
    count_log,
    dag_violations,
    expected_states,
    overlaps,
    parse_body,
    repeats,
    segments,
    state_table,
)
from bench.soak_plan import TASK, Workload, make_workload


def read_bodies(folder: Path) -> tuple[list[Body], int]:
    """Every record in ``folder``, and how many could not be read."""
    bodies: list[Body] = []
    bad = 0
    for path in sorted(folder.iterdir()):
        body = parse_body(path.read_text(errors="replace"))
        if body is None:
            bad += 1
        else:
            bodies.append(body)
    return bodies, bad


def count_logs(paths: list[Path]) -> LogCount:
    total = LogCount()
    for path in paths:
        total.add(count_log(path.read_text(errors="replace")))
    return total


def analyse(workload: Workload, inputs: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The figures of a run from what it left in ``run_dir`` and ``inputs``: the jobs' final
    states, when each killed worker died, when each worker's server was away, the job processes
    left over (as saved in the results: keys may be strings)."""
    jobs: dict[str, dict[str, Any]] = inputs["jobs"]
    killed_workers = {int(pid): float(t) for pid, t in inputs["killed_workers"].items()}
    cut_off = {int(pid): [(float(a), float(b)) for a, b in spans] for pid, spans in inputs["cut_off"].items()}
    orphans: dict[str, list[int]] = inputs["orphans"]
    bodies_dir, logs_dir = run_dir / "bodies", run_dir / "logs"
    bodies, unreadable = read_bodies(bodies_dir)
    ids = {name: int(job["id"]) for name, job in jobs.items()}
    names = {i: n for n, i in ids.items()}
    expected = expected_states(workload.fails, workload.depends)
    actual = {name: jobs[name]["status"] if name in jobs else "MISSING" for name in expected}
    table = state_table(expected, actual)
    edges = [
        (ids[up], ids[name])
        for name, ups in workload.depends.items()
        for up in ups
        if up in ids and name in ids
    ]
    overlapping = overlaps(bodies)
    repeated = repeats(bodies, killed_workers, cut_off)
    dag = dag_violations(bodies, edges)
    server_log = count_logs(sorted(logs_dir.glob("server*.log")))
    server_out = [p for p in sorted(logs_dir.glob("server*.out")) if p.stat().st_size]
    worker_log = count_logs(sorted(logs_dir.glob("worker*.log")))
    per_job: dict[int, int] = {}
    for body in bodies:
        per_job[body.job] = per_job.get(body.job, 0) + 1
    causes = {c: sum(1 for r in repeated if r.cause == c) for c in ("worker_killed", "server_away", "other")}
    figures = {
        "jobs": workload.jobs,
        "dependencies": len(edges),
        "states": table["states"],
        "wrong_state": table["wrong"],
        "stuck": table["stuck"],
        "dag_violations": len(dag),
        "overlapping_jobs": len({o.job for o in overlapping}),
        "overlapping_same_worker": len({o.job for o in overlapping if o.same_worker}),
        "repeated_jobs": len(repeated),
        "repeated_after_worker_kill": causes["worker_killed"],
        "repeated_after_server_away": causes["server_away"],
        "repeated_other": causes["other"],
        "orphans_live": len(orphans["live_after_all_ended"]),
        "orphans_left": len(orphans["left_after_workers_stopped"]),
        "http_500_logged": server_log.http_500,
        "server_error_records": server_log.errors,
        "server_non_json_lines": server_log.non_json,
        "server_stdout_files": len(server_out),
        "worker_non_json_lines": worker_log.non_json,
        "bodies": len(bodies),
        "bodies_paused": sum(1 for b in bodies if len(segments(b)) > 1),
        "bodies_unfinished": sum(1 for b in bodies if b.end is None),
        "jobs_run_more_than_once": sum(1 for n in per_job.values() if n > 1),
        "unreadable_records": unreadable,
    }
    clean = not any(
        figures[k]
        for k in (
            "wrong_state",
            "stuck",
            "dag_violations",
            "overlapping_jobs",
            "repeated_other",
            "orphans_live",
            "orphans_left",
            "http_500_logged",
            "server_non_json_lines",
        )
    )
    return {
        "clean": clean,
        "figures": figures,
        "details": {
            "wrong_jobs": [
                {"name": n, "expected": expected[n], "actual": actual[n], "id": ids.get(n)}
                for n in table["wrong_jobs"]
            ],
            "stuck_jobs": [{"name": n, "status": actual[n], "id": ids.get(n)} for n in table["stuck_jobs"]],
            "overlaps": [dataclasses.asdict(o) | {"name": names.get(o.job)} for o in overlapping],
            "repeats": [dataclasses.asdict(r) | {"name": names.get(r.job)} for r in repeated],
            "dag_violations": [{"upstream": u, "downstream": d} for u, d in dag[:50]],
            "orphans": orphans,
            "server_log_samples": server_log.samples,
            "worker_log_samples": worker_log.samples,
        },
    }


def reanalyse(path: Path) -> dict[str, Any]:
    """Counts a past run again (its JSON and the folder beside it) and rewrites its results."""
    result: dict[str, Any] = json.loads(path.read_text())
    cfg = result["config"]
    workload = make_workload(cfg["seed"], cfg["jobs"], cfg["waves"], TASK)
    result.update(analyse(workload, result["inputs"], path.with_suffix("")))
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def render(result: dict[str, Any]) -> str:
    """The figures as a short table."""
    f = result["figures"]
    run = result.get("run", {})
    kinds: dict[str, int] = {}
    for fault in run.get("faults", []):
        if "skipped" not in fault:
            kinds[fault["kind"]] = kinds.get(fault["kind"], 0) + 1
    states = ", ".join(f"{s} {c['actual']}/{c['expected']}" for s, c in f["states"].items())
    rows = [
        ("jobs (dependencies)", f"{f['jobs']} ({f['dependencies']})"),
        ("faults", ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"),
        ("final states, actual/expected", states),
        ("jobs in a wrong state", f["wrong_state"]),
        ("stuck jobs", f["stuck"]),
        ("DAG order violations", f["dag_violations"]),
        (
            "jobs with overlapping bodies",
            f"{f['overlapping_jobs']} (same worker: {f['overlapping_same_worker']})",
        ),
        (
            "jobs whose completed body ran again",
            f"{f['repeated_jobs']} (its worker killed: {f['repeated_after_worker_kill']}, its server away: "
            f"{f['repeated_after_server_away']}, other: {f['repeated_other']})",
        ),
        ("job processes alive after all jobs ended", f["orphans_live"]),
        ("job processes left after workers stopped", f["orphans_left"]),
        ("HTTP 500s (server log; /metrics)", f"{f['http_500_logged']}; {run.get('metrics_500', '?')}"),
        ("server log lines that are not JSON", f["server_non_json_lines"]),
        (
            "bodies run (jobs run more than once; bodies paused, unfinished)",
            f"{f['bodies']} ({f['jobs_run_more_than_once']}; {f['bodies_paused']}, {f['bodies_unfinished']})",
        ),
        ("unexpected process exits", len(run.get("unexpected_exits", []))),
        (
            "seconds: faults done, all ended, wall",
            f"{run.get('faults_done_s')}, {run.get('all_ended_s')}, {run.get('wall_s')}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("verdict: " + ("clean" if result["clean"] else "NOT clean (see details in the JSON)"))
    return "\n".join(lines)
