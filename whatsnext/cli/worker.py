"""``whatsnext worker``: claim jobs that fit this machine and run them."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import toolkit as tk


def build_formatter(args: argparse.Namespace) -> Any:
    """The worker's formatter; with none of --script/--command/--python, each job runs its task's
    command template (TaskFormatter)."""
    from ..api.client import CLIFormatter, PythonFormatter, TaskFormatter

    kind = args.formatter
    if kind == "runai":
        from ..api.client.formatters.runai import RUNAIFormatter

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
        from ..api.client.formatters.slurm import SlurmFormatter

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


def worker_projects(args: argparse.Namespace) -> list[str]:
    """The projects given with ``--project`` (repeatable), each once; none given and no
    ``--all-projects``: $WHATSNEXT_PROJECT, else 'default'."""
    if args.all_projects:
        return []
    return list(dict.fromkeys(args.project or [tk.default_project()]))


def stopping_options(args: argparse.Namespace) -> dict[str, Any]:
    """How the worker stops and where its jobs keep checkpoints (``Client`` keyword arguments)."""
    from ..api.client.shutdown import check_drain_timeout, parse_signal

    return {
        "on_sigterm": args.on_sigterm,
        "drain_timeout": check_drain_timeout(args.drain_timeout),
        "job_signal": parse_signal(args.job_signal),
        "checkpoint_root": args.checkpoint_root,
    }


def worker_server(args: argparse.Namespace) -> Any:
    """The server the worker reaches (``--server``, else $WHATSNEXT_SERVER), with the token of
    ``--token-file`` when given (else $WHATSNEXT_TOKEN)."""
    from ..api.client import AsyncServer

    url = tk.http(args).base_url
    if args.token_file is None:
        return url
    return AsyncServer(url, token=tk.read_token_file(args.token_file))


def cmd_worker(args: argparse.Namespace) -> int:
    from ..api.client import Client
    from ..logs import configure

    configure(args.log_level)
    if args.python:
        sys.path.insert(0, os.getcwd())
    formatter = build_formatter(args)
    client = Client(
        entity=args.entity,
        name=args.name,
        project=worker_projects(args),
        all_projects=args.all_projects,
        formatter=formatter,
        available_cpu=args.cpus,
        available_accelerators=worker_gpus(args),
        tags=[t for t in (args.tags or "").split(",") if t],
        tasks=[t for t in (args.task or "").split(",") if t] or None,
        server=worker_server(args),
        max_jobs=args.max_jobs,
        grace=args.grace,
        artifact_roots=args.artifact_root or (),
        artifact_hash_bytes=int(args.artifact_hash_gib * (1 << 30)),
        artifact_hash_seconds=args.artifact_hash_seconds,
        deadline=args.deadline,
        idle_timeout=args.idle_timeout,
        **stopping_options(args),
    )
    summary = client.work(forever=args.forever)
    requeued = f", {summary.requeued} requeued" if summary.requeued else ""
    print(
        f"worker done: {summary.completed} completed, {summary.failed} failed, "
        f"{summary.cancelled} cancelled{requeued}",
        file=sys.stderr,
    )
    return tk.EXIT_OK


def register(sub: Any) -> None:
    p = tk.add(
        sub,
        "worker",
        cmd_worker,
        "run a worker: claim jobs that fit its CPUs/GPUs and run them (each with its task's "
        "command, unless --script/--command/--python says what to run)",
        "whatsnext worker --project my-project --task train,evaluate --cpus 8 --gpus 0,1\n"
        "  whatsnext worker --project vision --project nlp --cpus 16  # one pool for both projects\n"
        "  whatsnext worker --all-projects --forever                  # every project it may work on",
        json_out=False,
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--project",
        action="append",
        default=None,
        metavar="PROJECT",
        help=tk.PROJECT_HELP + "; repeat it to serve several projects from one pool",
    )
    which.add_argument(
        "--all-projects",
        action="store_true",
        help="serve every project this worker may work on (its token's; without --auth, all), "
        "looked up at each claim",
    )
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
    p.add_argument(
        "--cpus",
        type=int,
        default=None,
        help="CPUs to offer (default: all of this host's; slurm and runai: no bound but --max-jobs)",
    )
    p.add_argument(
        "--gpus",
        default=None,
        metavar="IDS",
        help="GPU ids to offer, as CUDA_VISIBLE_DEVICES: 0,1,3 or 3 (GPU 3), all, none "
        "(default: all visible: $CUDA_VISIBLE_DEVICES, else nvidia-smi; slurm and runai: no bound)",
    )
    p.add_argument("--gpu-count", type=int, default=None, metavar="N", help="offer the first N visible GPUs")
    p.add_argument("--tags", default="", help="comma-separated tags of this worker")
    p.add_argument("--name", default=None, help="worker name (default host-pid)")
    p.add_argument("--entity", default=os.environ.get("USER", ""))
    p.add_argument(
        "--max-jobs",
        type=int,
        default=None,
        help="at most this many jobs at once (slurm and runai: 100 by default, and the only bound: "
        "their jobs do not run on this host, so its CPUs and GPUs do not count unless given)",
    )
    p.add_argument(
        "--deadline",
        default=None,
        metavar="T",
        help="when this worker's time ends: an ISO time (2025-06-01T18:00, local unless it has a zone) "
        "or a duration (90m, 2h, 1h30m, 3600, 01:30:00); it claims only jobs whose timeout fits in "
        "what is left less --grace, and hands back what still runs when only --grace is left. "
        "Default: inside a SLURM allocation, its end; 'none': no end",
    )
    p.add_argument(
        "--grace",
        type=tk.duration,
        default=10.0,
        metavar="D",
        help="time between the job signal and SIGKILL of a stopped job (default 10 s)",
    )
    p.add_argument(
        "--on-sigterm",
        choices=["drain", "requeue"],
        default=None,
        help="on SIGTERM, drain (finish running jobs, claim no more) or requeue (stop them now, "
        "back to the queue); default requeue when $SLURM_JOB_ID is set, else drain. A second "
        "signal always stops and requeues",
    )
    p.add_argument(
        "--drain-timeout",
        type=tk.duration,
        default=None,
        metavar="D",
        help="while draining, stop and requeue the jobs still running after D (10m, 600; default: no limit)",
    )
    p.add_argument(
        "--job-signal",
        default="SIGTERM",
        metavar="SIG",
        help="the first signal a stopped job gets, SIGKILL following after --grace (default SIGTERM)",
    )
    p.add_argument(
        "--checkpoint-root",
        default=None,
        metavar="DIR",
        help="each job's checkpoint directory is DIR/PROJECT/JOB_ID (default $WHATSNEXT_CHECKPOINT_ROOT, "
        "else ~/.whatsnext/checkpoints); use a filesystem shared by the workers' hosts",
    )
    p.add_argument(
        "--forever", action="store_true", help="keep waiting for new jobs instead of exiting when done"
    )
    p.add_argument(
        "--idle-timeout",
        type=tk.positive_duration,
        default=None,
        metavar="D",
        help="stop (and deregister) after D with nothing running and nothing claimed (5m, 300); "
        "with --forever, a worker of an allocation ends it this way when the work is gone",
    )
    p.add_argument(
        "--token-file",
        "--worker-token-file",
        dest="token_file",
        default=None,
        metavar="PATH",
        help="read the worker's token from the first line of PATH (default: $WHATSNEXT_TOKEN); keep "
        "the file readable by you only",
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
        type=tk.duration,
        default=60.0,
        metavar="D",
        help="spend at most this long hashing a job's artifacts (default 60 s)",
    )
    p.add_argument("--log-level", default="INFO")
