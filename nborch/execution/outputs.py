"""Where executed notebooks go: a local folder, or any fsspec URL (``s3://bucket/prefix``,
``gs://...``, ``memory://...``) when ``--output-dir`` says so.

Local writes are atomic (a temporary file renamed into place), so a reader never sees half
a notebook; remote writes go through fsspec, whose backends write an object at once. Nothing
is renamed where it is written: object stores cannot rename (S3 copies then deletes), and a
``memory://`` location lives in the process of the worker that wrote it. A retried
attempt's notebook is written where it is kept (``<task>.attempt-<n>.ipynb``) in the first
place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..core.private import FILE_MODE, is_private


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def join(base: str, *parts: str) -> str:
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base.removeprefix("file://")).resolve().joinpath(*parts))


def _fs(url: str):
    try:
        import fsspec
    except ImportError:
        raise RuntimeError(f"writing to {url} needs fsspec (pip install fsspec, and the "
                           "package of that storage, e.g. s3fs)") from None
    return fsspec.core.url_to_fs(url)


def write_text(location: str, text: str) -> None:
    if is_url(location):
        fs, path = _fs(location)
        with fs.open(path, "w", encoding="utf-8") as out:
            out.write(text)
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # In a folder only its owner may open (the run's folder in the home) the file is its
    # owner's only too; elsewhere (--output-dir, products) the umask decides, as usual.
    mode = FILE_MODE if is_private(path.parent) else 0o666
    with open(tmp, "w", encoding="utf-8", opener=lambda p, flags: os.open(p, flags, mode)) as out:
        out.write(text)
    os.replace(tmp, path)


def put_folder(folder: str, location: str) -> int:
    """Copy the files under the local ``folder`` to the folder ``location`` (a path or an
    fsspec URL), at the same relative paths; how many. Nothing is renamed here either."""
    files = sorted(path for path in Path(folder).rglob("*") if path.is_file())
    if not files:
        return 0
    if is_url(location):
        fs, base = _fs(location)
        for path in files:
            fs.put_file(str(path), f"{base.rstrip('/')}/{path.relative_to(folder).as_posix()}")
        return len(files)
    for path in files:
        target = Path(join(location, *path.relative_to(folder).parts))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return len(files)


def read_text(location: str) -> str:
    if is_url(location):
        fs, path = _fs(location)
        with fs.open(path, "r", encoding="utf-8") as source:
            return source.read()
    return Path(location).read_text(encoding="utf-8")


def exists(location: str) -> bool:
    if is_url(location):
        try:
            fs, path = _fs(location)
            return fs.exists(path)
        except Exception:  # unreachable storage: treat as missing, so the task runs again
            return False
    return Path(location).exists()


def check(location: str) -> None:
    """Fail early, before a run starts, for an output location that cannot work."""
    from ..core.errors import SpecError
    if is_url(location):
        try:
            _fs(location)
        except (RuntimeError, ImportError, ValueError) as exc:
            raise SpecError(f"--output-dir {location}: {exc}") from None
