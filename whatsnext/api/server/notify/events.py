"""What the notification hub passes around: the ``whatsnext_jobs`` event and the wake-up values.

SQL functions announce jobs on ``whatsnext_jobs`` in the transaction that made them eligible,
through one SQL helper (``wn_notify_jobs``); :meth:`JobsEvent.parse` reads the payload: how many
jobs, the smallest CPU/GPU need among them and the tags all of them need (count 0: a job of the
project finished).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

CHANNEL = "whatsnext_jobs"


@dataclass(frozen=True, slots=True)
class JobsEvent:
    """A notification on ``whatsnext_jobs``."""

    project_id: int
    count: int
    """Jobs that became eligible; 0: a job of the project finished."""
    tag: str | None = None
    cpu: int = 0
    """CPUs the smallest of those jobs needs."""
    gpus: int = 0
    tags: frozenset[str] = frozenset()
    """Tags every one of those jobs needs."""

    @classmethod
    def parse(cls, payload: str) -> JobsEvent | None:
        try:
            data = orjson.loads(payload)
            return cls(
                project_id=int(data["p"]),
                count=int(data["n"]),
                tag=data.get("t"),
                cpu=int(data.get("c") or 0),
                gpus=int(data.get("g") or 0),
                tags=frozenset(data.get("tags") or ()),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    @property
    def finished(self) -> bool:
        return self.count == 0

    def fits(self, cpu: int, gpus: int, tags: frozenset[str]) -> bool:
        """Whether a claim with ``cpu`` CPUs and ``gpus`` GPUs free and these tags could take such a job."""
        return self.cpu <= cpu and self.gpus <= gpus and self.tags <= tags

    def again(self) -> JobsEvent:
        """The same wake-up, for one more waiter (its first one went away)."""
        return JobsEvent(self.project_id, 1, self.tag, self.cpu, self.gpus, self.tags)


CLOSED = JobsEvent(0, -1, "closed")
"""Wake-up value at shutdown: answer now."""
FINISHED = JobsEvent(0, 0, "finished")
"""Wake-up value for idle watchers: a job of the project finished."""
LOOK = JobsEvent(0, 1, "look")
"""Wake-up value after a reconnect: notifications may have been missed, look again."""


@dataclass(frozen=True, slots=True)
class Handed:
    """Wake-up value of a claim that a submission on this server handed jobs, in its own
    transaction: the ``wn_claim`` rows (the claim is done)."""

    rows: list[dict[str, Any]]


Wakeup = JobsEvent | Handed | None
