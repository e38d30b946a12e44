"""Secrets of every shape are masked everywhere nborch writes (SPEC section 2), proved with
generated secrets: quotes, backslashes, newlines, control characters, unicode, JSON,
PEM-like keys and digits."""

from __future__ import annotations

import json
import os
import string
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from conftest import Receiver, free_port, nborch, run_json, write_notebook, write_pipeline
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from nborch.core.secrecy import MASK, Masker, secret_forms, too_short

# -- generated secrets ------------------------------------------------------------------

# Any character an environment variable can hold (no NUL, no lone surrogates).
ANY_CHAR = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
HOSTILE = st.sampled_from(list("\"'\\\n\r\t\x1b\x07{}[]$%&<>=;: é€ß😀\u2028\x85"))
# A random core makes every line of a secret unlikely to occur by chance in a file.
TOKEN = st.text(string.ascii_letters + string.digits, min_size=8, max_size=16)


@st.composite
def _quoted(draw) -> str:
    parts = draw(st.lists(st.one_of(HOSTILE, st.text(ANY_CHAR, max_size=4)), max_size=8))
    return "".join(parts[:len(parts) // 2]) + draw(TOKEN) + "".join(parts[len(parts) // 2:])


@st.composite
def _pem(draw) -> str:
    body = draw(st.lists(st.text(string.ascii_letters + string.digits + "+/", min_size=16,
                                 max_size=64), min_size=1, max_size=5))
    return ("-----BEGIN PRIVATE KEY-----\n" + "\n".join(body)
            + "\n-----END PRIVATE KEY-----\n")


@st.composite
def _service_account(draw) -> str:
    return json.dumps({"type": "service_account", "private_key_id": draw(TOKEN),
                       "private_key": draw(_pem()), "client_email": draw(TOKEN) + "@x.iam"},
                      indent=2)


DIGITS = st.text(string.digits, min_size=12, max_size=20).filter(lambda s: s[0] != "0")
SECRETS = st.one_of(_quoted(), _pem(), _service_account(), DIGITS)


def needles(secret: str) -> list[str]:
    """What must be found nowhere: the secret, each of its lines of 4+ characters, and its
    JSON-escaped form."""
    lines = [line for line in secret.splitlines() if len(line) >= 4 and line.strip()]
    return list(dict.fromkeys([secret, json.dumps(secret)[1:-1], *lines]))


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [n for s in secrets for n in needles(s) if n in text]


# -- the masker, on its own (fast: many examples) -------------------------------------------

@settings(max_examples=300, deadline=None)
@given(secret=SECRETS, before=st.text(ANY_CHAR, max_size=20), after=st.text(ANY_CHAR, max_size=20),
       how=st.sampled_from([str, repr, json.dumps, lambda s: repr({"password": s}),
                            lambda s: json.dumps({"k": s}, ensure_ascii=False),
                            lambda s: repr(json.dumps(s)), lambda s: s.upper()[:0] + s + s]))
def test_every_spelling_of_a_secret_is_masked_in_text(secret, before, after, how):
    assume(MASK not in secret)
    masked = Masker([secret]).text(before + how(secret) + after)
    assert not leaks(masked, [secret])


@settings(max_examples=200, deadline=None)
@given(secret=SECRETS, before=st.text(ANY_CHAR, max_size=30), after=st.text(ANY_CHAR, max_size=30),
       cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_a_secret_split_across_writes_is_masked(secret, before, after, cuts):
    assume(MASK not in secret)
    text = before + secret + after
    stream = Masker([secret]).stream()
    pieces, last = [], 0
    for cut in sorted({c % (len(text) + 1) for c in cuts}) + [len(text)]:
        pieces.append(stream.feed(text[last:cut]))
        last = cut
    pieces.append(stream.flush())
    written = "".join(pieces)
    assert not leaks(written, [secret])
    assert written == Masker([secret]).text(text) or MASK in written


def _notebook_with(secrets: list[str]):
    """An executed notebook showing ``secrets`` in every place a task can put them."""
    first = secrets[0]
    number = int(first) if first.isdigit() else 7
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"parameters": {"token": first}}})
    cell = nbformat.v4.new_code_cell("print(token)", execution_count=3, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text=f"token {first}\n"),
        nbformat.v4.new_output("stream", name="stderr", text=repr(secrets)),
        nbformat.v4.new_output("display_data", data={
            "text/html": f"<b>{first}</b>", "application/json": {"k": secrets, first: number},
            "text/plain": json.dumps(secrets)}),
        nbformat.v4.new_output("execute_result", execution_count=3,
                               data={"text/plain": repr({"password": first})}),
        nbformat.v4.new_output("error", ename="ValueError", evalue=f"bad {first!r}",
                               traceback=[f"ValueError: bad {first!r}", *first.splitlines()]),
    ])
    cell.metadata["note"] = first
    nb.cells.append(cell)
    return nb


@settings(max_examples=150, deadline=None)
@given(secrets=st.lists(SECRETS, min_size=1, max_size=3))
def test_a_masked_notebook_is_valid_and_holds_no_secret(secrets):
    assume(all(MASK not in s for s in secrets))
    # A secret one of whose lines is a word of the notebook's own structure (a line
    # "application/json", a MIME key masking leaves alone) cannot be told from it.
    assume(not leaks(nbformat.writes(_notebook_with(["zq" * 8])), secrets))
    nb = _notebook_with(secrets)
    Masker(secrets).notebook(nb)
    text = nbformat.writes(nb)
    nbformat.validate(nbformat.reads(text, as_version=4))
    assert not leaks(text, secrets)
    assert not leaks(json.dumps(json.loads(text), ensure_ascii=False), secrets)


@given(st.text(ANY_CHAR, max_size=3) | st.text(" \t\n", max_size=12))
def test_a_secret_too_short_to_mask_is_refused_and_never_masks_blanks(value):
    assert too_short(value)
    assert all(form.strip() for form in secret_forms(value + "\n    \n"))


def test_numbers_holding_a_secret_are_masked_and_structure_is_kept():
    masker = Masker(["31337"])
    assert masker.data({"pin": 31337, "n": 2, "ok": True, "31337": [1.5]}) == {
        "pin": MASK, "n": 2, "ok": True, MASK: [1.5]}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "x", execution_count=31337, outputs=[nbformat.v4.new_output(
            "execute_result", execution_count=31337, data={"text/plain": "31337"})])])
    masker.notebook(nb)
    nbformat.validate(nb)
    assert nb.cells[0].outputs[0].data["text/plain"] == MASK
    # A secret that is part of a MIME type masks the text, never the bundle's keys.
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("display_data", data={"text/plain": "plain text",
                                                     "application/json": {"json": "json"}},
                               metadata={"application/json": {"expanded": "json"}})])])
    Masker(["json", "text"]).notebook(nb)
    nbformat.validate(nb)
    assert nb.cells[0].outputs[0].data == {"text/plain": "plain ***",
                                           "application/json": {MASK: MASK}}


# -- a real pipeline, every file and every printed line searched -----------------------------

NOTEBOOK = r'''import html, json, logging, os, sys
import nborch
from IPython.display import HTML, JSON, display
secrets = [nborch.secret(f"S{i}") for i in range(int(os.environ["NSECRETS"]))]
for s in secrets:
    print("raw:", s)
    print("repr:", repr(s), {"password": s}, [s])
    print("json:", json.dumps(s), json.dumps({"k": s}, ensure_ascii=False))
    for line in s.splitlines():
        print("line:", line.strip())
    for i in range(0, len(s), 3):  # a secret written in pieces
        sys.stdout.write(s[i:i + 3]); sys.stdout.flush()
    print(s, file=sys.stderr)
    logging.getLogger("task").warning("connecting with %s", s)
    display(HTML(f"<pre>{html.escape(s)}</pre>"), JSON({"k": s}), {"password": s})
nborch.publish("creds", {"password": secrets[0], "all": secrets})
nborch.publish("long", "x" * 190 + secrets[0])  # the preview is cut at 200 characters
secrets[-1]'''

BOOM = r'''import os
secrets = [os.environ[f"S{i}"] for i in range(int(os.environ["NSECRETS"]))]
raise ConnectionError(f"login failed for {secrets[0]!r} with {secrets}")'''

COMMAND = r'''import json, os, subprocess, sys
secrets = [os.environ[f"S{i}"] for i in range(int(os.environ["NSECRETS"]))]
for s in secrets:
    print(s); print(repr(s)); print(json.dumps(s))
    for i in range(0, len(s), 5):
        sys.stdout.write(s[i:i + 5]); sys.stdout.flush()
    print(s, file=sys.stderr)
subprocess.run(["nborch", "publish", "token", secrets[0]], check=True)
import nborch
nborch.publish("both", {"first": secrets[0], "n": len(secrets)})
print("e" * 290 + secrets[0], file=sys.stderr)  # the error keeps 300 characters of this
sys.exit(3)'''


def _run_leaking_pipeline(folder: Path, secrets: list[str], receiver: Receiver
                          ) -> tuple[list[str], dict]:
    """Run a pipeline whose tasks print, raise, publish and display ``secrets``; return
    everything the CLI printed, and the run as ``show --json`` gives it."""
    write_notebook(folder / "nb.ipynb", NOTEBOOK)
    write_notebook(folder / "boom.ipynb", BOOM)
    write_notebook(folder / "after.ipynb", "print(upstream['nb']['values'])",
                   parameters="upstream = {}")
    (folder / "cmd.py").write_text(COMMAND, encoding="utf-8")
    names = [f"S{i}" for i in range(len(secrets))]
    path = write_pipeline(folder, {
        "name": "leaky", "secrets": names, "defaults": {"env": {"NSECRETS": str(len(secrets))}},
        "on_failure": [{"webhook": receiver.url()}],
        "tasks": {"nb": {"notebook": "nb.ipynb"}, "boom": {"notebook": "boom.ipynb"},
                  "after": {"notebook": "after.ipynb", "upstream": ["nb"]},
                  "cmd": {"command": [sys.executable, "cmd.py"]}}})
    env = {**dict(zip(names, secrets)), "TMPDIR": str(folder / "tmp"),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    printed = []
    proc = nborch("run", str(path), cwd=folder, env=env)
    printed += [proc.stdout, proc.stderr]
    assert proc.returncode == 1, proc.stderr
    run_id = run_json(nborch("runs", "--json", cwd=folder, check=True))[0]["run_id"]
    for args in (["show", run_id], ["show", run_id, "--json"], ["runs"],
                 *(["logs", run_id, task] for task in ("nb", "boom", "after", "cmd"))):
        proc = nborch(*args, cwd=folder, env=env, check=True)
        printed += [proc.stdout, proc.stderr]
    return printed, json.loads(printed[4])


@pytest.mark.slow
@settings(max_examples=6, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(secrets=st.lists(SECRETS, min_size=2, max_size=4, unique=True))
def test_generated_secrets_are_written_nowhere(secrets):
    assume(all(MASK not in s and not too_short(s) for s in secrets))
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "tmp").mkdir()
        printed, shown = _run_leaking_pipeline(folder, secrets, receiver)
        found = {f"printed: {needle!r}" for text in printed for needle in leaks(text, secrets)}
        files = [f for f in folder.rglob("*") if f.is_file() and f.parent != folder]
        for file in files:
            data = file.read_bytes()
            found |= {f"{file.relative_to(folder)}: {n!r}" for s in secrets
                      for n in needles(s) if n.encode() in data}
            if file.suffix == ".ipynb":
                nbformat.validate(nbformat.read(str(file), as_version=4))
        found |= {f"hook payload: {n!r}" for body in receiver.answered("/hook")
                  for n in leaks(json.dumps(body, ensure_ascii=False), secrets)}
        assert not found, sorted(found)
        assert shown["tasks"]["nb"]["status"] == "success"
        assert shown["tasks"]["nb"]["values"]["creds"]["password"] == MASK
        assert MASK in json.dumps(shown["tasks"]["cmd"]["values"]["token"])  # may be parsed JSON
        assert "login failed for" in shown["tasks"]["boom"]["error"]["message"]
        assert any(f.suffix == ".ipynb" for f in files) and any(f.suffix == ".log" for f in files)
    receiver.server.shutdown()


# -- what each task's environment holds ------------------------------------------------------

ENV_PROBE = r'''import json, os
names = ["PIPE_SECRET", "A_SECRET", "B_SECRET", "NBORCH_SMTP_PASSWORD", "HOOK_TOKEN",
         "OPENLINEAGE__TRANSPORT__AUTH__API_KEY"]
with open("/proc/self/environ", "rb") as handle:
    raw = handle.read()  # a forked kernel's starting environment is its template's
seen = {n: n in os.environ for n in names}
leaked = [n for n in names if b"\0" + n.encode() + b"=" in b"\0" + raw and not seen[n]]
print(json.dumps({"seen": seen, "in_proc_environ": leaked}))'''


def test_a_task_gets_its_own_and_its_pipelines_secrets_and_no_other(workdir: Path):
    """Task ``a`` declares A_SECRET, task ``b`` (a command) B_SECRET, the pipeline PIPE_SECRET;
    nborch's SMTP password, OpenLineage key and a hook's header secret are in nborch's
    environment."""
    write_notebook(workdir / "a.ipynb", "import json, nborch\n" + ENV_PROBE.replace(
        "print(json.dumps(", "nborch.publish('env', ("))
    (workdir / "probe.py").write_text(ENV_PROBE.replace(
        "print(json.dumps(", "import subprocess\nsubprocess.run(['nborch', 'publish', 'env', "
        "json.dumps(").replace("}))", "})], check=True)"), encoding="utf-8")
    write_notebook(workdir / "c.ipynb", "import json, nborch\n" + ENV_PROBE.replace(
        "print(json.dumps(", "nborch.publish('env', ("))
    write_pipeline(workdir, {
        "name": "scoped", "secrets": ["PIPE_SECRET"],
        "on_failure": [{"webhook": "http://127.0.0.1:9/x",
                        "secret_headers": {"X-T": "HOOK_TOKEN"}}],
        "tasks": {"a": {"notebook": "a.ipynb", "secrets": ["A_SECRET"]},
                  "b": {"command": [sys.executable, "probe.py"], "secrets": ["B_SECRET"]},
                  "c": {"notebook": "c.ipynb"}}})
    env = {"PIPE_SECRET": "pipe-secret-1", "A_SECRET": "a-secret-22", "B_SECRET": "b-secret-333",
           "NBORCH_SMTP_PASSWORD": "smtp-pw-4444", "HOOK_TOKEN": "hook-token-55555",
           "OPENLINEAGE__TRANSPORT__AUTH__API_KEY": "ol-key-666666",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    for forked in ("1", "0"):
        proc = nborch("run", "pipeline.yaml", "--json", cwd=workdir,
                      env={**env, "NBORCH_FORK_KERNELS": forked})
        assert proc.returncode == 0, proc.stderr
        tasks = run_json(proc)["tasks"]
        expected = {"a": {"PIPE_SECRET", "A_SECRET"}, "b": {"PIPE_SECRET", "B_SECRET"},
                    "c": {"PIPE_SECRET"}}
        for task, names in expected.items():
            probe = tasks[task]["values"]["env"]
            assert {n for n, seen in probe["seen"].items() if seen} == names, (forked, task)
            assert probe["in_proc_environ"] == [], (forked, task)


def test_a_secret_too_short_to_mask_is_a_validation_error(workdir: Path):
    write_notebook(workdir / "a.ipynb", "pass")
    write_pipeline(workdir, {"name": "short", "secrets": ["PIN"],
                             "tasks": {"a": {"notebook": "a.ipynb"}}})
    proc = nborch("run", "pipeline.yaml", cwd=workdir, env={"PIN": " 42 "})
    assert proc.returncode == 2
    assert "secret 'PIN' is too short to be masked safely" in proc.stderr
    assert "Traceback" not in proc.stderr and "42" not in proc.stderr
    assert not (workdir / ".nborch" / "runs").exists()


def test_failing_hooks_log_no_secret_header_value_or_webhook_url(workdir: Path):
    """A command hook printing a task's secret, a header secret an HTTP library refuses
    (and quotes), a webhook URL whose path is its credential: hooks.log and nborch's
    stderr tell what failed and hold none of them."""
    key = "-----BEGIN KEY-----\nline-one-Zq81\nline-two-Xw27\n-----END KEY-----"
    header = "tok\nen-9f8e7d"  # a newline: urllib refuses the header and quotes its value
    dead = f"http://127.0.0.1:{free_port()}/services/T0/B0/hooktoken77"
    write_notebook(workdir / "bad.ipynb", "raise ValueError('boom')")
    write_pipeline(workdir, {"name": "hooks", "secrets": ["KEY"], "tasks": {
        "bad": {"notebook": "bad.ipynb"}}, "on_failure": [
            {"command": [sys.executable, "-c", "import os, sys; sys.stderr.write("
                         "'cannot notify with ' + os.environ['KEY']); sys.exit(1)"]},
            {"webhook": "http://127.0.0.1:9/x", "secret_headers": {"X-Token": "HEADER"},
             "retries": 0},
            {"webhook": dead, "retries": 0}]})
    # A command hook runs with nborch's environment: it sees KEY as nborch does.
    proc = nborch("run", "pipeline.yaml", "--json", cwd=workdir, env={"KEY": key, "HEADER": header})
    assert proc.returncode == 1, proc.stderr
    run_id = run_json(proc)["run_id"]
    log = (workdir / ".nborch" / "runs" / run_id / "hooks.log").read_text()
    assert log.count("FAILED") == 3, log
    assert "cannot notify with ***" in log and "webhook http://127.0.0.1:9/..." in log
    for text in (log, proc.stderr, proc.stdout):
        for needle in [*needles(key), *needles(header), "hooktoken77", "en-9f8e7d"]:
            assert needle not in text, (needle, text)
