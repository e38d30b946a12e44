"""Executors run attempts somewhere: ``local`` threads here, ``dask`` later. Keyed by name."""

from __future__ import annotations

from typing import Callable

from .local import LocalExecutor

EXECUTORS: dict[str, Callable[..., object]] = {"local": LocalExecutor}


def get_executor(name: str | object | None):
    from ..errors import SpecError
    if name is None or name == "local":
        return LocalExecutor()
    if not isinstance(name, str):
        return name  # an executor object given through the API
    if name == "dask" or name.startswith(("dask://", "tcp://")):
        raise SpecError("the dask executor is not available in this version of nborch; "
                        "use --executor local")
    raise SpecError(f"unknown executor {name!r}; use 'local'")
