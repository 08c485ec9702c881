"""A dependency graph laid out by levels (a job's level: the longest chain of upstream jobs
before it), drawn as SVG on the server: one column per level, edges as curves, nodes coloured
by status and linked to the job's page."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 34, 70, 14, 12
COLOURS = {
    "PENDING": "#9aa5b1",
    "RUNNING": "#2f80ed",
    "COMPLETED": "#27ae60",
    "FAILED": "#eb5757",
    "CANCELLED": "#828282",
    "BLOCKED": "#f2994a",
}


@dataclass(frozen=True)
class Placed:
    id: int
    name: str
    status: str
    x: int
    y: int


def levels(ids: list[int], edges: list[tuple[int, int]]) -> dict[int, int]:
    """Each node's level: 0 for roots, else one more than its deepest upstream node (cycles,
    which the server refuses anyway, are cut)."""
    ups: dict[int, list[int]] = {i: [] for i in ids}
    for source, target in edges:
        if source in ups and target in ups:
            ups[target].append(source)
    level: dict[int, int] = {}
    for start in ids:
        stack = [(start, False)]
        visiting: set[int] = set()
        while stack:
            node, done = stack.pop()
            if node in level:
                continue
            if done:
                visiting.discard(node)
                level[node] = 1 + max((level.get(u, 0) for u in ups[node]), default=-1)
                continue
            visiting.add(node)
            stack.append((node, True))
            stack.extend((u, False) for u in ups[node] if u not in level and u not in visiting)
    return level


def layout(nodes: list[dict[str, Any]], edges: list[tuple[int, int]]) -> list[Placed]:
    by_level: dict[int, list[dict[str, Any]]] = {}
    lv = levels([n["id"] for n in nodes], edges)
    for n in nodes:
        by_level.setdefault(lv[n["id"]], []).append(n)
    placed = []
    for level, members in sorted(by_level.items()):
        for row, n in enumerate(members):
            placed.append(
                Placed(
                    n["id"],
                    n["name"],
                    n["status"],
                    PAD + level * (NODE_W + GAP_X),
                    PAD + row * (NODE_H + GAP_Y),
                )
            )
    return placed


def svg(nodes: list[dict[str, Any]], edges: list[tuple[int, int]], href: str = "/ui/jobs/{id}") -> str:
    """The graph as an SVG element."""
    placed = layout(nodes, edges)
    at = {p.id: p for p in placed}
    width = max((p.x for p in placed), default=0) + NODE_W + PAD
    height = max((p.y for p in placed), default=0) + NODE_H + PAD
    out = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="dependency graph">'
    ]
    for source, target in edges:
        if source not in at or target not in at:
            continue
        a, b = at[source], at[target]
        x1, y1, x2, y2 = a.x + NODE_W, a.y + NODE_H // 2, b.x, b.y + NODE_H // 2
        mid = (x1 + x2) // 2
        out.append(
            f'<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" '
            f'fill="none" stroke="#b0b8c1" stroke-width="1.5"/>'
        )
    for p in placed:
        label = p.name if len(p.name) <= 20 else p.name[:19] + "…"
        colour = COLOURS.get(p.status, "#9aa5b1")
        out.append(
            f'<a href="{escape(href.format(id=p.id))}" data-job="{p.id}"><g class="node status-{p.status.lower()}">'
            f"<title>#{p.id} {escape(p.name)} ({p.status})</title>"
            f'<rect x="{p.x}" y="{p.y}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{colour}"/>'
            f'<text x="{p.x + 8}" y="{p.y + 21}" fill="#fff" font-size="12">#{p.id} {escape(label)}</text>'
            "</g></a>"
        )
    out.append("</svg>")
    return "".join(out)
