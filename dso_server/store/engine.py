"""The database under the store: one small interface, two engines (embedded SQLite, PostgreSQL for a region).

The store (``dso_server.store.sqlite.DsoStore``) writes its SQL once, in the dialect both engines share: ``?``
parameters, ``INSERT ... ON CONFLICT (...) DO UPDATE``, ``RETURNING``, text timestamps. An engine only runs it:

* ``query(sql, params)`` returns rows as dicts; ``execute`` returns the number of rows changed;
  ``executemany`` runs one statement for many parameter rows (PostgreSQL pipelines them);
* ``transaction()`` is one transaction, nested uses become savepoints, any exception rolls back;
* ``insert``/``upsert`` build the plain SQL for a table and rows (no library conveniences to port);
* errors of the driver come out as ``StoreError`` (``StoreIntegrityError`` for a broken constraint,
  ``StoreUnavailable`` when the database cannot be reached or used), so callers never import a driver.

Threads: an engine is one connection guarded by a lock that a transaction holds to its end, so a second thread
waits rather than interleaving its statements with an open transaction. Threads that work in parallel (the
planner beside the event loop) open an engine of their own with ``reopen()``; an in-memory SQLite database can
only be shared, so its ``reopen()`` returns the same engine.

Which engine: ``open_database("dso.sqlite")`` (or ":memory:") is SQLite; ``open_database("postgresql://...")``
is PostgreSQL through psycopg 3 (installed with ``pip install -e '.[postgres]'``).
"""

from __future__ import annotations

import fcntl
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from dso_server.errors import StoreError, StoreIntegrityError, StoreUnavailable
from dso_server.metrics import timed_store

MEMORY = ":memory:"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

Row = dict[str, Any]
Params = Sequence[Any]


def is_postgres(location: str | Path) -> bool:
    return str(location).startswith(POSTGRES_SCHEMES)


def redact(location: str | Path) -> str:
    """``location`` fit for a log line: a PostgreSQL URL without its password."""
    text = str(location)
    if not is_postgres(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def quote(identifier: str) -> str:
    """A table or column name as a quoted SQL identifier (names come from code, never from input)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", identifier):
        raise ValueError(f"{identifier!r} is not a plain lower-case SQL identifier")
    return f'"{identifier}"'


class Database(ABC):
    """One connection to the store's database (see the module docstring)."""

    dialect: str
    """"sqlite" or "postgresql": the schema module writes its DDL per dialect; queries are shared."""
    location: str

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._joining = False
        """Inside ``batch``: nested transactions join the batch instead of making savepoints."""

    # -------------------------------------------------------------------------------------- primitives

    @abstractmethod
    def query(self, sql: str, params: Params | Mapping[str, Any] = ()) -> list[Row]:
        """Rows of a statement that returns rows (SELECT, ... RETURNING), as dicts by column name."""

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; the number of rows it changed."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        """Run one statement for each parameter row (one transaction); the rows changed in all."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def reopen(self) -> Database:
        """A new connection to the same database (the same engine for an in-memory SQLite database)."""

    @abstractmethod
    def table_columns(self, table: str) -> list[str]:
        """The columns of ``table`` in order; empty when there is no such table."""

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def set_schema_version(self, version: int) -> None:
        """Record ``version``; call inside the migration's transaction."""

    @abstractmethod
    def lock_schema(self) -> None:
        """Inside a transaction: wait until no other connection migrates the schema (released at commit)."""

    @abstractmethod
    def try_lock(self, name: str) -> bool:
        """Take the lock ``name`` unless another connection (of any process) holds it; held until ``unlock`` or
        until this connection or its process ends, so a killed holder never blocks the others."""

    @abstractmethod
    def unlock(self, name: str) -> None: ...

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; nested uses become savepoints (inside ``batch``: they join it). Rolls back everything
        on any exception."""
        with self._lock:
            if self._joining and self._depth > 0:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with self._transaction():
                yield

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """The engine's transaction, or savepoint when one is open (``transaction`` holds the lock)."""

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for the work of many writers (group commit). The transactions its work opens join it
        instead of each making a savepoint (two more round trips per write on a database server); so anything
        raised inside rolls back the whole batch, and the caller retries each work in a transaction of its own
        (``WriteBatcher``)."""
        with self._lock, self.transaction():
            self._joining = True
            try:
                yield
            finally:
                self._joining = False

    # ------------------------------------------------------------------------------------------ helpers

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        """Insert one row or several rows that have the same columns."""
        batch = [rows] if isinstance(rows, Mapping) else list(rows)
        if not batch:
            return
        columns = list(batch[0])
        sql = (f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))}) "
               f"VALUES ({', '.join('?' * len(columns))})")
        self._write_rows(sql, columns, batch)

    def upsert(self, table: str, rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
               pk: str | Sequence[str]) -> None:
        """Insert rows, or update the given columns of rows whose primary key ``pk`` exists already."""
        batch = [rows] if isinstance(rows, Mapping) else list(rows)
        if not batch:
            return
        keys = [pk] if isinstance(pk, str) else list(pk)
        columns = list(batch[0])
        updates = [column for column in columns if column not in keys]
        action = (f"DO UPDATE SET {', '.join(f'{quote(c)} = excluded.{quote(c)}' for c in updates)}" if updates
                  else "DO NOTHING")
        sql = (f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))}) "
               f"VALUES ({', '.join('?' * len(columns))}) ON CONFLICT ({', '.join(map(quote, keys))}) {action}")
        self._write_rows(sql, columns, batch)

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT COUNT(*) AS n FROM {quote(table)}")[0]["n"])

    def _write_rows(self, sql: str, columns: list[str], rows: list[Mapping[str, Any]]) -> None:
        for row in rows:
            if list(row) != columns:
                raise ValueError(f"rows for one insert need the same columns: {list(row)} is not {columns}")
        if len(rows) == 1:
            self.execute(sql, [rows[0][c] for c in columns])
        else:
            self.executemany(sql, ([row[c] for c in columns] for row in rows))


# ---------------------------------------------------------------------------------------------- SQLite


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {description[0]: value for description, value in zip(cursor.description, row, strict=True)}


def _sqlite_error(error: sqlite3.Error, location: str) -> StoreError:
    if isinstance(error, sqlite3.IntegrityError):
        return StoreIntegrityError(f"The database refused a write: {error}.")
    if isinstance(error, sqlite3.OperationalError | sqlite3.DatabaseError):
        return StoreUnavailable(f"cannot use the database {location}: {error}")
    return StoreError(f"database {location}: {type(error).__name__}: {error}")


class SqliteDatabase(Database):
    """SQLite through the standard library, in autocommit mode with explicit transactions.

    A file is opened in WAL mode (readers never wait for the writer) with a busy timeout, so a second
    connection (the planner's thread, a CLI command beside a running server) waits for the write lock instead
    of failing. Transactions start with BEGIN IMMEDIATE: the write lock is taken first, so two writers never
    deadlock on a lock upgrade.
    """

    dialect = "sqlite"

    def __init__(self, path: str | Path = MEMORY, *, busy_timeout_s: float = 30.0) -> None:
        super().__init__()
        self.location = str(path)
        self._busy_timeout_s = busy_timeout_s
        self._locks: dict[str, IO[bytes]] = {}
        try:
            self._connection = sqlite3.connect(self.location, isolation_level=None, check_same_thread=False,
                                               timeout=busy_timeout_s)
            self._connection.row_factory = _dict_row
            self._connection.execute("PRAGMA foreign_keys = ON")
            if self.location != MEMORY:
                self._connection.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as error:
            raise _sqlite_error(error, self.location) from None

    def query(self, sql: str, params: Params | Mapping[str, Any] = ()) -> list[Row]:
        with self._lock, timed_store("read"):
            try:
                return self._connection.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise _sqlite_error(error, self.location) from None

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._lock, timed_store("write"):
            try:
                return self._connection.execute(sql, params).rowcount
            except sqlite3.Error as error:
                raise _sqlite_error(error, self.location) from None

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        with self._lock, self.transaction(), timed_store("write"):
            try:
                return self._connection.executemany(sql, rows).rowcount
            except sqlite3.Error as error:
                raise _sqlite_error(error, self.location) from None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        depth = self._depth
        self.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT sp{depth}")
        self._depth = depth + 1
        try:
            yield
        except BaseException:
            self._depth = depth
            if depth == 0:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
            else:
                self._connection.execute(f"ROLLBACK TO sp{depth}")
                self._connection.execute(f"RELEASE sp{depth}")
            raise
        self._depth = depth
        try:
            with timed_store("commit"):
                self._connection.execute("COMMIT" if depth == 0 else f"RELEASE sp{depth}")
        except sqlite3.Error as error:
            if depth == 0 and self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise _sqlite_error(error, self.location) from None

    def close(self) -> None:
        with self._lock:
            for name in list(self._locks):
                self.unlock(name)
            self._connection.close()

    def reopen(self) -> Database:
        if self.location == MEMORY:
            return self
        return SqliteDatabase(self.location, busy_timeout_s=self._busy_timeout_s)

    def table_columns(self, table: str) -> list[str]:
        return [row["name"] for row in self.query(f"PRAGMA table_info({quote(table)})")]

    def schema_version(self) -> int:
        return int(self.query("PRAGMA user_version")[0]["user_version"])

    def set_schema_version(self, version: int) -> None:
        self.execute(f"PRAGMA user_version = {int(version)}")

    def lock_schema(self) -> None:
        pass  # BEGIN IMMEDIATE already holds the only write lock

    def try_lock(self, name: str) -> bool:
        """An advisory lock on the file ``<database>.<name>.lock`` (flock: released when the process dies).
        An in-memory database lives in one process only: its lock is always free."""
        if self.location == MEMORY:
            return True
        if name in self._locks:
            return True
        handle = open(f"{self.location}.{name}.lock", "a+b")  # noqa: SIM115 (held open while locked)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._locks[name] = handle
        return True

    def unlock(self, name: str) -> None:
        handle = self._locks.pop(name, None)
        if handle is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()


def open_database(location: str | Path) -> Database:
    """The engine for ``location``: a PostgreSQL URL, a SQLite file path, or ":memory:"."""
    if is_postgres(location):
        try:
            from dso_server.store.postgres import PostgresDatabase
        except ImportError as error:
            raise StoreUnavailable(f"--db {redact(location)} needs the PostgreSQL driver psycopg 3, which is not "
                                   f"installed ({error}); install it with pip install -e '.[postgres]'") from None
        return PostgresDatabase(str(location))
    return SqliteDatabase(location)
