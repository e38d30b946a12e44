"""The task state machine: what may run next, retries, trigger rules. No I/O, no clocks
of its own; the engine feeds it outcomes and the current time and applies its decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .dag import downstream_map, path_lengths
from .model import Task
from .states import FAILURES, FINAL, SUCCESSFUL, WAITING, State


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

    # -- questions ----------------------------------------------------------------

    @property
    def done(self) -> bool:
        return all(s in FINAL for s in self.state.values())

    def queued(self) -> list[str]:
        """Queued tasks, the one with the longest path ahead of it first."""
        names = [n for n, s in self.state.items() if s == State.QUEUED]
        return sorted(names, key=lambda n: -self._priority[n])

    def soon_ready(self) -> list[str]:
        """Tasks worth a kernel now, nearest first: queued ones, then pending ones that will
        run once the tasks before them succeed (all_success only: other rules may not run),
        level by level, longest path first within a level."""
        level = {n: 0 for n, s in self.state.items() if s == State.QUEUED}
        passable = SUCCESSFUL | {State.RUNNING, State.QUEUED}
        frontier = True
        depth = 0
        while frontier:
            depth += 1
            frontier = [n for n, s in self.state.items() if s == State.PENDING and n not in level
                        and self.tasks[n].trigger == "all_success"
                        and all(self.state[u] in passable or level.get(u, depth) < depth
                                for u in self.tasks[n].upstream)]
            level.update(dict.fromkeys(frontier, depth))
        return sorted(level, key=lambda n: (level[n], -self._priority[n]))

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
        changed = True
        while changed:
            changed = False
            for name, state in self.state.items():
                if state != State.PENDING:
                    continue
                decision = self._trigger(name)
                if decision is not None:
                    moves.append(self._set(name, *decision))
                    changed = True
        return moves

    def start(self, name: str) -> Transition:
        self.attempt[name] += 1
        return self._set(name, State.RUNNING)

    def finish(self, name: str, ok: bool, now: float) -> list[Transition]:
        """Record an attempt's outcome; a failure retries while retries remain."""
        if ok:
            return [self._set(name, State.SUCCESS)]
        task = self.tasks[name]
        if self.attempt[name] <= task.retries:
            self.retry_at[name] = now + task.delay_before(self.attempt[name] + 1)
            return [self._set(name, State.RETRYING)]
        moves = [self._set(name, State.FAILED)]
        if self.fail_fast:
            moves += self.cancel_pending(f"--fail-fast after {name!r} failed")
        return moves

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

    def _set(self, name: str, state: State, reason: str | None = None) -> Transition:
        self.state[name] = state
        return Transition(name, state, self.attempt[name], reason)

    def _trigger(self, name: str) -> tuple[State, str | None] | None:
        """(state, reason) once the trigger rule can decide, else None."""
        ups = [self.state[u] for u in self.tasks[name].upstream]
        rule = self.tasks[name].trigger
        if rule == "one_failed":
            if any(s in FAILURES for s in ups):
                return State.QUEUED, None
            if all(s in FINAL for s in ups):
                if State.CANCELLED in ups:
                    return State.CANCELLED, "an upstream task was cancelled"
                return State.SKIPPED, "trigger one_failed: no upstream task failed"
            return None
        if not all(s in FINAL for s in ups):
            return None
        if rule == "all_done" or all(s in SUCCESSFUL for s in ups):
            return State.QUEUED, None
        bad = [u for u in self.tasks[name].upstream if self.state[u] in FAILURES]
        if bad:
            return State.UPSTREAM_FAILED, f"upstream failed: {', '.join(bad)}"
        return State.CANCELLED, "an upstream task was cancelled"
