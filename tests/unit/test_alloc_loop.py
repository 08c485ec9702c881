"""The allocation loop on a stand-in server and scheduler: a server that is away for a pass does
not end the loop, a dry run records and submits nothing, a queue held by another loop is left
alone, and what a pass records for a submission, a failure and a state change."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from whatsnext.alloc.backend import Command, Found, Observed, Submitted
from whatsnext.alloc.loop import Allocator, Settings
from whatsnext.alloc.pilot import Pilot
from whatsnext.alloc.plan import QueueSpec
from whatsnext.api.client.errors import Conflict
from whatsnext.api.client.errors import ConnectionError as Unreachable

QUEUE = {
    "name": "q",
    "backend": "slurm",
    "projects": ["p"],
    "time_limit": 600,
    "max_workers": 2,
    "workers_per_alloc": 1,
    "idle_timeout": 60,
    "max_submits_per_minute": 4,
    "worker_args": "",
    "options": {},
    "paused": False,
    "last_error": None,
}
SHAPE = {"project": "p", "cpu": 1, "gpus": 0, "tags": [], "timeout": 60, "pending": 3, "unserved": 3}


class Api:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.away = 0
        self.held_by: str | None = None
        self.allocs: list[dict[str, Any]] = []
        self.q = dict(QUEUE)

    async def queues(self) -> list[dict[str, Any]]:
        if self.away:
            self.away -= 1
            raise Unreachable("cannot reach the WhatsNext server")
        return [dict(self.q)]

    async def queue(self, name: str) -> dict[str, Any]:
        return {**self.q, "recent": []}

    async def lease(self, name: str, holder: str, seconds: float) -> dict[str, Any]:
        if self.held_by:
            raise Conflict("held", details={"field": "holder", "holder": self.held_by})
        self.calls.append(("lease", holder))
        return {"holder": holder}

    async def release(self, name: str, holder: str) -> None:
        self.calls.append(("release", holder))

    async def allocations(self, name: str, states: Sequence[str]) -> list[dict[str, Any]]:
        return [dict(a) for a in self.allocs if a["state"] in states]

    async def demand(self, projects: Sequence[str]) -> dict[str, Any]:
        return {"shapes": [SHAPE], "pending": 3, "unserved": 3}

    async def add_allocation(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("add", body))
        made = {"id": len(self.allocs) + 1, "state": "QUEUED", "reason": None, **body}
        self.allocs.append(made)
        return dict(made)

    async def update_allocation(self, allocation_id: int, fields: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("update", (allocation_id, fields)))
        self.allocs[allocation_id - 1].update(fields)
        return dict(self.allocs[allocation_id - 1])

    async def update_queue(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("queue", fields))
        self.q.update(fields)
        return dict(self.q)


class Backend:
    kind = "slurm"

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.fail: str | None = None
        self.states: dict[str, Observed] = {}
        self.found: list[Found] = []
        self.first = asyncio.Event()
        """Set at the first submission."""

    def command(self, pilot: Pilot, queue: QueueSpec, log_file: Path) -> Command:
        return Command(["sbatch", pilot.name], "#!/bin/bash\n", log_file.with_suffix(".sbatch"))

    async def submit(self, command: Command, pilot: Pilot) -> Submitted:
        if self.fail:
            return Submitted(None, self.fail)
        self.submitted.append(pilot.name)
        self.first.set()
        return Submitted(str(100 + len(self.submitted)))

    async def observe(
        self, queue: QueueSpec, allocations: Sequence[Mapping[str, Any]], prefix: str
    ) -> tuple[dict[int, Observed], list[Found]]:
        seen = {
            int(a["id"]): self.states[a["external_id"]]
            for a in allocations
            if a.get("external_id") in self.states
        }
        return seen, self.found

    async def cancel(self, queue: QueueSpec, allocation: Mapping[str, Any]) -> str | None:
        return None

    async def collect_log(self, queue: QueueSpec, allocation: Mapping[str, Any], log_file: Path) -> None:
        return None


def make(tmp_path: Path, **settings: Any) -> tuple[Allocator, Api, Backend, list[str]]:
    api, backend, printed = Api(), Backend(), []
    allocator = Allocator(
        api,  # type: ignore[arg-type]
        {"slurm": backend},  # type: ignore[dict-item]
        Settings(server="http://s", log_dir=tmp_path, interval=0.01, **settings),
        out=printed.append,
    )
    return allocator, api, backend, printed


async def test_a_pass_submits_and_records_then_follows_the_states(tmp_path: Path) -> None:
    allocator, api, backend, _ = make(tmp_path)
    await allocator.run(once=True)
    assert len(backend.submitted) == 2  # 3 jobs want 3 workers, 2 at most
    adds = [body for kind, body in api.calls if kind == "add"]
    assert [a["external_id"] for a in adds] == ["101", "102"]
    assert adds[0]["shape"] == {"project": "p", "cpu": 1, "gpus": 0, "tags": [], "timeout": 60.0, "jobs": 1}
    assert api.calls[-1] == ("release", allocator.settings.holder)
    backend.states["101"] = Observed("RUNNING")
    backend.states["102"] = Observed("QUEUED", "Priority")
    await allocator.run_pass()
    assert [(a["state"], a["reason"]) for a in api.allocs] == [("RUNNING", None), ("QUEUED", "Priority")]
    assert len(backend.submitted) == 2, "queued and running workers count: nothing more"


async def test_a_failed_submission_is_recorded_and_reported(tmp_path: Path) -> None:
    allocator, api, backend, _ = make(tmp_path)
    backend.fail = "sbatch failed: sbatch: error: invalid partition specified: x"
    await allocator.run_pass()
    [failed] = api.allocs
    assert failed["state"] == "FAILED" and failed["reason"] == "not submitted: " + backend.fail
    assert api.q["last_error"] == backend.fail
    await allocator.run_pass()
    assert len(api.allocs) == 1, "backing off: no second try at once"
    assert api.q["last_error"] == backend.fail, "the failure stands while backing off"


async def test_a_server_away_for_a_pass_does_not_end_the_loop(tmp_path: Path) -> None:
    allocator, api, backend, _ = make(tmp_path)
    api.away = 2
    stop = asyncio.Event()
    task = asyncio.create_task(allocator.run(stop=stop))
    await asyncio.wait_for(backend.first.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert allocator.passes >= 3
    api.away = 1
    with pytest.raises(Unreachable):
        await allocator.run(once=True)  # one pass: its failure is the answer


async def test_dry_run_records_nothing(tmp_path: Path) -> None:
    allocator, api, backend, printed = make(tmp_path, dry_run=True)
    await allocator.run(once=True)
    assert backend.submitted == [] and api.calls == []
    assert (
        printed[0]
        == "queue q (slurm): pending 3 (unserved 3) fitting jobs want 3 worker(s); queued 0, running 0, room for 2"
    )
    assert sum(line.startswith("  would submit whatsnext-alloc-q-") for line in printed) == 2


async def test_a_queue_held_by_another_loop_is_left_alone(tmp_path: Path) -> None:
    allocator, api, backend, _ = make(tmp_path)
    api.held_by = "login2:77"
    await allocator.run_pass()
    assert backend.submitted == [] and api.allocs == []
