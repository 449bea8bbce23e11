"""Evaluation order of segments: every ``in_segment`` target's unit before its readers.

A unit is a segment, or a whole family (whose membership depends on all its members). Cycles
among units are reported as problems (file, line, message).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Node:
    """A segment for ordering: its family and its ``in_segment`` references (target, line)."""

    id: str
    family: str | None
    file: str
    line: int
    refs: Sequence[tuple[str, int]]


def _unit_name(node: Node) -> str:
    return f"family {node.family}" if node.family else node.id


def evaluation_order(
    nodes: Sequence[Node], priorities: Mapping[str, int]
) -> tuple[list[str], list[tuple[str, int, str]]]:
    """Order segments so every ``in_segment`` target's unit comes before its readers.

    A unit is a segment, or a whole family (whose membership depends on all its members).
    Among ready units the first defined goes first; a family's members follow by descending
    priority, ties by id. Returns (segment ids in order, cycles as (file, line, message)).
    """
    units: dict[str, list[Node]] = {}
    for node in nodes:
        units.setdefault(_unit_name(node), []).append(node)
    unit_of = {node.id: _unit_name(node) for node in nodes}
    index = {name: i for i, name in enumerate(units)}
    deps: dict[str, set[str]] = {name: set() for name in units}
    for node in nodes:
        deps[unit_of[node.id]].update(unit_of[t] for t, _ in node.refs if t in unit_of)
    readers: dict[str, set[str]] = {name: set() for name in units}
    for name, needed in deps.items():
        for dep in needed:
            readers[dep].add(name)
    waiting = {name: len(needed) for name, needed in deps.items()}
    ready = [index[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    names = list(units)
    ordered: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        members = sorted(units[name], key=lambda n: (-priorities.get(n.id, 0), n.id))
        ordered.extend(n.id for n in members)
        for reader in readers[name]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, index[reader])
    stuck = [name for name in names if waiting[name] > 0]
    return ordered, _cycles(stuck, deps, units, unit_of)


def _reach(start: str, deps: Mapping[str, set[str]], within: set[str]) -> set[str]:
    """Units reachable from ``start`` through one or more dependency edges inside ``within``."""
    found: set[str] = set()
    todo = [d for d in deps[start] if d in within]
    while todo:
        unit = todo.pop()
        if unit not in found:
            found.add(unit)
            todo.extend(d for d in deps[unit] if d in within)
    return found


def _cycle_path(
    start: str, deps: Mapping[str, set[str]], scc: set[str], order: list[str]
) -> list[str]:
    """A shortest cycle from ``start`` back to itself inside its strongly connected component."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for unit in frontier:
            for dep in sorted((d for d in deps[unit] if d in scc), key=order.index):
                if dep == start:
                    path = [unit]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1]
                if dep not in parents:
                    parents[dep] = unit
                    following.append(dep)
        frontier = following
    return [start]


def _cycles(
    stuck: list[str],
    deps: Mapping[str, set[str]],
    units: Mapping[str, list[Node]],
    unit_of: Mapping[str, str],
) -> list[tuple[str, int, str]]:
    """One problem per strongly connected component with a cycle among the unordered units."""
    within = set(stuck)
    reach = {unit: _reach(unit, deps, within) for unit in stuck}
    reported: set[str] = set()
    problems: list[tuple[str, int, str]] = []
    for unit in stuck:
        if unit in reported or unit not in reach[unit]:
            continue
        scc = {v for v in reach[unit] if unit in reach[v]}
        reported |= scc
        problems.append(_cycle_problem(_cycle_path(unit, deps, scc, stuck), units, unit_of))
    return problems


def _cycle_problem(
    cycle: list[str], units: Mapping[str, list[Node]], unit_of: Mapping[str, str]
) -> tuple[str, int, str]:
    first, following = cycle[0], cycle[1] if len(cycle) > 1 else cycle[0]
    for node in units[first]:
        for target, line in node.refs:
            if unit_of.get(target) == following:
                text = " -> ".join([*cycle, first])
                if len(cycle) == 1 and node.family:
                    text += " (members of a family cannot read each other)"
                return node.file, line, f"in_segment '{target}' creates a cycle: {text}"
    node = units[first][0]
    return node.file, node.line, f"in_segment cycle: {' -> '.join([*cycle, first])}"
