"""Quotas and concurrency keys hold under concurrency: real workers (of one project and of several)
claiming through two server processes never run more of a project's jobs, or of one key's, than
allowed, and the pool still runs everything."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import aiohttp
from conftest import Api, wait_until
from helpers import max_overlap, records, spawn_worker

JOBS = 12
"""Jobs of each kind: with the key and without."""


async def test_a_quota_and_a_concurrency_key_are_never_exceeded(
    server_factory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    first, second = await server_factory(), await server_factory()
    api = Api(first.url, http)
    p, other = f"limits-{uuid.uuid4().hex[:8]}", f"limits-other-{uuid.uuid4().hex[:8]}"
    for name in (p, other):
        await api.ok("POST", "/projects", {"name": name})
    await api.ok("PATCH", f"/projects/{p}", {"max_running": 3})
    job = {"task": "t", "parameters": {"out": str(tmp_path), "sleep": 0.3}}
    keyed = [
        {"name": f"k{i}", **job, "concurrency_key": "licence", "concurrency_limit": 2} for i in range(JOBS)
    ]
    plain = [{"name": f"p{i}", **job} for i in range(JOBS)]
    batch = await api.ok(
        "POST", f"/projects/{p}/jobs/batch", [x for pair in zip(keyed, plain, strict=True) for x in pair]
    )
    keyed_ids = set(batch["ids"][0::2])
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for i, srv in enumerate((first, second, first, second)):
            projects = ("--project", other) if i % 2 else ()  # half of them serve two projects
            workers.append(
                spawn_worker(srv.url, p, tmp_path / f"w{i}.log", "--cpus", "2", "--name", f"w{i}", *projects)
            )

        async def done() -> bool:
            counts = (await api.ok("GET", f"/projects/{p}"))["jobs"]
            return bool(counts.get("COMPLETED", 0) == 2 * JOBS)

        await wait_until(done, timeout=120, interval=0.2, what="every job to complete")
        for worker in workers:
            assert await asyncio.to_thread(worker.wait, 30) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    recs = records(tmp_path)
    assert len(recs) == 2 * JOBS
    everything = [(r["start"], r["end"]) for r in recs.values()]
    licensed = [(r["start"], r["end"]) for job_id, r in recs.items() if job_id in keyed_ids]
    assert max_overlap(everything) <= 3, "the project's quota of 3 running jobs"
    assert max_overlap(licensed) <= 2, "the key's limit of 2"
    assert max_overlap(everything) >= 2, "the pool ran jobs side by side"
