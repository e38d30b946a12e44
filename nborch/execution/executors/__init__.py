"""Executors run attempts somewhere: ``local`` threads here, or a ``dask`` cluster.

Each is an ``Executor`` (``base.py``) registered under a name. ``--executor NAME`` or
``--executor NAME://ADDRESS`` picks one by name (``tcp://`` is Dask's). Other packages add
executors through the ``nborch.executors`` entry point group, as papermill's engines are
added: ``[project.entry-points."nborch.executors"] k8s = "mypkg.k8s:K8sExecutor"``.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from ...core.errors import SpecError
from .base import AttemptHandle, Executor

BUILT_IN = {"local": "local:LocalExecutor", "dask": "dask:DaskExecutor",
            "tcp": "dask:DaskExecutor", "tls": "dask:DaskExecutor"}  # Dask's own addresses
ENTRY_POINT_GROUP = "nborch.executors"


def get_executor(target: str | object | None) -> Executor:
    """The executor ``target`` names (None: local), or ``target`` itself when it is an
    ``Executor``; a ``distributed.Client`` runs on its cluster."""
    if target is None:
        target = "local"
    if isinstance(target, Executor):
        return target
    if type(target).__name__ == "Client":  # a distributed.Client given through the API
        from .dask import DaskExecutor
        return DaskExecutor(target)
    if not isinstance(target, str):
        raise SpecError(f"executor must be a name, an Executor or a distributed.Client, "
                        f"not {type(target).__name__}")
    return executor_class(target.split("://", 1)[0]).from_target(target)


def check_target(target: str) -> None:
    """Raise ``SpecError`` for an executor name or address that no executor answers to,
    before anything connects anywhere."""
    name, scheme, address = target.partition("://")
    if scheme and not address.rpartition("://")[2]:
        raise SpecError(f"executor {target!r} has no address after its scheme "
                        f"({name}://HOST:PORT); executors: {_known()}")
    executor_class(name)


def executor_class(name: str) -> type[Executor]:
    if name in BUILT_IN:
        module, cls = BUILT_IN[name].split(":")
        return getattr(import_module(f".{module}", __name__), cls)
    plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name in plugins:
        return plugins[name].load()
    raise SpecError(f"unknown executor {name!r}; use one of {_known(plugins)}")


def _known(plugins=None) -> str:
    """The registered executors, as an error message lists them."""
    if plugins is None:
        plugins = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    names = [n for n in BUILT_IN if n not in ("tcp", "tls")] + sorted(plugins)
    return ", ".join(names) + " (dask://HOST:PORT or tls://HOST:PORT: an existing Dask scheduler)"


__all__ = ["AttemptHandle", "Executor", "check_target", "executor_class", "get_executor"]
