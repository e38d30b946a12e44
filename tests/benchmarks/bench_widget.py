"""How long the widget takes to recolour (and fully re-render) a 500-task graph.

Not a test: run it by hand, ``.venv/bin/python tests/benchmarks/bench_widget.py [TASKS]``.
The graph is laid out by Graphviz once; each update only rewrites node fills in the SVG
text, so it must stay far below the 250 ms between two renders of the live view.
``--grid N``: the view of a run of one task, a grid of N instances after it and a join
(drawn as one node; its instances in the grid's panel), its panel closed and open.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from nborch.core.events import AttemptProgress, RunStarted, TaskStateChanged
from nborch.core.run import Run
from nborch.core.states import TASK_STATES
from nborch.ui.htmlview import layout


def dag(n: int, seed: int = 7) -> dict[str, tuple[str, ...]]:
    """``n`` tasks in layers of 25, each with up to three upstream tasks in the layer before."""
    rng = random.Random(seed)
    names = [f"task_{i:03d}" for i in range(n)]
    edges = {}
    for i, name in enumerate(names):
        layer = i // 25
        before = names[(layer - 1) * 25: layer * 25] if layer else []
        edges[name] = (tuple(rng.sample(before, min(len(before), rng.randint(1, 3))))
                       if before else ())
    return edges


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(n: int = 500, repeat: int = 200) -> None:
    edges = dag(n)
    start = time.perf_counter()
    graph = layout(edges)
    if graph is None:
        sys.exit("Graphviz's dot is not installed")
    print(f"{n} tasks: Graphviz layout (once per run): "
          f"{(time.perf_counter() - start) * 1000:.0f} ms, "
          f"SVG {len(graph.render({})) / 1024:.0f} KiB")
    rng = random.Random(1)
    states = [{name: rng.choice(TASK_STATES) for name in edges} for _ in range(repeat)]
    it = iter(states * 2)
    print(f"recolour the SVG: median {median_ms(lambda: graph.render(next(it)), repeat):.3f} ms "
          f"of {repeat}")

    import ipywidgets  # noqa: F401  (the view below needs it; outside a kernel it sends nothing)

    from nborch.ui.jupyter.widget import RunView
    run = Run.from_start(RunStarted("r", "bench", "2026-01-01T00:00:00+00:00",
                                    "2026-01-01T00:00:00+00:00", {},
                                    {name: {"upstream": list(ups)} for name, ups in edges.items()},
                                    None, 0, "h"))
    view = RunView(run)
    names = list(edges)

    def one_update() -> None:
        name = rng.choice(names)
        run.apply(TaskStateChanged("r", name, rng.choice(["running", "success", "failed"]), 1,
                                   "2026-01-01T00:00:01+00:00"))
        run.apply(AttemptProgress("r", name, 1, 3, 9, "x = 1"))
        view.show(run)

    print("whole view (graph, bar, table, errors): "
          f"median {median_ms(one_update, 50):.1f} ms of 50")


def grid(n: int, repeat: int = 50) -> None:
    import ipywidgets  # noqa: F401

    from nborch.ui.jupyter.widget import RunView
    instances = [f"one-{i}" for i in range(n)]
    tasks = {"first": {"upstream": []}, "join": {"upstream": instances},
             **{name: {"upstream": ["first"], "grid": "one"} for name in instances}}
    run = Run.from_start(RunStarted("r", "bench", "2026-01-01T00:00:00+00:00",
                                    "2026-01-01T00:00:00+00:00", {}, tasks, None, 0, "h"))
    start = time.perf_counter()
    view = RunView(run)
    view.show(run)
    print(f"grid of {n:,}: first view {(time.perf_counter() - start) * 1000:.0f} ms")
    rng = random.Random(1)

    def one_update() -> None:
        name = rng.choice(instances)
        run.apply(TaskStateChanged("r", name, rng.choice(["running", "success"]), 1,
                                   "2026-01-01T00:00:01+00:00"))
        view.show(run)

    print(f"  an update, grid panel closed: median {median_ms(one_update, repeat):.1f} ms")
    view.grid_panels.selected_index = 0
    print(f"  an update, grid panel open: median {median_ms(one_update, repeat):.1f} ms")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--grid"]:
        grid(int(sys.argv[2]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
