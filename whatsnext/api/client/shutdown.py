"""How a worker stops: drain (finish running jobs, claim no more) or requeue (stop them now).

On SIGTERM a worker does what ``on_sigterm`` says: ``drain`` stops claiming and lets its running
jobs finish, for at most ``drain_timeout`` seconds (None: as long as they take); ``requeue`` stops
them at once. The default is ``requeue`` inside a SLURM allocation (``SLURM_JOB_ID`` is set: SLURM
sends SIGKILL after its KillWait, preemption and time limits alike) and ``drain`` elsewhere. A
first SIGINT (Ctrl-C) drains. A second signal of either kind, the end of the drain timeout and the
worker's deadline stop the running jobs now.

A job stopped that way gets the worker's job signal (``--job-signal``, SIGTERM by default), then
SIGKILL after the grace period, and its attempt is reported with ``requeue: true``: it goes back
to the queue without using an attempt (PREEMPTED), to resume from its checkpoint if it wrote one.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Mapping
from typing import Literal

import structlog

log = structlog.get_logger("whatsnext.worker")

OnSigterm = Literal["drain", "requeue"]
ON_SIGTERM: tuple[OnSigterm, ...] = ("drain", "requeue")


def default_on_sigterm(env: Mapping[str, str] | None = None) -> OnSigterm:
    """``requeue`` inside a SLURM allocation (``SLURM_JOB_ID`` set), else ``drain``."""
    env = os.environ if env is None else env
    return "requeue" if env.get("SLURM_JOB_ID") else "drain"


def check_on_sigterm(value: str | None) -> OnSigterm:
    """``value`` when it is ``drain`` or ``requeue``, the default for None (ValueError otherwise)."""
    if value is None:
        return default_on_sigterm()
    if value not in ON_SIGTERM:
        raise ValueError(f"on_sigterm must be one of {', '.join(ON_SIGTERM)}, not {value!r}")
    return value  # type: ignore[return-value]


def parse_signal(value: str | int) -> int:
    """A signal given as ``SIGTERM``, ``TERM``, ``term`` or ``15`` (ValueError when unknown)."""
    if isinstance(value, int):
        return signal.Signals(value).value
    text = value.strip().upper()
    if text.isdigit():
        try:
            return signal.Signals(int(text)).value
        except ValueError:
            raise ValueError(f"unknown signal {value!r}") from None
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        sig = signal.Signals[name]
    except KeyError:
        raise ValueError(f"unknown signal {value!r}") from None
    if sig in (signal.SIGKILL, signal.SIGSTOP):
        raise ValueError(f"{name} cannot be the job signal (a job must be able to handle it)")
    return sig.value


def check_drain_timeout(value: float | None) -> float | None:
    if value is not None and value < 0:
        raise ValueError("the drain timeout must be 0 or more seconds (None: no limit)")
    return value


class Shutdown:
    """A worker's way of stopping: ``stop_claiming()`` ends the claim loop, ``stop_jobs(reason)``
    stops every running job now (their attempts are requeued)."""

    def __init__(
        self,
        *,
        on_sigterm: OnSigterm,
        drain_timeout: float | None,
        stop_claiming: Callable[[], None],
        stop_jobs: Callable[[str], None],
    ) -> None:
        if on_sigterm not in ON_SIGTERM:
            raise ValueError(f"on_sigterm must be one of {', '.join(ON_SIGTERM)}, not {on_sigterm!r}")
        self.on_sigterm = on_sigterm
        self.drain_timeout = check_drain_timeout(drain_timeout)
        self._stop_claiming = stop_claiming
        self._stop_jobs = stop_jobs
        self.draining = False
        self.abandoned = asyncio.Event()
        """Set by a signal once the jobs are stopped: exit without the reports not yet delivered."""
        self.stopping: str | None = None
        """Why the running jobs are being stopped (None: they are not)."""
        self._timers: list[asyncio.TimerHandle] = []

    def on_signal(self, sig: int) -> None:
        """SIGTERM or SIGINT reached the worker."""
        name = signal.Signals(sig).name
        if self.stopping is not None:
            # The jobs are stopped already; what keeps the worker is reports the server has not
            # taken (it may be away). Leave them: the server requeues those jobs when their leases end.
            log.warning("signal received again: exiting without the reports not yet delivered", signal=name)
            self.abandoned.set()
        elif self.draining:
            self.stop_now(f"worker stopped ({name} again)")
        elif sig == signal.SIGTERM and self.on_sigterm == "requeue":
            self.stop_now(f"worker stopped ({name})")
        else:
            log.info(
                "signal received",
                signal=name,
                action="finishing running jobs, claiming no more (again to stop and requeue them)",
                drain_timeout=self.drain_timeout,
            )
            self.drain()

    def drain(self) -> None:
        """Claim no more; stop the running jobs when the drain timeout passes."""
        if self.draining or self.stopping is not None:
            return
        self.draining = True
        self._stop_claiming()
        if self.drain_timeout is not None:
            self.after(self.drain_timeout, "drain timeout reached")

    def stop_now(self, reason: str) -> None:
        """Claim no more and stop every running job now (requeued); later jobs too (none starts)."""
        if self.stopping is None:
            log.info("stopping running jobs; they go back to the queue", reason=reason)
        self.stopping = self.stopping or reason
        self._stop_claiming()
        self._stop_jobs(self.stopping)

    def after(self, seconds: float, reason: str) -> None:
        """Stop the running jobs ``seconds`` from now (the drain timeout, the worker's deadline)."""
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(max(seconds, 0.0), self.stop_now, reason))

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
