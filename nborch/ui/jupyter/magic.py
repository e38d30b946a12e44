"""``%%orchestrate`` and ``%orchestrate``: run, check and watch pipelines from a notebook.

The cell body is the arrow form (``a.ipynb >> b.ipynb``, one chain per line), a full YAML
pipeline, or one line naming a ``.yaml`` file; paths are relative to the kernel's folder
(the controlling notebook's). The line magic also has ``status [RUN_ID]`` and
``runs [PIPELINE]``.
"""

from __future__ import annotations

from pathlib import Path

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from ...core.errors import NborchError, SpecError
from ...core.model import Pipeline
from ...core.states import State
from . import actions
from .cell import (
    body_kind,
    marked_lines,
    notebook_stem,
    pipeline_document,
    read_body,
    unquote,
    write_pipeline_file,
)

DEFAULT_OUT = "_nborch_run"
# Executed notebooks go beside the controlling notebook, in a folder Jupyter shows and serves:
# the store's .nborch/ is hidden, and Jupyter Server refuses hidden paths by default.
DEFAULT_OUTPUT_DIR = "nborch-runs"
HANDLE_NAME = "_nborch_handle"

# A marked line is bold and underlined in the theme's own text colour: a coloured background
# (red, white text) reads poorly in some themes.
RED, BOLD, DIM, RESET, MARK = "\x1b[31m", "\x1b[1m", "\x1b[2m", "\x1b[0m", "\x1b[1;4m"
USAGE = """\
%%orchestrate [--wait] [--dry-run] [-p KEY=VALUE]... [--max-parallel N] [--name NAME]
              [--out NAME] [--executor local|dask|dask://HOST:PORT] [--incremental] [--schedule "CRON"]
              [--output-dir DIR|URL]
extract.ipynb >> clean.ipynb >> report.ipynb      (or a YAML pipeline, or pipeline.yaml)

%orchestrate status [RUN_ID]     redisplay a run (live while it runs; default: the latest)
%orchestrate runs [PIPELINE]     recent runs; pick one to see its graph"""  # noqa: E501


class OrchestrateError(Exception):
    """A problem shown under the cell as a short message, not as a Python traceback.

    IPython calls ``_render_traceback_`` instead of formatting a traceback; the offending
    lines of the cell body are shown highlighted.
    """

    def __init__(self, problems: list[str] | str, body: str | None = None,
                 marks: set[int] = frozenset()):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.body, self.marks = body, set(marks)
        super().__init__("; ".join(self.problems))

    def _render_traceback_(self) -> list[str]:
        if len(self.problems) == 1:
            out = [f"{RED}{BOLD}nborch:{RESET} {self.problems[0]}"]
        else:
            out = [f"{RED}{BOLD}nborch: {len(self.problems)} problems:{RESET}"]
            out += [f"  - {p}" for p in self.problems]
        if self.body is not None and self.body.strip():
            lines = self.body.splitlines()
            shown = range(len(lines))
            if len(lines) > 30 and self.marks:  # a long body: the marked lines and around them
                near = {n for m in self.marks for n in range(m - 3, m + 2)}
                shown = [n for n in shown if n in near]
            out.append(f"{DIM}in the cell:{RESET}")
            for n in shown:
                text = f"{n + 1:>4} | {lines[n]}"
                out.append(f"{MARK}{text}{RESET}" if n + 1 in self.marks else f"{DIM}{text}{RESET}")
        return out



@magics_class
class OrchestrateMagics(Magics):

    @magic_arguments()
    @argument("--name", default=None, help="pipeline name (default: this notebook's file stem)")
    @argument("--max-parallel", type=int, default=None, metavar="N",
              help="tasks running at once (default: number of CPUs; on Dask, the "
                   "cluster's worker threads)")
    @argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
              help="a parameter (repeatable); value read as YAML: 4, true, eu")
    @argument("--executor", default=None,
              help="where tasks run: local (default), dask, or dask://HOST:PORT")
    @argument("--incremental", action="store_true", help="skip tasks that are up to date")
    @argument("--dry-run", action="store_true", help="validate and draw the graph; run nothing")
    @argument("--wait", action="store_true",
              help="block the cell until the run ends (interrupt the kernel to cancel)")
    @argument("--out", default=DEFAULT_OUT, metavar="NAME",
              help=f"variable that receives the Run (default: {DEFAULT_OUT})")
    @argument("--output-dir", default=DEFAULT_OUTPUT_DIR, metavar="DIR|URL",
              help="where executed notebooks go, as DIR/<run id>/<task>.ipynb (default: "
                   f"{DEFAULT_OUTPUT_DIR}/ beside this notebook)")
    @argument("--schedule", default=None, metavar="CRON",
              help="register as a schedule instead of running now")
    @argument("words", nargs="*",
              help="line magic: 'status [RUN_ID]', 'runs [PIPELINE]', or a one-line pipeline")
    @line_cell_magic
    def orchestrate(self, line: str, cell: str | None = None):
        """Run a pipeline of notebooks and watch it live in the cell.

        The cell body is one of:

        - the arrow form, one chain per line: ``extract.ipynb >> clean.ipynb >> report.ipynb``.
          Task names are the file stems; a notebook named on several lines is one task.
          ``-p KEY=VALUE`` goes to every notebook whose ``parameters`` cell declares KEY.
        - a YAML pipeline, as in a ``pipeline.yaml`` file (``name:``, ``tasks:`` ...).
        - one line naming a pipeline file or a folder of notebooks (``flow/pipeline.yaml``).

        Paths are relative to this notebook's folder. Executed notebooks are written to
        ``nborch-runs/<run id>/`` beside it (``--output-dir``); the view links to them.
        Without ``--wait`` the cell returns at once and the view updates while you work
        (Stop cancels the run); ``--wait`` blocks until the run ends (interrupt the kernel
        to cancel). The Run is put in ``_nborch_run`` (``--out``), its handle in
        ``_nborch_handle``.

        Line magic: ``%orchestrate status [RUN_ID]`` redisplays a run (live while it runs),
        ``%orchestrate runs [PIPELINE]`` lists recent runs of this folder's store.
        """
        args = parse_argstring(self.orchestrate, line)
        words = list(args.words)
        if cell is None:
            if not words:
                print(USAGE)
                return None
            if words[0] == "status":
                return self._status(words[1] if len(words) > 1 else None)
            if words[0] == "runs":
                return self._runs(words[1] if len(words) > 1 else None)
            body = " ".join(words)
        else:
            if words:
                raise OrchestrateError(f"unexpected {' '.join(words)!r} on the %%orchestrate line "
                                       "(options only; the pipeline goes in the cell)")
            body = cell
        return self._orchestrate(args, body)

    # -- running ----------------------------------------------------------------------

    def _orchestrate(self, args, body: str):
        root = Path.cwd()
        try:
            from ...spec.yamltext import parse_params
            params = parse_params(args.param)
            pipeline = read_body(body, root, notebook_stem(self.shell.user_ns), args.name, params)
            if args.dry_run:
                return self._dry_run(pipeline, params)
            if args.schedule is not None:
                return self._schedule(pipeline, body, root, params, unquote(args.schedule))
            from ...runtime.api import start_run
            handle = start_run(pipeline, params=params, max_parallel=args.max_parallel,
                               executor=args.executor, incremental=args.incremental,
                               output_dir=output_location(unquote(args.output_dir), root))
        except SpecError as exc:
            raise OrchestrateError(exc.problems, body, marked_lines(exc.problems, body)) from None
        except NborchError as exc:
            raise OrchestrateError(str(exc)) from None
        return self._watch(handle, args)

    def _dry_run(self, pipeline: Pipeline, params: dict) -> None:
        from ...spec.validate import prepare
        from ...store.store import Store
        from .. import htmlview
        prepared = prepare(pipeline, params, pools=Store(readonly=True).known_pools(pipeline))
        graph = htmlview.layout(prepared.edges)
        names = ", ".join(prepared.tasks)
        text = (f"pipeline {pipeline.name!r} is valid: {len(prepared.tasks)} tasks ({names}); "
                "nothing was run (--dry-run)")
        display({"text/html": htmlview.dry_run(text, graph), "text/plain": text}, raw=True)

    def _adopt(self, handle, out: str) -> None:
        """A run started in this kernel: known to ``status``, its Run in the namespace."""
        actions.adopt(handle)
        self.shell.user_ns[out] = handle.run
        self.shell.user_ns[HANDLE_NAME] = handle

    def _retry_action(self, get_view, run, out: str, parent: dict | None):
        """The view's Retry-failed button: resume the run in the background and follow it
        in the same view (whose output becomes the final state again when it ends)."""
        def retry() -> None:
            from .widget import follow_handle
            view = get_view()
            handle = actions.resume(run)
            self._adopt(handle, out)
            view.follow(handle.run, handle.cancel)
            follow_handle(view, handle, parent=parent, on_done=view.finish)
        return retry

    def _schedule(self, pipeline: Pipeline, body: str, root: Path, params: dict,
                  cron: str) -> None:
        """Register the cell's pipeline as a schedule. The scheduler loads a pipeline from a
        file for every run, so a cell body is first written to ``NAME.pipeline.yaml``
        beside this notebook (a file the user can read, edit and commit)."""
        from datetime import datetime, timezone

        from ...scheduling.schedules import check_cron, from_pipeline
        from ...spec.loader import load
        from ...spec.validate import prepare
        from ...store.store import Store
        check_cron(cron, "--schedule: ")
        # everything a run would check, before anything is written
        prepare(pipeline, params, pools=Store(readonly=True).known_pools(pipeline))
        if body_kind(body, root) != "file":
            path = root / f"{pipeline.name}.pipeline.yaml"
            write_pipeline_file(path, pipeline_document(pipeline, body, root, params))
            pipeline = load(path)
        schedule = from_pipeline(pipeline, cron=cron)
        Store().save_schedule(schedule)
        where = f"{Path(schedule.source).name}: " if body_kind(body, root) != "file" else ""
        text = (f"{where}scheduled {schedule.pipeline} at {cron!r} ({schedule.timezone}); next "
                f"run {schedule.next_slot(datetime.now(timezone.utc)).isoformat()}. Runs start "
                "while `nborch scheduler` runs for this folder's store; `nborch schedule list` "
                "shows them.")
        display({"text/plain": text}, raw=True)

    def _watch(self, handle, args):
        from .widget import RunView, follow_handle
        self._adopt(handle, args.out)
        parent = _parent(self.shell)
        view = RunView(handle.run, on_stop=None if args.wait else handle.cancel, base=Path.cwd(),
                       on_retry=self._retry_action(lambda: view, handle.run, args.out, parent))
        view.display()
        if not args.wait:
            follow_handle(view, handle, parent=parent, on_done=view.finish)
            return None
        refresher = follow_handle(view, handle)
        interrupted = False
        try:
            handle.wait()
        except KeyboardInterrupt:  # wait() has cancelled the run and let its kernels stop
            interrupted = True
        refresher.mark()
        refresher.join()
        view.finish()
        if interrupted:
            raise OrchestrateError(f"run {handle.run_id} cancelled: the kernel was interrupted "
                                   "(its kernels are stopped and its states recorded)")
        return None

    # -- watching recorded runs -------------------------------------------------------

    def _status(self, run_id: str | None):
        from ...store.store import Store
        from .widget import RunView, follow_handle, follow_store
        store = Store(readonly=True)
        try:
            run_id = latest_run_id(store) if run_id in (None, "latest", "last") else run_id
            run = store.get_run(run_id)
        except NborchError as exc:
            raise OrchestrateError(str(exc)) from None
        handle = actions.HANDLES.get(run_id)
        if run.status != State.RUNNING and (handle is None or handle.done):
            shown = handle.run if handle else run
            view = RunView(shown, base=Path.cwd(), on_retry=self._retry_action(
                lambda: view, shown, DEFAULT_OUT, _parent(self.shell)))
            view.finish()  # nothing will change: the final state (with Retry, if it applies)
            return None
        if handle is not None and not handle.done:  # started in this kernel: follow its events
            view = RunView(handle.run, on_stop=handle.cancel, base=Path.cwd())
            view.display()
            follow_handle(view, handle, parent=_parent(self.shell), on_done=view.finish)
        else:
            view = RunView(run, base=Path.cwd())
            view.display()
            follow_store(view, store, run_id, parent=_parent(self.shell), on_done=view.finish)
        return None

    def _runs(self, pipeline: str | None):
        from ...store.store import Store
        from .dashboard import RunsDashboard
        try:
            board = RunsDashboard(Store(readonly=True), pipeline=pipeline, base=Path.cwd(),
                                  parent=_parent(self.shell))
        except NborchError as exc:
            raise OrchestrateError(str(exc)) from None
        display(board.widget)
        board.follow()
        return None


def output_location(output_dir: str, root: Path) -> str:
    """``--output-dir`` made absolute against the controlling notebook's folder (a URL as is)."""
    from ...execution.outputs import is_url
    return output_dir if is_url(output_dir) else str(root / output_dir)


def latest_run_id(store) -> str:
    rows = store.list_runs(limit=1)
    if not rows:
        raise NborchError(f"no runs recorded yet in {store.home} (set NBORCH_HOME to use "
                          "another store)")
    return rows[0]["run_id"]


def _parent(shell) -> dict | None:
    get_parent = getattr(shell, "get_parent", None)
    return get_parent() if get_parent is not None else None


def load_ipython_extension(ip) -> None:
    ip.register_magics(OrchestrateMagics)
