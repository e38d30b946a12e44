"""Run each attempt in a thread of this process; kernels are child processes."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Callable

from ..attempt import AttemptJob, AttemptResult, AttemptRunner
from ..store import utcnow

log = logging.getLogger("nborch")


class LocalExecutor:
    name = "local"

    def submit(self, job: AttemptJob, emit: Callable, done: Callable[[AttemptResult], None]):
        """Start ``job``; ``done(result)`` is called from the attempt's thread. Returns an
        object whose ``cancel()`` stops the attempt's kernel."""
        runner = AttemptRunner(job, emit)

        def work() -> None:
            started = utcnow()
            try:
                result = runner.run()
            except Exception as exc:  # a bug of ours must still end the attempt
                log.error("attempt %s/%s crashed:\n%s", job.task, job.attempt, traceback.format_exc())
                result = AttemptResult("failed", started, utcnow(), None, {}, {
                    "type": "NborchInternalError", "message": f"{type(exc).__name__}: {exc}",
                    "cell": None, "cell_source": None, "traceback": traceback.format_exc()})
            done(result)

        threading.Thread(target=work, name=f"nborch-{job.task}-{job.attempt}", daemon=True).start()
        return runner

    def shutdown(self) -> None:
        pass
