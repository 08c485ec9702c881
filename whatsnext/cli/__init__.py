"""The `whatsnext` command (alias `wnxt`): run the server, submit and inspect jobs, run workers.

Each command family is a module owning its part of the parser (``register(sub)``); ``main`` only
assembles them. Nothing here imports the SDK or an HTTP library until a command runs."""

from __future__ import annotations

import argparse
import sys

from . import (
    alloc,
    groups,
    joblist,
    jobs,
    jobsets,
    logs,
    projects,
    prune,
    queue,
    schedules,
    server,
    status,
    tasks,
    tokens,
    worker,
    workers,
)
from . import toolkit as tk

FAMILIES = (
    server,
    status,
    tokens,
    projects,
    tasks,
    jobs,
    joblist,
    jobsets,
    logs,
    groups,
    schedules,
    queue,
    workers,
    worker,
    alloc,
    prune,
)
"""In the order ``whatsnext --help`` lists their commands."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whatsnext",
        formatter_class=tk.HelpFormatter,
        description="WhatsNext: a job queue that schedules by CPU/GPU capacity and honours dependencies.",
        epilog="examples:\n  whatsnext server\n  whatsnext jobs add train --project demo --param lr=0.1\n"
        "  whatsnext worker --project demo --script train.py --cpus 4\n\n"
        "exit codes: 0 ok, 1 refused by the server, 2 usage, 3 server unreachable, 4 not found; "
        "5-8 how the jobs of `jobs wait` ended (see its --help)",
    )
    parser.add_argument(
        "--server",
        default=None,
        metavar="URL",
        help="server URL (default: $WHATSNEXT_SERVER or http://localhost:8000)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for family in FAMILIES:
        family.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        group = getattr(args, "group", None)
        (group or parser).print_help()
        sys.exit(tk.EXIT_USAGE)
    sys.exit(run(func, args))


def run(func: tk.Command, args: argparse.Namespace) -> int:
    """Run a command; the SDK's errors become a one-line message and an exit code."""
    from ..api.client.errors import ConnectionError as Unreachable
    from ..api.client.errors import NotFound, WhatsNextError

    try:
        return func(args)
    except Unreachable as exc:
        return tk.fail(
            f"{exc.message.split(': ', 1)[0]} (is `whatsnext server` running? set --server or "
            "$WHATSNEXT_SERVER)",
            tk.EXIT_UNREACHABLE,
        )
    except NotFound as exc:
        return tk.fail(exc.message, tk.EXIT_NOT_FOUND)
    except WhatsNextError as exc:
        return tk.fail(exc.message)
    except ValueError as exc:
        return tk.fail(str(exc), tk.EXIT_USAGE)
    except KeyboardInterrupt:
        return 130
