"""An attempt on a machine that does not see the run's folder in ``$NBORCH_HOME`` (a Dask
worker on another host): it needs only the run's output location (``--output-dir``).

The executed notebook goes there already, and the orchestrator writes the log from the
attempt's output events (``relayed_log``: the worker masks them, and writes no log). The
artifacts (``nborch.artifact_path``) go to a temporary folder of the attempt, its user's
only, copied to ``<output location>/<run id>/artifacts/<task>/`` when the attempt ends,
then removed; a command's values wait there too. Without an output location the attempt
fails at once with ``HomeNotShared``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable

from ..core.clock import utcnow
from ..core.errors import error_dict
from ..core.secrecy import Masker
from ..core.states import State
from . import outputs
from .attempt import AttemptJob, AttemptResult
from .attemptlog import ABANDONED
from .kernels import KernelRequest

ARTIFACT_ENV = "NBORCH_ARTIFACT_DIR"  # what nborch.artifact_path reads


def run_off_home(job: AttemptJob, request: KernelRequest | None, where: str,
                 run: Callable[[AttemptJob, KernelRequest | None], AttemptResult]
                 ) -> AttemptResult:
    """``run(job, request)`` on ``where`` (a machine, for messages), with the artifacts
    moved to the output location when ``where`` does not see the run's folder."""
    folder = os.path.dirname(job.log_path)
    if os.path.isdir(folder):
        return run(job, request)
    if job.artifact_location is None:
        return AttemptResult(State.FAILED, utcnow(), utcnow(), None, {},
                             _home_unseen(job, where, folder))
    scratch = tempfile.mkdtemp(prefix=f"nborch-{job.run_id}-")  # for its user only
    try:
        artifacts = os.path.join(scratch, "artifacts")
        env = {ARTIFACT_ENV: artifacts}
        job = dataclasses.replace(job, env={**job.env, **env}, private_dir=scratch,
                                  relayed_log=True)
        if request is not None:
            request = dataclasses.replace(request, env={**request.env, **env})
        result = dataclasses.replace(run(job, request), relayed_log=True)
        if result.error is not None and result.error["type"] == ABANDONED:
            return result  # its run moved on: nothing more is written
        return _copied(job, result, artifacts)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _copied(job: AttemptJob, result: AttemptResult, folder: str) -> AttemptResult:
    """``result``, once the artifacts in ``folder`` are in the output location: a copy that
    fails fails the attempt (retries apply), its message masked as the attempt's own."""
    location = job.artifact_location
    try:
        copied = outputs.put_folder(folder, location)
    except Exception as exc:  # storage unreachable or refusing, no permission
        problem = Masker(job.secret_values).text(
            f"cannot copy the task's artifacts to {location}: {type(exc).__name__}: {exc}")
        if result.error is None:
            return dataclasses.replace(result, status=State.FAILED,
                                       error=error_dict("ArtifactCopyError", problem))
        return dataclasses.replace(result, error={
            **result.error, "message": f"{result.error['message']}; {problem}"})
    return dataclasses.replace(result, artifacts=location) if copied else result


def _home_unseen(job: AttemptJob, where: str, folder: str) -> dict:
    home = job.env.get("NBORCH_HOME", "$NBORCH_HOME")
    return error_dict(
        "HomeNotShared", f"{where} cannot see {folder}, the run's folder in nborch's home "
        f"{home}, where a run without --output-dir writes its executed notebooks and "
        "artifacts: give the run an --output-dir every worker can write (a folder they all "
        "mount at the same path, or an fsspec URL such as s3://bucket/prefix), or run the "
        "workers where they see that folder (docs/dask.md)")
