"""Hooks: tell someone when a run or a task fails, succeeds or retries, or a scheduled slot
misses its SLA (declared and checked in ``core.hooks``; delivered here).

Kinds (a small registry, like papermill's engines): ``webhook`` (POST of a JSON payload),
``command`` (an argv list, no shell, details in environment variables), ``email`` (SMTP
settings from ``NBORCH_SMTP_*`` environment variables, stdlib ``smtplib``) and, from the
Python API, any callable taking the payload. A hook that fails is logged (in the run's
``hooks.log`` and nborch's logger) and never changes the run's outcome.

``HookRunner`` is an event listener: each hook is delivered on a thread of a small pool,
so neither the engine nor another hook waits on a slow endpoint; when the run ends, its
own hooks are sent and every delivery is waited for, at most ``DELIVERY_LIMIT`` seconds,
before ``RunHandle.wait()`` returns (so a CLI run exits once its alerts are out).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from ..core import private
from ..core.clock import utcnow
from ..core.events import RunEnded, TaskStateChanged
from ..core.hooks import DEFAULT_RETRIES, Hook, credentials
from ..core.secrecy import Masker
from ..core.states import LAST_ATTEMPT_FAILED, State

log = logging.getLogger("nborch")
DEFAULT_TIMEOUT = 10.0  # seconds, per request or command
MESSAGE_LIMIT = 500     # characters of a failed hook's message kept in hooks.log
SENDERS_AT_ONCE = 8     # hooks delivered at once, per run
DELIVERY_LIMIT = 60.0   # seconds a run's end waits for its hooks, at most


# -- sending --------------------------------------------------------------------------------

def send(hook: Hook, payload: dict, env: Mapping[str, str]) -> None:
    """Deliver ``payload`` through ``hook``; raises on failure. ``env`` is where settings and
    secret header values are read (the process environment plus the pipeline's .env)."""
    SENDERS[hook.kind](hook, payload, env)


def _webhook(hook: Hook, payload: dict, env: Mapping[str, str]) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": "nborch",
               **hook.options.get("headers", {}),
               **{name: env.get(var, "")
                  for name, var in hook.options.get("secret_headers", {}).items()}}
    body = json.dumps(payload).encode()
    retries = hook.options.get("retries", DEFAULT_RETRIES)
    for attempt in range(retries + 1):
        request = urllib.request.Request(hook.target, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=hook.options.get(
                    "timeout", DEFAULT_TIMEOUT)) as response:
                response.read()
            return
        except (urllib.error.URLError, OSError) as exc:
            client_error = isinstance(exc, urllib.error.HTTPError) and exc.code < 500
            if client_error or attempt == retries:  # a 4xx will not get better by retrying
                raise
            time.sleep(2 ** attempt)


def _command(hook: Hook, payload: dict, env: Mapping[str, str]) -> None:
    proc = subprocess.run(hook.target, env={**os.environ, **hook_environment(payload)},
                          capture_output=True, text=True,
                          timeout=hook.options.get("timeout", DEFAULT_TIMEOUT))
    if proc.returncode != 0:  # the runner masks this (whole) before it is logged
        raise RuntimeError(f"exit code {proc.returncode}: {proc.stderr.strip()}")


def _email(hook: Hook, payload: dict, env: Mapping[str, str]) -> None:
    import smtplib
    host = env.get("NBORCH_SMTP_HOST")
    if not host:
        raise RuntimeError("NBORCH_SMTP_HOST is not set (see docs/scheduling.md: email hooks)")
    message = EmailMessage()
    message["From"] = env.get("NBORCH_SMTP_FROM", "nborch@localhost")
    message["To"] = ", ".join(hook.target)
    message["Subject"] = hook.options.get("subject") or (
        f"[nborch] {payload['pipeline']}" + (f".{payload['task']}" if payload["task"] else "")
        + (f": SLA missed for {payload['logical_date']}" if payload["hook"] == "on_sla_miss"
           else f": {payload['status']}"))
    message.set_content(email_text(payload))
    port = int(env.get("NBORCH_SMTP_PORT", "25"))
    timeout = hook.options.get("timeout", DEFAULT_TIMEOUT)
    security = env.get("NBORCH_SMTP_SECURITY", "none").lower()  # none | starttls | ssl
    smtp_class = smtplib.SMTP_SSL if security == "ssl" else smtplib.SMTP
    with smtp_class(host, port, timeout=timeout) as smtp:
        if security == "starttls":
            smtp.starttls()
        if env.get("NBORCH_SMTP_USER"):
            smtp.login(env["NBORCH_SMTP_USER"], env.get("NBORCH_SMTP_PASSWORD", ""))
        smtp.send_message(message)


def _python(hook: Hook, payload: dict, env: Mapping[str, str]) -> None:
    hook.target(payload)


SENDERS: dict[str, Callable[[Hook, dict, Mapping[str, str]], None]] = {
    "webhook": _webhook, "command": _command, "email": _email, "python": _python}


def hook_environment(payload: dict) -> dict[str, str]:
    """What a command hook gets in its environment."""
    return {
        "NBORCH_HOOK": payload["hook"], "NBORCH_PIPELINE": payload["pipeline"],
        "NBORCH_RUN_ID": payload["run_id"] or "",  # an SLA miss may have no run
        "NBORCH_LOGICAL_DATE": payload["logical_date"] or "",
        "NBORCH_STATUS": payload["status"] or "", "NBORCH_TASK": payload["task"] or "",
        "NBORCH_FAILED_TASKS": ",".join(t["task"] for t in payload["failed_tasks"]),
        "NBORCH_REASON": payload.get("reason") or "",
        "NBORCH_PAYLOAD": json.dumps(payload)}


def email_text(payload: dict) -> str:
    if payload["hook"] == "on_sla_miss":
        run = (f"its run {payload['run_id']} is {payload['status']}" if payload["run_id"]
               else "it has no run")
        return (f"pipeline {payload['pipeline']}: the slot {payload['logical_date']} had not "
                f"succeeded by {payload['deadline']} (sla {payload['sla']:g}s); {run}\n")
    what = f"task {payload['task']} of " if payload["task"] else ""
    lines = [f"{what}pipeline {payload['pipeline']}: {payload['status']}",
             f"run {payload['run_id']}, logical date {payload['logical_date']}", ""]
    for failed in payload["failed_tasks"]:
        error = failed["error"] or {}
        cell = f" (cell {error['cell']})" if error.get("cell") else ""
        lines.append(f"- {failed['task']}: {error.get('type', 'failed')}: "
                     f"{error.get('message', '')}{cell}")
    if payload["output_paths"]:
        lines += ["", "executed notebooks:"]
        lines += [f"  {task}: {path}" for task, path in payload["output_paths"].items()]
    return "\n".join(lines) + "\n"


def payload(run, hook_event: str, change: TaskStateChanged | None = None,
            reason: str | None = None) -> dict:
    """The document a hook receives (docs/scheduling.md describes it): about the run, or
    about the task ``change`` is about, as that change left it (hooks are sent after the
    fact, when the task may have moved on). ``reason``: why the run failed when no task
    says (``crashed``, ``not_started``)."""
    if change is not None:
        task, status, paths = change.task, change.state, {
            change.task: change.output_path or run.tasks[change.task].output_path}
        errors = {task: change.error} if status in LAST_ATTEMPT_FAILED else {}
    else:
        task, status = None, run.status
        paths = {name: t.output_path for name, t in run.tasks.items()}
        errors = {name: t.error for name, t in run.tasks.items()
                  if t.status in LAST_ATTEMPT_FAILED}
    failed = [{"task": name, "error": None if error is None else
               {k: error.get(k) for k in ("type", "message", "cell")}}
              for name, error in errors.items()]
    return {"hook": hook_event, "pipeline": run.pipeline, "run_id": run.run_id,
            "logical_date": run.logical_date, "trigger": run.trigger, "status": status,
            "task": task,
            "reason": reason, "error": run.error if change is None else None,
            "started_at": run.started_at, "ended_at": run.ended_at,
            "failed_tasks": failed,
            "output_paths": {name: path for name, path in paths.items() if path}}


def sla_payload(pipeline: str, slot: str, sla: float, deadline: str,
                run: dict | None) -> dict:
    """What ``on_sla_miss`` hooks receive: the slot (as ``logical_date``) that had not
    succeeded by its deadline, and the slot's newest run if it has one (``run``: its
    ``run_id``, ``status``, ``started_at``, ``ended_at``). Keys as in ``payload``."""
    run = run or {}
    return {"hook": "on_sla_miss", "pipeline": pipeline, "run_id": run.get("run_id"),
            "logical_date": slot, "status": run.get("status"), "task": None,
            "reason": "sla_miss", "error": None, "started_at": run.get("started_at"),
            "ended_at": run.get("ended_at"), "failed_tasks": [], "output_paths": {},
            "sla": sla, "deadline": deadline}


def deliver(hook: Hook, data: dict, env: Mapping[str, str], masker: Masker, log_path: Path,
            about: str) -> None:
    """Send one alert; a failure is written to ``log_path`` (masked) and logged, never
    raised. ``about`` names what it was for in nborch's log (``run ID``...)."""
    try:
        send(hook, data, env)
        write_log(log_path, f"{data['hook']} {hook.describe()}: sent")
    except Exception as exc:  # masked before it is shortened
        why = masker.text(f"{type(exc).__name__}: {exc}")[:MESSAGE_LIMIT]
        write_log(log_path, f"{data['hook']} {hook.describe()}: FAILED: {why}")
        log.warning("nborch: hook %s of %s failed: %s", hook.describe(), about, why)


def write_log(log_path: Path, line: str) -> None:
    private.makedirs(log_path.parent)
    with open(log_path, "a", encoding="utf-8", opener=private.opener) as out:
        out.write(f"{utcnow()} {line}\n")


# -- the listener ---------------------------------------------------------------------------

TASK_HOOK_FOR_STATE: dict[str, str] = {State.FAILED: "on_failure", State.SUCCESS: "on_success",
                       State.RETRYING: "on_retry"}
RUN_HOOK_FOR_STATUS: dict[str, str] = {State.FAILED: "on_failure", State.SUCCESS: "on_success",
                       State.CRASHED: "on_failure"}


class HookRunner:
    """Fires a run's hooks from its events. ``pipeline_hooks`` and each task's
    ``hooks`` map an event name (``on_failure``...) to a list of ``Hook``."""

    def __init__(self, run, pipeline_hooks: dict, task_hooks: dict, log_path: Path,
                 env: Mapping[str, str], secrets: Sequence[str] = (),
                 reason: str | None = None):
        self.run, self.pipeline_hooks, self.task_hooks = run, pipeline_hooks, task_hooks
        self.reason = reason  # why the run failed, when no task says (see ``payload``)
        self.log_path, self.env = log_path, env
        # What a failure message must not show: the run's secrets, the hooks' own
        # credentials (header values, webhook URLs, the SMTP password).
        hooks = [h for by_event in [pipeline_hooks, *task_hooks.values()]
                 for listed in by_event.values() for h in listed]
        self.masker = Masker([*secrets, *credentials(hooks, env)])
        # Each hook on a thread of its own: a webhook that hangs delays no other alert.
        self._pool = ThreadPoolExecutor(SENDERS_AT_ONCE, thread_name_prefix="nborch-hook")
        self._sending: list[Future] = []

    def __call__(self, event: Any) -> None:
        if getattr(event, "run_id", None) != self.run.run_id:
            return
        if isinstance(event, TaskStateChanged):
            hook_event = TASK_HOOK_FOR_STATE.get(event.state)
            if hook_event is None:
                return
            for hook in self.task_hooks.get(event.task, {}).get(hook_event, []):
                self._send(hook, payload(self.run, hook_event, event))
            if hook_event == "on_retry":
                for hook in self.pipeline_hooks.get("on_retry", []):
                    self._send(hook, payload(self.run, hook_event, event))
        elif isinstance(event, RunEnded):
            hook_event = RUN_HOOK_FOR_STATUS.get(event.status)
            if event.status == State.CANCELLED and self.reason:  # by an operator, not Ctrl-C:
                hook_event = "on_failure"                        # the pipeline's owners hear
            if hook_event is not None:
                for hook in self.pipeline_hooks.get(hook_event, []):
                    self._send(hook, payload(self.run, hook_event, reason=self.reason))
            # Every alert is out before the run counts as finished, within a bound.
            _, late = wait(self._sending, timeout=DELIVERY_LIMIT)
            if late:
                self._log(f"{len(late)} hook(s) still sending after {DELIVERY_LIMIT:g}s: "
                          "not waited for")
            self._pool.shutdown(wait=False)

    def _send(self, hook: Hook, data: dict) -> None:
        self._sending.append(self._pool.submit(self._deliver, hook, data))

    def _deliver(self, hook: Hook, data: dict) -> None:
        deliver(hook, data, self.env, self.masker, self.log_path, f"run {self.run.run_id}")

    def _log(self, line: str) -> None:
        write_log(self.log_path, line)
