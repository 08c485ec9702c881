"""A worker that serves several projects, without a server: which path its claims take and what
their bodies and its registration say (one project: the requests it always sent), how the CLI
reads --project and --all-projects, the preflight across projects, and each job's own project
in its environment."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog.testing

from whatsnext.api.client import AsyncProject, Client
from whatsnext.api.client.formatters.base import Formatter, JobSpec, Outcome, PreflightError, RunContext
from whatsnext.api.client.formatters.task import TaskFormatter
from whatsnext.api.client.preflight import check_tasks
from whatsnext.api.client.target import Target
from whatsnext.cli import build_parser
from whatsnext.cli.worker import worker_projects

ONE_PROJECT_CLAIM_KEYS = [
    "worker_name",
    "worker_id",
    "free_cpu",
    "free_accelerators",
    "total_cpu",
    "total_accelerators",
    "tags",
    "max_jobs",
    "wait",
    "idle_summary",
    "tasks",
    "with_command",
]
"""The claim body of a worker with one project, key for key, as it has always been."""


# ---------------------------------------------------------------- the target


def test_one_project_keeps_its_own_claim_route() -> None:
    one = Target.of(["my demo"])
    assert one.one == "my demo" and str(one) == "project my demo"
    assert one.claim_path == "/projects/my%20demo/claim"
    assert one.claim_fields() == {}
    assert one.register_fields() == {"project": "my demo"}
    assert Target.of(["a", "a"]).claim_path == "/projects/a/claim"  # given twice, still one


def test_several_or_all_projects_claim_on_the_shared_route() -> None:
    several = Target.of(["a", "7", "b", "a"])
    assert several.one is None and str(several) == "projects a, 7, b"
    assert several.claim_path == "/claim"
    assert several.claim_fields() == {"projects": ["a", "7", "b"]}
    assert several.register_fields() == {"projects": ["a", "7", "b"]}
    every = Target.of([], all_projects=True)
    assert every.one is None and str(every) == "all projects"
    assert every.claim_path == "/claim"
    assert every.claim_fields() == {"all_projects": True}
    assert every.register_fields() == {"all_projects": True}
    with pytest.raises(ValueError, match="not both"):
        Target.of(["a"], all_projects=True)
    assert Target().empty and not every.empty


# ---------------------------------------------------------------- the client's arguments


def _client(**kwargs: Any) -> Client:
    return Client("team", "w", formatter=Recorder(), available_cpu=4, available_accelerators=0, **kwargs)


def test_client_takes_one_project_several_or_all() -> None:
    assert _client(project="demo").target == Target(("demo",))
    assert _client(project="demo").project_key == "demo"
    assert _client(project=["demo"]).target == Target(("demo",))
    assert _client(project=12).target == Target(("12",))
    assert _client(project=("a", "b")).target == Target(("a", "b"))
    assert _client(project=["a", "b"]).project_key is None
    assert _client(all_projects=True).target == Target((), True)
    with pytest.raises(ValueError, match="not both"):
        _client(project="a", all_projects=True)
    with pytest.raises(ValueError, match="no project"):
        _client(project=[])


def test_project_objects_give_their_ids_and_their_connection() -> None:
    client = _client(server="http://elsewhere:1")
    first = AsyncProject(client.http, {"id": 3, "name": "vision"})  # type: ignore[arg-type]
    other = Client(server="http://other:2").http
    second = AsyncProject(other, {"id": 5, "name": "nlp"})  # type: ignore[arg-type]
    client._set_target([first, second, "speech"], None)
    assert client.target == Target(("3", "5", "speech"))
    assert client.http is first._http


def test_work_replaces_the_projects() -> None:
    client = _client(project="a")
    client._set_target(["b", "c"], None)
    assert client.target == Target(("b", "c"))
    client._set_target(None, None, all_projects=True)
    assert client.target == Target((), True)
    client._set_target("d", None)
    assert client.target == Target(("d",))


def test_claim_body_of_one_project_is_unchanged() -> None:
    client = _client(project="demo", tags=["x"])
    body = client._claim_body(5.0, True)
    assert list(body) == ONE_PROJECT_CLAIM_KEYS
    assert body == {
        "worker_name": "w",
        "worker_id": None,
        "free_cpu": 4,
        "free_accelerators": 0,
        "total_cpu": 4,
        "total_accelerators": 0,
        "tags": ["x"],
        "max_jobs": 4,
        "wait": 5.0,
        "idle_summary": True,
        "tasks": None,
        "with_command": False,
    }


# ---------------------------------------------------------------- the CLI


def _cli_projects(*argv: str) -> tuple[list[str], bool]:
    args = build_parser().parse_args(["worker", *argv])
    return worker_projects(args), args.all_projects


def test_cli_project_is_repeatable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WHATSNEXT_PROJECT", raising=False)
    assert _cli_projects() == (["default"], False)
    monkeypatch.setenv("WHATSNEXT_PROJECT", "mine")
    assert _cli_projects() == (["mine"], False)
    assert _cli_projects("--project", "a") == (["a"], False)
    assert _cli_projects("--project", "a", "--project", "b", "--project", "a") == (["a", "b"], False)
    assert _cli_projects("--all-projects") == ([], True)


def test_cli_all_projects_excludes_project(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["worker", "--project", "a", "--all-projects"])
    assert exit_.value.code == 2
    assert "not allowed with argument --project" in capsys.readouterr().err


def test_cli_help_shows_several_projects(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--help"])
    out = capsys.readouterr().out
    assert "--project vision --project nlp" in out and "--all-projects" in out


# ---------------------------------------------------------------- preflight across projects


TASKS = {
    "a": [{"name": "train", "command": "python -c pass"}, {"name": "prep", "command": None}],
    "b": [{"name": "evaluate", "command": None}],
}


def test_preflight_finds_a_task_in_any_of_the_projects() -> None:
    several = Target.of(["a", "b"])
    check_tasks(several, TASKS, ["train", "evaluate"], Recorder())
    with pytest.raises(PreflightError) as err:
        check_tasks(several, TASKS, ["evaluat"], Recorder())
    assert str(err.value) == (
        "none of projects a, b has a task 'evaluat' (did you mean 'evaluate'?); "
        "their tasks: train, prep, evaluate"
    )
    with pytest.raises(PreflightError, match=r"^project a has no task 'evaluate'; its tasks: train, prep$"):
        check_tasks(Target.of(["a"]), TASKS, ["evaluate"], Recorder())


def test_preflight_of_task_commands_holds_across_projects() -> None:
    several = Target.of(["a", "b"])
    check_tasks(several, TASKS, None, TaskFormatter())  # a's train has a command
    with pytest.raises(
        PreflightError, match=r"^no task of project b has a command to run \(tasks: evaluate\)"
    ):
        check_tasks(Target.of(["b"]), TASKS, None, TaskFormatter())
    with pytest.raises(
        PreflightError, match=r"^no task of projects a, b has a command to run \(tasks: prep, evaluate\)"
    ):
        check_tasks(several, TASKS, ["prep", "evaluate"], TaskFormatter())
    broken = {**TASKS, "b": [{"name": "evaluate", "command": "no-such-program-here {x}"}]}
    with pytest.raises(PreflightError, match=r"^project b, task 'evaluate': .*not found"):
        check_tasks(several, broken, None, TaskFormatter())


# ---------------------------------------------------------------- a whole run against a fake server


class Recorder(Formatter):
    """Runs nothing: keeps each job's environment; ``ran`` is set once ``expect`` jobs ran."""

    def __init__(self, expect: int = 0) -> None:
        self.envs: dict[int, dict[str, str]] = {}
        self.expect = expect
        self.ran = asyncio.Event()
        if not expect:
            self.ran.set()

    def format(self, task: str, parameters: dict[str, Any]) -> str:
        return task

    async def run(self, job: JobSpec, ctx: RunContext) -> Outcome:
        self.envs[job.id] = dict(ctx.env)
        if len(self.envs) >= self.expect:
            self.ran.set()
        return Outcome(status="COMPLETED", exit_code=0)


def claimed(job_id: int, project: str) -> dict[str, Any]:
    return {
        "id": job_id,
        "name": f"j{job_id}",
        "task": "t",
        "parameters": {},
        "priority": 0,
        "attempt": 1,
        "required_cpu": 1,
        "required_accelerators": 0,
        "timeout": None,
        "max_attempts": 3,
        "max_lost": 3,
        "lease_expires_at": "2030-01-01T00:00:00+00:00",
        "inputs": [],
        "outputs": [],
        "eligible_at": None,
        "previous_external_ids": [],
        "command": None,
        "defaults": {},
        "shell": False,
        "project": project,
    }


class FakeServer:
    """Answers a worker's requests as a server would and keeps them: the first claim hands out
    ``jobs``, the next ones (once the formatter ran them all) say nothing is left."""

    base_url = "http://fake"

    def __init__(self, jobs: list[dict[str, Any]], ran: asyncio.Event, tasks: dict[str, Any]) -> None:
        self.jobs = jobs
        self.ran = ran
        self.tasks = tasks
        self.requests: list[tuple[str, str, Any]] = []

    async def get(self, path: str, **params: Any) -> Any:
        self.requests.append(("GET", path, None))
        return {"tasks": self.tasks[path]}

    async def post(self, path: str, json: Any = None, timeout: float | None = None) -> Any:
        self.requests.append(("POST", path, json))
        if path == "/workers":
            return {"id": 9, "lease_seconds": 60, "heartbeat_interval": 20, "max_wait": 30}
        if path == "/jobs/reports":
            return {"results": [{"id": r["id"], "code": 200, "status": r["status"]} for r in json]}
        if path.endswith("/claim"):
            if self.jobs:
                jobs, self.jobs = self.jobs, []
                return {"jobs": jobs}
            await self.ran.wait()
            return {"jobs": [], "idle": {"pending": 0, "running": 0, "delayed": 0, "runnable": False}}
        raise AssertionError(f"unexpected POST {path}")

    async def delete(self, path: str) -> Any:
        self.requests.append(("DELETE", path, None))
        return {}

    async def close(self) -> None:
        pass


async def _run(
    jobs: list[dict[str, Any]], served: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[FakeServer, Recorder]:
    recorder = Recorder(expect=len(jobs))
    server = FakeServer(jobs, recorder.ran, served or {})
    client = Client("team", "w", formatter=recorder, available_cpu=4, available_accelerators=0,
                    heartbeat=False, live_logs=False, **kwargs)  # fmt: skip
    client.http = server  # type: ignore[assignment]
    summary = await asyncio.wait_for(client.work_async(), 30)
    assert summary.completed == len(jobs)
    return server, recorder


def _claims(server: FakeServer) -> list[tuple[str, Any]]:
    return [(path, body) for method, path, body in server.requests if path.endswith("/claim")]


async def test_one_project_sends_what_it_always_sent() -> None:
    with structlog.testing.capture_logs() as logs:
        server, recorder = await _run([claimed(1, "demo")], project="demo")
    assert [sorted(e) for e in logs if e["event"] == "job started"] == [
        ["attempt", "event", "gpus", "job", "log_level", "name"]
    ]
    method, path, register = server.requests[0]
    assert (method, path) == ("POST", "/workers")
    assert list(register) == ["name", "entity", "host", "pid", "project", "cpu", "accelerators", "tags"]
    assert register["project"] == "demo"
    claims = _claims(server)
    assert {path for path, _ in claims} == {"/projects/demo/claim"}
    assert all(list(body) == ONE_PROJECT_CLAIM_KEYS for _, body in claims)
    assert recorder.envs[1]["WHATSNEXT_PROJECT"] == "demo"
    assert server.requests[-1] == ("DELETE", "/workers/9", None)


async def test_several_projects_claim_together_and_each_job_has_its_own() -> None:
    jobs = [claimed(1, "vision"), claimed(2, "nlp"), claimed(3, "vision")]
    with structlog.testing.capture_logs() as logs:
        server, recorder = await _run(jobs, project=["vision", "nlp"])
    started = {e["job"]: e["project"] for e in logs if e["event"] == "job started"}
    assert started == {1: "vision", 2: "nlp", 3: "vision"}
    register = server.requests[0][2]
    assert list(register) == ["name", "entity", "host", "pid", "projects", "cpu", "accelerators", "tags"]
    assert register["projects"] == ["vision", "nlp"]
    claims = _claims(server)
    assert {path for path, _ in claims} == {"/claim"}
    for _, body in claims:
        assert list(body) == [*ONE_PROJECT_CLAIM_KEYS, "projects"]
        assert body["projects"] == ["vision", "nlp"]
    assert {job: env["WHATSNEXT_PROJECT"] for job, env in recorder.envs.items()} == {
        1: "vision",
        2: "nlp",
        3: "vision",
    }


async def test_all_projects_claim_with_the_flag_and_skip_the_task_check() -> None:
    jobs = [claimed(1, "a"), claimed(2, "b")]
    server, recorder = await _run(jobs, all_projects=True, tasks=["train"])
    assert server.requests[0][2]["all_projects"] is True and "project" not in server.requests[0][2]
    assert not [r for r in server.requests if r[0] == "GET"]  # which tasks exist is not known
    for path, body in _claims(server):
        assert path == "/claim"
        assert list(body) == [*ONE_PROJECT_CLAIM_KEYS, "all_projects"] and body["all_projects"] is True
        assert body["tasks"] == ["train"]
    assert recorder.envs[1]["WHATSNEXT_PROJECT"] == "a" and recorder.envs[2]["WHATSNEXT_PROJECT"] == "b"


async def test_several_projects_are_preflighted_each() -> None:
    served = {"/projects/a/tasks": [{"name": "train"}], "/projects/b%20c/tasks": [{"name": "eval"}]}
    server, _ = await _run([claimed(1, "a")], served, project=["a", "b c"], tasks=["eval"])
    assert [path for method, path, _ in server.requests if method == "GET"] == [
        "/projects/a/tasks",
        "/projects/b%20c/tasks",
    ]
    with pytest.raises(PreflightError, match="none of projects a, b c has a task 'test'"):
        await _run([], served, project=["a", "b c"], tasks=["test"])
