"""Executors run attempts somewhere: ``local`` threads here, or a ``dask`` cluster."""

from __future__ import annotations

from typing import Callable

from .local import LocalExecutor

EXECUTORS: dict[str, Callable[..., object]] = {"local": LocalExecutor}


def get_executor(name: str | object | None):
    from ...core.errors import SpecError
    if name is None or name == "local":
        return LocalExecutor()
    if not isinstance(name, str):
        if type(name).__name__ == "Client":  # a distributed.Client given through the API
            from .dask import DaskExecutor
            return DaskExecutor(name)
        return name  # an executor object given through the API
    if name == "dask" or name.startswith(("dask://", "tcp://")):
        from .dask import DaskExecutor
        return DaskExecutor(name)
    raise SpecError(f"unknown executor {name!r}; use 'local', 'dask' (a local Dask cluster) "
                    "or dask://HOST:PORT (an existing Dask scheduler)")
