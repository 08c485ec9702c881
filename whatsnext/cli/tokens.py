"""``whatsnext tokens create|ls|revoke``: access tokens (admin; the server runs with --auth)."""

from __future__ import annotations

import argparse
from typing import Any

from ..models import ROLES
from . import toolkit as tk


def cmd_tokens_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "role": args.role}
    if args.project:
        body["projects"] = [int(p) if p.isdigit() else p for p in args.project]
    if args.expires_in is not None:
        body["expires_in"] = args.expires_in
    data = tk.call(args, "POST", "/tokens", body)

    def render(d: dict[str, Any]) -> str:
        scope = "all projects" if d["projects"] is None else "projects " + ", ".join(map(str, d["projects"]))
        expiry = f", expires {d['expires_at']}" if d["expires_at"] else ""
        return (
            f"created token {d['name']} (id {d['id']}, {d['role']}, {scope}{expiry})\n"
            f"{d['token']}\n"
            "keep it now: it is not shown again (give it as $WHATSNEXT_TOKEN)"
        )

    return tk.emit(args, data, render)


def cmd_tokens_ls(args: argparse.Namespace) -> int:
    data = tk.call(args, "GET", "/tokens")
    rows = [
        {**t, "projects": "all" if t["projects"] is None else ",".join(map(str, t["projects"]))}
        for t in data["tokens"]
        if args.all or t["revoked_at"] is None
    ]
    columns = ["id", "name", "role", "projects", "expires_at", "last_used_at", "revoked_at"]
    return tk.emit(args, {"tokens": rows}, lambda d: tk.table(d["tokens"], columns))


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    data = tk.call(args, "DELETE", f"/tokens/{args.token_id}")
    return tk.emit(args, data, lambda d: f"revoked token {d['name']} (id {d['id']})")


def register(sub: Any) -> None:
    tokens = tk.group(sub, "tokens", "manage access tokens (admin; the server runs with --auth)")
    p = tk.add(
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
        "--expires-in",
        type=tk.duration,
        default=None,
        metavar="D",
        help="lifetime (30d, 12h, seconds; default none)",
    )
    p = tk.add(
        tokens, "ls", cmd_tokens_ls, "list tokens (never the tokens themselves)", "whatsnext tokens ls"
    )
    p.add_argument("--all", action="store_true", help="include revoked tokens")
    p = tk.add(
        tokens,
        "revoke",
        cmd_tokens_revoke,
        "revoke a token: it stops working at once",
        "whatsnext tokens revoke 3",
    )
    p.add_argument("token_id", type=int, help="the token's id (whatsnext tokens ls)")
