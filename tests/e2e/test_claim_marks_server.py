"""A server keeps its projects' claim marks moving (migration 0019, whatsnext.api.server.marks):
with a transaction holding the xmin horizon, a real worker runs every job once, the server's
sweep moves the mark past them, and a job submitted afterwards is handed out at once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from conftest import Api, ServerProcess, wait_until
from helpers import PYTHON

from whatsnext.api.client import AsyncServer, Client, CLIFormatter

END = (9223372036854775807, 9223372036854775807)


async def mark_of(conn: asyncpg.Connection, project: str) -> tuple[int, int] | None:
    row = await conn.fetchrow(
        "SELECT m.rank, m.id FROM claim_marks m JOIN projects p ON p.id = m.project_id WHERE p.name = $1",
        project,
    )
    return None if row is None else (row["rank"], row["id"])


async def test_the_server_moves_the_mark_while_the_horizon_is_held(
    server: ServerProcess, api: Api, project: dict[str, Any], database_url: str
) -> None:
    p = project["name"]
    conn = await asyncpg.connect(database_url)
    holder = await asyncpg.connect(database_url)
    held = holder.transaction()
    await held.start()
    await holder.fetchval("SELECT txid_current()")
    try:
        ids = (
            await api.ok(
                "POST", f"/projects/{p}/jobs/batch", [{"name": f"j{i}", "task": "t"} for i in range(40)]
            )
        )["ids"]
        aproject = await AsyncServer(server.url).get_project(p)
        fmt = CLIFormatter(template=f'{PYTHON} -c "pass"')
        summary = await asyncio.wait_for(Client("t", "w", aproject, fmt, available_cpu=4).work_async(), 120)
        assert summary.completed == len(ids)

        # The server's sweep (once a second) finds nothing left to hand out: the mark goes past the end.
        async def past_the_end() -> bool:
            return await mark_of(conn, p) == END

        await wait_until(past_the_end, timeout=20, what="the server's sweep to move the mark past the end")
        late = await api.ok("POST", f"/projects/{p}/jobs", {"name": "late", "task": "t"})
        assert await mark_of(conn, p) == (0, late["id"])
        summary = await asyncio.wait_for(Client("t", "w", aproject, fmt, available_cpu=4).work_async(), 60)
        assert summary.completed == 1
        rows = await conn.fetch("SELECT status, attempt FROM jobs WHERE project_id = wn_project_id($1)", p)
        assert {(r["status"], r["attempt"]) for r in rows} == {("COMPLETED", 1)} and len(rows) == 41
    finally:
        await held.rollback()
        await holder.close()
        await conn.close()
