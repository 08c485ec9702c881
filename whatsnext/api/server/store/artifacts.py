"""Artifacts: what jobs read and wrote."""

from __future__ import annotations

from typing import Any

import orjson

from ..sql import S
from .base import Row, Table


class ArtifactStore(Table):
    async def record(self, *, job_id: int, items: list[dict[str, Any]], attempt: int | None) -> Row:
        """(code, status, message, recorded): 404 unknown job, 409 not its current attempt."""
        return await self.one(
            S.artifact_record, job_id=job_id, items=orjson.dumps(items).decode(), attempt=attempt
        )

    async def of_job(self, *, job_id: int) -> list[Row] | None:
        """A job's artifacts; None when the job does not exist."""
        rows = await self.rows(S.artifact_list, job_id=job_id)
        if not rows:
            return None
        return [r for r in rows if r["id"] is not None]

    async def find(self, *, project: str, uri: str, direction: str | None, limit: int) -> list[Row]:
        return await self.rows(S.artifact_find, project=project, uri=uri, direction=direction, limit=limit)

    async def recent(
        self, *, project: str, direction: str | None, before: int | None, limit: int
    ) -> list[Row]:
        return await self.rows(
            S.artifact_recent, project=project, direction=direction, before=before, limit=limit
        )
