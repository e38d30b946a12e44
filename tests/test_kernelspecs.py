"""Kernels forked from the template for kernelspecs as users have them: written by
`ipykernel install`, `python` or `python3`, interpreter options, env entries; any other
Python is not forked, and `nborch run -v` says why. Forking is checked by process ancestry
(the kernel's parent is the template process), never by timing."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, kernel_templates, nborch, write_notebook, write_pipeline

from nborch import Pipeline
from nborch.execution.forkplan import fork_plan, same_python, split_kernel_command

PY = sys.executable
IN_VENV = sys.prefix != sys.base_prefix
# What the kernel tells about itself: its parent's command line, its -X options, a variable.
ANCESTRY = ("import os, sys, psutil\n"
            "parent = psutil.Process(os.getppid()).cmdline()\n"
            "seen = {'parent': parent, 'xoptions': sys._xoptions, "
            "'flag': os.environ.get('NBORCH_TEST_FLAG')}\n"
            "open('seen.json', 'w').write(__import__('json').dumps(seen))")


@pytest.fixture
def prefix(workdir: Path, monkeypatch):
    """A prefix to install kernelspecs into, found through JUPYTER_PATH."""
    from nborch.spec.validate import kernelspec_manager
    monkeypatch.setenv("JUPYTER_PATH", str(workdir / "prefix" / "share" / "jupyter"))
    kernelspec_manager.cache_clear()  # where kernelspecs are, read once per process
    yield workdir / "prefix"
    kernelspec_manager.cache_clear()


def install_kernelspec(prefix: Path, name: str, argv0: str | None = None,
                       env: dict | None = None) -> dict:
    """`python -m ipykernel install --prefix PREFIX --name NAME`, the way users register a
    kernel (``--sys-prefix`` and ``--user`` write the same file elsewhere), then argv[0]
    and env changed as asked. Returns the kernelspec."""
    subprocess.run([PY, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", name],
                   check=True, capture_output=True)
    path = prefix / "share" / "jupyter" / "kernels" / name / "kernel.json"
    spec = json.loads(path.read_text())
    if argv0 is not None:
        spec["argv"][0] = argv0
    if env is not None:
        spec["env"] = env
    path.write_text(json.dumps(spec))
    return spec


def sibling_python() -> str:
    """nborch's Python by its other name in the same folder: python3 for python, or back."""
    folder, name = os.path.split(PY)
    for other in ("python3", "python") if name != "python3" else ("python",):
        if other != name and os.path.exists(os.path.join(folder, other)):
            return os.path.join(folder, other)
    pytest.skip(f"no other name for {PY} in its folder")


def run_with_kernel(folder: Path, kernel: str, env: dict | None = None) -> dict:
    folder.mkdir(exist_ok=True)
    write_notebook(folder / "who.ipynb", ANCESTRY)
    p = Pipeline("kernelspec", root=folder)
    p.notebook("who.ipynb", kernel=kernel, env=env or {})
    run = p.run()
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    assert kernel_templates() == []
    return json.loads((folder / "seen.json").read_text())


def is_template(cmdline: list[str]) -> bool:
    return "nborch.execution.forkserver" in cmdline


# -- deciding ------------------------------------------------------------------------------

def test_the_same_python_by_another_name_is_the_same_python(tmp_path: Path):
    assert same_python(PY) and same_python(sibling_python())
    link = tmp_path / "bin" / "python"
    link.parent.mkdir()
    link.symlink_to(PY)
    if IN_VENV:  # the same binary outside the virtualenv's folder: another environment
        assert not same_python(os.path.realpath(PY))
        assert not same_python(str(link))
    assert not same_python("/bin/sh") and not same_python("no-such-python")


def test_conda_and_virtualenv_shapes(tmp_path: Path):
    """Told apart by path alone (no interpreter is run): a conda environment (no pyvenv.cfg;
    python a link to python3.11 in the same folder), another conda environment with the very
    same binary hard-linked in, and a virtualenv whose python links to the conda one."""
    conda = tmp_path / "conda" / "envs" / "a" / "bin"
    conda.mkdir(parents=True)
    (conda / "python3.11").write_bytes(b"\x7fELF")
    (conda / "python3.11").chmod(0o755)
    (conda / "python").symlink_to("python3.11")
    (conda / "python3").symlink_to("python3.11")
    other = tmp_path / "conda" / "envs" / "b" / "bin"
    other.mkdir(parents=True)
    os.link(conda / "python3.11", other / "python3.11")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {conda}\n")
    (venv / "bin" / "python3").symlink_to(conda / "python3.11")
    (venv / "bin" / "python").symlink_to("python3")
    ours = str(conda / "python3.11")
    assert same_python(str(conda / "python"), ours) and same_python(str(conda / "python3"), ours)
    assert not same_python(str(other / "python3.11"), ours)
    assert not same_python(str(venv / "bin" / "python"), ours)
    assert same_python(str(venv / "bin" / "python"), str(venv / "bin" / "python3"))
    assert same_python("python", ours, path=str(conda))  # a bare name, on the kernel's PATH


@pytest.mark.parametrize("options", [(), ("-Xfrozen_modules=off",), ("-X", "frozen_modules=off"),
                                     ("-Es", "-W", "ignore"), ("-OO", "-u", "-X", "dev")])
def test_interpreter_options_are_kept_for_the_template(options):
    argv = [PY, *options, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert split_kernel_command(argv) == (options, ["-f", "{connection_file}"])
    assert fork_plan(argv, dict(os.environ))[0] == options


@pytest.mark.parametrize("argv, why", [
    (["/usr/bin/R", "--slave", "-e", "IRkernel::main()"], "not nborch's own Python"),
    ([PY, "-c", "import ipykernel_launcher"], "not -m ipykernel_launcher"),
    ([PY, "-m", "nb_conda_kernels.runner", "/opt/conda", "x"],
     "the module 'nb_conda_kernels.runner'"),
    ([PY, "kernel.py"], "not -m ipykernel_launcher"),
    ([], "no command"),
])
def test_other_commands_are_not_forked_and_say_why(argv, why):
    options, _, reason = fork_plan(argv, dict(os.environ))
    assert options is None and why in reason


def test_variables_read_at_start_up_keep_a_kernel_from_being_forked():
    argv = [PY, "-m", "ipykernel_launcher", "-f", "x"]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONHASHSEED", "LD_"))}
    template = {**base}
    for name, value in (("PYTHONHASHSEED", "0"), ("LD_PRELOAD", "/lib/x.so"),
                        ("LC_ALL", "nborch-test")):
        options, _, reason = fork_plan(argv, {**base, name: value}, template_env=template)
        assert options is None and name in reason
    # read when the kernel needs them: forked, and set in the kernel
    for name in ("PYTHONPATH", "PYTHONSTARTUP", "FLAG", "TZ", "LC_TIME"):
        assert fork_plan(argv, {**base, name: "x"}, template_env=template)[0] == ()
    # with -E Python reads no PYTHON* variable
    argv_e = [PY, "-E", "-m", "ipykernel_launcher", "-f", "x"]
    assert fork_plan(argv_e, {**base, "PYTHONHASHSEED": "0"}, template_env=template)[0] == ("-E",)


# -- running -------------------------------------------------------------------------------

def test_a_kernelspec_from_ipykernel_install_gets_forked_kernels(workdir: Path, prefix: Path):
    spec = install_kernelspec(prefix, "installed")
    seen = run_with_kernel(workdir / "p", "installed")
    assert is_template(seen["parent"])
    options = spec["argv"][1:spec["argv"].index("-m")]
    assert seen["parent"][1:1 + len(options)] == options  # the template has the kernel's options
    if "-Xfrozen_modules=off" in options:  # Python 3.11 and later
        assert seen["xoptions"] == {"frozen_modules": "off"}


@pytest.mark.parametrize("variant", ["python3 for python", "-X frozen_modules=off", "env entry"])
def test_kernelspecs_written_otherwise_get_forked_kernels_too(workdir: Path, prefix: Path,
                                                               variant):
    spec = install_kernelspec(prefix, "other", argv0=sibling_python() if variant.startswith(
        "python3") else None, env={"NBORCH_TEST_FLAG": "from the kernelspec"}
        if variant == "env entry" else None)
    if variant == "-X frozen_modules=off":
        argv = [PY, "-X", "frozen_modules=off", "-m", "ipykernel_launcher", *spec["argv"][-2:]]
        path = prefix / "share" / "jupyter" / "kernels" / "other" / "kernel.json"
        path.write_text(json.dumps({**spec, "argv": argv}))
    seen = run_with_kernel(workdir / "p", "other")
    assert is_template(seen["parent"])
    if variant == "-X frozen_modules=off":
        assert seen["parent"][1:3] == ["-X", "frozen_modules=off"]
        assert seen["xoptions"] == {"frozen_modules": "off"}
    if variant == "env entry":
        assert seen["flag"] == "from the kernelspec"


def test_a_start_up_variable_in_the_env_entries_is_honoured_by_not_forking(workdir: Path,
                                                                          prefix: Path):
    install_kernelspec(prefix, "seeded", env={"PYTHONHASHSEED": "123"})
    folder = workdir / "p"
    folder.mkdir()
    write_notebook(folder / "who.ipynb", ANCESTRY + "\nimport nborch\n"
                   "nborch.publish('hashes', [hash('a'), hash('b')])")
    p = Pipeline("seeded", root=folder)
    p.notebook("who.ipynb", kernel="seeded")
    run = p.run()
    assert run.status == "success", {n: t.error for n, t in run.tasks.items()}
    seen = json.loads((folder / "seen.json").read_text())
    assert not is_template(seen["parent"])
    expected = subprocess.run([PY, "-c", "print([hash('a'), hash('b')])"], text=True,
                              env={**os.environ, "PYTHONHASHSEED": "123"},
                              capture_output=True).stdout
    assert run.values["who"]["hashes"] == json.loads(expected)


@pytest.mark.skipif(not IN_VENV, reason="needs a virtualenv: its base Python is another one")
def test_nborch_run_v_says_which_kernels_are_forked_and_why_not(workdir: Path, prefix: Path):
    """Two kernels in one pipeline: the `ipykernel install`ed one is forked; the base Python
    of nborch's virtualenv (the same binary, another environment; ipykernel reached through
    PYTHONPATH) is not, and `nborch run -v` says why."""
    install_kernelspec(prefix, "installed")
    base = os.path.realpath(PY)
    install_kernelspec(prefix, "base-python", argv0=base, env={
        "PYTHONPATH": os.pathsep.join([str(REPO), *site.getsitepackages()])})
    for name in ("a", "b"):
        write_notebook(workdir / name / f"{name}.ipynb", ANCESTRY)
    write_pipeline(workdir, {"name": "two", "tasks": {
        "a": {"notebook": "a/a.ipynb", "kernel": "installed"},
        "b": {"notebook": "b/b.ipynb", "kernel": "base-python"}}})
    proc = nborch("run", "pipeline.yaml", "-v", cwd=workdir,
                  env={"JUPYTER_PATH": str(prefix / "share" / "jupyter")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = [line for line in proc.stderr.splitlines() if line.startswith("nborch: kernels")]
    assert any(line.startswith("nborch: kernels 'installed': forked from a kernel template")
               for line in said), proc.stderr
    assert f"nborch: kernels 'base-python': started the usual way, not forked: its kernelspec " \
           f"runs {base}, not nborch's own Python" in proc.stderr
    assert is_template(json.loads((workdir / "a" / "seen.json").read_text())["parent"])
    assert not is_template(json.loads((workdir / "b" / "seen.json").read_text())["parent"])


def test_a_kernel_installed_while_nborch_runs_is_seen_at_the_next_check(prefix: Path):
    """A scheduler validates each slot in one long-lived process: a kernelspec installed
    after its first check is found at the next, not refused until a restart."""
    from nborch.spec.validate import installed_kernels
    assert "late-kernel" not in installed_kernels()
    install_kernelspec(prefix, "late-kernel")
    assert "late-kernel" in installed_kernels()
