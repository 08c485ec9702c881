"""The dashboard's pool page: each project's share, quota, what it runs now and its usage of the
pool; the projects a viewer may not see are one "others" row, without their names."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from pool_world import ADMIN, PoolServer, pool_server


@pytest.fixture(scope="module")
async def pool(pg_root_url: str) -> AsyncIterator[PoolServer]:
    async with pool_server(pg_root_url) as srv:
        yield srv


def row(text: str, marker: str) -> list[str]:
    """The cells of the table row that carries ``marker`` (an attribute), tags removed."""
    found = re.search(rf"<tr {re.escape(marker)}>(.*?)</tr>", text, re.S)
    assert found is not None, f"no row {marker}"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), re.S)
    return [re.sub(r"<[^>]+>", "", c).strip() for c in cells]


async def test_the_pool_page_hides_the_names_of_projects_a_viewer_may_not_see(pool: PoolServer) -> None:
    a, a_id = await pool.project("mine")
    b, b_id = await pool.project("theirs")
    await pool.sql("UPDATE projects SET share = 2, max_gpus = 8, max_running = 4 WHERE id = $1", a_id)
    await pool.sql("UPDATE projects SET share = 3 WHERE id = $1", b_id)
    wa = await pool.worker(cpu=8, gpus=4, project=a)
    wb = await pool.worker(cpu=8, gpus=4, project=b)
    # a: an hour of one GPU behind it and one GPU running; b: three GPUs running.
    await pool.jobs(a, 1, required_cpu=2, required_accelerators=1)
    [done] = await pool.claim(a, wa, cpu=8, gpus=4)
    await pool.run_for_an_hour(done)
    await pool.jobs(a, 1, required_cpu=2, required_accelerators=1)
    assert len(await pool.claim(a, wa, cpu=8, gpus=4)) == 1
    await pool.jobs(b, 1, required_cpu=4, required_accelerators=3)
    assert len(await pool.claim(b, wb, cpu=8, gpus=4)) == 1

    status, text = await pool.page(ADMIN, "/ui/pool")
    assert status == 200 and 'href="/ui/pool"' in text  # in the navigation
    assert 'id="pool-others"' not in text  # an admin sees every project by name
    mine = row(text, f'data-project="{a}"')
    assert mine[:6] == [a, "2", "8 GPUs, 4 running", "1", "1", "2"]
    assert mine[6] == "0.72"  # GPU-hours: an hour of one GPU, decayed as it ran (half-life 1 h)
    assert mine[9].startswith("25.0%")  # of the 4 GPUs running
    theirs = row(text, f'data-project="{b}"')
    assert theirs[:6] == [b, "3", "none", "1", "3", "4"]
    assert theirs[9].startswith("75.0%")
    assert float(mine[8].split("%")[0]) > float(theirs[8].split("%")[0])  # most of the usage is a's

    viewer = await pool.token("viewer", [a])
    status, text = await pool.page(viewer, "/ui/pool")
    assert status == 200 and b not in text
    assert row(text, f'data-project="{a}"') == mine
    others = row(text, 'id="pool-others"')
    assert others[:6] == ["others", "", "", "1", "3", "4"]  # no share or quota of theirs either
    assert others[9].startswith("75.0%")
