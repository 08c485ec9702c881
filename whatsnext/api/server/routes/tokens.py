"""Tokens: create (the token is shown this once), list, revoke. Only ``admin`` may."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, Field

from ....models import Role
from ..errors import found, invalid
from ..http import json_response, parse_body, path_id
from ..keys import store_key
from ..roles import TOKENS
from ..schemas import Id, Name, Strict
from ..tokens import hash_token, new_token, principal
from .table import routes

tokens_routes = routes.section("tokens", rule=TOKENS)

ProjectKey = Id | Annotated[str, Field(min_length=1, max_length=200)]
TEN_YEARS = 10 * 366 * 86400


class TokenCreate(Strict):
    name: Name = Field(description="Who or what holds it; job history records this name.")
    role: Role = Field(
        description="admin: everything; operator: submit, cancel, retry, delete, tasks; submitter: "
        "submit and read; worker: register, claim, heartbeat, report, logs, artifacts; viewer: read."
    )
    projects: Annotated[list[ProjectKey], Field(min_length=1, max_length=1000)] | None = Field(
        None, description="The projects it covers (ids or names); leave it out for all projects."
    )
    expires_in: Annotated[float, Field(gt=0, le=TEN_YEARS)] | None = Field(
        None, description="Seconds until it expires; leave it out for a token that does not expire."
    )


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    projects: list[int] | None = Field(description="Project ids it covers; null: all.")
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Last use, to the minute.")
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown this once, only its hash is kept.")


class TokenList(BaseModel):
    tokens: list[TokenOut]


@tokens_routes.post(
    "/tokens",
    "Create a token (admin); the answer shows the token this once",
    body=TokenCreate,
    response=TokenCreated,
    status=201,
    errors=(400, 409, 422),
)
async def create_token(request: web.Request) -> web.Response:
    b = await parse_body(request, TokenCreate)
    store = request.app[store_key].tokens
    projects: list[int] | None = None
    if b.projects is not None:
        if b.role == "admin":
            raise invalid("an admin token covers every project: leave projects out", "projects")
        found = await store.project_ids(keys=[str(k) for k in b.projects])
        unknown = [key for key, pid in found if pid is None]
        if unknown:
            raise invalid(f"no such project: {', '.join(unknown)}", "projects")
        projects = sorted({pid for _, pid in found if pid is not None})
    token = new_token()
    who = principal(request)
    row = await store.create(
        name=b.name,
        role=b.role,
        projects=projects,
        hash=hash_token(token),
        created_by=None if who is None else who.name,
        expires_in=b.expires_in,
    )
    return json_response({**row, "token": token}, 201)


@tokens_routes.get(
    "/tokens", "List tokens (admin), never the tokens themselves", response=TokenList, errors=()
)
async def list_tokens(request: web.Request) -> web.Response:
    return json_response({"tokens": await request.app[store_key].tokens.list()})


@tokens_routes.delete(
    "/tokens/{token_id}",
    "Revoke a token (admin): it stops working at once",
    response=TokenOut,
    errors=(404, 422),
)
async def revoke_token(request: web.Request) -> web.Response:
    token_id = path_id(request, "token_id")
    row = await request.app[store_key].tokens.revoke(token_id=token_id)
    return json_response(found(row, "token", token_id, "token_id"))
