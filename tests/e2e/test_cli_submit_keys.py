"""`jobs add` and `jobs sweep` with keys, conditions and group dependencies, against a real
server and a real worker: a sweep submitted again with --dedupe queues nothing (before and after
its jobs ran), only the new combinations when the grid grew; --unique-key answers the job
already there; --depends ID:on and --depends-group NAME:on reach the job; warnings go to stderr;
bad specifications are usage errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Api
from helpers import PYTHON, RECORD, cli, records


def _srv(api: Api) -> Any:
    class _S:
        url = api.base

    return _S()


def _task(api: Api, project: str, out: Path) -> None:
    made = cli(
        _srv(api), "tasks", "add", "train", "--project", project,
        "--command", f"{PYTHON} {RECORD} --out {out} --lr {{lr}} --seed {{seed}}",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr


async def test_a_sweep_with_dedupe_is_queued_once(api: Api, project: dict[str, Any], tmp_path: Path) -> None:
    srv, p = _srv(api), project["name"]
    _task(api, p, tmp_path)
    sweep = (
        "jobs",
        "sweep",
        "train",
        "--project",
        p,
        "--grid",
        "lr=0.1,0.01",
        "--grid",
        "seed=0,1",
        "--dedupe",
    )

    first = cli(srv, *sweep)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("queued 4 jobs in group train-sweep-") and "\nexisting" not in first.stdout
    again = cli(srv, *sweep, "--json")
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert answer["existing"] == [True] * 4 and answer["count"] == 4
    group = answer["group"]
    assert first.stdout.split()[5].rstrip(":") == group, "the same sweep, the same group"
    jobs = (await api.ok("GET", f"/projects/{p}/jobs?group={group}"))["jobs"]
    assert sorted(j["id"] for j in jobs) == sorted(answer["ids"])

    # The jobs run; their keys stay: the same sweep after they completed queues nothing either.
    worked = cli(srv, "worker", "--project", p, "--cpus", "4", "--gpus", "none")
    assert worked.returncode == 0, worked.stderr
    assert len(records(tmp_path)) == 4
    after = cli(srv, *sweep)
    assert after.returncode == 0, after.stderr
    assert after.stdout.startswith("existing 4 jobs") and "\nqueued" not in after.stdout

    # A grown grid queues only what is new (in the same group: its name comes from the keys of
    # every job, so the grown sweep names its group itself).
    grown = cli(srv, *sweep[:-2], "seed=0,1,2", "--dedupe", "--group", group)
    assert grown.returncode == 0, grown.stderr
    assert grown.stdout.startswith(f"queued 2 jobs in group {group}: ")
    assert "existing 4 jobs" in grown.stdout
    g = await api.ok("GET", f"/projects/{p}/groups/{group}")
    assert g["total"] == 6 and g["counts"] == {"COMPLETED": 4, "PENDING": 2}


async def test_jobs_add_with_a_unique_key(api: Api, project: dict[str, Any]) -> None:
    srv, p = _srv(api), project["name"]
    add = ("jobs", "add", "report", "--project", p, "--param", "day=1", "--unique-key", "report-day-1")
    first = cli(srv, *add, "--json")
    assert first.returncode == 0, first.stderr
    job = json.loads(first.stdout)
    assert job["existing"] is False and job["unique_key"] == "report-day-1"
    again = cli(srv, *add)
    assert again.returncode == 0, again.stderr
    assert (
        again.stdout
        == f"existing job {job['id']} (report, unique key report-day-1): PENDING; nothing queued\n"
    )

    other = cli(
        srv, "jobs", "add", "report", "--project", p, "--param", "day=2", "--unique-key", "report-day-1"
    )
    assert other.returncode == 1
    assert "unique_key 'report-day-1' belongs to job" in other.stderr and "parameters" in other.stderr

    deduped = cli(srv, "jobs", "add", "report", "--project", p, "--param", "day=1", "--dedupe", "--json")
    twice = cli(srv, "jobs", "add", "report", "--project", p, "--param", "day=1", "--dedupe", "--json")
    assert deduped.returncode == twice.returncode == 0, deduped.stderr + twice.stderr
    made, found = json.loads(deduped.stdout), json.loads(twice.stdout)
    assert made["unique_key"].startswith("auto:") and (made["existing"], found["existing"]) == (False, True)
    assert found["id"] == made["id"] and made["id"] != job["id"]
    assert len((await api.ok("GET", f"/projects/{p}/jobs"))["jobs"]) == 2


async def test_dependencies_with_conditions_and_groups(api: Api, project: dict[str, Any]) -> None:
    srv, p = _srv(api), project["name"]
    members = cli(
        srv, "jobs", "sweep", "train", "--project", p, "--grid", "seed=0,1", "--group", "hp1", "--json"
    )
    assert members.returncode == 0, members.stderr
    ids = json.loads(members.stdout)["ids"]
    prep = await api.ok("POST", f"/projects/{p}/jobs", {"name": "prep", "task": "prep"})
    agg = cli(
        srv, "jobs", "add", "aggregate", "--project", p, "--depends", f"{prep['id']}:failure",
        "--depends-group", "hp1:finished", "--json",
    )  # fmt: skip
    assert agg.returncode == 0, agg.stderr
    shown = await api.ok("GET", f"/jobs/{json.loads(agg.stdout)['id']}")
    assert {d["id"]: d["on"] for d in shown["depends_on"]} == {
        prep["id"]: "failure",
        ids[0]: "finished",
        ids[1]: "finished",
    }
    evaluated = cli(
        srv, "jobs", "sweep", "evaluate", "--project", p, "--grid", "split=val,test", "--depends-group", "hp1",
        "--depends", str(prep["id"]), "--json",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    for job_id in json.loads(evaluated.stdout)["ids"]:
        on = {d["id"]: d["on"] for d in (await api.ok("GET", f"/jobs/{job_id}"))["depends_on"]}
        assert on == {prep["id"]: "success", ids[0]: "success", ids[1]: "success"}

    unknown = cli(srv, "jobs", "add", "aggregate", "--project", p, "--depends-group", "hp2:finished")
    assert unknown.returncode == 1 and "hp2" in unknown.stderr
    for bad, said in (("x", "job id"), ("12:done", "condition"), ("0", "job id")):
        refused = cli(srv, "jobs", "add", "aggregate", "--project", p, "--depends", bad)
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr


async def test_warnings_go_to_stderr(api: Api, project: dict[str, Any], tmp_path: Path) -> None:
    srv, p = _srv(api), project["name"]
    _task(api, p, tmp_path)
    added = cli(
        srv,
        "jobs",
        "add",
        "train",
        "--project",
        p,
        "--param",
        "lr=1",
        "--param",
        "seed=0",
        "--param",
        "stpes=4",
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("queued job")
    assert "whatsnext: warning: parameters.stpes: " in added.stderr and "lr, seed" in added.stderr
    swept = cli(
        srv,
        "jobs",
        "sweep",
        "train",
        "--project",
        p,
        "--grid",
        "lr=1,2",
        "--param",
        "seed=0",
        "--param",
        "x=1",
    )
    assert swept.returncode == 0, swept.stderr
    assert swept.stderr.count("whatsnext: warning: ") == 2
    assert "0.parameters.x" in swept.stderr and "1.parameters.x" in swept.stderr


def test_help_shows_the_new_options_with_examples() -> None:
    for command, example in (
        ("add", "--depends-group hp1:finished --unique-key agg-hp1"),
        ("sweep", "--group hp1 --dedupe"),
    ):
        helped = cli(None, "jobs", command, "--help")
        assert helped.returncode == 0
        for option in ("--depends ID[:success|finished|failure]", "--depends-group", "--dedupe"):
            assert option in helped.stdout, (command, option)
        assert example in helped.stdout
    assert "--unique-key" in cli(None, "jobs", "add", "--help").stdout
