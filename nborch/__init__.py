"""nborch: run Jupyter notebooks as an orchestrated pipeline.

Inside a task notebook only ``publish``, ``artifact_path`` and ``secret`` are needed, so
the heavier parts (papermill, the engine) load on first use.
"""

from __future__ import annotations

from typing import Any

from .inside import artifact_path, publish, secret

__all__ = ["Pipeline", "Run", "TaskRun", "Store", "NborchError", "SpecError", "ValidationError",
           "publish", "artifact_path", "secret", "__version__"]

_LAZY = {
    "Pipeline": "runtime.api", "Run": "runtime.api", "Store": "runtime.api",
    "Task": "core.model", "TaskRun": "core.run",
    "NborchError": "core.errors", "SpecError": "core.errors", "ValidationError": "core.errors",
    "__version__": "core.version",
}


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext nborch``: register the ``%%orchestrate`` and ``%orchestrate`` magics."""
    from .ui.jupyter.magic import load_ipython_extension as load
    load(ip)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'nborch' has no attribute {name!r}")
