"""Folders and files for their owner only: everything nborch keeps under ``$NBORCH_HOME``.

The store, logs and executed notebooks hold a run's parameters, values and outputs
(masked, but nobody else's business), and a command task's values file is not masked at
all. So nborch creates folders there with mode 0700 and files with 0600, explicitly where
it creates each: a process-wide umask would also apply to what tasks write to their own
products, and to every kernel and program started meanwhile.

Kept free of heavy imports: ``nborch.artifact_path`` uses it inside task kernels.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def makedirs(path: str | os.PathLike) -> Path:
    """Create folder ``path``, and any missing parent (which holds nothing else yet), for
    its owner only."""
    path = Path(path)
    if not path.is_dir():
        makedirs(path.parent)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if not path.is_dir():
                raise
    return path


def opener(path: str, flags: int) -> int:
    """For ``open(path, mode, opener=private.opener)``: a new file is created 0600."""
    return os.open(path, flags, FILE_MODE)


def is_private(folder: str | os.PathLike) -> bool:
    """Whether only its owner may open ``folder``."""
    return os.stat(folder).st_mode & 0o077 == 0


def tighten(path: str | os.PathLike, mode: int) -> None:
    """Give ``path`` this mode if it exists and is ours to change (a store shared with
    another user stays as it is)."""
    try:
        if stat.S_IMODE(os.stat(path).st_mode) != mode:
            os.chmod(path, mode)
    except OSError:
        pass
