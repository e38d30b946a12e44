"""Which kernels can be forked from a template (see forkserver.py), and why not.

A kernel can be forked when its kernelspec runs ipykernel on this very Python, however the
kernelspec was written (``ipykernel install --user``/``--sys-prefix``/``--prefix``, conda's,
``python`` or ``python3``), with the interpreter options the template is then started with,
and when its environment sets nothing that Python reads only as a process starts.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

KERNEL_MODULES = ("ipykernel_launcher", "ipykernel")  # `python -m ipykernel` is the old form
# Interpreter options a kernelspec may put before `-m`: flags, and options with a value
# (attached, `-Xfrozen_modules=off`, or the next argument). A template is started with the
# very options of the kernels it serves: they are settings of the process, fixed when it
# starts and kept across fork() (`-X frozen_modules=off`: the standard library is loaded from
# its .py files, for the debugger; `-X dev`, `-O`, `-W`, `-u`, ...).
FLAG_OPTIONS = frozenset("bBdEiIOPqRsSuvx")
VALUE_OPTIONS = frozenset("WX")
# Python reads its PYTHON* variables when it starts, except these: read later (by IPython as
# the kernel starts, at each call) or applied to the forked kernel by _become_kernel.
READ_LATER = frozenset({"PYTHONPATH", "PYTHONSTARTUP", "PYTHONBREAKPOINT", "PYTHONASYNCIODEBUG"})
CTYPE = "LC_ALL/LC_CTYPE/LANG"  # the locale Python sets (LC_CTYPE only) when it starts


def same_python(command: str, python: str = sys.executable, path: str | None = None) -> bool:
    """Whether ``command`` (a kernelspec's argv[0]) starts the Python that ``python`` is:
    the same binary once symlinks are resolved (a virtualenv's ``python`` and ``python3``
    both link to its base interpreter) in the same environment, i.e. with the same
    ``pyvenv.cfg`` beside it or one folder up, where Python looks for it from the path it
    was started as, unresolved (the base interpreter itself is the same file but another
    environment). A hard link is another file here: conda hard-links one binary into many
    environments, told apart only by where the link is."""
    if os.sep not in command:  # a bare name, looked up on the kernel's PATH
        command = shutil.which(command, path=path) or ""
    if not os.path.isabs(command):
        return False
    try:
        return (os.path.realpath(command) == os.path.realpath(python)
                and _environment_of(command) == _environment_of(python))
    except OSError:
        return False


def _environment_of(executable: str) -> str | None:
    folder = os.path.dirname(executable)
    for candidate in (folder, os.path.dirname(folder)):
        config = os.path.join(candidate, "pyvenv.cfg")
        if os.path.isfile(config):
            return os.path.realpath(config)
    return None


def split_kernel_command(argv: list[str], python: str = sys.executable,
                         path: str | None = None, same: bool | None = None
                         ) -> tuple[tuple[str, ...], list[str]] | str:
    """``(interpreter options, ipykernel's arguments)`` when ``argv`` is ``PYTHON [OPTIONS]
    -m ipykernel_launcher ARGS`` with ``python`` as PYTHON; else why not, as a phrase.
    ``same``: ``same_python``'s answer for ``argv[0]``, if known."""
    if not argv:
        return "its kernelspec has no command"
    if not (same_python(argv[0], python, path) if same is None else same):
        return f"its kernelspec runs {argv[0]}, not nborch's own Python ({python})"
    options: list[str] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            module = argv[i + 1] if i + 1 < len(argv) else ""
            if module not in KERNEL_MODULES:
                return f"its kernelspec runs the module {module!r}, not ipykernel_launcher"
            return tuple(options), argv[i + 2:]
        if arg == "--check-hash-based-pycs" and i + 1 < len(argv):
            options += argv[i:i + 2]
            i += 2
        elif len(arg) >= 2 and arg[0] == "-" and arg[1] in VALUE_OPTIONS:
            taken = argv[i:i + 2] if len(arg) == 2 else [arg]
            options += taken
            i += len(taken)
        elif len(arg) >= 2 and arg[0] == "-" and set(arg[1:]) <= FLAG_OPTIONS:
            options.append(arg)
            i += 1
        else:
            return f"its kernelspec runs {' '.join(argv[:i + 1])}, not -m ipykernel_launcher"
    return "its kernelspec does not run -m ipykernel_launcher"


def _startup_values(env: dict, options: tuple[str, ...]) -> dict[str, str]:
    """What of ``env`` a process reads only when it starts: Python's variables (none with
    -E or -I), the dynamic loader's, and the locale's character type."""
    flags = {c for o in options if o[:1] == "-" and o[1:2] not in VALUE_OPTIONS | {"-"}
             for c in o[1:]}
    python = not flags & {"E", "I"}
    values = {k: v for k, v in env.items()
              if (python and k.startswith("PYTHON") and k not in READ_LATER)
              or k.startswith(("LD_", "DYLD_"))}
    values[CTYPE] = next((env[k] for k in ("LC_ALL", "LC_CTYPE", "LANG") if env.get(k)), "")
    return values


def fork_plan(argv: list[str], env: dict, python: str = sys.executable,
              template_env: dict | None = None, same: bool | None = None
              ) -> tuple[tuple[str, ...] | None, list[str], str]:
    """Whether a kernel started with ``argv`` and ``env`` can be forked from a template of
    ``python``: ``(the template's interpreter options, ipykernel's arguments, "")``, or
    ``(None, [], why not)``. ``same``: ``same_python``'s answer for ``argv[0]``, if known."""
    split = split_kernel_command(argv, python, env.get("PATH"), same)
    if isinstance(split, str):
        return None, [], split
    options, arguments = split
    ours = _startup_values(template_environment() if template_env is None else template_env,
                           options)
    theirs = _startup_values(env, options)
    differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if differ:
        return None, [], (f"its environment gives {', '.join(differ)} another value than "
                          "nborch's, and a process reads that only when it starts")
    return options, arguments, ""


def kernelspec_command(name: str) -> list[str]:
    """The command line of kernelspec ``name``, found where jupyter_client looks (the first
    folder of that name, in any case, with a kernel.json, on Jupyter's data path; else
    ipykernel's own for ``python3``), as it will run it (``python``, ``python3``: this
    Python). Without importing jupyter_client (a quarter of a second, and not safe to import
    in two threads at once): a guess to start a template early; the command a kernel is
    really started with decides whether it is forked. [] when there is none."""
    from jupyter_core.paths import jupyter_path
    argv = None
    for folder in jupyter_path("kernels"):
        try:
            found = [e.path for e in os.scandir(folder) if e.name.lower() == name.lower()]
            for path in found:
                with open(os.path.join(path, "kernel.json"), encoding="utf-8") as file:
                    argv = json.load(file)["argv"]
                break
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if argv is not None:
            break
    if argv is None and name == "python3":
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        return []
    if argv and argv[0] in {"python", f"python{sys.version_info[0]}",
                            "python{}.{}".format(*sys.version_info[:2])}:
        argv[0] = sys.executable  # as KernelManager.format_kernel_cmd does
    return argv


def template_environment() -> dict[str, str]:
    """What the template needs to import ipykernel, and what a process reads only when it
    starts (Python's variables, the dynamic loader's, the locale), and nothing else: a forked
    kernel gets its task's environment, but ``/proc/self/environ`` still shows the
    template's, so that must hold no secret of any task (nor nborch's credentials).
    PYTHONEXECUTABLE is left out as jupyter_client leaves it out of a Python kernel's."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV", "CONDA_PREFIX")
    return {k: v for k, v in os.environ.items()
            if (k in keep or k.startswith(("PYTHON", "LC_", "LD_", "DYLD_")))
            and k != "PYTHONEXECUTABLE"}
