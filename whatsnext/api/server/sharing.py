"""Which projects a claim or a registration of several projects names: resolved once per request
(the auth check and the route read the same answer), held to the token's projects.

A claim names its projects (``projects``: names or ids) or asks for all of them (``all_projects``):
every project the token may work on, looked up at each request, or every project without
``--auth`` or with a token of all projects (``None``: the claim SQL then considers every project
with a job to hand out, archived ones included)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .errors import ApiError, invalid
from .keys import store_key
from .roles import Principal


@dataclass(frozen=True, slots=True)
class Pool:
    """The projects of a request: ``ids`` (None: every project) and the names it gave with their
    ids (``keys``: for a submission naming a project by name to find a claim waiting for it)."""

    ids: tuple[int, ...] | None
    keys: dict[str, int] = field(default_factory=dict)


_POOL_KEY: Any = web.RequestKey("whatsnext.pool", Pool) if hasattr(web, "RequestKey") else "whatsnext.pool"


async def resolve_pool(
    request: web.Request, projects: Sequence[str | int] | None, all_projects: bool, who: Principal | None
) -> Pool:
    """The projects a body names (``projects``) or, with ``all_projects``, the token's. 404
    naming ``projects`` for a project that does not exist; 403 for one the token does not cover
    (a restricted token cannot tell the two apart); 422 when both or neither are given."""
    cached = request.get(_POOL_KEY)
    if isinstance(cached, Pool):
        return cached
    if all_projects == (projects is not None):
        raise invalid("give either projects (a list of names or ids) or all_projects: true", "projects")
    covered = None if who is None else who.projects
    if projects is None:
        pool = Pool(None if covered is None else tuple(sorted(covered)))
    else:
        keys = [str(p) for p in projects]
        found = await request.app[store_key].sharing.projects(keys=keys)
        if covered is not None and who is not None:
            for key in keys:
                if key not in found or found[key][0] not in covered:
                    raise ApiError(
                        403,
                        "forbidden",
                        f"token {who.name!r} does not cover project {key!r}",
                        {"field": "projects"},
                    )
        for key in keys:
            if key not in found:
                raise ApiError(404, "not_found", f"project {key!r} not found", {"field": "projects"})
        ids = tuple(sorted({found[k][0] for k in keys}))
        pool = Pool(ids, {k: found[k][0] for k in keys} | {found[k][1]: found[k][0] for k in keys})
    request[_POOL_KEY] = pool
    return pool
