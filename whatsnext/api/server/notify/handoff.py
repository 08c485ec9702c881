"""The hand-off: a submission on this server runs a waiting claim in its own transaction.

A submission hands its jobs straight to a claim waiting here for the project
(:meth:`HandOff.offer`): the claim runs in the submission's transaction (``wn_enqueue_claim``),
and the waiter gets the jobs it took (:class:`~.events.Handed`) without a notification or a
claim of its own. A claim that took nothing goes back in line (:meth:`HandOff.take_back`).
"""

from __future__ import annotations

from .events import CLOSED, LOOK
from .waiters import ANY, Waiter, Waiters


class HandOff:
    """Offers the waiting claims of :class:`~.waiters.Waiters` to submissions."""

    def __init__(self, waiters: Waiters) -> None:
        self._waiters = waiters
        self._project_ids: dict[str, int] = {}
        """Project names to ids, as waiting claims resolved them (for :meth:`offer`)."""

    def remember(self, key: str | None, project_id: int) -> None:
        """A claim named its project ``key`` (name or id): a submission naming it finds the claim."""
        if key is not None and key != str(project_id):
            self._project_ids[key] = project_id

    def offer(self, project: str) -> Waiter | None:
        """The first claim waiting for jobs of ``project`` (its name or id), or of every project,
        whose arguments a submission may run, set aside (neither woken nor offered again) until
        :meth:`take_back` (or its hand-off)."""
        project_id = (
            int(project) if project.isascii() and project.isdigit() else self._project_ids.get(project)
        )
        queues = self._waiters.queues
        for key in (project_id, ANY) if project_id is not None else (ANY,):
            for waiter in queues.get(key, ()):
                if (
                    waiter.claim is None
                    or waiter.offered >= 0
                    or waiter.future.done()
                    or (waiter.gone is not None and waiter.gone())
                ):
                    continue
                waiter.offered = self._waiters.generation
                return waiter
        return None

    def take_back(self, waiter: Waiter) -> None:
        """A waiter offered to a submission whose claim took nothing: it waits again, in its
        place, or answers now when its wait ran out, the server closes, or a notification came
        meanwhile (it looks again)."""
        generation, waiter.offered = waiter.offered, -1
        if waiter.future.done():
            return
        waiters = self._waiters
        if waiter.expired:
            waiter.future.set_result(None)
        elif waiters.closing:
            waiter.future.set_result(CLOSED)
        elif generation != waiters.generation:
            waiter.future.set_result(LOOK)
