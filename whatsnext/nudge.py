"""SIGUSR1 runs a periodic task now: the server's lease sweep, the worker's heartbeat.

Each periodic loop sleeps through a :class:`Nudge` instead of ``asyncio.sleep``; ``kill -USR1
PID`` (an operator, or a test that backdated a lease) ends the sleep of every such loop in that
process at once. Nothing runs until the signal comes. The handler is installed only on the
main thread's event loop and only where nobody else handles SIGUSR1; elsewhere the loops just
sleep their interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

SIGNAL: int | None = getattr(signal, "SIGUSR1", None)
"""The signal that nudges (None where the platform has no SIGUSR1)."""

_nudges: set[Nudge] = set()
_loop: asyncio.AbstractEventLoop | None = None
"""The loop whose signal handler serves ``_nudges`` (None: no handler installed)."""


class Nudge:
    """Ends a periodic loop's sleep early when the process receives SIGUSR1."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``, less if nudged meanwhile (or since the last sleep); True when nudged."""
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


def _fire() -> None:
    for nudge in list(_nudges):
        nudge.set()


def _install(loop: asyncio.AbstractEventLoop) -> bool:
    global _loop
    if _loop is not None:
        return _loop is loop
    if SIGNAL is None or signal.getsignal(SIGNAL) not in (signal.SIG_DFL, None):
        return False  # not ours to take
    try:
        loop.add_signal_handler(SIGNAL, _fire)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, no signals here
        return False
    _loop = loop
    return True


@contextlib.contextmanager
def nudged_by_signal() -> Iterator[Nudge]:
    """A :class:`Nudge` that SIGUSR1 sets while the block runs (inside a running event loop)."""
    global _loop
    nudge = Nudge()
    listening = _install(asyncio.get_running_loop())
    if listening:
        _nudges.add(nudge)
    try:
        yield nudge
    finally:
        if listening:
            _nudges.discard(nudge)
            if not _nudges and _loop is not None and SIGNAL is not None:
                with contextlib.suppress(RuntimeError, ValueError):  # loop closed
                    _loop.remove_signal_handler(SIGNAL)
                _loop = None
