"""``whatsnext tokens create|ls|revoke``, and the server's auth and browser-safety options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .models import ROLES


def cmd_tokens_create(args: argparse.Namespace) -> int:
    from .cli import call, emit

    body: dict[str, Any] = {"name": args.name, "role": args.role}
    if args.project:
        body["projects"] = [int(p) if p.isdigit() else p for p in args.project]
    if args.expires_in is not None:
        body["expires_in"] = args.expires_in
    data = call(args, "POST", "/tokens", body)

    def render(d: dict[str, Any]) -> str:
        scope = "all projects" if d["projects"] is None else "projects " + ", ".join(map(str, d["projects"]))
        expiry = f", expires {d['expires_at']}" if d["expires_at"] else ""
        return (
            f"created token {d['name']} (id {d['id']}, {d['role']}, {scope}{expiry})\n"
            f"{d['token']}\n"
            "keep it now: it is not shown again (give it as $WHATSNEXT_TOKEN)"
        )

    return emit(args, data, render)


def cmd_tokens_ls(args: argparse.Namespace) -> int:
    from .cli import call, emit, table

    data = call(args, "GET", "/tokens")
    rows = [
        {**t, "projects": "all" if t["projects"] is None else ",".join(map(str, t["projects"]))}
        for t in data["tokens"]
        if args.all or t["revoked_at"] is None
    ]
    columns = ["id", "name", "role", "projects", "expires_at", "last_used_at", "revoked_at"]
    return emit(args, {"tokens": rows}, lambda d: table(d["tokens"], columns))


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    from .cli import call, emit

    data = call(args, "DELETE", f"/tokens/{args.token_id}")
    return emit(args, data, lambda d: f"revoked token {d['name']} (id {d['id']})")


def register(sub: Any, add: Any, group: Any) -> None:
    """Add the ``tokens`` group (``add``/``group``: the CLI's helpers for commands and groups)."""
    tokens = group(sub, "tokens", "manage access tokens (admin; the server runs with --auth)")
    p = add(
        tokens,
        "create",
        cmd_tokens_create,
        "create a token (shown once)",
        "whatsnext tokens create ci-worker --role worker --project demo --expires-in 2592000",
    )
    p.add_argument("name", help="who or what holds it (job history shows this name)")
    p.add_argument(
        "--role", required=True, choices=ROLES, help="what the token may do (see docs/security.md)"
    )
    p.add_argument(
        "--project",
        action="append",
        metavar="NAME_OR_ID",
        help="a project it covers (repeatable; default all)",
    )
    p.add_argument(
        "--expires-in", type=float, default=None, metavar="SECONDS", help="lifetime (default none)"
    )
    p = add(tokens, "ls", cmd_tokens_ls, "list tokens (never the tokens themselves)", "whatsnext tokens ls")
    p.add_argument("--all", action="store_true", help="include revoked tokens")
    p = add(
        tokens,
        "revoke",
        cmd_tokens_revoke,
        "revoke a token: it stops working at once",
        "whatsnext tokens revoke 3",
    )
    p.add_argument("token_id", type=int, help="the token's id (whatsnext tokens ls)")


def add_server_options(p: argparse.ArgumentParser) -> None:
    """The ``server`` command's options for tokens and browser safety."""
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


def apply_server_options(args: argparse.Namespace, settings: Any) -> None:
    """Set what the options above say on the server's Settings (SettingsError when unreadable)."""
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
