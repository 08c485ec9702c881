"""The services that look after a worker's running attempts while it is registered: heartbeats
(which renew leases and bring cancels), the lease guard (fenced leases: suspend, resume, lose) and
the control stream (cancels and requeues at once)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from .control import ControlStream
from .fence import LeaseGuard
from .http import Http
from .runner import Runner
from .session import Session


def attempt_services(
    http: Http, session: Session, runner: Runner, held: Callable[[], list[int]]
) -> list[Callable[[], Awaitable[None]]]:
    """Attach a lease guard and a control stream to ``runner`` (after ``session`` registered: the
    lease terms are known) and return the loops to run beside the claim loop."""
    guard = runner.guard = LeaseGuard(
        lease=session.lease_seconds,
        margin=session.fence_margin,
        suspend=runner.suspend,
        resume=runner.resume,
        lose=runner.lose,
    )
    control = runner.control = ControlStream(
        http, worker_id=lambda: session.worker_id, running=runner.running_attempts, stop=runner.stop_attempt
    )
    return [functools.partial(session.heartbeats, held, runner.cancel, guard), guard.run, control.run]
