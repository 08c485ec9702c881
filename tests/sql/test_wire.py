"""The wire shapes of the hot path (``whatsnext.wire``) held against the SQL that produces and
consumes them, the server's validation models and the worker; the bounds (``whatsnext.limits``)
held against the settings, the models and the docs that quote them."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from whatsnext import limits, wire
from whatsnext.api.client import Client
from whatsnext.api.client.formatters.base import Formatter, JobSpec, Outcome, RunContext
from whatsnext.api.client.http import Http
from whatsnext.api.client.reporter import Reporter
from whatsnext.api.client.resources import Capacity
from whatsnext.api.client.runner import Runner, WorkSummary, job_spec
from whatsnext.api.server import schema
from whatsnext.api.server.config import Settings
from whatsnext.api.server.routes.claim import claim_args
from whatsnext.api.server.schemas import (
    ClaimedJob,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    Report,
    ReportBatch,
)
from whatsnext.api.server.sql import S
from whatsnext.api.server.store.jobs import AttemptEnd

DOCS = Path(__file__).resolve().parents[2] / "docs"


async def _function(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT proargnames, proargmodes::text[] AS modes, prosrc FROM pg_proc WHERE proname = $1", name
    )
    assert row is not None, f"{name} is not installed"
    return row


def _args(row: asyncpg.Record, modes: tuple[str, ...]) -> list[str]:
    # proargmodes is NULL when every argument is an input.
    kinds = row["modes"] or ["i"] * len(row["proargnames"])
    return [n for n, m in zip(row["proargnames"], kinds, strict=True) if m in modes]


@pytest.fixture
async def conn(database_url: str) -> Any:
    await asyncio.to_thread(schema.upgrade, database_url)  # nothing to do once a server migrated it
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


# ---------------------------------------------------------------- the SQL functions


async def test_the_claimed_job_is_what_wn_claim_returns(conn: asyncpg.Connection) -> None:
    row = await _function(conn, "wn_claim")
    assert tuple(_args(row, ("t", "o"))) == wire.CLAIMED_JOB_FIELDS


async def test_wn_claims_parameters_come_from_one_mapping(conn: asyncpg.Connection) -> None:
    row = await _function(conn, "wn_claim")
    params = [n.removeprefix("p_") for n in _args(row, ("i",))]
    assert params == ["project", *wire.WN_CLAIM_PARAMETERS]
    # The named statement passes the claim arguments to wn_claim in the same order.
    assert S.job_claim.params == ("project", *wire.WN_CLAIM_PARAMETERS.values())
    assert tuple(wire.WN_CLAIM_PARAMETERS.values()) == wire.CLAIM_ARG_FIELDS
    # A submission runs a waiting claim from the JSON object wn_claim_json makes.
    source = (await _function(conn, "wn_enqueue_claim"))["prosrc"]
    read = set(re.findall(r"p_claim\s*->>?\s*'(\w+)'", source))
    args: wire.ClaimArgs = dict.fromkeys(wire.CLAIM_ARG_FIELDS)  # type: ignore[assignment]
    assert set(wire.wn_claim_json(7, args)) == {"project_id", *wire.WN_CLAIM_PARAMETERS}
    assert set(wire.wn_pool_claim_json((7, 8), args)) == {"pool", "projects", *wire.WN_CLAIM_PARAMETERS}
    assert read == set(wire.wn_claim_json(7, args)) | set(wire.wn_pool_claim_json(None, args))


async def test_a_claim_of_several_projects_takes_and_gives_what_a_claim_of_one_does(
    conn: asyncpg.Connection,
) -> None:
    pool = await _function(conn, "wn_claim_pool")
    assert [n.removeprefix("p_") for n in _args(pool, ("i",))] == ["projects", *wire.WN_CLAIM_PARAMETERS]
    assert S.sharing_claim.params == ("projects", *wire.WN_CLAIM_PARAMETERS.values())
    for name in ("wn_claim_pool", "wn_claim_hand"):
        assert tuple(_args(await _function(conn, name), ("t", "o"))) == wire.CLAIMED_JOB_FIELDS, name


async def test_the_report_entry_is_what_wn_end_attempts_reads(conn: asyncpg.Connection) -> None:
    source = (await _function(conn, "wn_end_attempts"))["prosrc"]
    record = re.search(r"jsonb_to_record\(e\.doc\)\s+AS\s+x\(([^)]*)\)", source)
    assert record is not None, "wn_end_attempts reads each entry with jsonb_to_record"
    keys = tuple(column.split()[0] for column in record.group(1).split(","))
    assert keys == wire.ATTEMPT_END_FIELDS
    # A report becomes one entry: its status and requeue make the outcome, the rest goes as it is.
    assert set(wire.REPORT_FIELDS) - {"status", "requeue"} == set(keys) - {"outcome"}
    assert AttemptEnd is wire.AttemptEnd


# ---------------------------------------------------------------- the server's models


def test_the_servers_models_have_the_wire_fields() -> None:
    assert tuple(ClaimRequest.model_fields) == wire.CLAIM_REQUEST_FIELDS
    assert tuple(ClaimedJob.model_fields) == wire.CLAIMED_JOB_FIELDS
    assert tuple(Report.model_fields) == wire.REPORT_FIELDS
    # The single-report routes take what a report entry says, but its id (in their path) and its
    # status (their path says it).
    single = set(CompleteRequest.model_fields) | set(FailRequest.model_fields)
    assert set(wire.REPORT_FIELDS) - {"id", "status"} <= single
    for model in (CompleteRequest, FailRequest):
        field = model.model_fields["checkpoint"]
        assert (field.annotation, field.metadata) == (
            Report.model_fields["checkpoint"].annotation,
            Report.model_fields["checkpoint"].metadata,
        ), model.__name__


def test_the_claim_arguments_are_the_requests_under_the_same_names() -> None:
    body = ClaimRequest.model_validate({"worker_name": "w", "free_cpu": 3, "free_accelerators": 1})
    args = claim_args(body, Settings(lease_seconds=12.0, starvation_seconds=34.0), "token")
    assert tuple(args) == wire.CLAIM_ARG_FIELDS
    shared = set(wire.CLAIM_REQUEST_FIELDS) & set(args)
    assert shared == set(wire.CLAIM_REQUEST_FIELDS) - {"wait", "idle_summary", "projects", "all_projects"}
    assert args["time_left"] is None
    assert {k: args[k] for k in ("total_cpu", "total_accelerators")} == {
        "total_cpu": 3,
        "total_accelerators": 1,
    }  # type: ignore[literal-required]
    assert (args["lease_seconds"], args["starvation_seconds"], args["actor"]) == (12.0, 34.0, "token")


# ---------------------------------------------------------------- the worker


def test_the_worker_claims_with_the_wire_fields() -> None:
    client = Client(project="p", server="http://localhost:1", available_cpu=4)
    body = client._claim_body(5.0, True)
    # A worker of one project without an end sends what it always sent; one of several names them.
    sent_when_needed = ("projects", "all_projects", "time_left")
    assert tuple(body) == tuple(f for f in wire.CLAIM_REQUEST_FIELDS if f not in sent_when_needed)
    several = Client(project=["p", "q"], server="http://localhost:1", available_cpu=4)
    pool = {**several._claim_body(5.0, True), **several.target.claim_fields()}
    assert set(pool) <= set(wire.CLAIM_REQUEST_FIELDS) and pool["projects"] == ["p", "q"]
    assert body["max_jobs"] <= limits.MAX_CLAIM_JOBS
    # A worker with a deadline sends the same and its time left (less its grace and the wait).
    ending = Client(project="p", server="http://localhost:1", available_cpu=4, deadline=600, grace=10)
    timed = ending._claim_body(5.0, True)
    assert tuple(timed) == (*body, "time_left")
    assert 600 - 10 - 5 - 5 < timed["time_left"] <= 600 - 10 - 5
    big = Client(project="p", server="http://localhost:1", available_cpu=100_000)
    assert big._claim_body(0.0, False)["max_jobs"] == limits.MAX_CLAIM_JOBS


def _claimed(**fields: Any) -> wire.ClaimedJob:
    job: dict[str, Any] = dict.fromkeys(wire.CLAIMED_JOB_FIELDS)
    job.update(id=5, name="j", task="t", parameters={"a": 1}, priority=2, attempt=3, required_cpu=1)
    job.update(required_accelerators=0, max_attempts=1, max_lost=3, shell=False, **fields)
    return job  # type: ignore[return-value]


def test_the_worker_reads_claimed_jobs_by_the_wire_fields() -> None:
    spec = job_spec(
        _claimed(
            command="echo {a}",
            inputs=["in"],
            previous_external_ids=["slurm:1"],
            checkpoint="/ck/5/step-10.pt",
            resume=True,
        )
    )
    taken = {"id", "name", "task", "parameters", "attempt", "priority", "required_cpu"}
    taken |= {"required_accelerators", "timeout", "inputs", "outputs", "previous_external_ids"}
    taken |= {"command", "defaults", "shell", "project", "checkpoint", "resume", "upstream"}
    assert taken <= set(wire.CLAIMED_JOB_FIELDS)
    # The worker's own: its GPU ids, the job's checkpoint directory and its files.
    own = {"gpu_ids", "checkpoint_dir", "checkpoint_file", "result_file", "upstream_file"}
    assert set(JobSpec.__dataclass_fields__) - own == taken
    assert (spec.checkpoint, spec.resume) == ("/ck/5/step-10.pt", True)
    assert (spec.id, spec.attempt, spec.command, spec.inputs, spec.outputs) == (5, 3, "echo {a}", ["in"], [])
    assert spec.previous_external_ids == ["slurm:1"] and spec.defaults == {}


class _Done(Formatter):
    def format(self, task: str, parameters: dict[str, Any]) -> str:
        return task

    async def run(self, job: JobSpec, ctx: RunContext) -> Outcome:
        return Outcome(status="FAILED", exit_code=3, error="exit code 3", log_tail="boom\n", requeue=False)


async def test_the_worker_reports_with_the_wire_fields() -> None:
    http = Http("http://localhost:1")
    reporter = Reporter(http)
    runner = Runner(
        http,
        project="p",
        formatter=_Done(),
        capacity=Capacity(2, []),
        grace=1.0,
        running={},
        reporter=reporter,
        summary=WorkSummary(),
        slot_freed=asyncio.Event(),
        logs=None,
        artifacts=None,
    )
    async with asyncio.TaskGroup() as jobs:
        runner.start(jobs, _claimed())
    [(report, size)] = reporter.pending
    # A checkpoint goes with a report only when the job named one.
    sent_when_needed = ("checkpoint",)
    assert tuple(k for k in report if k not in sent_when_needed) == tuple(
        f for f in wire.REPORT_FIELDS if f not in sent_when_needed
    )
    assert set(report) <= set(wire.REPORT_FIELDS)
    assert (report["id"], report["attempt"], report["status"], report["exit_code"]) == (5, 3, "FAILED", 3)
    assert report["error"] == "exit code 3; last output:\nboom"
    assert Report.model_validate(report).id == 5 and size > 0


# ---------------------------------------------------------------- bounds


def test_the_settings_take_their_defaults_from_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.max_parameters_bytes == limits.MAX_PARAMETERS_BYTES == 1024**2
    assert s.max_body_bytes == limits.MAX_BODY_BYTES == 16 * 1024**2
    assert (s.max_streams_per_client, s.max_streams) == (limits.MAX_STREAMS_PER_CLIENT, limits.MAX_STREAMS)
    assert s.log_keep_lines == limits.LOG_KEEP_LINES == 10_000
    monkeypatch.setenv("WHATSNEXT_LOG_KEEP_LINES", "250")
    assert Settings.from_env().log_keep_lines == 250


def _le(model: Any, field: str) -> Any:
    for m in model.model_fields[field].metadata:
        for attr in ("le", "max_length"):
            if getattr(m, attr, None) is not None:
                return getattr(m, attr)
    return None


def test_the_models_take_their_bounds_from_the_limits() -> None:
    assert _le(ClaimRequest, "max_jobs") == limits.MAX_CLAIM_JOBS == 1000
    assert _le(ClaimRequest, "wait") == limits.MAX_CLAIM_WAIT
    assert _le(Report, "log") == limits.MAX_LOG_TAIL and _le(Report, "error") == limits.MAX_ERROR
    assert _le(Report, "checkpoint") == limits.MAX_URI, "a checkpoint is a path like any artifact's"
    assert ReportBatch.model_json_schema()["maxItems"] == limits.MAX_REPORTS == 10_000
    assert limits.MAX_BATCH == 10_000


def _figure(n: int) -> str:
    return f"{n:,}"


def test_the_docs_quote_the_bounds() -> None:
    api = (DOCS / "api.md").read_text()
    assert f"| request body | {limits.MAX_BODY_BYTES // 1024**2} MiB (`--max-body-bytes`)" in api
    assert f"| {limits.MAX_PARAMETERS_BYTES // 1024**2} MiB of JSON each (`--max-parameters-bytes`)" in api
    assert f"| jobs in one batch (`POST /projects/{{p}}/jobs/batch`) | {_figure(limits.MAX_BATCH)} |" in api
    assert f"| jobs one claim asks for (`max_jobs`) | {_figure(limits.MAX_CLAIM_JOBS)} |" in api
    assert f"| reports in one `POST /jobs/reports` | {_figure(limits.MAX_REPORTS)} |" in api
    lines = (
        f"| {_figure(limits.MAX_LOG_BATCH)} of one job, {_figure(limits.MAX_LOG_REQUEST)} in all in "
        f"`POST /jobs/logs`, each at most {_figure(limits.MAX_LOG_LINE)} characters |"
    )
    assert lines in api
    assert f"| {_figure(limits.MAX_LOG_TAIL)} and {_figure(limits.MAX_ERROR)} characters |" in api
    assert f"| `max_jobs` | int 1\u2013{limits.MAX_CLAIM_JOBS} |" in api
    assert f"| `wait` | seconds 0\u2013{limits.MAX_CLAIM_WAIT} |" in api
    assert f"up to {_figure(limits.MAX_BATCH)} job objects" in api
    server = (DOCS / "server.md").read_text()
    assert f"| `WHATSNEXT_MAX_PARAMETERS_BYTES` | {limits.MAX_PARAMETERS_BYTES} |" in server
    assert f"| `WHATSNEXT_MAX_BODY_BYTES` | {limits.MAX_BODY_BYTES} |" in server
    assert f"| `WHATSNEXT_MAX_STREAMS_PER_CLIENT` | {limits.MAX_STREAMS_PER_CLIENT} |" in server
    assert f"| `WHATSNEXT_MAX_STREAMS` | {limits.MAX_STREAMS} |" in server
    security = (DOCS / "security.md").read_text()
    assert f"| `WHATSNEXT_MAX_STREAMS_PER_CLIENT` | {limits.MAX_STREAMS_PER_CLIENT} |" in security
    assert f"| `WHATSNEXT_MAX_STREAMS` | {limits.MAX_STREAMS} |" in security
    cli = (DOCS / "cli.md").read_text()
    assert f"| {limits.MAX_STREAMS_PER_CLIENT}, {limits.MAX_STREAMS} |" in cli
    logs = (DOCS / "logs-and-artifacts.md").read_text()
    assert f"newest **{_figure(limits.LOG_KEEP_LINES)} lines of each job**" in logs
    assert (
        f"At most {_figure(limits.MAX_LOG_BATCH)} lines of\none job per request "
        f"({_figure(limits.MAX_LOG_REQUEST)} in all in `POST /jobs/logs`), each at most "
        f"{_figure(limits.MAX_LOG_LINE)} characters." in logs
    )


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n### ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def test_the_api_docs_name_every_wire_field() -> None:
    """The reference names every field of a claimed job and of a report entry."""
    api = (DOCS / "api.md").read_text()
    claim = _section(api, "### `POST /projects/{project}/claim`")
    missing = [f for f in wire.CLAIMED_JOB_FIELDS if not re.search(rf"\b{f}\b", claim)]
    assert not missing, f"claimed-job fields the claim's reference does not name: {missing}"
    for field in wire.CLAIM_REQUEST_FIELDS:
        assert f"`{field}`" in claim, f"claim request field {field} is not in the table"
    reports = _section(api, "### `POST /jobs/reports`")
    missing = [f for f in wire.REPORT_FIELDS if f'"{f}"' not in reports]
    assert not missing, f"report fields the reference does not name: {missing}"
