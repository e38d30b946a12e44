"""The task state machine: what may run next, retries, trigger rules. No I/O, no clocks
of its own; the engine feeds it outcomes and the current time and applies its decisions.

Its cost per event does not grow with the pipeline: it counts, for each task, the upstream
tasks not yet final and those failed, and looks again only at the tasks downstream of one
that just ended; the queued tasks are kept in priority order, also per resource set.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from .dag import downstream_map, path_lengths
from .states import FAILURES, FINAL, SUCCESSFUL, WAITING, State
from .task import Task

ResourceSet = tuple[tuple[str, float], ...]  # a task's ``resources``, sorted: a dict key


@dataclass(frozen=True)
class Transition:
    task: str
    state: str
    attempt: int
    reason: str | None = None


class Planner:
    def __init__(self, tasks: Mapping[str, Task], fail_fast: bool = False,
                 done: Mapping[str, str] | None = None, attempts: Mapping[str, int] | None = None):
        """``done`` presets the final states of tasks kept from an earlier attempt of the run
        (a resume); ``attempts`` carries on their attempt numbers."""
        self.tasks = dict(tasks)
        self.fail_fast = fail_fast
        self.state = {name: (done or {}).get(name, State.PENDING) for name in tasks}
        self.attempt = {name: (attempts or {}).get(name, 0) for name in tasks}
        self.retry_at: dict[str, float] = {}
        edges = {n: t.upstream for n, t in tasks.items()}
        self._down = downstream_map(edges)
        self._priority = path_lengths(edges)
        # queued and soon-ready order: longest path ahead first, then the pipeline's order
        self._key = {n: (-self._priority[n], i) for i, n in enumerate(tasks)}
        self._queued = sorted((n for n, s in self.state.items() if s == State.QUEUED),
                              key=self._key.__getitem__)
        self._active = {n for n, s in self.state.items() if s in (State.QUEUED, State.RUNNING)}
        self.resource_set: dict[str, ResourceSet] = {
            n: tuple(sorted(t.resources.items())) for n, t in tasks.items()}
        self._by_set: dict[ResourceSet, list[str]] = {s: [] for s in self.resource_set.values()}
        for name in self._queued:
            self._by_set[self.resource_set[name]].append(name)
        self._final = sum(s in FINAL for s in self.state.values())
        self._unfinished = {n: sum(self.state[u] not in FINAL for u in t.upstream)
                            for n, t in tasks.items()}  # upstream tasks not final yet
        self._failed_ups = {n: sum(self.state[u] in FAILURES for u in t.upstream)
                            for n, t in tasks.items()}
        self._recheck = set(tasks)  # pending tasks whose trigger rule may decide now

    # -- questions ----------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._final == len(self.state)

    def queued(self) -> list[str]:
        """Queued tasks, the one with the longest path ahead of it first."""
        return list(self._queued)

    def queued_where(self, may_start: Callable[[ResourceSet], bool]) -> Iterator[str]:
        """Queued tasks in priority order, leaving out those of the resource sets where
        ``may_start`` says no attempt may start now; asked again before each task, so a set
        that fills up gives no more. The tasks of a full set are not looked at: the cost
        follows what starts. Lazily, on copies (the caller may start the tasks given)."""
        heads = [(self._key[queue[0]], 0, key, queue) for key, queue in (
            (key, list(queue)) for key, queue in self._by_set.items() if queue and may_start(key))]
        heapq.heapify(heads)
        while heads:
            _, at, key, queue = heads[0]
            if not may_start(key):
                heapq.heappop(heads)
                continue
            yield queue[at]
            if at + 1 < len(queue):
                heapq.heapreplace(heads, (self._key[queue[at + 1]], at + 1, key, queue))
            else:
                heapq.heappop(heads)

    def soon_ready(self) -> Iterator[str]:
        """Tasks worth a kernel now, nearest first: queued ones, then pending ones that will
        run once the tasks before them succeed (all_success only: other rules may not run),
        level by level, longest path first within a level. Lazily: a caller that takes the
        first few pays for no more (do not change the planner while iterating)."""
        yield from self._queued
        level = dict.fromkeys(self._queued, 0)
        passable = SUCCESSFUL | {State.RUNNING, State.QUEUED}
        frontier = list(self._active)  # a task of level 1 waits for a queued or running one,
        depth = 0                      # one of level N for one of level N - 1
        while frontier:
            depth += 1
            found = {d for n in frontier for d in self._down[n]
                     if self.state[d] == State.PENDING and d not in level
                     and self.tasks[d].trigger == "all_success"
                     and all(self.state[u] in passable or level.get(u, depth) < depth
                             for u in self.tasks[d].upstream)}
            frontier = sorted(found, key=self._key.__getitem__)
            level.update(dict.fromkeys(frontier, depth))
            yield from frontier

    def next_wakeup(self) -> float | None:
        return min(self.retry_at.values(), default=None)

    def run_status(self) -> State:
        states = set(self.state.values())
        if states & FAILURES:
            return State.FAILED
        if State.CANCELLED in states:
            return State.CANCELLED
        return State.SUCCESS

    # -- moves --------------------------------------------------------------------

    def advance(self, now: float) -> list[Transition]:
        """Queue what became runnable, end what can no longer run, wake due retries."""
        moves = []
        for name, due in list(self.retry_at.items()):
            if due <= now:
                del self.retry_at[name]
                moves.append(self._set(name, State.QUEUED))
        while self._recheck:  # in the pipeline's order, wave after wave
            names = sorted(self._recheck, key=self._index)
            self._recheck.clear()
            for name in names:
                if self.state[name] == State.PENDING:
                    decision = self._trigger(name)
                    if decision is not None:
                        moves.append(self._set(name, *decision))
        return moves

    def start(self, name: str) -> Transition:
        self.attempt[name] += 1
        return self._set(name, State.RUNNING)

    def finish(self, name: str, ok: bool, now: float) -> list[Transition]:
        """Record an attempt's outcome; a failure retries while retries remain."""
        if ok:
            return [self._set(name, State.SUCCESS)]
        task = self.tasks[name]
        if self.retried(name):
            self.retry_at[name] = now + task.delay_before(self.attempt[name] + 1)
            return [self._set(name, State.RETRYING)]
        moves = [self._set(name, State.FAILED)]
        if self.fail_fast:
            moves += self.cancel_pending(f"--fail-fast after {name!r} failed")
        return moves

    def retried(self, name: str) -> bool:
        """Whether a failure of the task's current attempt will be retried."""
        return self.attempt[name] <= self.tasks[name].retries

    def skip(self, name: str, reason: str) -> Transition:
        """A queued task found up to date (incremental run)."""
        return self._set(name, State.SKIPPED, reason)

    def cancelled(self, name: str) -> Transition:
        return self._set(name, State.CANCELLED, "cancelled while running")

    def cancel_pending(self, reason: str) -> list[Transition]:
        """Cancel every task not yet running; running ones are the engine's to stop."""
        self.retry_at.clear()
        return [self._set(n, State.CANCELLED, reason) for n, s in self.state.items()
                if s in WAITING]

    # -- internals ----------------------------------------------------------------

    def _index(self, name: str) -> int:
        return self._key[name][1]

    def _set(self, name: str, state: State, reason: str | None = None) -> Transition:
        before, self.state[name] = self.state[name], state
        if before == State.QUEUED:
            for queue in (self._queued, self._by_set[self.resource_set[name]]):
                del queue[bisect.bisect_left(queue, self._key[name], key=self._key.__getitem__)]
        if state == State.QUEUED:
            bisect.insort(self._queued, name, key=self._key.__getitem__)
            bisect.insort(self._by_set[self.resource_set[name]], name, key=self._key.__getitem__)
        if state in (State.QUEUED, State.RUNNING):
            self._active.add(name)
        else:
            self._active.discard(name)
        if state in FINAL and before not in FINAL:
            self._final += 1
            for down in self._down[name]:  # only now may their trigger rules decide
                self._unfinished[down] -= 1
                self._failed_ups[down] += state in FAILURES
                self._recheck.add(down)
        return Transition(name, state, self.attempt[name], reason)

    def _trigger(self, name: str) -> tuple[State, str | None] | None:
        """(state, reason) once the trigger rule can decide, else None."""
        rule = self.tasks[name].trigger
        if rule == "one_failed" and self._failed_ups[name]:
            return State.QUEUED, None
        if self._unfinished[name]:
            return None
        ups = [self.state[u] for u in self.tasks[name].upstream]  # all final: once per task
        if rule == "one_failed":
            if State.CANCELLED in ups:
                return State.CANCELLED, "an upstream task was cancelled"
            return State.SKIPPED, "trigger one_failed: no upstream task failed"
        if rule == "all_done" or all(s in SUCCESSFUL for s in ups):
            return State.QUEUED, None
        bad = [u for u in self.tasks[name].upstream if self.state[u] in FAILURES]
        if bad:
            return State.UPSTREAM_FAILED, f"upstream failed: {', '.join(bad)}"
        return State.CANCELLED, "an upstream task was cancelled"
