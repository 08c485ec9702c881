"""Retention: one batch of deletions of what is older than the retention (``wn_prune``)."""

from __future__ import annotations

from datetime import datetime

from ..sql import S
from .base import Row, Table


class RetentionStore(Table):
    async def prune(
        self,
        *,
        older_than: float,
        project: str | None,
        batch: int,
        dry_run: bool,
        after: tuple[datetime, int] | None = None,
    ) -> Row:
        """One batch (its own transaction) from ``after`` (where the batch before stopped; None:
        from the oldest): ``busy`` (another server prunes now: nothing done), the rows deleted by
        kind (``jobs``, ``events``, ``logs``, ``artifacts``, ``dependencies``, ``workers``,
        ``sessions``, ``groups``; with ``dry_run``, the rows the batch would delete) and where it
        stopped (``next_at``, ``next_id``; None when no job is left to look at)."""
        after_at, after_id = after if after is not None else (None, None)
        return await self.one(
            S.prune,
            older_than=older_than,
            project=project,
            batch=batch,
            dry_run=dry_run,
            after_at=after_at,
            after_id=after_id,
        )
