"""``whatsnext jobs cancel|retry|rm ID...`` (or every job a filter selects) and ``whatsnext jobs
wait ID...|--group G``: many jobs at once, one line per job, and an exit code that says how they
ended."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..models import STATUSES
from . import toolkit as tk

if TYPE_CHECKING:
    from ..api.client.bulk import Action, Outcome, Progress, Selection
    from ..api.client.http import Http

EXIT_FAILED, EXIT_CANCELLED, EXIT_BLOCKED, EXIT_TIMEOUT = 5, 6, 7, 8
"""``jobs wait``: some job FAILED; else some was CANCELLED; else some is BLOCKED; the timeout came
first. (0: every job COMPLETED; 4: a job or the group does not exist.)"""
WAIT_EXITS = (
    "exit codes: 0 every job COMPLETED; 5 some FAILED; 6 some CANCELLED (none failed); 7 some "
    "BLOCKED (none failed or was cancelled); 8 --timeout came first; 4 no such job or group; "
    "3 server unreachable"
)
ACTION_EXITS = (
    "exit codes: 0 every job was acted on; 1 the server refused some (already finished, running, "
    "depended on...: each line says why); 4 some do not exist (and none was refused); 2 usage "
    "(a filter rm without --yes where nobody can be asked)"
)
SHOWN = 20
"""``jobs wait`` names at most this many of the jobs that did not complete."""

# What each action says: its command, its -ing, its past tense, and of the jobs a filter matches
# but it leaves alone.
VERBS: dict[str, tuple[str, str, str, str]] = {
    "cancel": ("cancel", "cancelling", "cancelled", "have already ended"),
    "retry": ("retry", "retrying", "retried", "are not FAILED, CANCELLED or BLOCKED"),
    "remove": ("rm", "removing", "removed", "are running (cancel them first)"),
}


# ---------------------------------------------------------------- cancel, retry, rm


def _reason(job_id: int, message: str) -> str:
    """A refusal's message without the job it names first: ``job 5 is already FAILED`` →
    ``already FAILED``."""
    prefix = f"job {job_id} "
    if message.startswith(prefix):
        return message[len(prefix) :].removeprefix("is ")
    return message


def outcome_line(action: Action, outcome: Outcome) -> str:
    """``job 12: cancelled``, ``job 13: running; its worker will stop it``, ``job 14: already
    FAILED``, ``job 99: not found``."""
    head = f"job {outcome.id}: "
    answer = outcome.answer or {}
    if outcome.ok:
        if action == "cancel":
            return head + (
                "cancelled" if answer.get("status") == "CANCELLED" else "running; its worker will stop it"
            )
        if action == "retry":
            if outcome.note == "released":
                return head + "back in the queue already (with a job retried before it)"
            return head + f"{answer.get('requeued', 0)} job(s) back in the queue"
        return head + "removed"
    if outcome.not_found:
        return head + "not found"
    return head + _reason(outcome.id, outcome.error.message if outcome.error else "refused")


def _kinds(action: Action, outcomes: list[Outcome]) -> dict[str, int]:
    """How many jobs ended each way: cancelled / stopping (a running one) / retried / removed,
    refused, not found."""
    out: dict[str, int] = {}
    for o in outcomes:
        if o.ok:
            kind = VERBS[action][2]
            if action == "cancel" and (o.answer or {}).get("status") == "RUNNING":
                kind = "stopping"
        else:
            kind = "not found" if o.not_found else "refused"
        out[kind] = out.get(kind, 0) + 1
    return out


def action_exit(outcomes: list[Outcome]) -> int:
    """1 when the server refused a job, else 4 when one does not exist, else 0."""
    if any(not o.ok and not o.not_found for o in outcomes):
        return tk.EXIT_ERROR
    if any(o.not_found for o in outcomes):
        return tk.EXIT_NOT_FOUND
    return tk.EXIT_OK


def _single(args: argparse.Namespace, action: Action, job_id: int) -> int:
    """One job, as the command always did it: the server's answer (``--json``), an error on
    stderr with its exit code."""
    if action == "cancel":
        data = tk.call(args, "POST", f"/jobs/{job_id}/cancel")
        return tk.emit(
            args,
            data,
            lambda d: (
                f"job {d['id']}: "
                + ("cancelled" if d["status"] == "CANCELLED" else "running; its worker will stop it")
            ),
        )
    if action == "retry":
        data = tk.call(args, "POST", f"/jobs/{job_id}/retry")
        return tk.emit(args, data, lambda d: f"job {d['id']}: {d['requeued']} job(s) back in the queue")
    job = tk.call(args, "GET", f"/jobs/{job_id}")
    data = tk.call(args, "DELETE", f"/projects/{job['project_id']}/jobs/{job_id}")
    return tk.emit(args, data, lambda d: f"removed job {job_id}")


def _confirmed(args: argparse.Namespace, n: int) -> bool | None:
    """Whether ``rm`` of a filter may remove ``n`` jobs: ``--yes``, or a person said so at the
    terminal; None when there is nobody to ask."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        return None
    answer = input(f"remove {n} job(s) of project {args.project} ({tk.filter_text(args)})? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def _act(http: Http, args: argparse.Namespace, action: Action, where: Selection) -> int:
    from ..api.client import bulk

    command, doing, _, left_alone = VERBS[action]
    ids: list[int] = list(dict.fromkeys(args.job_ids))
    targets: list[Any] = list(ids)
    report: dict[str, Any] = {"action": action}
    project: str | None = None
    if where:
        project = args.project
        matched = await bulk.select(http, project, where)
        targets = [j for j in matched if j["status"] in bulk.ACTS_ON[action]]
        left = len(matched) - len(targets)
        report.update(matched=len(matched), left_alone=left)
        if not args.json:
            filters = tk.filter_text(args)
            if targets:
                text = f"{doing} {len(targets)} job(s) of project {project} ({filters})"
                text += f"; {left} more match but {left_alone}" if left else ""
            elif matched:
                text = f"nothing to {command}: the {left} job(s) of project {project} that match ({filters}) {left_alone}"
            else:
                text = f"no job of project {project} matches ({filters})"
            print(text, flush=True)
    if args.dry_run:
        if not where:
            looked = await bulk.look(http, ids)
            targets = [looked[i] or {"id": i, "status": "not found"} for i in ids]
        report["jobs"] = targets
        return tk.emit(
            args,
            report,
            lambda _: (
                tk.table(targets, ["id", "name", "task", "status"])
                + f"\n(--dry-run: nothing {VERBS[action][2]})"
            ),
        )
    if action == "remove" and where and targets:
        confirmed = _confirmed(args, len(targets))
        if confirmed is None:
            return tk.fail(
                f"this would remove {len(targets)} job(s): add --yes to remove them (--dry-run lists them)",
                tk.EXIT_USAGE,
            )
        if not confirmed:
            print("nothing removed")
            return tk.EXIT_ERROR

    def done(outcome: Outcome) -> None:
        if not args.json:
            print(outcome_line(action, outcome), flush=True)

    outcomes = await bulk.act(http, action, targets, project=project, done=done)
    kinds = _kinds(action, outcomes)
    if args.json:
        report.update(jobs=[o.to_dict() for o in outcomes], counts=kinds)
        tk.emit(args, report, str)
    elif len(outcomes) > 1:
        print(f"{len(outcomes)} jobs: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    return action_exit(outcomes)


def _run_action(args: argparse.Namespace, action: Action) -> int:
    where = tk.selection(args)
    if args.job_ids and where:
        raise ValueError("give job ids or filters (--group, --status, --where, --task, --name), not both")
    if not args.job_ids and not where:
        raise ValueError(
            f"give job ids, or filters (--group G, --status S, --where KEY=VALUE, --task T, --name P) "
            f"to {VERBS[action][0]} the project's jobs that match them"
        )
    if len(args.job_ids) == 1 and not where and not args.dry_run:
        return _single(args, action, args.job_ids[0])
    return tk.with_http(args, lambda http: _act(http, args, action, where))


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    return _run_action(args, "cancel")


def cmd_jobs_retry(args: argparse.Namespace) -> int:
    return _run_action(args, "retry")


def cmd_jobs_rm(args: argparse.Namespace) -> int:
    return _run_action(args, "remove")


# ---------------------------------------------------------------- wait


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{s.lower()} {counts[s]}" for s in STATUSES if counts.get(s))


def _progress_text(progress: Progress) -> str:
    """``3 of 20 done (completed 2, failed 1, running 4, pending 13)``."""
    parts = _counts_text(progress.counts)
    if progress.missing:
        parts += (", " if parts else "") + f"not found {len(progress.missing)}"
    return f"{progress.done} of {progress.total} done" + (f" ({parts})" if parts else "")


def wait_exit(progress: Progress, timed_out: bool) -> int:
    """The exit code of ``jobs wait`` (see ``WAIT_EXITS``)."""
    if timed_out:
        return EXIT_TIMEOUT
    if progress.missing:
        return tk.EXIT_NOT_FOUND
    for status, code in (("FAILED", EXIT_FAILED), ("CANCELLED", EXIT_CANCELLED), ("BLOCKED", EXIT_BLOCKED)):
        if progress.counts.get(status):
            return code
    return tk.EXIT_OK


async def _not_completed(http: Http, args: argparse.Namespace, progress: Progress) -> list[tuple[int, str]]:
    """Up to ``SHOWN`` of the jobs that ended but did not complete: ``(id, status)``."""
    from ..api.client import bulk

    if not args.group:
        out = [
            (i, s) for i, s in progress.statuses.items() if s and s not in ("COMPLETED", "PENDING", "RUNNING")
        ]
        return (out + [(i, "not found") for i in progress.missing])[:SHOWN]
    ended = bulk.Selection(("FAILED", "CANCELLED", "BLOCKED"), group=args.group)
    if not sum(progress.counts.get(s, 0) for s in ended.statuses or ()):
        return []
    return [(j["id"], j["status"]) for j in await bulk.page(http, args.project, ended, SHOWN, full=False)]


async def _wait(http: Http, args: argparse.Namespace, report: Callable[[str, bool], None]) -> int:
    from ..api.client import bulk

    ids = list(dict.fromkeys(args.job_ids)) or None
    report_seen: list[bool] = []
    what = f"group {args.group}" if args.group else (f"job {ids[0]}" if ids and len(ids) == 1 else "the jobs")
    progress: Progress | None = None
    timed_out = False
    looks = bulk.watch(http, ids, project=args.project, group=args.group)
    try:
        async with asyncio.timeout(args.timeout):
            async for progress in looks:
                if ids and progress.missing and len(report_seen) == 0:
                    # A mistyped id: say so now rather than after the others have ended.
                    names = ", ".join(str(i) for i in progress.missing)
                    return tk.fail(f"job(s) {names} not found", tk.EXIT_NOT_FOUND)
                report_seen.append(True)
                report(f"{what}: {_progress_text(progress)}", progress.finished)
    except TimeoutError:
        timed_out = True
    finally:
        await looks.aclose()
    assert progress is not None
    code = wait_exit(progress, timed_out)
    ended = await _not_completed(http, args, progress)
    data = {
        "total": progress.total,
        "done": progress.done,
        "counts": progress.counts,
        "statuses": {str(i): s for i, s in progress.statuses.items()} if ids else None,
        "missing": progress.missing,
        "timed_out": timed_out,
        "exit_code": code,
    }

    def render(_: Any) -> str:
        head = f"timed out after {args.timeout:g}s: " if timed_out else ""
        lines = [f"{head}{what}: {_progress_text(progress)}"]
        if ended:
            more = progress.total - progress.counts.get("COMPLETED", 0) - len(ended)
            more -= sum(progress.counts.get(s, 0) for s in ("PENDING", "RUNNING"))
            lines.append(
                "not completed: "
                + ", ".join(f"{i} ({s})" for i, s in ended)
                + (f" and {more} more" if more > 0 else "")
            )
        return "\n".join(lines)

    tk.emit(args, data, render)
    return code


def cmd_jobs_wait(args: argparse.Namespace) -> int:
    if bool(args.job_ids) == bool(args.group):
        raise ValueError("give job ids or --group G (not both)")
    if args.timeout is not None and args.timeout <= 0:
        raise ValueError("--timeout must be more than 0")
    tty = sys.stderr.isatty()
    last: list[str] = []

    def report(line: str, finished: bool) -> None:
        """The progress on stderr: redrawn in place on a terminal; elsewhere its first state only."""
        if tty:
            if not last or last[-1] != line:
                sys.stderr.write("\r\x1b[K" + line + ("\n" if finished else ""))
                sys.stderr.flush()
        elif not last and not finished:
            print(f"waiting for {line}", file=sys.stderr, flush=True)
        last.append(line)

    return tk.with_http(args, lambda http: _wait(http, args, report))


# ---------------------------------------------------------------- parser


def register(sub: Any) -> None:
    """``jobs rm``, ``jobs cancel`` and ``jobs retry`` (ids, or a filter) and ``jobs wait``."""
    jobs = tk.group(sub, "jobs", "submit and inspect jobs")
    for name, action, func, text, example in (
        (
            "rm",
            "remove",
            cmd_jobs_rm,
            "remove jobs that are not running (ids, or every job of the project a filter selects)",
            "whatsnext jobs rm 41 42 43\n"
            "  whatsnext jobs rm --project demo --group hp1 --status failed --yes",
        ),
        (
            "cancel",
            "cancel",
            cmd_jobs_cancel,
            "cancel jobs (a running one is stopped by its worker): ids, or a filter",
            "whatsnext jobs cancel 23 24 25\n"
            "  whatsnext jobs cancel --project demo --where lr=0.9\n"
            "  whatsnext jobs cancel --project demo --group hp1 --status pending --dry-run",
        ),
        (
            "retry",
            "retry",
            cmd_jobs_retry,
            "put failed, cancelled or blocked jobs back in the queue: ids, or a filter",
            "whatsnext jobs retry 31 32\n  whatsnext jobs retry --project demo --group hp1 --status failed",
        ),
    ):
        p = tk.add(jobs, name, func, text, example + "\n\n" + ACTION_EXITS)
        p.add_argument("job_ids", nargs="*", type=int, metavar="ID", help="the jobs (or use the filters)")
        tk.add_project(p)
        tk.add_filters(p, f"{VERBS[action][0]} the project's")
        p.add_argument(
            "--dry-run",
            action="store_true",
            help=f"list the jobs it would {VERBS[action][0]}; change nothing",
        )
        if action == "remove":
            p.add_argument(
                "--yes",
                action="store_true",
                help="remove what a filter selects without asking (needed where nobody can be asked)",
            )

    p = tk.add(
        jobs,
        "wait",
        cmd_jobs_wait,
        "wait until jobs have ended; exit 0 only if all of them COMPLETED",
        "whatsnext jobs wait 41 42 43\n"
        "  whatsnext jobs wait --project demo --group hp1 --timeout 2h && echo all completed\n\n"
        + WAIT_EXITS,
    )
    p.add_argument("job_ids", nargs="*", type=int, metavar="ID", help="the jobs (or --group)")
    tk.add_project(p)
    p.add_argument("--group", default=None, help="every job of this group (name or id), as it grows")
    p.add_argument(
        "--timeout",
        type=tk.duration,
        default=None,
        metavar="D",
        help="give up after this long (exit 8); " + tk.DURATION_HELP,
    )
