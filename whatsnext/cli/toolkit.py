"""What every command of the `whatsnext` CLI shares: exit codes, output (tables, JSON), errors, the
request to the server, ``k=v`` parameters and the parser helpers. Imports no HTTP library: the SDK is
imported inside the functions that talk to the server, so ``whatsnext --help`` stays light."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from ..durations import duration as duration  # the argparse type of every duration option
from ..durations import positive_duration as positive_duration
from ..models import STATUSES, TERMINAL

if TYPE_CHECKING:
    from ..api.client.bulk import Selection
    from ..api.client.http import Http

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
DEFAULT_PROJECT = "default"
PROJECT_HELP = "project name or id (default: $WHATSNEXT_PROJECT, else 'default')"
BAR_WIDTH = 30
DURATION_HELP = "a duration: seconds (90) or with a unit (5m, 2h, 1h30m, 1d, HH:MM:SS)"
"""The help of a duration option that says nothing more (each takes :func:`duration`)."""

Command = Callable[[argparse.Namespace], int]
T = TypeVar("T")


# ---------------------------------------------------------------- output


def cell(value: Any) -> str:
    """One table cell: ``-`` for nothing, timestamps to the second, long values cut at 60 characters."""
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
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    if not rows:
        lines.append("(none)")
    return "\n".join(lines)


def progress_bar(counts: dict[str, int], total: int, width: int = BAR_WIDTH) -> str:
    """``[#####=====.....]  12/40 done (completed 10, failed 2, running 3, pending 25)``."""
    done = sum(counts.get(s, 0) for s in TERMINAL)
    running = counts.get("RUNNING", 0)
    filled = round(width * done / total) if total else 0
    active = min(width - filled, round(width * running / total)) if total else 0
    bar = "#" * filled + ">" * active + "." * (width - filled - active)
    parts = ", ".join(f"{s.lower()} {counts[s]}" for s in STATUSES if counts.get(s))
    return f"[{bar}] {done}/{total} done" + (f" ({parts})" if parts else "")


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``label  value`` lines of one thing, the values lined up two spaces past the longest label."""
    width = max(len(label) for label, _ in pairs) + 2
    return "\n".join(f"{label:<{width}}{value}" for label, value in pairs)


def emit(args: argparse.Namespace, data: Any, render: Callable[[Any], str]) -> int:
    """Print ``data`` as JSON (``--json``) or as ``render`` shows it to a person."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print(render(data))
    return EXIT_OK


def fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"whatsnext: error: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------- the server


def http(args: argparse.Namespace) -> Http:
    """The SDK's HTTP session for ``--server`` (else $WHATSNEXT_SERVER) and $WHATSNEXT_TOKEN."""
    from ..api.client.http import Http, server_url

    return Http(server_url(args.server), token=os.environ.get("WHATSNEXT_TOKEN"))


def with_http(args: argparse.Namespace, use: Callable[[Http], Awaitable[T]]) -> T:
    """Run ``use(session)`` (an SDK coroutine) to its end, synchronously; the session closes after."""
    import asyncio

    session = http(args)

    async def go() -> T:
        try:
            return await use(session)
        finally:
            await session.close()

    return asyncio.run(go())


def call(args: argparse.Namespace, method: str, path: str, json_body: Any = None, **params: Any) -> Any:
    """One request to the server, synchronously."""
    return with_http(args, lambda session: session.request(method, path, json=json_body, params=params))


def show_list(
    args: argparse.Namespace,
    path: str,
    key: str,
    columns: Sequence[str],
    headers: Sequence[str] | None = None,
    rows: Callable[[list[dict[str, Any]]], Iterable[dict[str, Any]]] | None = None,
    **params: Any,
) -> int:
    """GET a listing (``path`` with ``params``) and print it: as JSON (``--json``), or its list
    ``data[key]`` as a table of ``columns``, made into display rows by ``rows`` first when given."""
    data = call(args, "GET", path, **params)
    return emit(args, data, lambda d: table(rows(d[key]) if rows else d[key], columns, headers))


def project_path(name: str) -> str:
    from ..api.client.http import project_path as path

    return path(name)


def group_path(project: str, group: str) -> str:
    return project_path(project) + "/groups/" + quote(group, safe="")


# ---------------------------------------------------------------- input


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token on the first line of the file ``path`` (ValueError naming the file when it cannot
    be read or holds none); a warning when others than its owner may read it."""
    import stat
    from pathlib import Path

    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
        mode = file.stat().st_mode
    except OSError as exc:
        raise ValueError(f"cannot read the token file {str(file)!r}: {exc.strerror or exc}") from None
    token = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not token:
        raise ValueError(f"the token file {str(file)!r} holds no token")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"whatsnext: warning: the token file {str(file)!r} may be read by others (chmod 600 it)",
            file=sys.stderr,
        )
    return token


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


def num_gpus(args: argparse.Namespace, default: int | None) -> int | None:
    """``--num-gpus N``; the older ``--gpus N`` still works (with a note: it is a count here)."""
    if args.old_gpus is not None:
        print(
            "whatsnext: note: --gpus here is a number of GPUs; it is spelled --num-gpus now",
            file=sys.stderr,
        )
        if args.num_gpus is None:
            return int(args.old_gpus)
    return args.num_gpus if args.num_gpus is not None else default


def tell_new_tasks(data: dict[str, Any]) -> None:
    """Name on stderr the tasks a submission created (a typo is the usual cause)."""
    from ..api.client.project import warn_new_tasks

    warn_new_tasks(data.get("created_tasks") or ())


# ---------------------------------------------------------------- which jobs


def add_filters(p: argparse.ArgumentParser, which: str = "only") -> None:
    """``--status``, ``--task``, ``--group``, ``--name``, ``--where``: which of a project's jobs a
    command means, as the server's job list filters them; ``which`` begins each help (``only`` for
    a listing, ``cancel the project's`` for an action)."""
    states = ",".join(s.lower() for s in STATUSES)
    shows = "; shows the group's progress" if which == "only" else ""
    p.add_argument(
        "--status",
        action="append",
        metavar="S[,S]",
        help=f"{which} jobs in these statuses (repeatable or comma-separated: {states})",
    )
    p.add_argument("--task", default=None, help=f"{which} jobs of this task")
    p.add_argument("--group", default=None, help=f"{which} jobs of this group (name or id){shows}")
    p.add_argument(
        "--name",
        default=None,
        metavar="PATTERN",
        help=f"{which} jobs named so, * matches anything: 'train[lr=0.1*'",
    )
    p.add_argument(
        "--where",
        action="append",
        metavar="KEY=VALUE",
        help=f"{which} jobs with this parameter value (repeatable; typed as for --param)",
    )


def statuses(given: Sequence[str] | None) -> tuple[str, ...] | None:
    """``--status failed,running`` (repeatable): the statuses, upper case; an unknown one is a
    usage error naming those there are."""
    wanted = [s.strip().upper() for part in (given or ()) for s in part.split(",") if s.strip()]
    for status in wanted:
        if status not in STATUSES:
            known = ", ".join(s.lower() for s in STATUSES)
            raise ValueError(f"--status {status.lower()!r} is not a status: choose from {known}")
    return tuple(dict.fromkeys(wanted)) or None


def selection(args: argparse.Namespace) -> Selection:
    """The jobs the filters of :func:`add_filters` select (an empty selection when none is given);
    ``--where lr=0.1`` values are typed as ``--param`` types them."""
    from ..api.client.bulk import Selection

    return Selection(
        statuses=statuses(args.status),
        task=args.task or None,
        group=args.group or None,
        name=args.name or None,
        where=parse_params(args.where) or None,
    )


def filter_text(args: argparse.Namespace) -> str:
    """The filters given, as typed: ``--group hp1 --status failed``."""
    parts = [f"--{flag} {getattr(args, flag)}" for flag in ("group", "task", "name") if getattr(args, flag)]
    parts += [f"--status {s}" for s in args.status or ()]
    parts += [f"--where {w}" for w in args.where or ()]
    return " ".join(parts)


# ---------------------------------------------------------------- the parser


def default_project() -> str:
    return os.environ.get("WHATSNEXT_PROJECT") or DEFAULT_PROJECT


def add_project(p: argparse.ArgumentParser) -> None:
    """``--project``, defaulting to $WHATSNEXT_PROJECT, else 'default'."""
    p.add_argument("--project", default=default_project(), help=PROJECT_HELP)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def add_concurrency(p: argparse.ArgumentParser, whose: str) -> None:
    """``--concurrency-key KEY --concurrency-limit N``, given together (:func:`concurrency`);
    ``whose``: what the pair applies to, ending the key's help."""
    p.add_argument(
        "--concurrency-key",
        metavar="KEY",
        help="at most --concurrency-limit jobs with this key run at once in the project (a licence, "
        f"a dataset); {whose}",
    )
    p.add_argument(
        "--concurrency-limit",
        type=int,
        metavar="N",
        help="how many jobs with --concurrency-key may run at once",
    )


def concurrency(args: argparse.Namespace) -> dict[str, Any]:
    """The body fields of ``--concurrency-key`` and ``--concurrency-limit`` (none when neither is
    given); one without the other is a usage error."""
    key, limit = args.concurrency_key, args.concurrency_limit
    if key is None and limit is None:
        return {}
    if key is None or limit is None:
        given, missing = "--concurrency-key", "--concurrency-limit"
        if key is None:
            given, missing = missing, given
        raise ValueError(f"{given} needs {missing} too")
    return {"concurrency_key": key, "concurrency_limit": limit}


def add(
    sub: Any,
    name: str,
    func: Command,
    help_text: str,
    example: str,
    json_out: bool = True,
    aliases: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """A command: its help, an example in its epilog, ``--json`` unless ``json_out`` is false."""
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=HelpFormatter,
        aliases=list(aliases),
    )
    if json_out:
        p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(func=func)
    return p


def group(sub: Any, name: str, help_text: str) -> Any:
    """A group of commands (``jobs``, ``queue``...); the group again when it exists already, so
    several modules can add commands to one group."""
    existing = sub.choices.get(name)
    if existing is not None:
        return existing.get_default("commands")
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        formatter_class=HelpFormatter,
    )
    commands = p.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    p.set_defaults(func=None, group=p, commands=commands)
    return commands
