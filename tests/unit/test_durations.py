"""One duration parser: the forms it reads, what it refuses (naming the input), the argparse type
every duration option uses, and the options of the CLI and the server that take it."""

from __future__ import annotations

import argparse

import pytest

from whatsnext.cli import build_parser
from whatsnext.durations import duration, format_duration, parse_duration, positive_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e3", 1000),
        ("2.5e+06", 2.5e6),
        ("0", 0),
        (" 45s ", 45),
        ("5m", 300),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("1d", 86400),
        ("2d12h", 216000),
        ("1H30M", 5400),
        ("01:30:00", 5400),
        ("30:00", 1800),
        ("90:00", 5400),
        ("1-12", 129600),
        ("1-12:30:15", 131415),
    ],
)
def test_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "m", "1x", "1h 30m", "-5", "5-", "1:2:3:4", "soon", "1h1h", "10:75", "inf", "nan", "1e999", "e3"],
)
def test_refusals_name_the_input(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_duration(text)
    assert repr(text) in str(err.value) and "duration" in str(err.value)


def test_argparse_type_is_a_usage_error_with_the_reason() -> None:
    assert duration("5m") == 300
    with pytest.raises(argparse.ArgumentTypeError, match="'5 minutes' is not a duration"):
        duration("5 minutes")
    assert positive_duration("1s") == 1
    with pytest.raises(argparse.ArgumentTypeError, match="above 0"):
        positive_duration("0")


@pytest.mark.parametrize("seconds", [0, 0.5, 45, 60, 5400, 86400, 90061])
def test_format_reads_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("argv", "dest", "seconds"),
    [
        (["server", "--lease-seconds", "2m"], "lease_seconds", 120),
        (["server", "--lease-seconds", "30"], "lease_seconds", 30),
        (["server", "--starvation-seconds", "5m"], "starvation_seconds", 300),
        (["server", "--fair-share-half-life", "1h"], "fair_share_half_life", 3600),
        (["server", "--recovery-grace", "90s"], "recovery_grace", 90),
        (["server", "--max-wait", "1m"], "max_wait", 60),
        (["server", "--metrics-interval", "00:30"], "metrics_interval", 30),
        (["worker", "--grace", "1m"], "grace", 60),
        (["worker", "--drain-timeout", "10m"], "drain_timeout", 600),
        (["worker", "--idle-timeout", "5m"], "idle_timeout", 300),
        (["worker", "--artifact-hash-seconds", "2m"], "artifact_hash_seconds", 120),
        (["jobs", "add", "t", "--timeout", "1h30m"], "timeout", 5400),
        (["jobs", "add", "t", "--retry-delay", "30s"], "retry_delay", 30),
        (["tasks", "add", "t", "--timeout", "2h"], "timeout", 7200),
        (["tokens", "create", "ci", "--role", "worker", "--expires-in", "30d"], "expires_in", 2592000),
    ],
)
def test_cli_duration_options(argv: list[str], dest: str, seconds: float) -> None:
    assert getattr(build_parser().parse_args(argv), dest) == seconds


def test_a_bad_duration_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["server", "--lease-seconds", "soon"])
    assert exit_.value.code == 2
    assert "'soon' is not a duration" in capsys.readouterr().err


def test_server_environment_takes_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    from whatsnext.api.server.config import Settings, SettingsError

    monkeypatch.setenv("WHATSNEXT_LEASE_SECONDS", "2m")
    monkeypatch.setenv("WHATSNEXT_FAIR_SHARE_HALF_LIFE", "1h")
    monkeypatch.setenv("WHATSNEXT_MAX_WAIT", "45")
    settings = Settings.from_env()
    assert (settings.lease_seconds, settings.fair_share_half_life, settings.max_wait) == (120, 3600, 45)
    monkeypatch.setenv("WHATSNEXT_LEASE_SECONDS", "a while")
    with pytest.raises(SettingsError, match=r"WHATSNEXT_LEASE_SECONDS.*'a while' is not a duration"):
        Settings.from_env()
