"""Tokens: create, list, revoke, authenticate; and the cheap look-ups that scope a request."""

from __future__ import annotations

from typing_extensions import TypedDict, Unpack

from ..sql import S
from .base import Row, Table


class TokenFields(TypedDict):
    name: str
    role: str
    projects: list[int] | None
    hash: bytes
    created_by: str | None
    expires_in: float | None


class TokenStore(Table):
    async def create(self, **fields: Unpack[TokenFields]) -> Row:
        return await self.one(S.token_create, **fields)

    async def list(self) -> list[Row]:
        return await self.rows(S.token_list)

    async def revoke(self, *, token_id: int) -> Row | None:
        return await self.row(S.token_revoke, token_id=token_id)

    async def authenticate(self, *, hash: bytes) -> Row | None:
        """The token with this hash (with ``revoked`` and ``expired``), or None."""
        return await self.row(S.token_authenticate, hash=hash)

    async def project_ids(self, *, keys: list[str]) -> list[tuple[str, int | None]]:
        """Each project key (id or name) with the id it names, None when unknown."""
        return [(r["key"], r["id"]) for r in await self.rows(S.token_project_ids, keys=keys)]

    async def project_id(self, *, project: str) -> int | None:
        return await self.value(S.auth_project_id, project=project)

    async def job_project(self, *, job_id: int) -> int | None:
        return await self.value(S.auth_job_project, job_id=job_id)

    async def worker(self, *, worker_id: int) -> Row | None:
        """The token that registered the worker and its project; None when there is no such worker."""
        return await self.row(S.auth_worker, worker_id=worker_id)

    async def foreign_jobs(self, *, token_id: int, job_ids: list[int]) -> set[int]:
        """Those of ``job_ids`` that no worker of this token holds."""
        return {r["id"] for r in await self.rows(S.auth_foreign_jobs, token_id=token_id, job_ids=job_ids)}
