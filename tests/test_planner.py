"""The planner decides as a full scan of every task would, while looking only at what an
event changed (its cost per event does not grow with the pipeline; see
tests/benchmarks/engine_cost.py for the figures)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nborch.core.planner import Planner
from nborch.core.states import FINAL, State
from nborch.core.task import Task

_OK = ("success", "skipped")
_BAD = ("failed", "upstream_failed")


def scan_trigger(tasks, state, name):
    """The trigger rule as the planner decided it before (every upstream state read)."""
    ups = [state[u] for u in tasks[name].upstream]
    rule = tasks[name].trigger
    if rule == "one_failed":
        if any(s in _BAD for s in ups):
            return State.QUEUED
        if all(s in FINAL for s in ups):
            return "cancelled" if "cancelled" in ups else State.SKIPPED
        return None
    if not all(s in FINAL for s in ups):
        return None
    if rule == "all_done" or all(s in _OK for s in ups):
        return State.QUEUED
    return "upstream_failed" if any(s in _BAD for s in ups) else "cancelled"


def scan_advance(tasks, state):
    state = dict(state)
    changed = True
    while changed:
        changed = False
        for name, s in state.items():
            if s == State.PENDING and (decision := scan_trigger(tasks, state, name)) is not None:
                state[name] = decision
                changed = True
    return state


def scan_soon_ready(tasks, state, priority):
    level = {n: 0 for n, s in state.items() if s == State.QUEUED}
    passable = (State.SUCCESS, State.SKIPPED, State.RUNNING, State.QUEUED)
    frontier, depth = True, 0
    while frontier:
        depth += 1
        frontier = [n for n, s in state.items() if s == State.PENDING and n not in level
                    and tasks[n].trigger == "all_success"
                    and all(state[u] in passable or level.get(u, depth) < depth
                            for u in tasks[n].upstream)]
        level.update(dict.fromkeys(frontier, depth))
    return sorted(level, key=lambda n: (level[n], -priority[n]))


@st.composite
def pipelines(draw):
    n = draw(st.integers(1, 10))
    tasks = {}
    for i in range(n):
        ups = draw(st.lists(st.sampled_from([f"t{j}" for j in range(i)]), unique=True,
                            max_size=min(i, 3))) if i else []
        tasks[f"t{i}"] = Task(name=f"t{i}", notebook=None, upstream=tuple(ups),
                              trigger=draw(st.sampled_from(["all_success", "all_success",
                                                            "all_done", "one_failed"])),
                              retries=draw(st.sampled_from([0, 0, 1])), retry_delay=0.0,
                              resources=draw(st.sampled_from([{}, {}, {"GPU": 1}, {"GPU": 2}])))
    return tasks


@settings(max_examples=150, deadline=None)
@given(pipelines(), st.data())
def test_the_planner_decides_as_a_full_scan_would(tasks, data):
    planner = Planner(tasks, fail_fast=data.draw(st.booleans()))
    priority = planner._priority
    now = 0.0
    for _ in range(60):
        before = dict(planner.state)
        planner.advance(now)
        expected = scan_advance(tasks, {**before, **{n: State.QUEUED for n, s in before.items()
                                                      if s == "retrying"}})
        assert planner.state == expected
        queued = [n for n, s in planner.state.items() if s == State.QUEUED]
        assert planner.queued() == sorted(queued, key=lambda n: -priority[n])
        closed = data.draw(st.sets(st.sampled_from([(), (("GPU", 1),), (("GPU", 2),)])))
        assert list(planner.queued_where(lambda key, closed=closed: key not in closed)) == [
            n for n in planner.queued() if planner.resource_set[n] not in closed]
        assert list(planner.soon_ready()) == scan_soon_ready(tasks, planner.state, priority)
        assert planner.done == all(s in FINAL for s in planner.state.values())
        if planner.done:
            break
        running = [n for n, s in planner.state.items() if s == State.RUNNING]
        choices = [("start", n) for n in planner.queued()] + [("end", n) for n in running]
        if not choices:
            now += 1.0  # only retries waiting
            continue
        action, name = data.draw(st.sampled_from(choices + [("cancel", None)] * (len(running) > 0)))
        if action == "start":
            planner.start(name)
        elif action == "end":
            planner.finish(name, data.draw(st.booleans()), now)
        else:
            planner.cancel_pending("cancelled")
            for n in running:
                planner.cancelled(n)
    else:
        raise AssertionError(f"not done: {planner.state}")


def test_only_the_tasks_downstream_of_an_ended_one_are_looked_at():
    """A grid's join is looked at when one of its upstream tasks ends (counting, until the
    last), and no other task is looked at again."""
    tasks = {f"g{i}": Task(name=f"g{i}", notebook=None) for i in range(10_000)}
    tasks["join"] = Task(name="join", notebook=None, upstream=tuple(tasks))
    planner = Planner(tasks)
    planner.advance(0)
    assert len(planner.queued()) == 10_000
    looked = []
    trigger = planner._trigger
    planner._trigger = lambda name: looked.append(name) or trigger(name)
    for name in list(planner.queued()):
        planner.start(name)
        planner.finish(name, True, 0)
        planner.advance(0)
    assert looked == ["join"] * 10_000 and planner.queued() == ["join"]


def test_the_queued_tasks_of_a_full_resource_set_are_not_looked_at():
    """10,000 GPU tasks queued ahead of a CPU task: while the GPU set is full, finding the
    CPU task looks at none of them; a set that fills up while its tasks are taken gives
    no more."""
    tasks = {f"gpu{i}": Task(name=f"gpu{i}", notebook=None, resources={"GPU": 1})
             for i in range(10_000)}
    tasks["cpu"] = Task(name="cpu", notebook=None)
    planner = Planner(tasks)
    planner.advance(0)
    gpu = (("GPU", 1),)
    asked = []

    def may_start(key):
        asked.append(key)
        return key != gpu
    assert list(planner.queued_where(may_start)) == ["cpu"] and len(asked) <= 3
    taken = []
    for name in planner.queued_where(lambda key: key != gpu or len(taken) < 2):
        planner.start(name)  # the caller starts what it is given
        taken.append(name)
    assert taken == ["gpu0", "gpu1", "cpu"]
    assert planner.queued()[:2] == ["gpu2", "gpu3"] and len(planner.queued()) == 9_998
