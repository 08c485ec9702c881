"""The `whatsnext` command (alias `wnxt`)."""

from __future__ import annotations

import argparse
import os
import sys


def _server(args: argparse.Namespace) -> int:
    from .api.server.app import serve
    from .api.server.config import Settings
    from .logs import configure

    configure(args.log_level)
    settings = Settings.from_env()
    settings.host, settings.port = args.host, args.port
    if args.database_url:
        settings.database_url = args.database_url
    if args.lease_seconds is not None:
        settings.lease_seconds = args.lease_seconds
    if args.starvation_seconds is not None:
        settings.starvation_seconds = args.starvation_seconds
    if args.data_dir:
        from pathlib import Path

        settings.data_dir = Path(args.data_dir)
    serve(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whatsnext", description="WhatsNext job queue.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "server",
        help="run the API server",
        description="Run the WhatsNext API server. Without a database URL it starts an "
        "embedded PostgreSQL under the user's data directory.",
        epilog="example: whatsnext server --port 8000 --database-url postgresql://localhost/wn",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default=os.environ.get("WHATSNEXT_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("WHATSNEXT_PORT", "8000")))
    p.add_argument(
        "--database-url",
        default=None,
        help="PostgreSQL URL (default: $WHATSNEXT_DATABASE_URL, else the embedded database)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="where the embedded database lives (default: $WHATSNEXT_DATA_DIR or the user data dir)",
    )
    p.add_argument(
        "--lease-seconds", type=float, default=None, help="job lease without heartbeat (default 60)"
    )
    p.add_argument(
        "--starvation-seconds",
        type=float,
        default=None,
        help="after this long eligible, a large job stops smaller ones from backfilling (default 300)",
    )
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_server)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        sys.exit(2)
    sys.exit(args.func(args))
