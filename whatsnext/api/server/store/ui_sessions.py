"""Dashboard sessions (one row per signed-in browser) and the dashboard's shared key."""

from __future__ import annotations

from ..sql import S
from .base import Row, Table


class UiSessionStore(Table):
    async def create(
        self, *, hash: bytes, token_id: int | None, admin_hash: bytes | None, seconds: float
    ) -> None:
        """Record a session (its id's hash) of a stored token or of the bootstrap admin token; expired
        sessions and those of revoked tokens are deleted on the way."""
        await self.row(
            S.ui_session_create, hash=hash, token_id=token_id, admin_hash=admin_hash, seconds=seconds
        )

    async def lookup(self, *, hash: bytes) -> Row | None:
        """The unexpired session with this hash, with its token's name, role, projects, ``revoked``
        and ``expired`` (None for a session of the bootstrap admin token, which has ``admin_hash``)."""
        return await self.row(S.ui_session_lookup, hash=hash)

    async def delete(self, *, hash: bytes) -> bool:
        return bool(await self.value(S.ui_session_delete, hash=hash))

    async def secret(self, *, candidate: bytes) -> bytes | None:
        """The key shared by every server on the database (``candidate`` becomes it when there is
        none yet); None only when another server was storing its own at the same moment."""
        value = await self.value(S.ui_secret, candidate=candidate)
        return None if value is None else bytes(value)
