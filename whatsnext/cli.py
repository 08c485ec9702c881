"""The `whatsnext` command (alias `wnxt`): run the server, submit and inspect jobs, run workers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .models import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_LOST

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
DEFAULT_PROJECT = "default"

Command = Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------- output


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and "T" in value[:11]:
        return value[:19].replace("T", " ")
    if isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def table(
    rows: Iterable[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None
) -> str:
    rows = list(rows)
    heads = [h.upper() for h in (headers or columns)]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    if not rows:
        lines.append("(none)")
    return "\n".join(lines)


def emit(args: argparse.Namespace, data: Any, render: Callable[[Any], str]) -> int:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(render(data))
    return EXIT_OK


def fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"whatsnext: error: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------- client helpers


def _http(args: argparse.Namespace) -> Any:
    from .api.client.http import Http, server_url

    return Http(server_url(args.server), token=os.environ.get("WHATSNEXT_TOKEN"))


def call(args: argparse.Namespace, method: str, path: str, json_body: Any = None, **params: Any) -> Any:
    """One request to the server, synchronously."""
    import asyncio

    http = _http(args)

    async def go() -> Any:
        try:
            return await http.request(method, path, json=json_body, params=params)
        finally:
            await http.close()

    return asyncio.run(go())


def project_path(name: str) -> str:
    from .api.client.project import project_path as pp

    return pp(name)


def parse_params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``k=v`` pairs; values that read as JSON numbers, booleans, lists or objects keep that type."""
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(raw)
            if isinstance(value, str):
                value = raw
        except ValueError:
            value = raw
        out[key] = value
    return out


# ---------------------------------------------------------------- commands: info


def cmd_status(args: argparse.Namespace) -> int:
    health = call(args, "GET", "/health")
    projects = call(args, "GET", "/projects")["projects"]

    def render(_: Any) -> str:
        lines = [
            f"server    {_http(args).base_url}",
            f"status    {health['status']}",
            f"version   {health['version']}",
            f"database  {health['database']}",
            f"schema    level {health.get('schema_level', '?')}",
            f"projects  {len(projects)}",
        ]
        return "\n".join(lines)

    return emit(args, {"server": _http(args).base_url, **health, "projects": len(projects)}, render)


def cmd_projects_ls(args: argparse.Namespace) -> int:
    data = call(args, "GET", "/projects", status=args.status)
    return emit(
        args, data, lambda d: table(d["projects"], ["id", "name", "status", "description", "created_at"])
    )


def cmd_projects_add(args: argparse.Namespace) -> int:
    from .api.client.errors import Conflict

    body = {"name": args.name, "description": args.description, "strict_tasks": args.strict}
    try:
        data = call(args, "POST", "/projects", body)
    except Conflict:
        if not args.exist_ok:
            raise
        data = {**call(args, "GET", project_path(args.name)), "existed": True}
    return emit(
        args,
        data,
        lambda d: f"{'project exists' if d.get('existed') else 'created project'} {d['name']} (id {d['id']})",
    )


def cmd_projects_show(args: argparse.Namespace) -> int:
    data = call(args, "GET", project_path(args.project))

    def render(d: dict[str, Any]) -> str:
        counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(d.get("jobs", {}).items())) or "no jobs"
        return "\n".join(
            [
                f"id           {d['id']}",
                f"name         {d['name']}",
                f"status       {d['status']}",
                f"strict       {'yes: jobs for unknown tasks are refused' if d.get('strict_tasks') else 'no'}",
                f"description  {d['description'] or '-'}",
                f"created      {_cell(d['created_at'])}",
                f"updated      {_cell(d['updated_at'])}",
                f"jobs         {counts}",
            ]
        )

    return emit(args, data, render)


def cmd_projects_archive(args: argparse.Namespace) -> int:
    data = call(args, "PATCH", project_path(args.project), {"status": "ARCHIVED"})
    return emit(args, data, lambda d: f"archived project {d['name']}")


def cmd_tasks_ls(args: argparse.Namespace) -> int:
    data = call(args, "GET", project_path(args.project) + "/tasks")
    return emit(
        args,
        data,
        lambda d: table(
            d["tasks"],
            ["id", "name", "required_cpu", "required_accelerators", "max_attempts", "timeout", "command"],
            ["id", "name", "cpu", "gpus", "attempts", "timeout", "command"],
        ),
    )


def _num_gpus(args: argparse.Namespace, default: int | None) -> int | None:
    """``--num-gpus N``; the older ``--gpus N`` still works (with a note: it is a count here)."""
    if args.old_gpus is not None:
        print(
            "whatsnext: note: --gpus here is a number of GPUs; it is spelled --num-gpus now",
            file=sys.stderr,
        )
        if args.num_gpus is None:
            return int(args.old_gpus)
    return args.num_gpus if args.num_gpus is not None else default


def cmd_tasks_add(args: argparse.Namespace) -> int:
    from .api.client.errors import Conflict

    body = {
        "name": args.name,
        "project_id": args.project,
        "required_cpu": args.cpus,
        "required_accelerators": _num_gpus(args, 0),
        "command": args.command,
        "shell": args.shell,
        "defaults": parse_params(args.default),
        "max_attempts": args.max_attempts,
        "max_lost": args.max_lost,
        "retry_delay": args.retry_delay,
        "timeout": args.timeout,
        "required_tags": [t for t in (args.tags or "").split(",") if t],
        "inputs": args.input or [],
        "outputs": args.output or [],
    }
    try:
        data = call(args, "POST", "/tasks/", body)
    except Conflict:
        if not args.exist_ok:
            raise
        tasks = call(args, "GET", project_path(args.project) + "/tasks")["tasks"]
        data = {**next(t for t in tasks if t["name"] == args.name), "existed": True}
    return emit(
        args,
        data,
        lambda d: (
            f"{'task exists' if d.get('existed') else 'created task'} {d['name']} (id {d['id']}): "
            f"{d['required_cpu']} CPU, {d['required_accelerators']} GPU"
            + (f", runs {d['command']}" if d.get("command") else "")
        ),
    )


def _tell_new_tasks(data: dict[str, Any]) -> None:
    from .api.client.project import warn_new_tasks

    warn_new_tasks(data.get("created_tasks") or ())


# ---------------------------------------------------------------- commands: jobs


JOB_COLUMNS = ["id", "name", "task", "status", "priority", "attempt", "worker_name", "created_at"]


def cmd_jobs_add(args: argparse.Namespace) -> int:
    from .api.client.errors import NotFound

    body: dict[str, Any] = {
        "name": args.name or args.task,
        "task": args.task,
        "parameters": parse_params(args.param),
        "priority": args.priority,
    }
    if args.depends:
        body["depends"] = [int(d) if d.isdigit() else d for d in args.depends]
    gpus = _num_gpus(args, None)
    if gpus is not None:
        body["required_accelerators"] = gpus
    if args.group:
        body["group"] = args.group
    for key in ("cpus", "max_attempts", "max_lost", "retry_delay", "timeout"):
        value = getattr(args, key)
        if value is not None:
            body[{"cpus": "required_cpu"}.get(key, key)] = value
    if args.input is not None:
        body["inputs"] = args.input
    if args.output is not None:
        body["outputs"] = args.output
    try:
        data = call(args, "POST", project_path(args.project) + "/jobs", body)
    except NotFound:
        if args.project != DEFAULT_PROJECT or os.environ.get("WHATSNEXT_PROJECT"):
            raise
        # The implicit default project is created on first use.
        call(
            args,
            "POST",
            "/projects",
            {"name": DEFAULT_PROJECT, "description": "created by `whatsnext jobs add`"},
        )
        data = call(args, "POST", project_path(args.project) + "/jobs", body)
    _tell_new_tasks(data)
    return emit(args, data, lambda d: f"queued job {d['id']} ({d['name']}, task {d['task']}): {d['status']}")


def cmd_jobs_sweep(args: argparse.Namespace) -> int:
    from .api.client.project import sweep_group_name, sweep_jobs

    grid: dict[str, list[Any]] = {}
    for spec in args.grid:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--grid expects KEY=V1,V2,..., got {spec!r}")
        grid[key] = [parse_params([f"v={v}"])["v"] for v in values.split(",")]
    depends = [int(args.depends)] if args.depends else None
    jobs = sweep_jobs(
        args.task,
        grid,
        name=args.name,
        parameters=parse_params(args.param),
        depends=depends,
        priority=args.priority,
    )
    group = args.group or sweep_group_name(args.task)
    data = call(
        args,
        "POST",
        project_path(args.project) + "/jobs/batch",
        {"group": group, "jobs": [j.to_request() for j in jobs]},
    )
    _tell_new_tasks(data)
    data["names"] = [j.name for j in jobs]
    return emit(
        args,
        data,
        lambda d: (
            f"queued {d['count']} jobs in group {d['group']}: "
            + ", ".join(f"{i} {n}" for i, n in zip(d["ids"], d["names"], strict=True))
            + f"\nfollow them: whatsnext jobs ls --project {args.project} --group {d['group']} --watch"
        ),
    )


def cmd_jobs_show(args: argparse.Namespace) -> int:
    data = call(args, "GET", f"/jobs/{args.job_id}")

    def render(d: dict[str, Any]) -> str:
        keys = [
            "id",
            "name",
            "project",
            "task",
            "group",
            "status",
            "priority",
            "parameters",
            "depends",
            "attempt",
            "max_attempts",
            "lost",
            "max_lost",
            "required_cpu",
            "required_accelerators",
            "worker_name",
            "created_at",
            "started_at",
            "finished_at",
            "duration",
            "exit_code",
            "result",
        ]
        lines = [
            f"{k:<22} {_cell(d.get(k)) if k not in ('parameters', 'result') else json.dumps(d.get(k))}"
            for k in keys
        ]
        error = (d.get("error") or "-").rstrip().splitlines() or ["-"]
        lines.append(f"{'error':<22} {error[0]}")
        lines += [f"{'':<22} {line}" for line in error[1:]]
        if d.get("log_tail"):
            lines += ["", "output (tail):", d["log_tail"].rstrip()]
        return "\n".join(lines)

    return emit(args, data, render)


def cmd_jobs_rm(args: argparse.Namespace) -> int:
    job = call(args, "GET", f"/jobs/{args.job_id}")
    data = call(args, "DELETE", f"/projects/{job['project_id']}/jobs/{args.job_id}")
    return emit(args, data, lambda d: f"removed job {args.job_id}")


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    data = call(args, "POST", f"/jobs/{args.job_id}/cancel")
    return emit(
        args,
        data,
        lambda d: (
            f"job {d['id']}: "
            + ("cancelled" if d["status"] == "CANCELLED" else "running; its worker will stop it")
        ),
    )


def cmd_jobs_retry(args: argparse.Namespace) -> int:
    data = call(args, "POST", f"/jobs/{args.job_id}/retry")
    return emit(args, data, lambda d: f"job {d['id']}: {d['requeued']} job(s) back in the queue")


def cmd_queue_ls(args: argparse.Namespace) -> int:
    data = call(args, "GET", project_path(args.project) + "/queue", limit=args.limit)
    return emit(
        args,
        data,
        lambda d: table(
            [
                {**j, "position": i + 1, "waiting_on": j["unmet_deps"] or ("" if j["eligible"] else "delay")}
                for i, j in enumerate(d["jobs"])
            ],
            [
                "position",
                "id",
                "name",
                "task",
                "priority",
                "required_cpu",
                "required_accelerators",
                "waiting_on",
            ],
            ["#", "id", "name", "task", "prio", "cpu", "gpus", "waiting on"],
        ),
    )


def cmd_queue_clear(args: argparse.Namespace) -> int:
    data = call(args, "DELETE", project_path(args.project) + "/queue")
    return emit(args, data, lambda d: f"cancelled {d['deleted']} pending job(s)")


def cmd_workers_ls(args: argparse.Namespace) -> int:
    data = call(args, "GET", "/workers", project=args.project, status=args.status)
    return emit(
        args,
        data,
        lambda d: table(
            [
                {
                    **w,
                    "cpu_use": f"{w['used_cpu']}/{w['cpu']}",
                    "gpu_use": f"{w['used_accelerators']}/{w['accelerators']}",
                }
                for w in d["workers"]
            ],
            ["id", "name", "host", "status", "cpu_use", "gpu_use", "running", "last_seen"],
            ["id", "name", "host", "status", "cpu", "gpus", "running", "last seen"],
        ),
    )


# ---------------------------------------------------------------- commands: worker, server


def build_formatter(args: argparse.Namespace) -> Any:
    """The worker's formatter; with none of --script/--command/--python, each job runs its task's
    command template (TaskFormatter)."""
    from .api.client import CLIFormatter, PythonFormatter, TaskFormatter

    kind = args.formatter
    if kind == "runai":
        from .api.client.formatters.runai import RUNAIFormatter

        if not (args.script or args.command):
            raise ValueError("--formatter runai needs --script or --command")
        if not args.runai_project or not args.image:
            raise ValueError("--formatter runai needs --runai-project and --image")
        return RUNAIFormatter(
            project=args.runai_project,
            image=args.image,
            cli_version=args.runai_cli,
            script=args.script,
            executable=args.executable,
            command=args.command,
            shell=args.shell,
            gpu=args.runai_gpu,
            cpu=args.runai_cpu,
            memory=args.mem,
            namespace=args.namespace,
            extra_args=tuple(args.runai_arg or ()),
            delete_finished=args.delete_finished,
        )
    if kind == "slurm":
        from .api.client.formatters.slurm import SlurmFormatter

        return SlurmFormatter(
            script=args.script,
            executable=args.executable,
            command=args.command,
            shell=args.shell,
            partition=args.partition,
            account=args.account,
            time=args.time,
            mem=args.mem,
            sbatch_args=tuple(args.sbatch_arg or ()),
        )
    if args.python:
        return PythonFormatter(args.python)
    if args.command:
        return CLIFormatter(template=args.command, shell=args.shell)
    if args.script:
        return CLIFormatter(executable=args.executable or None, script=args.script)
    return TaskFormatter()


def worker_gpus(args: argparse.Namespace) -> list[str] | int | None:
    """``--gpus`` takes ids as CUDA_VISIBLE_DEVICES does (``3`` is GPU 3; ``all``; ``none``);
    ``--gpu-count N`` takes the first N visible GPUs. None: every visible GPU."""
    if args.gpus is not None and args.gpu_count is not None:
        raise ValueError("give --gpus IDS or --gpu-count N, not both")
    if args.gpu_count is not None:
        if args.gpu_count < 0:
            raise ValueError("--gpu-count must be 0 or more")
        return int(args.gpu_count)
    if args.gpus is None:
        return None
    spec = args.gpus.strip().lower()
    if spec == "all":
        return None
    if spec in ("none", "", "-1"):
        return []
    ids = [p.strip() for p in args.gpus.split(",") if p.strip()]
    return ids


def cmd_worker(args: argparse.Namespace) -> int:
    from .api.client import Client
    from .logs import configure

    configure(args.log_level)
    if args.python:
        sys.path.insert(0, os.getcwd())
    formatter = build_formatter(args)
    client = Client(
        entity=args.entity,
        name=args.name,
        project=args.project,
        formatter=formatter,
        available_cpu=args.cpus,
        available_accelerators=worker_gpus(args),
        tags=[t for t in (args.tags or "").split(",") if t],
        tasks=[t for t in (args.task or "").split(",") if t] or None,
        server=_http(args).base_url,
        max_jobs=args.max_jobs,
        grace=args.grace,
        artifact_roots=args.artifact_root or (),
        artifact_hash_bytes=int(args.artifact_hash_gib * (1 << 30)),
        artifact_hash_seconds=args.artifact_hash_seconds,
    )
    summary = client.work(forever=args.forever)
    print(
        f"worker done: {summary.completed} completed, {summary.failed} failed, {summary.cancelled} cancelled",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_server(args: argparse.Namespace) -> int:
    try:
        import asyncpg  # noqa: F401
        import yoyo  # noqa: F401
    except ImportError as exc:
        print(
            f"whatsnext server: the server is not installed ({exc.name} is missing): "
            "pip install 'whatsnext[server]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from .api.server.app import serve
    from .api.server.config import Settings, SettingsError
    from .api.server.db import DatabaseSetupError
    from .api.server.schema import SchemaError
    from .logs import configure

    configure(args.log_level)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"whatsnext server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings.host, settings.port = args.host, args.port
    if args.database_url:
        settings.database_url = args.database_url
    if args.lease_seconds is not None:
        settings.lease_seconds = args.lease_seconds
    if args.starvation_seconds is not None:
        settings.starvation_seconds = args.starvation_seconds
    if args.data_dir:
        settings.data_dir = Path(args.data_dir)
    if args.max_wait is not None:
        settings.max_wait = args.max_wait
    if args.max_waiting_claims is not None:
        settings.max_waiting_claims = args.max_waiting_claims
    if args.pooler is not None:
        settings.pooler = args.pooler
    if args.direct_database_url:
        settings.direct_database_url = args.direct_database_url
    if args.max_parameters_bytes is not None:
        settings.max_parameters_bytes = args.max_parameters_bytes
    if args.max_body_bytes is not None:
        settings.max_body_bytes = args.max_body_bytes
    if args.metrics_interval is not None:
        settings.metrics_interval = args.metrics_interval
    for limit in ("auth_failures_per_minute", "max_streams_per_client", "max_streams"):
        if getattr(args, limit) is not None:
            setattr(settings, limit, getattr(args, limit))
    try:
        from .cli_tokens import apply_server_options

        apply_server_options(args, settings)
        serve(settings)
    except (SettingsError, DatabaseSetupError, SchemaError) as exc:
        print(f"whatsnext server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


# ---------------------------------------------------------------- parser

PROJECT_HELP = "project name or id (default: $WHATSNEXT_PROJECT, else 'default')"


def _default_project() -> str:
    return os.environ.get("WHATSNEXT_PROJECT") or DEFAULT_PROJECT


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _add(
    sub: Any,
    name: str,
    func: Command,
    help_text: str,
    example: str,
    json_out: bool = True,
    aliases: Sequence[str] = (),
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=_Formatter,
        aliases=list(aliases),
    )
    if json_out:
        p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(func=func)
    return p


def _group(sub: Any, name: str, help_text: str) -> Any:
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        formatter_class=_Formatter,
    )
    p.set_defaults(func=None, group=p)
    return p.add_subparsers(dest=f"{name}_command", metavar="COMMAND")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whatsnext",
        formatter_class=_Formatter,
        description="WhatsNext: a job queue that schedules by CPU/GPU capacity and honours dependencies.",
        epilog="examples:\n  whatsnext server\n  whatsnext jobs add train --project demo --param lr=0.1\n"
        "  whatsnext worker --project demo --script train.py --cpus 4\n\n"
        "exit codes: 0 ok, 1 refused by the server, 2 usage, 3 server unreachable, 4 not found",
    )
    parser.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="server URL (default: $WHATSNEXT_SERVER or http://localhost:8000)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _add(
        sub,
        "server",
        cmd_server,
        "run the API server",
        "whatsnext server --port 8000 --database-url postgresql://localhost/whatsnext\n"
        "  # behind nginx on this machine, with tokens:\n"
        "  whatsnext server --auth --admin-token-file ~/.whatsnext-admin --allowed-host queue.lab.example.org \\\n"
        "      --trusted-proxy 127.0.0.1/32",
        json_out=False,
    )
    p.add_argument("--host", default=os.environ.get("WHATSNEXT_HOST", "127.0.0.1"), help="address to bind")
    p.add_argument("--port", type=int, default=int(os.environ.get("WHATSNEXT_PORT", "8000")), help="port")
    p.add_argument(
        "--database-url",
        default=None,
        metavar="URL",
        help="PostgreSQL URL (default: $WHATSNEXT_DATABASE_URL, else the embedded database)",
    )
    p.add_argument("--data-dir", default=None, help="embedded database location (default: user data dir)")
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=None,
        metavar="N",
        help="how long a job stays leased without a worker heartbeat (default 60)",
    )
    p.add_argument(
        "--starvation-seconds",
        type=float,
        default=None,
        metavar="N",
        help="after this long eligible, a large job stops smaller ones backfilling (default 300)",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=None,
        metavar="S",
        help="longest wait of one claim or log follow (default: $WHATSNEXT_MAX_WAIT or 30); "
        "a proxy in front must allow longer requests",
    )
    p.add_argument(
        "--max-waiting-claims",
        type=int,
        default=None,
        metavar="N",
        help="long-polling claims this process holds at most; past it a claim answers at once with "
        "retry_after (default: $WHATSNEXT_MAX_WAITING_CLAIMS or 20000)",
    )
    p.add_argument(
        "--pooler",
        choices=("session", "transaction"),
        default=None,
        help="what is between the server and PostgreSQL: session (default: nothing, or a session "
        "pooler) or transaction (PgBouncer in transaction mode; needs --direct-database-url) "
        "(default: $WHATSNEXT_DATABASE_POOLER)",
    )
    p.add_argument(
        "--direct-database-url",
        default=None,
        metavar="URL",
        help="PostgreSQL URL that bypasses the pooler, for LISTEN and migrations "
        "(default: $WHATSNEXT_DIRECT_DATABASE_URL)",
    )
    p.add_argument(
        "--max-parameters-bytes",
        type=int,
        default=None,
        metavar="N",
        help="largest parameters of one job, as JSON bytes (default: $WHATSNEXT_MAX_PARAMETERS_BYTES "
        "or 1048576)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        metavar="N",
        help="largest request body (default: $WHATSNEXT_MAX_BODY_BYTES or 16777216)",
    )
    p.add_argument(
        "--metrics-interval",
        type=float,
        default=None,
        metavar="S",
        help="seconds between computations of the database gauges of /metrics, done by one server "
        "at a time (default: $WHATSNEXT_METRICS_INTERVAL or 15)",
    )
    p.add_argument(
        "--auth-failures-per-minute",
        type=int,
        default=None,
        metavar="N",
        help="failed authentications one client address may make in a minute before it is answered "
        "429 (default: $WHATSNEXT_AUTH_FAILURES_PER_MINUTE or 30; 0: no limit)",
    )
    p.add_argument(
        "--max-streams-per-client",
        type=int,
        default=None,
        metavar="N",
        help="open streams (dashboard live updates, log follows) of one client address; past it, 429 "
        "(default: $WHATSNEXT_MAX_STREAMS_PER_CLIENT or 20)",
    )
    p.add_argument(
        "--max-streams",
        type=int,
        default=None,
        metavar="N",
        help="open streams of this server, all clients together; past it, 429 "
        "(default: $WHATSNEXT_MAX_STREAMS or 1000)",
    )
    p.add_argument("--log-level", default="INFO")
    from .cli_tokens import add_server_options
    from .cli_tokens import register as register_tokens

    add_server_options(p)

    _add(sub, "status", cmd_status, "show the server's health", "whatsnext status")
    register_tokens(sub, _add, _group)

    projects = _group(sub, "projects", "manage projects")
    p = _add(projects, "ls", cmd_projects_ls, "list projects", "whatsnext projects ls --status active")
    p.add_argument("--status", choices=["active", "archived", "ACTIVE", "ARCHIVED"])
    p = _add(
        projects, "add", cmd_projects_add, "create a project", 'whatsnext projects add demo -d "my runs"'
    )
    p.add_argument("name")
    p.add_argument("-d", "--description", default="")
    p.add_argument(
        "--exist-ok",
        action="store_true",
        help="a project of that name may exist already (scripts can re-run)",
    )
    p.add_argument(
        "--strict", action="store_true", help="refuse jobs for tasks the project does not have (typos)"
    )
    p = _add(
        projects,
        "show",
        cmd_projects_show,
        "show a project and its job counts",
        "whatsnext projects show demo",
    )
    p.add_argument("project")
    p = _add(
        projects,
        "archive",
        cmd_projects_archive,
        "archive a project (no new jobs)",
        "whatsnext projects archive demo",
    )
    p.add_argument("project")

    tasks = _group(sub, "tasks", "manage tasks (resource needs, retries, timeouts of their jobs)")
    p = _add(tasks, "ls", cmd_tasks_ls, "list a project's tasks", "whatsnext tasks ls --project demo")
    p.add_argument("--project", default=_default_project(), help=PROJECT_HELP)
    p = _add(
        tasks,
        "add",
        cmd_tasks_add,
        "create a task: the command its jobs run and what they need",
        'whatsnext tasks add train --project demo --command "python train.py --lr {lr} --epochs {epochs}" '
        "--default epochs=10 --cpus 8 --num-gpus 1 --max-attempts 3",
    )
    p.add_argument("name")
    p.add_argument("--project", default=_default_project(), help=PROJECT_HELP)
    p.add_argument(
        "--command",
        metavar="TEMPLATE",
        help="what its jobs run, {param} filled from each job's parameters: 'python train.py --lr {lr}' "
        "(a worker without --script/--command runs it)",
    )
    p.add_argument(
        "--shell", action="store_true", help="--command is a /bin/sh line (pipes, &&; values are quoted)"
    )
    p.add_argument("--default", action="append", metavar="KEY=VALUE", help="a default parameter (repeatable)")
    p.add_argument("--cpus", type=int, default=1, help="CPUs each job needs (default 1)")
    p.add_argument("--num-gpus", type=int, default=None, metavar="N", help="GPUs each job needs (default 0)")
    p.add_argument("--gpus", dest="old_gpus", type=int, default=None, metavar="N", help="same as --num-gpus")
    p.add_argument("--exist-ok", action="store_true", help="a task of that name may exist already")
    p.add_argument("--tags", default="", help="comma-separated tags a worker must have")
    p.add_argument(
        "--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS, help="failures of its own a job may have"
    )
    p.add_argument(
        "--max-lost",
        type=int,
        default=DEFAULT_MAX_LOST,
        help="times a job may go back to the queue because its worker vanished (no attempt used)",
    )
    p.add_argument("--retry-delay", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    p.add_argument(
        "--input", action="append", metavar="PATH", help="a path its jobs read, {param} fields allowed"
    )
    p.add_argument(
        "--output", action="append", metavar="PATH", help="a path its jobs write, {param} fields allowed"
    )

    jobs = _group(sub, "jobs", "submit and inspect jobs")
    p = _add(
        jobs,
        "add",
        cmd_jobs_add,
        "queue a job",
        "whatsnext jobs add data-pipeline --project my-project --name process-data "
        "--param input=file.csv --param format=json",
    )
    p.add_argument("task")
    p.add_argument("--project", default=_default_project(), help=PROJECT_HELP)
    p.add_argument("--name", default=None, help="job name (default: the task's)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a parameter (repeatable)")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument(
        "--depends", action="append", metavar="ID", help="a job that must complete first (repeatable)"
    )
    p.add_argument("--cpus", type=int, default=None, help="override the task's CPU need")
    p.add_argument(
        "--num-gpus", type=int, default=None, metavar="N", help="override how many GPUs the job needs"
    )
    p.add_argument("--gpus", dest="old_gpus", type=int, default=None, metavar="N", help="same as --num-gpus")
    p.add_argument("--group", default=None, help="a group to follow, cancel and retry the job with")
    p.add_argument("--max-attempts", type=int, default=None, help="override the task's attempts")
    p.add_argument(
        "--max-lost",
        type=int,
        default=None,
        help="override how often a lost worker may requeue it (default 3)",
    )
    p.add_argument("--retry-delay", type=float, default=None, metavar="SECONDS")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    p.add_argument("--input", action="append", metavar="PATH", help="a path it reads (replaces the task's)")
    p.add_argument("--output", action="append", metavar="PATH", help="a path it writes (replaces the task's)")
    p = _add(
        jobs,
        "sweep",
        cmd_jobs_sweep,
        "queue one job per combination of parameter values",
        "whatsnext jobs sweep train --project demo --grid lr=0.1,0.01 --grid bs=32,64",
    )
    p.add_argument("task")
    p.add_argument("--project", default=_default_project(), help=PROJECT_HELP)
    p.add_argument(
        "--grid", action="append", required=True, metavar="KEY=V1,V2", help="values of one parameter"
    )
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a fixed parameter (repeatable)")
    p.add_argument("--name", default=None, help="name prefix (default: the task's)")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--depends", default=None, metavar="ID", help="a job every sweep job waits for")
    p.add_argument("--group", default=None, help="the sweep's group name (default TASK-sweep-DATE-TIME)")
    from .cli_groups import register_groups, register_jobs_ls

    register_jobs_ls(jobs, _add, PROJECT_HELP, _default_project())
    for name, func, text in (
        ("show", cmd_jobs_show, "show a job"),
        ("rm", cmd_jobs_rm, "remove a job that is not running"),
        ("cancel", cmd_jobs_cancel, "cancel a job (a running one is stopped by its worker)"),
        ("retry", cmd_jobs_retry, "put a failed, cancelled or blocked job back in the queue"),
    ):
        p = _add(jobs, name, func, text, f"whatsnext jobs {name} 42")
        p.add_argument("job_id", type=int)

    from .cli_logs import cmd_artifacts_find, cmd_jobs_artifacts, cmd_jobs_logs

    p = _add(
        jobs,
        "logs",
        cmd_jobs_logs,
        "print a job's output (-f: and what follows, until the job is finished)",
        "whatsnext jobs logs 42 -f",
    )
    p.add_argument("job_id", type=int)
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until the job is finished"
    )
    p.add_argument("--tail", type=int, default=None, metavar="N", help="start with the last N lines only")
    p = _add(
        jobs, "artifacts", cmd_jobs_artifacts, "list what a job read and wrote", "whatsnext jobs artifacts 42"
    )
    p.add_argument("job_id", type=int)

    artifacts = _group(sub, "artifacts", "the files that jobs read and wrote")
    p = _add(
        artifacts,
        "find",
        cmd_artifacts_find,
        "find the jobs that wrote a file, newest first",
        "whatsnext artifacts find results/model.pt --project demo",
    )
    p.add_argument("uri", metavar="PATH_OR_URI", help="a path (relative ones are made absolute) or a URI")
    p.add_argument("--project", default=_default_project(), help=PROJECT_HELP)
    p.add_argument(
        "--direction", choices=["out", "in", "any"], default="out", help="out: writers (default), in: readers"
    )
    p.add_argument("--limit", type=int, default=100)

    register_groups(sub, _add, _group, PROJECT_HELP, _default_project())

    queue = _group(sub, "queue", "the pending jobs of a project")
    p = _add(
        queue, "ls", cmd_queue_ls, "list pending jobs in hand-out order", "whatsnext queue ls --project demo"
    )
    p.add_argument("--project", default=_default_project(), help=PROJECT_HELP)
    p.add_argument("--limit", type=int, default=100)
    p = _add(
        queue, "clear", cmd_queue_clear, "cancel every pending job", "whatsnext queue clear --project demo"
    )
    p.add_argument("--project", default=_default_project(), help=PROJECT_HELP)

    workers = _group(sub, "workers", "the workers the server knows")
    p = _add(
        workers,
        "ls",
        cmd_workers_ls,
        "list workers: capacity, running jobs, last seen",
        "whatsnext workers ls --project demo",
    )
    p.add_argument("--project", default=None)
    p.add_argument("--status", choices=["online", "offline", "ONLINE", "OFFLINE"])

    p = _add(
        sub,
        "worker",
        cmd_worker,
        "run a worker: claim jobs that fit its CPUs/GPUs and run them (each with its task's "
        "command, unless --script/--command/--python says what to run)",
        "whatsnext worker --project my-project --task train,evaluate --cpus 8 --gpus 0,1",
        json_out=False,
    )
    p.add_argument("--project", default=_default_project(), help=PROJECT_HELP)
    p.add_argument("--task", default=None, metavar="A,B", help="only jobs of these tasks (default: any)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--script", help="run EXECUTABLE SCRIPT --key value ... per job")
    what.add_argument(
        "--command", metavar="TEMPLATE", help='run a template, e.g. "python train.py --lr {lr}"'
    )
    what.add_argument(
        "--python", metavar="MODULE:FUNCTION", help="call a Python function with the parameters"
    )
    p.add_argument(
        "--executable", default="python", help="interpreter for --script (default python; '' for none)"
    )
    p.add_argument(
        "--shell",
        action="store_true",
        help="run --command through /bin/sh (values are quoted; placeholders inside quotes are refused)",
    )
    p.add_argument(
        "--formatter", choices=["cli", "slurm", "runai"], default="cli", help="how jobs run (default cli)"
    )
    p.add_argument("--cpus", type=int, default=None, help="CPUs to offer (default: all)")
    p.add_argument(
        "--gpus",
        default=None,
        metavar="IDS",
        help="GPU ids to offer, as CUDA_VISIBLE_DEVICES: 0,1,3 or 3 (GPU 3), all, none "
        "(default: all visible: $CUDA_VISIBLE_DEVICES, else nvidia-smi)",
    )
    p.add_argument("--gpu-count", type=int, default=None, metavar="N", help="offer the first N visible GPUs")
    p.add_argument("--tags", default="", help="comma-separated tags of this worker")
    p.add_argument("--name", default=None, help="worker name (default host-pid)")
    p.add_argument("--entity", default=os.environ.get("USER", ""))
    p.add_argument("--max-jobs", type=int, default=None, help="at most this many jobs at once")
    p.add_argument(
        "--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL of a stopped job"
    )
    p.add_argument(
        "--forever", action="store_true", help="keep waiting for new jobs instead of exiting when done"
    )
    p.add_argument("--partition", help="slurm: partition")
    p.add_argument("--account", help="slurm: account")
    p.add_argument("--time", help="slurm: time limit, e.g. 01:00:00")
    p.add_argument("--mem", help="slurm: memory, e.g. 4G")
    p.add_argument("--sbatch-arg", action="append", help="slurm: extra sbatch argument (repeatable)")
    p.add_argument("--runai-project", help="runai: the RUN:AI project to submit to")
    p.add_argument("--image", help="runai: container image, e.g. nvcr.io/nvidia/pytorch:24.01-py3")
    p.add_argument("--runai-cli", type=int, choices=[1, 2], default=2, help="runai: CLI version (default 2)")
    p.add_argument("--runai-gpu", type=float, default=None, help="runai: GPUs per job (default: the job's)")
    p.add_argument("--runai-cpu", type=float, default=None, help="runai: CPUs per job (default: the job's)")
    p.add_argument("--namespace", help="runai: Kubernetes namespace (default: runai-PROJECT)")
    p.add_argument("--runai-arg", action="append", help="runai: extra submit argument (repeatable)")
    p.add_argument(
        "--delete-finished", action="store_true", help="runai: delete each workload once it finished"
    )
    p.add_argument(
        "--artifact-root",
        action="append",
        metavar="DIR",
        help="a directory whose files jobs may declare as inputs/outputs, besides their working "
        "directory (repeatable); anything else is recorded as refused",
    )
    p.add_argument(
        "--artifact-hash-gib",
        type=float,
        default=4.0,
        help="hash at most this many GiB of a job's artifacts (default 4); past it, size only",
    )
    p.add_argument(
        "--artifact-hash-seconds",
        type=float,
        default=60.0,
        help="spend at most this long hashing a job's artifacts (default 60)",
    )
    p.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> None:
    from .api.client.errors import ConnectionError as Unreachable
    from .api.client.errors import NotFound, WhatsNextError

    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        group = getattr(args, "group", None)
        (group or parser).print_help()
        sys.exit(EXIT_USAGE)
    try:
        code = func(args)
    except Unreachable as exc:
        code = fail(
            f"{exc.message.split(': ', 1)[0]} (is `whatsnext server` running? set --server or "
            "$WHATSNEXT_SERVER)",
            EXIT_UNREACHABLE,
        )
    except NotFound as exc:
        code = fail(exc.message, EXIT_NOT_FOUND)
    except WhatsNextError as exc:
        code = fail(exc.message)
    except ValueError as exc:
        code = fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
