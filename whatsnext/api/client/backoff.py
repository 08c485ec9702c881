"""Exponential backoff for retrying calls to a server that went away."""

from __future__ import annotations


class Backoff:
    """Delays that double from ``first`` up to ``cap``; ``reset`` after a success."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self.first, self.cap, self.current = first, cap, first

    def next(self, at_least: float | None = None) -> float:
        """The next delay; at least ``at_least`` (a server's ``Retry-After``) when given."""
        delay, self.current = self.current, min(self.current * 2, self.cap)
        return max(delay, at_least) if at_least is not None else delay

    def reset(self) -> None:
        self.current = self.first
