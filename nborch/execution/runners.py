"""The runner of one attempt: a notebook on a started kernel, or a command (no kernel).

Both take an ``AttemptJob`` and return an ``AttemptResult`` from ``run()``; ``cancel()``
stops them from another thread, and ``abandon(reason)`` too when the run gave the attempt
up (then nothing is written but the log's end line, which says why).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..core.errors import error_dict
from .attempt import AttemptJob, AttemptRunner
from .command import CommandRunner


def make_runner(job: AttemptJob, kernel, emit: Callable[[Any], None]
                ) -> AttemptRunner | CommandRunner:
    if job.command is not None:
        return CommandRunner(job, emit)
    return AttemptRunner(job, kernel, emit)


def home_unseen(job: AttemptJob, where: str) -> dict | None:
    """The error of an attempt on a machine (``where``) that does not see the run's folder
    in ``$NBORCH_HOME``, where its log and artifacts go; None when it does."""
    folder = os.path.dirname(job.log_path)
    if os.path.isdir(folder):
        return None
    home = job.env.get("NBORCH_HOME", "$NBORCH_HOME")
    return error_dict("HomeNotShared", f"{where} cannot see {folder}, the run's folder in "
                      f"nborch's home {home}, where the task's log and artifacts are written: "
                      "mount that folder at the same path on every worker (a shared file "
                      "system, as the same user), or run the workers on the orchestrator's "
                      "machine; --output-dir moves only the executed notebooks (docs/dask.md)")
