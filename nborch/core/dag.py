"""Graph algorithms over ``{task: upstream names}``: order, cycles, reach."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from graphlib import CycleError, TopologicalSorter


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle in run order (each name runs before the next; first == last), or None."""
    try:
        TopologicalSorter({k: [u for u in v if u in edges] for k, v in edges.items()}).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return None


def topological_order(edges: Mapping[str, Sequence[str]]) -> list[str]:
    return list(TopologicalSorter(edges).static_order())


def downstream_map(edges: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    down: dict[str, list[str]] = {name: [] for name in edges}
    for name, ups in edges.items():
        for up in ups:
            down[up].append(name)
    return down


def downstream_closure(edges: Mapping[str, Sequence[str]], names: Iterable[str]) -> set[str]:
    """``names`` and every task downstream of them."""
    down = downstream_map(edges)
    seen: set[str] = set()
    todo = list(names)
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += down[current]
    return seen


def path_lengths(edges: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """For each task, the number of tasks on its longest path to a sink (itself included).

    Starting the task with the longest remaining path first shortens the whole run.
    """
    down = downstream_map(edges)
    lengths: dict[str, int] = {}
    for name in reversed(topological_order(edges)):
        lengths[name] = 1 + max((lengths[d] for d in down[name]), default=0)
    return lengths
