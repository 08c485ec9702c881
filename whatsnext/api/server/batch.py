"""Turn submitted jobs into the normalised batch that ``wn_enqueue`` inserts: one
``wn_job_entry`` object per job, each field mapped by name (``whatsnext.models.JOB_ENTRY_FIELDS``).

Dependencies may be job ids, the seed's mapping ``{id: name}``, (inside a batch) the name of
another job of the same batch, or items with a condition: ``{"id": 12, "on": "finished"}``,
``{"name": "train"}``, ``{"group": "hp1", "on": "finished"}`` (every job the group has when the
job is submitted; ``wn_enqueue`` finds those already queued). Names are resolved here, and cycles
among the batch's own jobs (a group's members in the batch included) are refused with the cycle
named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ...models import JOB_ENTRY_FIELDS, JOB_SUBMIT_FIELDS
from .errors import ApiError

ENTRY_EXCLUDED = frozenset(JOB_SUBMIT_FIELDS) - frozenset(JOB_ENTRY_FIELDS)
"""The fields of a submitted job that ``wn_enqueue`` does not read as they are (dependencies
and the group, resolved here); every other field goes to ``wn_job_entry`` by name."""

Entry = dict[str, Any]
"""A submitted job: the fields it gave, validated (``schemas.JobEntry``)."""


def entries_json(
    entries: list[Entry], group_ids: dict[str, int] | None = None, group: str | None = None
) -> str:
    """The batch as ``wn_enqueue`` reads it (a JSON array of ``wn_job_entry`` objects). Fields
    left out are not written: the database reads a missing key as NULL (the task's value). A
    batch without dependencies or groups, the common case, goes as it was given (the database
    ignores keys that are not attributes of ``wn_job_entry``, such as a null ``depends``)."""
    if not group_ids and not any(entry.get("depends") for entry in entries):
        return orjson.dumps(entries).decode()
    normalised = normalise(entries, group_ids, group)
    return orjson.dumps([{k: v for k, v in e.items() if v is not None} for e in normalised]).decode()


Ref = tuple[int | str, str]
"""A dependency as (job id or name, condition)."""


def _dep_refs(job: Entry) -> tuple[list[Ref], list[Ref]]:
    """A job's dependencies on jobs, and on groups (names), each with its condition."""
    deps = job.get("depends")
    if deps is None:
        return [], []
    if isinstance(deps, dict):
        return [(key, "success") for key in deps], []
    jobs: list[Ref] = []
    groups: list[Ref] = []
    for dep in deps:
        if not isinstance(dep, dict):
            jobs.append((dep, "success"))
            continue
        on = dep.get("on", "success")
        if "group" in dep:
            groups.append((dep["group"], on))
        else:
            jobs.append((dep["id"] if "id" in dep else dep["name"], on))
    return jobs, groups


@dataclass
class Resolved:
    """A job's dependencies as ``wn_enqueue`` takes them, each list with its conditions."""

    ids: dict[int, str] = field(default_factory=dict)
    idx: dict[int, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)


def _resolve(job: Entry, by_name: dict[str, list[int]], field_name: str) -> Resolved:
    """A job's dependencies as existing job ids, 1-based indexes within the batch and group names
    (the first condition given for one of them wins)."""
    out = Resolved()
    refs, groups = _dep_refs(job)
    for ref, on in refs:
        if isinstance(ref, int):
            out.ids.setdefault(ref, on)
            continue
        if ref in by_name:
            targets = by_name[ref]
            if len(targets) > 1:
                raise ApiError(
                    422,
                    "invalid",
                    f"dependency {ref!r} is ambiguous: {len(targets)} jobs of the batch have that name",
                    {"field": field_name, "dependency": ref},
                )
            out.idx.setdefault(targets[0], on)
        elif ref.isdigit() and 0 < int(ref) < 2**63:
            out.ids.setdefault(int(ref), on)
        else:
            raise ApiError(
                422,
                "invalid",
                f"unknown dependency {ref!r}: not a job id, nor the name of a job in this batch",
                {"field": field_name, "dependency": ref},
            )
    for name, on in groups:
        out.groups.setdefault(name, on)
    return out


def normalise(
    jobs: list[Entry], group_ids: dict[str, int] | None = None, group: str | None = None
) -> list[dict[str, Any]]:
    """``group_ids``: the ids of the jobs' groups by name; ``group``: the batch's (a job's own wins)."""
    by_name: dict[str, list[int]] = {}
    members: dict[str, list[int]] = {}
    for i, job in enumerate(jobs, start=1):
        by_name.setdefault(job["name"], []).append(i)
        in_group = job.get("group") or group
        if in_group is not None:
            members.setdefault(in_group, []).append(i)

    out: list[dict[str, Any]] = []
    edges: dict[int, list[int]] = {}
    groups = group_ids or {}
    for i, job in enumerate(jobs, start=1):
        entry = {k: v for k, v in job.items() if k not in ENTRY_EXCLUDED}
        if job.get("depends"):
            deps = _resolve(job, by_name, f"{i - 1}.depends" if len(jobs) > 1 else "depends")
            # The batch's own members of a group it waits for are edges too (for the cycle check).
            batch_edges = [*deps.idx, *(m for g in deps.groups for m in members.get(g, ()) if m != i)]
            if batch_edges:
                edges[i] = batch_edges
            entry["dep_ids"], entry["dep_ids_on"] = list(deps.ids) or None, list(deps.ids.values()) or None
            entry["dep_idx"], entry["dep_idx_on"] = list(deps.idx) or None, list(deps.idx.values()) or None
            entry["dep_groups"] = list(deps.groups) or None
            entry["dep_groups_on"] = list(deps.groups.values()) or None
        entry["group_id"] = groups.get(job.get("group") or group or "") if groups else None
        out.append(entry)
    cycle = find_cycle(edges)
    if cycle:
        names = " -> ".join(jobs[i - 1]["name"] for i in cycle)
        raise ApiError(
            422,
            "dependency_cycle",
            f"dependency cycle: {names}",
            {"field": "depends", "cycle": [jobs[i - 1]["name"] for i in cycle]},
        )
    return out


def find_cycle(edges: dict[int, list[int]]) -> list[int] | None:
    """A cycle in a graph given as node -> nodes it depends on, as a closed path, or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    for start in edges:
        if colour[start] != white:
            continue
        stack: list[tuple[int, int]] = [(start, 0)]
        path: list[int] = [start]
        colour[start] = grey
        while stack:
            node, pos = stack[-1]
            nexts = edges.get(node, [])
            if pos < len(nexts):
                stack[-1] = (node, pos + 1)
                nxt = nexts[pos]
                if colour.get(nxt, white) == grey:
                    return [*path[path.index(nxt) :], nxt]
                if colour.get(nxt, white) == white:
                    colour[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                colour[node] = black
                stack.pop()
                path.pop()
    return None
