"""Server settings: command-line flags, with WHATSNEXT_* environment variables as defaults."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import platformdirs

from ...durations import parse_duration
from ...limits import (
    LOG_KEEP_LINES,
    MAX_BODY_BYTES,
    MAX_PARAMETERS_BYTES,
    MAX_STREAMS,
    MAX_STREAMS_PER_CLIENT,
)

Pooler = Literal["session", "transaction"]
MIN_ADMIN_TOKEN = 32
"""The shortest admin token the server starts with (``wnt_`` and 43 random characters is 47)."""
POOLERS: tuple[Pooler, ...] = ("session", "transaction")


class SettingsError(ValueError):
    """Settings the server cannot start with; the message says which option to change."""


def parse_pooler(value: str) -> Pooler:
    value = value.strip().lower()
    if value not in POOLERS:
        raise SettingsError(f"the database pooler must be session or transaction, got {value!r}")
    return cast(Pooler, value)


def default_data_dir() -> Path:
    return Path(os.environ.get("WHATSNEXT_DATA_DIR") or platformdirs.user_data_dir("whatsnext"))


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    """PostgreSQL URL; None starts the embedded database under ``data_dir``."""
    data_dir: Path | None = None
    lease_seconds: float = 60.0
    """How long a claimed job stays leased without a heartbeat from its worker."""
    recovery_grace: float | None = None
    """After the queue was away (PostgreSQL, every server, or the sweeping server paused) for
    longer than a lease, every running lease is extended by the time away plus this many seconds,
    for the workers to reach a server again (default: one lease)."""
    starvation_seconds: float = 300.0
    """After this long eligible, a job that fits a worker's total capacity stops backfilling past it."""
    fair_share_half_life: float = 3600.0
    """Seconds after which a project's usage of the pool counts half in fair share. One value for
    every server on a database: each writes its own at start (the last one started holds)."""
    reaper_interval: float | None = None
    metrics_interval: float = 15.0
    """Seconds between computations of the database gauges of /metrics (by one server at a time)."""
    """Seconds between lease sweeps (default: a quarter of the lease, at least 0.5 s)."""
    pool_min: int = 2
    pool_max: int = 10
    max_wait: float = 30.0
    max_waiting_claims: int = 20_000
    """Long-polling claims one server process holds at most; past it a claim answers at once,
    empty, with ``retry_after`` (each one holds a socket: see the open-file limit)."""
    """The longest a claim or a log follow waits in one request (proxies must allow more)."""
    keepalive_seconds: float = 15.0
    """A log follow sends a keep-alive line after this long without output."""
    notify_check_seconds: float = 5.0
    """How long the start-up check waits for a NOTIFY sent through the pool to reach LISTEN
    (``$WHATSNEXT_NOTIFY_CHECK_SECONDS``); a transaction pooler it was not told about fails it."""
    pooler: Pooler = "session"
    """What sits between the server and PostgreSQL: ``session`` (nothing, or a session pooler) or
    ``transaction`` (PgBouncer in transaction mode: no prepared statements, no session state)."""
    direct_database_url: str | None = None
    """A connection that bypasses a transaction pooler: LISTEN, migrations, function installation."""
    max_parameters_bytes: int = MAX_PARAMETERS_BYTES
    """The largest ``parameters`` of one job (and ``defaults`` of one task), as JSON bytes."""
    max_body_bytes: int = MAX_BODY_BYTES
    """The largest request body; a larger one is answered 413."""
    auth: bool = False
    """Require a token on every route but /health (``--auth``, ``$WHATSNEXT_AUTH=1``)."""
    admin_token: str | None = field(default=None, repr=False)
    """A token that is ``admin`` without being in the database: the way to create the first tokens."""
    allowed_hosts: list[str] = field(default_factory=list)
    """``Host`` names served (``name`` or ``name:port``, ``*`` for any); loopback ones are added
    when bound to loopback."""
    cors_origins: list[str] = field(default_factory=list)
    """Web origins (``https://app.example.org``) whose pages may call the API."""
    trusted_proxies: list[str] = field(default_factory=list)
    """Networks (CIDR) of reverse proxies whose ``X-Forwarded-Proto/-Host/-For`` headers are believed
    (``--trusted-proxy``, ``$WHATSNEXT_TRUSTED_PROXIES``); from other peers they are ignored."""
    insecure_no_auth: bool = False
    """Allow a non-loopback address without --auth."""
    secret_parameters: tuple[str, ...] = ("*token*", "*secret*", "*password*", "*key*")
    """Parameter names (glob patterns, any case) whose values viewers see masked."""
    auth_failures_per_minute: int = 30
    """Failed authentications one client address may make in a minute; past it, 429 (0: no limit)."""
    max_streams_per_client: int = MAX_STREAMS_PER_CLIENT
    """Open streams (dashboard live updates, log follows) of one client address; past it, 429."""
    max_streams: int = MAX_STREAMS
    """Open streams of this server process, all clients together; past it, 429."""
    log_keep_lines: int = LOG_KEEP_LINES
    """Output lines kept per job, all attempts together; older ones are dropped and counted
    (``$WHATSNEXT_LOG_KEEP_LINES``)."""
    retention: float | None = None
    """Seconds a finished job is kept after it finished (with its history, output and artifact
    records; worker rows alike after they were last seen); None keeps everything
    (``--retention``, ``$WHATSNEXT_RETENTION``)."""

    @classmethod
    def from_env(cls) -> Settings:
        s = cls()
        s.database_url = os.environ.get("WHATSNEXT_DATABASE_URL") or None
        if "WHATSNEXT_LEASE_SECONDS" in os.environ:
            s.lease_seconds = _seconds("WHATSNEXT_LEASE_SECONDS")
        if os.environ.get("WHATSNEXT_RECOVERY_GRACE"):
            s.recovery_grace = _seconds("WHATSNEXT_RECOVERY_GRACE")
        if "WHATSNEXT_STARVATION_SECONDS" in os.environ:
            s.starvation_seconds = _seconds("WHATSNEXT_STARVATION_SECONDS")
        if "WHATSNEXT_FAIR_SHARE_HALF_LIFE" in os.environ:
            s.fair_share_half_life = _seconds("WHATSNEXT_FAIR_SHARE_HALF_LIFE")
        if "WHATSNEXT_MAX_WAIT" in os.environ:
            s.max_wait = _seconds("WHATSNEXT_MAX_WAIT")
        if "WHATSNEXT_MAX_WAITING_CLAIMS" in os.environ:
            s.max_waiting_claims = int(os.environ["WHATSNEXT_MAX_WAITING_CLAIMS"])
        if os.environ.get("WHATSNEXT_METRICS_INTERVAL"):
            s.metrics_interval = _seconds("WHATSNEXT_METRICS_INTERVAL")
        if "WHATSNEXT_KEEPALIVE_SECONDS" in os.environ:
            s.keepalive_seconds = _seconds("WHATSNEXT_KEEPALIVE_SECONDS")
        if os.environ.get("WHATSNEXT_RETENTION"):
            s.retention = _seconds("WHATSNEXT_RETENTION")
        if os.environ.get("WHATSNEXT_NOTIFY_CHECK_SECONDS"):
            s.notify_check_seconds = _seconds("WHATSNEXT_NOTIFY_CHECK_SECONDS")
        s.pooler = parse_pooler(os.environ.get("WHATSNEXT_DATABASE_POOLER") or "session")
        s.direct_database_url = os.environ.get("WHATSNEXT_DIRECT_DATABASE_URL") or None
        for env, attr, unit in (
            ("WHATSNEXT_MAX_PARAMETERS_BYTES", "max_parameters_bytes", "a number of bytes"),
            ("WHATSNEXT_MAX_BODY_BYTES", "max_body_bytes", "a number of bytes"),
            ("WHATSNEXT_AUTH_FAILURES_PER_MINUTE", "auth_failures_per_minute", "a whole number"),
            ("WHATSNEXT_MAX_STREAMS_PER_CLIENT", "max_streams_per_client", "a whole number"),
            ("WHATSNEXT_MAX_STREAMS", "max_streams", "a whole number"),
            ("WHATSNEXT_LOG_KEEP_LINES", "log_keep_lines", "a whole number"),
        ):
            if os.environ.get(env):
                try:
                    setattr(s, attr, int(os.environ[env]))
                except ValueError:
                    raise SettingsError(f"${env} must be {unit}, got {os.environ[env]!r}") from None
        s.auth = os.environ.get("WHATSNEXT_AUTH", "").strip().lower() in ("1", "true", "yes", "on")
        s.admin_token = os.environ.get("WHATSNEXT_ADMIN_TOKEN", "").strip() or None
        s.allowed_hosts = _words(os.environ.get("WHATSNEXT_ALLOWED_HOSTS"))
        s.cors_origins = [o.rstrip("/") for o in _words(os.environ.get("WHATSNEXT_CORS_ORIGINS"))]
        s.trusted_proxies = _words(os.environ.get("WHATSNEXT_TRUSTED_PROXIES"))
        if os.environ.get("WHATSNEXT_SECRET_PARAMETERS"):
            s.secret_parameters = tuple(_words(os.environ["WHATSNEXT_SECRET_PARAMETERS"]))
        return s

    def read_admin_token_file(self, path: Path) -> None:
        """``--admin-token-file``: the bootstrap admin token from the file's first line."""
        try:
            token = path.read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise SettingsError(f"--admin-token-file {path}: cannot read a token from it ({exc})") from None
        self.admin_token = token

    def check(self) -> None:
        """Refuse settings that cannot work, with a message saying what to change."""
        if not is_loopback(self.host):
            if not self.auth and not self.insecure_no_auth:
                raise SettingsError(
                    f"--host {self.host} is reachable from other machines: start with --auth (tokens), "
                    "or say --insecure-no-auth to serve anyone who can reach it"
                )
            if not self.allowed_hosts:
                raise SettingsError(
                    f"--host {self.host} needs --allowed-host NAME (repeatable): the names clients use "
                    "to reach this server (or '*' for any, e.g. behind a proxy that checks it)"
                )
        for origin in self.cors_origins:
            if parse_origin(origin) is None:
                raise SettingsError(
                    f"--cors-origin {origin!r} is not a web origin: give each one as scheme://host[:port] "
                    "(http or https, no path, no wildcard), e.g. https://lab.example.org"
                )
        for network in self.trusted_proxies:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise SettingsError(
                    f"--trusted-proxy {network!r} is not an address or network: give it as CIDR, "
                    "e.g. 127.0.0.1/32 or 10.0.0.0/8"
                ) from None
        if self.admin_token is not None and len(self.admin_token) < MIN_ADMIN_TOKEN:
            raise SettingsError(
                f"the admin token must have at least {MIN_ADMIN_TOKEN} characters, it has "
                f'{len(self.admin_token)}: make one with python -c "import secrets; '
                "print('wnt_' + secrets.token_urlsafe(32))\""
            )
        if self.auth_failures_per_minute < 0:
            raise SettingsError(
                f"--auth-failures-per-minute must be 0 (no limit) or more, got {self.auth_failures_per_minute}"
            )
        if self.max_streams_per_client < 1 or self.max_streams < 1:
            raise SettingsError(
                "--max-streams-per-client and --max-streams must be at least 1, got "
                f"{self.max_streams_per_client} and {self.max_streams}"
            )
        if self.recovery_grace is not None and not 0 <= self.recovery_grace < float("inf"):
            raise SettingsError(f"--recovery-grace must be 0 or more seconds, got {self.recovery_grace}")
        if self.retention is not None and not 0 < self.retention < float("inf"):
            raise SettingsError(f"--retention must be a positive duration (30d, 12h), got {self.retention}")
        if self.max_wait <= 0:
            raise SettingsError(f"--max-wait must be positive, got {self.max_wait}")
        if not 0 < self.fair_share_half_life < float("inf"):
            raise SettingsError(f"--fair-share-half-life must be positive, got {self.fair_share_half_life}")
        if self.max_parameters_bytes <= 0 or self.max_body_bytes <= 0:
            raise SettingsError(
                "--max-parameters-bytes and --max-body-bytes must be positive, got "
                f"{self.max_parameters_bytes} and {self.max_body_bytes}"
            )
        if self.metrics_interval <= 0:
            raise SettingsError(f"--metrics-interval must be positive, got {self.metrics_interval}")
        if self.keepalive_seconds <= 0:
            raise SettingsError(f"the keep-alive interval must be positive, got {self.keepalive_seconds}")
        if self.notify_check_seconds <= 0:
            raise SettingsError(
                f"$WHATSNEXT_NOTIFY_CHECK_SECONDS must be positive, got {self.notify_check_seconds}"
            )
        if self.pooler == "transaction":
            if self.database_url is None:
                raise SettingsError(
                    "--pooler transaction needs --database-url (the pooler's address); "
                    "the embedded database has no pooler in front of it"
                )
            if not self.direct_database_url:
                raise SettingsError(
                    "--pooler transaction needs --direct-database-url "
                    "($WHATSNEXT_DIRECT_DATABASE_URL): a connection to PostgreSQL that bypasses the "
                    "pooler, for LISTEN/NOTIFY wake-ups and migrations"
                )

    @property
    def recovery_grace_seconds(self) -> float:
        """``recovery_grace``, one lease when not set."""
        return self.lease_seconds if self.recovery_grace is None else self.recovery_grace

    @property
    def reap_every(self) -> float:
        if self.reaper_interval is not None:
            return self.reaper_interval
        return max(0.5, self.lease_seconds / 4)


def _seconds(env: str) -> float:
    """A duration from the environment variable ``env`` (:func:`parse_duration`'s forms)."""
    try:
        return parse_duration(os.environ[env])
    except ValueError as exc:
        raise SettingsError(f"${env}: {exc}") from None


def _words(value: str | None) -> list[str]:
    return [w.strip() for w in (value or "").split(",") if w.strip()]


DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(origin: str) -> tuple[str, str, int] | None:
    """``scheme://host[:port]`` as (scheme, lower-case host, port with the scheme's default filled
    in); None for anything else (a path, a wildcard, another scheme, ``null``)."""
    scheme, sep, rest = origin.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS or not rest or any(c in rest for c in "/?#@*\\ "):
        return None
    rest = rest.lower()
    if rest.startswith("["):
        name, close, tail = rest[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            return None
        port_text = tail[1:]
    else:
        name, _, port_text = rest.partition(":")
        if ":" in port_text:
            return None
    name = name.rstrip(".")
    if not name:
        return None
    if not port_text:
        return scheme, name, DEFAULT_PORTS[scheme]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return scheme, name, int(port_text)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
