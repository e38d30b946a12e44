"""How many attempts a run keeps in flight (runtime/slots.py): per resource set at most what
the executor can run of it, in all at most --max-parallel; tasks waiting for one resource
do not hold back the others. An executor that holds every attempt until the test ends it
stands for a cluster (tests/test_dask_slots.py runs a real one)."""

from __future__ import annotations

import threading

import pytest
from conftest import wait_until, write_notebook

from nborch import Pipeline
from nborch.core.clock import utcnow
from nborch.execution.attempt import AttemptResult
from nborch.execution.executors import Executor
from nborch.runtime import slots
from nborch.runtime.slots import AttemptSlots

GPU = (("GPU", 1),)


class Cluster(Executor):
    """Runs nothing: keeps what is submitted until ``end(task)``; says it can run ``caps``
    (resource set -> attempts at once) and ``threads`` in all."""

    name = "held"
    queues = True

    def __init__(self, caps: dict, threads: int):
        self.caps, self.threads = caps, threads
        self.reads = 0
        self.submitted: list[str] = []
        self.in_flight: dict[str, tuple] = {}  # task -> its resource set
        self.seen: list[dict] = []  # at each submit: resource set -> attempts in flight
        self._done: dict[str, object] = {}
        self._lock = threading.Lock()

    def submit(self, job, request, emit, done):
        with self._lock:
            key = tuple(sorted(job.resources.items()))
            self.in_flight[job.task] = key
            self.submitted.append(job.task)
            self.seen.append({k: list(self.in_flight.values()).count(k)
                              for k in set(self.in_flight.values())})
            self._done[job.task] = done
        self.on_attempt_started(task=job.task, attempt=job.attempt, at=utcnow())
        return self

    def cancel(self) -> None:
        pass

    def end(self, task: str) -> None:
        with self._lock:
            del self.in_flight[task]
            done = self._done.pop(task)
        done(AttemptResult("success", utcnow(), utcnow(), None, {}))

    def parallelism(self) -> int:
        return self.threads

    def capacity(self, resources):
        self.reads += 1
        return self.caps.get(tuple(sorted(resources.items())))


def test_tasks_waiting_for_a_gpu_do_not_hold_back_cpu_tasks(workdir, monkeypatch):
    """Three GPU tasks first in the pipeline's order, one GPU on the cluster: one GPU attempt
    in flight at a time, and the CPU tasks go at once beside it, though the limit (4) would
    have let the next GPU tasks take their places."""
    monkeypatch.setattr(slots, "REREAD_SECONDS", 0.0)
    p = Pipeline("mixed", root=workdir)
    for name in ("gpu_a", "gpu_b", "gpu_c"):
        p.notebook(write_notebook(workdir / f"{name}.ipynb", "x = 1").name, name=name,
                   resources={"GPU": 1})
    for name in ("cpu_a", "cpu_b"):
        p.notebook(write_notebook(workdir / f"{name}.ipynb", "x = 1").name, name=name)
    cluster = Cluster({(): 4, GPU: 1}, threads=4)
    handle = p.start(executor=cluster, home=workdir / ".nborch")
    wait_until(lambda: len(cluster.submitted) == 3, "the first attempts")
    assert sorted(cluster.submitted) == ["cpu_a", "cpu_b", "gpu_a"]
    for task in ("cpu_a", "cpu_b", "gpu_a", "gpu_b", "gpu_c"):
        wait_until(lambda task=task: task in cluster.in_flight, task)
        cluster.end(task)
    run = handle.wait(60)
    assert run.status == "success"
    assert cluster.submitted[3:] == ["gpu_b", "gpu_c"]
    assert max(seen.get(GPU, 0) for seen in cluster.seen) == 1
    assert max(sum(seen.values()) for seen in cluster.seen) <= 4


def test_max_parallel_bounds_the_attempts_of_every_set_together(workdir):
    p = Pipeline("bounded", root=workdir)
    for name in ("gpu_a", "cpu_a", "cpu_b", "cpu_c"):
        p.notebook(write_notebook(workdir / f"{name}.ipynb", "x = 1").name, name=name,
                   resources={"GPU": 1} if name.startswith("gpu") else {})
    cluster = Cluster({(): 8, GPU: 1}, threads=8)
    handle = p.start(executor=cluster, home=workdir / ".nborch", max_parallel=2)
    for task in ("gpu_a", "cpu_a", "cpu_b", "cpu_c"):
        wait_until(lambda task=task: task in cluster.in_flight, task)
        assert len(cluster.in_flight) <= 2
        cluster.end(task)
    assert handle.wait(60).status == "success"
    assert max(sum(seen.values()) for seen in cluster.seen) == 2


class Counted(Executor):
    def __init__(self):
        self.threads, self.caps, self.reads = 2, {(): 2, GPU: 0}, 0

    def submit(self, job, request, emit, done):
        raise AssertionError("not used")

    def parallelism(self) -> int:
        return self.threads

    def capacity(self, resources):
        self.reads += 1
        return self.caps[tuple(sorted(resources.items()))]


def test_the_executors_numbers_are_read_again_only_every_few_seconds(monkeypatch):
    executor = Counted()
    rule = AttemptSlots(executor, {"a": (), "b": (), "g": GPU}, None)
    assert executor.reads == 2 and rule.limit == 2  # one read per resource set
    for _ in range(1000):  # an engine turn each
        rule.refresh()
    assert executor.reads == 2
    monkeypatch.setattr(slots, "REREAD_SECONDS", 0.0)
    executor.threads, executor.caps = 5, {(): 5, GPU: 1}  # workers joined
    rule.refresh()
    assert executor.reads == 4 and rule.limit == 5


@pytest.mark.parametrize("given", [None, 3])
def test_the_rule(given):
    """Per set at most its capacity (a set nothing can run now: one, to be refused or to
    wait for a worker), in all at most --max-parallel, else the executor's parallelism."""
    executor = Counted()
    executor.threads, executor.caps = 4, {(): 4, GPU: 0}
    rule = AttemptSlots(executor, {"a": (), "b": (), "c": (), "g": GPU, "h": GPU}, given)
    rule.take("g")
    assert not rule.free("h") and rule.free("a")  # one attempt of a set no worker offers
    for task in ("a", "b", "c")[:rule.limit - 1]:
        assert rule.free(task)
        rule.take(task)
    assert rule.full and not rule.free("c" if given else "a")
    rule.give_back("g")
    assert rule.free("h") and rule.total == rule.limit - 1


def test_an_executor_without_capacities_keeps_max_parallel_alone():
    """The local executor: no cap per set, --max-parallel (or the CPUs) in all, as before."""
    from nborch.execution.executors.local import LocalExecutor
    executor = LocalExecutor()
    try:
        rule = AttemptSlots(executor, {"a": (), "g": GPU}, 1)
        assert rule.open(GPU) and rule.open(()) and rule.limit == 1
        rule.take("g")
        assert rule.full and rule.open(GPU)
    finally:
        executor.shutdown()


def test_a_given_max_parallel_leaves_plain_tasks_waiting_for_an_adaptive_cluster():
    """With --max-parallel, plain tasks may wait in Dask's queue beyond what the workers run
    now (an adaptive cluster grows on that work); resource sets stay capped."""
    executor = Counted()
    executor.threads, executor.caps = 1, {(): 1, GPU: 1}  # one worker so far
    rule = AttemptSlots(executor, {f"t{i}": () for i in range(20)} | {"g": GPU, "h": GPU}, 10)
    for i in range(9):
        assert rule.free(f"t{i}")
        rule.take(f"t{i}")
    rule.take("g")
    assert rule.full and not rule.open(GPU) and rule.open(())
    without = AttemptSlots(executor, {"a": (), "b": ()}, None)  # the cluster's own number
    without.take("a")
    assert not without.free("b")
