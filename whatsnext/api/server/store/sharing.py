"""Sharing the pool: claims of several projects and what they read about those projects."""

from __future__ import annotations

from ....wire import ClaimArgs
from ..sql import S
from .base import Row, Table


class SharingStore(Table):
    async def claim(self, *, projects: list[int] | None, args: ClaimArgs) -> list[Row]:
        """Hand out eligible jobs of ``projects`` (ids; None: every project) to the claim ``args``,
        fair share between the projects (``wn_claim_pool``); each row names its ``project``."""
        return await self.rows(S.sharing_claim, projects=projects, **args)

    async def projects(self, *, keys: list[str]) -> dict[str, tuple[int, str]]:
        """The projects ``keys`` (names or ids) name: key -> (id, name); unknown keys are left out."""
        rows = await self.rows(S.sharing_projects, keys=keys)
        return {r["key"]: (r["id"], r["name"]) for r in rows}

    async def next_available_in(self, *, projects: list[int] | None) -> float | None:
        """Seconds until the next delayed job of ``projects`` becomes eligible (None: none waits)."""
        value = await self.value(S.sharing_next_available, projects=projects)
        return None if value is None else float(value)

    async def busy(self, *, projects: list[int] | None) -> list[int]:
        """Those of ``projects`` (None: all) with a pending or running job."""
        return [r["project_id"] for r in await self.rows(S.sharing_busy, projects=projects)]

    async def set_half_life(self, *, half_life: float) -> float | None:
        """Make ``half_life`` the pool's; the value it replaced."""
        value = await self.value(S.sharing_half_life, half_life=half_life)
        return None if value is None else float(value)
