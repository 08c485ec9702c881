"""Server settings: command-line flags, with WHATSNEXT_* environment variables as defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs


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
    starvation_seconds: float = 300.0
    """After this long eligible, a job that fits a worker's total capacity stops backfilling past it."""
    reaper_interval: float | None = None
    """Seconds between lease sweeps (default: a quarter of the lease, at least 0.5 s)."""
    pool_min: int = 2
    pool_max: int = 10
    max_wait: float = 600.0

    @classmethod
    def from_env(cls) -> Settings:
        s = cls()
        s.database_url = os.environ.get("WHATSNEXT_DATABASE_URL") or None
        if "WHATSNEXT_LEASE_SECONDS" in os.environ:
            s.lease_seconds = float(os.environ["WHATSNEXT_LEASE_SECONDS"])
        if "WHATSNEXT_STARVATION_SECONDS" in os.environ:
            s.starvation_seconds = float(os.environ["WHATSNEXT_STARVATION_SECONDS"])
        return s

    @property
    def reap_every(self) -> float:
        if self.reaper_interval is not None:
            return self.reaper_interval
        return max(0.5, self.lease_seconds / 4)
