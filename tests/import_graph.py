"""nborch's import graph read from the source with ``ast``, imports inside functions included.

``python tests/import_graph.py`` prints every import circle: each strongly connected group of
modules (modules that reach one another through imports), with the imports that close it, and
the number of elementary circles. Python needs none of them at import time (each is closed by
an import inside a function), but each is a pair of modules that cannot be understood, or
changed, one without the other. ``tests/test_architecture.py`` keeps the count from growing.

A module is a node (a package is its ``__init__``); ``from . import x`` is an edge to the
module ``x`` when there is one, else to the package; imports under ``if TYPE_CHECKING:`` count.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "nborch"


def modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package by its dotted name."""
    root = package_dir.name
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [root, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    here = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, known)
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}", known) if base else None
                if target != f"{base}.{alias.name}":
                    target = _resolve(base, known)
                if target:
                    found.add(target)
    found.discard(module)
    return found


def graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    known = modules(package_dir)
    return {name: imports(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups, key=lambda g: (-len(g), g))


def elementary_circles(edges: dict[str, set[str]], limit: int = 1_000_000) -> int:
    """How many elementary circles there are (each counted once), up to ``limit``."""
    order = sorted(edges)
    count = 0
    for i, start in enumerate(order):
        allowed = set(order[i:])
        path = [start]
        on_path = {start}
        todo = [iter(sorted(edges[start] & allowed))]
        while todo:
            for nxt in todo[-1]:
                if nxt == start:
                    count += 1
                    if count >= limit:
                        return count
                elif nxt not in on_path:
                    path.append(nxt)
                    on_path.add(nxt)
                    todo.append(iter(sorted(edges[nxt] & allowed)))
                    break
            else:
                todo.pop()
                on_path.discard(path.pop())
    return count


def main() -> int:
    edges = graph()
    groups = circles(edges)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports between them")
    for group in groups:
        inside = set(group)
        closing = sorted(f"{a} -> {b}" for a in group for b in edges[a] & inside)
        print(f"\ncircle of {len(group)} modules ({len(closing)} imports inside it):")
        for line in closing:
            print("   ", line)
    print(f"\n{len(groups)} circle(s) joining {sum(map(len, groups))} modules; "
          f"{elementary_circles(edges)} elementary circles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
