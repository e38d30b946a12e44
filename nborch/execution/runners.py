"""The runner of one attempt: a notebook on a started kernel, or a command (no kernel).

Both take an ``AttemptJob`` and return an ``AttemptResult`` from ``run()``; ``cancel()``
stops them from another thread, and ``abandon(reason)`` too when the run gave the attempt
up (then nothing is written but the log's end line, which says why).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .attempt import AttemptJob, AttemptRunner
from .command import CommandRunner


def make_runner(job: AttemptJob, kernel, emit: Callable[[Any], None]
                ) -> AttemptRunner | CommandRunner:
    if job.command is not None:
        return CommandRunner(job, emit)
    return AttemptRunner(job, kernel, emit)
