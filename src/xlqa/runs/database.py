"""Where the run index lives: a SQLite file (the default) or a PostgreSQL database, behind one interface.

SQLite needs no server and suits one machine; its locks do not work over a network file system (NFS, SMB),
so a store shared by several machines puts its index in PostgreSQL instead (``XLQA_RUNS_DB=postgresql://...``)
while the run folders stay on the shared disk. Both hold the same tables and behave the same way:

- readers get a connection as it is (:meth:`Index.reader`); every write is one transaction that holds the
  index's single writer lock from its start (:meth:`Index.writer`): ``BEGIN IMMEDIATE`` in SQLite, a
  transaction-scoped advisory lock in PostgreSQL. Checks made inside a write (is this name taken, is this
  results file indexed already) therefore stay true until it commits, on either backend.
- queries are written once, in the SQL both understand, with ``?`` placeholders; rows read by column name or
  position, and ``dict(row)`` gives the columns.
- database errors come out as :class:`~xlqa.errors.RunStoreError` naming the index (the file, or the URL
  without its password).

A SQLite index the user cannot write (a read-only folder, file or mount) is opened read-only: listing and
showing work, and a write is refused with a message saying why instead of "attempt to write a readonly
database".
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from xlqa.errors import RunStoreError
from xlqa.runs import schema
from xlqa.runs.pg import PostgresIndex, is_postgres_url

__all__ = ["Index", "PostgresIndex", "SqliteIndex", "is_postgres_url", "open_index"]


class Index(Protocol):
    """What :class:`~xlqa.runs.store.RunStore` needs of an index (:class:`SqliteIndex`, :class:`PostgresIndex`)."""

    where: str  # the index in messages: the file, or the URL without its password
    integrity_errors: tuple[type[BaseException], ...]  # a constraint refused a row

    def reader(self, create: bool = False) -> contextlib.AbstractContextManager:
        """A connection with an up-to-date schema; None when the index does not exist and ``create`` is False."""

    def writer(self) -> contextlib.AbstractContextManager:
        """A connection inside one write transaction: commits when the block ends, rolls back on an error."""

    def schema_version(self) -> int:
        """The index's schema version (0 when it does not exist yet)."""

    def setting(self) -> str:
        """What ``XLQA_RUNS_DB`` holds to reach this index from another process."""


def open_index(target: str | Path, timeout: float) -> Index:
    """The index at ``target``: a ``postgresql://`` URL, else a SQLite file."""
    text = str(target)
    if is_postgres_url(text):
        return PostgresIndex(text, timeout)
    return SqliteIndex(Path(text).expanduser().absolute(), timeout)


class SqliteIndex:
    """A SQLite file in WAL mode (readers never block the writer), schema version in ``PRAGMA user_version``."""

    integrity_errors = (sqlite3.IntegrityError,)

    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.where = str(path)
        self.timeout = timeout
        self.ready_pid: int | None = None  # schema checked in this process (connections never cross a fork)

    def setting(self) -> str:
        return str(self.path)

    def writable(self) -> bool:
        """False when this user cannot write the index or its folder (permissions, a read-only mount).

        A WAL database also writes ``-wal`` and ``-shm`` files beside it, so the folder must be writable too.
        """
        folder_ok = os.access(self.path.parent, os.W_OK)
        return folder_ok and (not self.path.exists() or os.access(self.path, os.W_OK))

    def read_only_error(self, detail: str = "") -> RunStoreError:
        return RunStoreError(
            f"run index {self.path} is read-only for this user (no write permission on it or its folder, or a"
            f" read-only file system){detail}: listing and showing runs work; recording runs needs write access"
        )

    def _open(self, mode: str | None) -> sqlite3.Connection:
        """A connection: read-write (``mode`` None), ``ro`` or ``immutable`` (see :meth:`_connect`)."""
        if mode is None:
            return sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        query = "mode=ro" if mode == "ro" else "immutable=1"
        uri = f"file:{quote(str(self.path))}?{query}"
        return sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        """Read-write; or, for a reader who may not write, without creating or changing any file.

        With no ``-wal`` file beside it (no writer at work, the last one checkpointed) the database file is
        complete, and ``immutable`` reads it without locks or a ``-shm`` file: a read-only (``mode=ro``)
        connection would leave ``-wal``/``-shm`` files of this user's in the store's folder when it may write
        there, which the store's owner could then not write. Only when a writer's WAL is there is it read
        through ``mode=ro`` (immutable would miss its latest commits); SQLite refusing that too (it cannot
        make the ``-shm``), the file is read as it is.
        """
        if not read_only:
            modes: tuple[str | None, ...] = (None,)
        else:
            modes = ("ro", "immutable") if Path(f"{self.path}-wal").exists() else ("immutable",)
        for mode in modes:
            con = self._open(mode)
            try:
                con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opens the file for real
                return con
            except sqlite3.OperationalError as err:
                con.close()
                if mode == modes[-1] or not _is_readonly(err, cantopen=True):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def reader(self, create: bool = False) -> Iterator[sqlite3.Connection | None]:
        if not self.path.exists():
            if not create:
                yield None
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise RunStoreError(f"cannot make the run store folder {self.path.parent}: {err}") from err
        read_only = not self.writable()
        if read_only and create:
            raise self.read_only_error()
        try:
            con = self._connect(read_only)
        except sqlite3.Error as err:
            raise self._error(err, "cannot open ") from err
        try:
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            con.execute("PRAGMA foreign_keys = ON")
            if self.ready_pid != os.getpid():
                if read_only and schema.schema_version(con) < schema.SCHEMA_VERSION:
                    raise self.read_only_error(
                        f"; its schema (version {schema.schema_version(con)}) is older than this xlqa's"
                        f" ({schema.SCHEMA_VERSION}): open it once with write access to upgrade it"
                    )
                schema.migrate(con, self.path)
                self.ready_pid = os.getpid()
            yield con
        except sqlite3.Error as err:
            raise self._error(err) from err
        finally:
            con.close()

    @contextlib.contextmanager
    def writer(self) -> Iterator[sqlite3.Connection]:
        if self.path.exists() and not self.writable():
            raise self.read_only_error()
        with self.reader(create=True) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def schema_version(self) -> int:
        with self.reader() as con:
            return 0 if con is None else schema.schema_version(con)

    def _error(self, err: sqlite3.Error, what: str = "") -> RunStoreError:
        if _is_readonly(err):
            return self.read_only_error()
        hint = ""
        if re.search(r"not a database|malformed|disk image", str(err)):
            hint = " (the run folders are intact: `xlqa runs rebuild` makes a new index from them)"
        return RunStoreError(f"{what}run index {self.path}: {err}{hint}")


def _is_readonly(err: sqlite3.Error, cantopen: bool = False) -> bool:
    """The error of a write (or, with ``cantopen``, of an open) refused because the index is read-only."""
    name = getattr(err, "sqlite_errorname", "") or ""
    if cantopen and name.startswith("SQLITE_CANTOPEN"):
        return True
    return name.startswith("SQLITE_READONLY") or "readonly database" in str(err)
