"""Retention: one batch of deletions of what is older than the retention (``wn_prune``)."""

from __future__ import annotations

from ..sql import S
from .base import Row, Table


class RetentionStore(Table):
    async def prune(self, *, older_than: float, project: str | None, batch: int, dry_run: bool) -> Row:
        """One batch (its own transaction): ``busy`` (another server prunes now: nothing done) and
        the rows deleted by kind (``jobs``, ``events``, ``logs``, ``artifacts``, ``dependencies``,
        ``workers``, ``sessions``, ``groups``); with ``dry_run``, what every batch would delete now."""
        return await self.one(S.prune, older_than=older_than, project=project, batch=batch, dry_run=dry_run)
