"""States and the event fold: one enum for every view, and one rule by which the live Run
and the store record a run's events (they must read back the same)."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import socket
import sqlite3
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nborch.core.events import AttemptProgress, RunEnded, RunStarted, TaskStateChanged
from nborch.core.grouping import grid_state, summary
from nborch.core.run import Run, resumed_run
from nborch.core.states import ATTEMPT_STATES, COLOURS, FINAL, RUN_STATES, TASK_STATES, State, fill
from nborch.store.store import Store


def test_a_state_is_its_string_everywhere():
    assert State.RUNNING == "running" and "running" == State.RUNNING
    assert {State.RUNNING: 1}["running"] == 1 and "running" in FINAL | {State.RUNNING}
    assert json.dumps({"s": State.UPSTREAM_FAILED}) == '{"s": "upstream_failed"}'
    assert (str(State.SKIPPED), f"{State.SKIPPED:<9}|", repr(State.SKIPPED)) == (
        "skipped", "skipped  |", "'skipped'")
    assert pickle.loads(pickle.dumps(State.FAILED)) is State.FAILED
    conn = sqlite3.connect(":memory:")
    assert conn.execute("SELECT ?, typeof(?)", (State.CANCELLED, State.CANCELLED)).fetchone() == (
        "cancelled", "text")


def test_every_state_has_its_colours_and_the_views_agree():
    assert set(COLOURS) == set(State) == set(TASK_STATES) | set(RUN_STATES)
    assert set(ATTEMPT_STATES) <= set(RUN_STATES) and FINAL < set(TASK_STATES)
    fills = [c.fill for c in COLOURS.values()]
    assert len(set(fills)) == len(fills)  # a graph tells every state apart
    assert fill("crashed") == "#f0abfc" and fill(None) == fill("no such state") == "#f3f4f6"
    assert fill("no such state", default="#000") == "#000"


def test_a_grid_is_busy_while_any_instance_is_then_its_worst_outcome():
    assert grid_state(["success", "running", "failed"]) == "running"
    assert grid_state(["success", "failed", "pending"]) == "failed"
    assert grid_state(["skipped", "skipped"]) == "skipped"
    assert grid_state(["skipped", "success"]) == "success"
    assert summary([State.SUCCESS, "skipped", State.FAILED]) == "2/3 done (1 skipped), 1 failed"


# -- the live Run and the store fold the same events into the same records ------------------

TASKS = ("a", "b", "c")
RUN_ID = "20260101T000000-fold00"
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6)
_times = st.sampled_from([f"2026-01-01T00:00:{s:02d}.000+00:00" for s in range(10)])
_error = st.fixed_dictionaries({"type": _text, "message": _text},
                               optional={"cell": st.integers(0, 9), "traceback": _text})


@st.composite
def _task_changes(draw):
    return TaskStateChanged(
        RUN_ID, draw(st.sampled_from(TASKS)), draw(st.sampled_from(TASK_STATES)),
        draw(st.integers(0, 4)), draw(_times), error=draw(st.none() | _error),
        values=draw(st.none() | st.dictionaries(_text, _json, max_size=3)),
        output_path=draw(st.none() | _text), reason=draw(st.none() | _text),
        attempt_status=draw(st.none() | st.sampled_from(ATTEMPT_STATES)),
        fingerprint=draw(st.none() | _text), result_of=draw(st.none() | _text))


@st.composite
def _progress(draw):
    return AttemptProgress(RUN_ID, draw(st.sampled_from(TASKS)), draw(st.integers(0, 4)),
                           draw(st.integers(0, 30)), draw(st.integers(0, 30)), draw(_text))


@st.composite
def _resume(draw):
    """Stands for the run ending and being resumed: what runs again, what each task is now."""
    tasks = {name: {"upstream": [], "notebook": f"{name}.ipynb",
                    "grid": draw(st.none() | st.just("g")),
                    "products": draw(st.dictionaries(st.sampled_from(["out", "csv"]), _text,
                                                     max_size=2))}
             for name in TASKS}
    if draw(st.booleans()):
        tasks["c"]["command"] = ["echo", draw(_text)]
    return ("resume", tasks, tuple(draw(st.sets(st.sampled_from(TASKS)))),
            draw(st.sampled_from(["failed", "cancelled", "crashed"])))


def _started(tasks: dict, resumes: int = 0, rerun: tuple = ()) -> RunStarted:
    return RunStarted(RUN_ID, "fold", "2026-01-01T00:00:00.000+00:00",
                      "2026-01-01T00:00:00+00:00", {"n": 1}, tasks, None, os.getpid(),
                      socket.gethostname(), resumes=resumes, rerun=rerun)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st.one_of(_task_changes(), _task_changes(), _progress(), _resume()),
                       max_size=25))
def test_the_live_run_and_the_store_read_back_the_same(events):
    home = tempfile.mkdtemp(prefix="states-fold-")
    store = Store(home)
    try:
        first = {name: {"upstream": [], "notebook": f"{name}.ipynb", "grid": None,
                        "products": {}} for name in TASKS}
        first["b"]["command"] = ["python", "b.py"]
        started = _started(first)
        store(started)
        live = Run.from_start(started)
        for event in events:
            if isinstance(event, tuple):  # the run ends, then resumes as the engine does
                _, tasks, rerun, status = event
                ended = RunEnded(RUN_ID, status, "2026-01-01T00:01:00.000+00:00")
                store(ended)
                live.apply(ended)
                started = _started(tasks, live.resumes + 1, rerun)
                live = resumed_run(live, started)
                store(started)
            else:
                store(event)
                live.apply(event)
            stored = store.get_run(RUN_ID)
            for name in TASKS:
                assert dataclasses.asdict(stored.tasks[name]) == \
                    dataclasses.asdict(live.tasks[name]), (name, event)
            assert (stored.status, stored.ended_at, stored.resumes) == (
                live.status, live.ended_at, live.resumes)
    finally:
        store.close()
        shutil.rmtree(home, ignore_errors=True)


@given(changes=st.lists(st.tuples(st.integers(0, 29), st.sampled_from(sorted(TASK_STATES))),
                        max_size=200))
def test_the_plain_progress_counts_a_grid_as_the_summary_of_its_states(changes):
    """The terminal's line view keeps each grid's counts up to date (no pass over the
    instances per event); its lines say what `summary` says of the instances' states."""
    import io

    from nborch.ui.console import PlainProgress
    names = [f"g-{i}" for i in range(30)]
    progress = PlainProgress(io.StringIO(), every=0.0)
    progress(RunStarted("r", "p", "t", "t", {}, {n: {"grid": "g"} for n in names}, None, 1, "h"))
    states = dict.fromkeys(names, State.PENDING)
    for index, state in changes:
        states[names[index]] = state
        progress(TaskStateChanged("r", names[index], state, 1, "t"))
    lines = [ln.split(" ", 1)[1] for ln in progress.stream.getvalue().splitlines()
             if ln.split(" ", 1)[1].startswith("g: ")]
    if lines:
        assert lines[-1] == f"g: {summary(states.values())}"
