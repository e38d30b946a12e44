"""Synthetic notebook DAGs for the benchmarks, written as plain notebooks whose parameters
cell declares ``upstream = [...]``, so nborch (a folder pipeline), papermill and Ploomber
all run the very same files."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml


@dataclass
class Scenario:
    name: str
    folder: Path
    edges: dict          # task -> list of upstream tasks, in topological order
    ideal: float         # seconds of the user's own sleeping on the critical path
    parallel: int        # --max-parallel / threads / processes for parallel systems
    description: str

    @property
    def critical_path(self) -> int:
        depth: dict[str, int] = {}
        for task, ups in self.edges.items():
            depth[task] = 1 + max((depth[u] for u in ups), default=0)
        return max(depth.values())


def _notebook(path: Path, upstream: list[str], body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell(f"upstream = {upstream!r}\nproduct = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(src) for src in body.split("\n#--\n")]
    nbformat.write(nb, str(path))


def _write(name: str, root: Path, edges: dict, bodies: dict, ideal: float, parallel: int,
           description: str) -> Scenario:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for task, ups in edges.items():
        _notebook(folder / f"{task}.ipynb", ups, bodies.get(task, "x = 1"))
    # Ploomber reads its own pipeline.yaml; keep it out of the folder nborch runs.
    plo = root / f"{name}-ploomber"
    plo.mkdir(exist_ok=True)
    for executor in ("serial", "parallel"):
        spec = {"tasks": [{"source": f"../{name}/{t}.ipynb", "product": f"out/{t}.ipynb",
                           "name": t} for t in edges]}
        if executor == "parallel":
            spec["executor"] = {"dotted_path": "ploomber.executors.Parallel", "processes": parallel}
        (plo / f"pipeline.{executor}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return Scenario(name, folder, edges, ideal, parallel, description)


def chain(root: Path, n: int = 10) -> Scenario:
    edges = {f"n{i:02d}": ([f"n{i - 1:02d}"] if i else []) for i in range(n)}
    return _write(f"chain{n}", root, edges, {}, 0.0, 2, f"{n} trivial notebooks in a chain")


def fan(root: Path, width: int = 16, sleep: float = 0.5) -> Scenario:
    edges = {"root": []}
    edges.update({f"leaf{i:02d}": ["root"] for i in range(width)})
    edges["join"] = [f"leaf{i:02d}" for i in range(width)]
    bodies = {f"leaf{i:02d}": f"import time\ntime.sleep({sleep})" for i in range(width)}
    return _write(f"fan{width}", root, edges, bodies, sleep, 4,
                  f"a root, {width} notebooks sleeping {sleep}s, a join")


def layered(root: Path, n: int = 50, layers: int = 5, seed: int = 50) -> Scenario:
    rng = random.Random(seed)
    per = n // layers
    edges: dict[str, list[str]] = {}
    for layer in range(layers):
        for i in range(per):
            ups = [] if layer == 0 else sorted(rng.sample(
                [f"l{layer - 1}n{j:02d}" for j in range(per)], rng.randint(1, 3)))
            edges[f"l{layer}n{i:02d}"] = ups
    return _write(f"dag{n}", root, edges, {}, 0.0, 4,
                  f"{n} trivial notebooks in a seeded random {layers}-layer DAG")


def imports(root: Path, n: int = 5) -> Scenario:
    edges = {f"imp{i}": ([f"imp{i - 1}"] if i else []) for i in range(n)}
    body = "import numpy as np\nimport pandas as pd\n#--\ndf = pd.DataFrame({'a': np.arange(10)})"
    return _write("imports", root, edges, dict.fromkeys(edges, body), 0.0, 2,
                  f"{n} chained notebooks importing pandas and numpy")


def cells(root: Path, count: int = 2000) -> Scenario:
    body = "\n#--\n".join(f"x{i} = {i}" for i in range(count))
    return _write(f"cells{count}", root, {"many": []}, {"many": body}, 0.0, 1,
                  f"one notebook of {count} instant cells (progress events)")


def wide(root: Path, n: int, name: str) -> Scenario:
    """``n`` trivial notebooks in layers of 20, each depending on two of the layer before."""
    rng = random.Random(n)
    edges: dict[str, list[str]] = {}
    names: list[str] = []
    for i in range(n):
        layer_start = (i // 20) * 20
        previous = names[max(0, layer_start - 20):layer_start]
        task = f"t{i:03d}"
        edges[task] = sorted(rng.sample(previous, min(2, len(previous))))
        names.append(task)
    return _write(name, root, edges, {}, 0.0, 4, f"{n} trivial notebooks in layers of 20")
