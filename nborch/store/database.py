"""The store's SQLite database: opening it (read-write, or read-only for commands that
only read), migrating it, and short write transactions that wait for other processes and
say whether a failure is worth retrying. ``Store`` adds what is recorded."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from ..core.errors import RunNotFound, StoreError, StoreUnusable, StoreWriteFailed
from ..core.private import DIR_MODE, FILE_MODE, makedirs, tighten
from .schema import DB_NAME, MIGRATIONS, SCHEMA_VERSION, newer_schema

# Write failures that waiting will not cure: the store cannot record at all.
PERMANENT_ERRORS = ("SQLITE_READONLY", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_PERM",
                    "SQLITE_AUTH")


def default_home() -> Path:
    return Path(os.environ.get("NBORCH_HOME") or ".nborch")


class Database:
    """The SQLite file ``home/nborch.db``, opened on first use."""

    def __init__(self, home: str | Path | None = None, *, readonly: bool = False):
        self.home = Path(home) if home is not None else default_home()
        self.path = self.home / DB_NAME
        self.readonly = readonly
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._depth = 0  # transactions open in the thread holding the lock

    # -- connection -------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        self._check_home()
        return self.path.exists()

    def _check_home(self) -> None:
        if self.home.exists() and not self.home.is_dir():  # a typo'd NBORCH_HOME, say
            raise StoreUnusable(f"the run store's folder {self.home} is a file; set "
                                "NBORCH_HOME (or --home) to a folder")

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._check_home()
            conn = self._open_readonly() if self.readonly else self._open()
            conn.row_factory = sqlite3.Row
            self._conn = conn
            if not self.readonly:
                self._migrate()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            makedirs(self.home)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._tighten()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the run store {self.path}: {exc}") from None
        return conn

    def _tighten(self) -> None:
        """The home is its owner's (see private.py). One an older nborch made 0755 is closed
        here, by readers too (where they may): with the folder 0700, nothing inside it can
        be reached. SQLite gives the -wal and -shm files it creates later the database's
        mode."""
        tighten(self.home, DIR_MODE)
        for suffix in ("", "-wal", "-shm"):
            tighten(f"{self.path}{suffix}", FILE_MODE)

    def _open_readonly(self) -> sqlite3.Connection:
        """Read-only, and never a writer's wait (WAL readers are not blocked). SQLite's
        read-only mode still needs the -shm file, which a read-only folder or a full disk
        cannot give; then, when no write-ahead log holds unmerged changes, the file is read
        as it is (``immutable``): nobody can be writing it there."""
        if not self.path.exists():
            raise RunNotFound(f"no run store at {self.path} (set NBORCH_HOME or --home to "
                              "use another store)")
        self._tighten()
        uri = "file:" + quote(str(self.path.resolve()))
        wal = Path(f"{self.path}-wal")
        try:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreError(f"cannot read the run store {self.path}: {exc} (its "
                                 "write-ahead log cannot be read here)") from None
            try:
                conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                                       check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the run store {self.path}: {exc}") from None
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            conn.close()
            if version > SCHEMA_VERSION:
                raise StoreError(newer_schema(self.path, version))
            writer = Database(self.home)  # an older store: brought up to date once (a write)
            try:
                writer._connect()
            finally:
                writer.close()
            return self._open_readonly()
        return conn

    def _migrate(self) -> None:
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(newer_schema(self.path, version))
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; waits for other processes' transactions. Nested in
        one of this thread's, it joins it. A failure is ``StoreWriteFailed``, rolled back."""
        if self.readonly:
            raise StoreError(f"the run store {self.path} was opened read-only")
        with self._lock:
            conn = self._conn if self._conn is not None else self._connect()
            if self._depth:
                yield conn
                return
            for delay in (0.05, 0.1, 0.2, 0.5, 1, 2, None):
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if delay is None or ("locked" not in str(exc) and "busy" not in str(exc)):
                        raise self._write_failed(exc) from None
                    time.sleep(delay)
            self._depth += 1
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:  # SQLite rolls some failures back itself
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(exc, sqlite3.Error):
                    raise self._write_failed(exc) from None
                raise
            finally:
                self._depth -= 1

    def _write_failed(self, exc: sqlite3.Error) -> StoreWriteFailed:
        name = getattr(exc, "sqlite_errorname", "") or ""
        permanent = name.startswith(PERMANENT_ERRORS) or any(
            word in str(exc) for word in ("readonly", "malformed", "not a database"))
        return StoreWriteFailed(f"cannot write the run store {self.path}: {exc}", str(exc),
                                transient=not permanent)

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        conn = self._connect()
        with self._lock:
            try:
                return conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the run store {self.path}: {exc}") from None

    def check_writable(self) -> None:
        """Raise ``StoreUnusable`` unless a run could be recorded here now: the database is
        whole (SQLite's quick check) and a write reaches the disk."""
        try:
            conn = self._connect()
            with self._lock:
                problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise StoreUnusable(f"the run store {self.path} is corrupt ({problems[0]}); "
                                    "move it aside to start a new one")
            with self._write() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                conn.execute(f"PRAGMA user_version = {version}")  # writes the header
        except StoreUnusable:
            raise
        except StoreWriteFailed as exc:
            raise StoreUnusable(f"cannot record runs in {self.path}: {exc.cause}; nothing "
                                "was run") from None
        except StoreError as exc:  # it could not be opened
            raise StoreUnusable(f"{exc}; nothing was run") from None
        except sqlite3.Error as exc:
            raise StoreUnusable(f"cannot record runs in {self.path}: {exc}; nothing was "
                                "run") from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
