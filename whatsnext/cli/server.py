"""``whatsnext server``: run the API server (with the ``server`` extra installed)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..limits import MAX_BODY_BYTES, MAX_PARAMETERS_BYTES, MAX_STREAMS, MAX_STREAMS_PER_CLIENT
from . import toolkit as tk


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
        return tk.EXIT_USAGE
    from ..api.server.app import serve
    from ..api.server.config import Settings, SettingsError
    from ..api.server.db import DatabaseSetupError
    from ..api.server.schema import SchemaError
    from ..logs import configure

    configure(args.log_level)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"whatsnext server: {exc}", file=sys.stderr)
        return tk.EXIT_USAGE
    settings.host, settings.port = args.host, args.port
    if args.database_url:
        settings.database_url = args.database_url
    if args.data_dir:
        settings.data_dir = Path(args.data_dir)
    for flag, _ in SETTINGS_OPTIONS:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name)
        if value is not None and value != "":  # an empty URL leaves the setting as it is
            setattr(settings, name, value)
    try:
        apply_server_options(args, settings)
        serve(settings)
    except (SettingsError, DatabaseSetupError, SchemaError) as exc:
        print(f"whatsnext server: {exc}", file=sys.stderr)
        return tk.EXIT_USAGE
    return tk.EXIT_OK


def apply_server_options(args: argparse.Namespace, settings: Any) -> None:
    """Set what the auth and browser-safety options say on the server's Settings (SettingsError
    when unreadable)."""
    if args.auth:
        settings.auth = True
    if args.admin_token_file:
        settings.read_admin_token_file(Path(args.admin_token_file))
    if args.allowed_host:
        settings.allowed_hosts = list(args.allowed_host)
    if args.cors_origin:
        settings.cors_origins = [o.rstrip("/") for o in args.cors_origin]
    if args.trusted_proxy:
        settings.trusted_proxies = list(args.trusted_proxy)
    if args.insecure_no_auth:
        settings.insecure_no_auth = True
    if args.secret_parameter:
        settings.secret_parameters = tuple(args.secret_parameter)


SETTINGS_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "--lease-seconds",
        {
            "type": tk.duration,
            "metavar": "D",
            "help": "how long a job stays leased without a worker heartbeat, and a worker counts as "
            "online without one (then lost) (default 60)",
        },
    ),
    (
        "--recovery-grace",
        {
            "type": tk.duration,
            "metavar": "D",
            "help": "after the queue was away longer than a lease (database or every server down, "
            "a server paused), running leases are extended by the time away plus this, and no "
            "worker counts as lost before it has passed (default: $WHATSNEXT_RECOVERY_GRACE or one "
            "lease)",
        },
    ),
    (
        "--starvation-seconds",
        {
            "type": tk.duration,
            "metavar": "D",
            "help": "after this long eligible, a large job stops smaller ones backfilling (default 300)",
        },
    ),
    (
        "--fair-share-half-life",
        {
            "type": tk.duration,
            "metavar": "D",
            "help": "seconds after which a project's usage of the pool counts half when claims "
            "choose between projects (default: $WHATSNEXT_FAIR_SHARE_HALF_LIFE or 3600; give every "
            "server the same)",
        },
    ),
    (
        "--retention",
        {
            "type": tk.positive_duration,
            "metavar": "D",
            "help": "delete finished jobs (with their history, output and artifact records) this "
            "long after they finished, and worker rows this long after they were last seen, e.g. "
            "30d (default: $WHATSNEXT_RETENTION, else keep everything; see docs/retention.md)",
        },
    ),
    (
        "--max-wait",
        {
            "type": tk.duration,
            "metavar": "D",
            "help": "longest wait of one claim or log follow (default: $WHATSNEXT_MAX_WAIT or 30); "
            "a proxy in front must allow longer requests",
        },
    ),
    (
        "--max-waiting-claims",
        {
            "type": int,
            "metavar": "N",
            "help": "long-polling claims this process holds at most; past it a claim answers at once "
            "with retry_after (default: $WHATSNEXT_MAX_WAITING_CLAIMS or 20000)",
        },
    ),
    (
        "--pooler",
        {
            "choices": ("session", "transaction"),
            "help": "what is between the server and PostgreSQL: session (default: nothing, or a "
            "session pooler) or transaction (PgBouncer in transaction mode; needs "
            "--direct-database-url) (default: $WHATSNEXT_DATABASE_POOLER)",
        },
    ),
    (
        "--direct-database-url",
        {
            "metavar": "URL",
            "help": "PostgreSQL URL that bypasses the pooler, for LISTEN and migrations "
            "(default: $WHATSNEXT_DIRECT_DATABASE_URL)",
        },
    ),
    (
        "--max-parameters-bytes",
        {
            "type": int,
            "metavar": "N",
            "help": "largest parameters of one job, as JSON bytes (default: "
            f"$WHATSNEXT_MAX_PARAMETERS_BYTES or {MAX_PARAMETERS_BYTES})",
        },
    ),
    (
        "--max-body-bytes",
        {
            "type": int,
            "metavar": "N",
            "help": f"largest request body (default: $WHATSNEXT_MAX_BODY_BYTES or {MAX_BODY_BYTES})",
        },
    ),
    (
        "--metrics-interval",
        {
            "type": tk.duration,
            "metavar": "D",
            "help": "seconds between computations of the database gauges of /metrics, done by one "
            "server at a time (default: $WHATSNEXT_METRICS_INTERVAL or 15)",
        },
    ),
    (
        "--auth-failures-per-minute",
        {
            "type": int,
            "metavar": "N",
            "help": "failed authentications one client address may make in a minute before it is "
            "answered 429 (default: $WHATSNEXT_AUTH_FAILURES_PER_MINUTE or 30; 0: no limit)",
        },
    ),
    (
        "--max-streams-per-client",
        {
            "type": int,
            "metavar": "N",
            "help": "open streams (dashboard live updates, log follows) of one client address; past "
            f"it, 429 (default: $WHATSNEXT_MAX_STREAMS_PER_CLIENT or {MAX_STREAMS_PER_CLIENT})",
        },
    ),
    (
        "--max-streams",
        {
            "type": int,
            "metavar": "N",
            "help": "open streams of this server, all clients together; past it, 429 "
            f"(default: $WHATSNEXT_MAX_STREAMS or {MAX_STREAMS})",
        },
    ),
)
"""The options that override one server setting of the same name when given (default: the
setting's own, from the environment)."""


def register(sub: Any) -> None:
    p = tk.add(
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
    for flag, options in SETTINGS_OPTIONS:
        p.add_argument(flag, default=None, **options)
    p.add_argument("--log-level", default="INFO")
    add_safety_options(p)


def add_safety_options(p: argparse.ArgumentParser) -> None:
    """The server's options for tokens and browser safety."""
    p.add_argument(
        "--auth",
        action="store_true",
        default=None,
        help="require a token on every route but /health (default: $WHATSNEXT_AUTH)",
    )
    p.add_argument(
        "--admin-token-file",
        default=None,
        metavar="PATH",
        help="a file holding an admin token, to create the first tokens with (or $WHATSNEXT_ADMIN_TOKEN)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a Host name clients reach the server by (repeatable; '*' for any; default the loopback "
        "names when bound to loopback; required otherwise; $WHATSNEXT_ALLOWED_HOSTS)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="a web origin whose pages may call the API, e.g. https://lab.example.org (repeatable; "
        "$WHATSNEXT_CORS_ORIGINS)",
    )
    p.add_argument(
        "--trusted-proxy",
        action="append",
        default=None,
        metavar="CIDR",
        help="a reverse proxy's address or network, e.g. 127.0.0.1/32: only from it are "
        "X-Forwarded-Proto/-Host/-For believed (repeatable; $WHATSNEXT_TRUSTED_PROXIES)",
    )
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve a non-loopback address without --auth (anyone who reaches it may do anything)",
    )
    p.add_argument(
        "--secret-parameter",
        action="append",
        default=None,
        metavar="PATTERN",
        help="parameter names whose values viewers see masked (repeatable glob; default "
        "*token*, *secret*, *password*, *key*; $WHATSNEXT_SECRET_PARAMETERS)",
    )
