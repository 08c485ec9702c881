"""Which projects a worker serves: one (its project's own claim route, the requests it always
sent), several (``POST /claim`` with ``projects``), or every project it may work on
(``POST /claim`` with ``all_projects``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...wire import ClaimRequest
from .http import project_path


@dataclass(frozen=True, slots=True)
class Target:
    """The projects a worker claims from: ``keys`` (names or ids, each once, in the order given),
    or ``all_projects`` (every project its token may work on, looked up by the server at each
    claim)."""

    keys: tuple[str, ...] = ()
    all_projects: bool = False

    @classmethod
    def of(cls, keys: Iterable[str], all_projects: bool = False) -> Target:
        keys = tuple(dict.fromkeys(keys))
        if all_projects and keys:
            raise ValueError("give projects or all_projects, not both")
        return cls(keys, all_projects)

    @property
    def empty(self) -> bool:
        return not (self.keys or self.all_projects)

    @property
    def one(self) -> str | None:
        """The project of a worker that serves exactly one, else None."""
        return self.keys[0] if len(self.keys) == 1 and not self.all_projects else None

    @property
    def claim_path(self) -> str:
        """``/projects/{p}/claim`` for one project, ``/claim`` for several or all."""
        one = self.one
        return f"{project_path(one)}/claim" if one is not None else "/claim"

    def claim_fields(self) -> ClaimRequest:
        """What a claim's body adds to say which projects (nothing for one: its path says it)."""
        if self.all_projects:
            return {"all_projects": True}
        if len(self.keys) > 1:
            return {"projects": list(self.keys)}
        return {}

    def register_fields(self) -> dict[str, Any]:
        """The registration's ``project``, ``projects`` or ``all_projects``."""
        if self.all_projects:
            return {"all_projects": True}
        if len(self.keys) > 1:
            return {"projects": list(self.keys)}
        return {"project": self.one}

    def __str__(self) -> str:
        if self.all_projects:
            return "all projects"
        if len(self.keys) == 1:
            return f"project {self.keys[0]}"
        return f"projects {', '.join(self.keys)}"


__all__ = ["Target"]
