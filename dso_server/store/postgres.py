"""The PostgreSQL engine of the store: psycopg 3, one connection per engine, autocommit with explicit transactions.

Why psycopg 3: it is the maintained PostgreSQL driver with a synchronous API (the store is synchronous and also
used from the planner's thread and the CLI), server-side parameters and automatically prepared statements for
the queries the VTN repeats, pipelining for ``executemany`` (the liveness flush writes thousands of rows in one
round trip), and binary wheels that bring their own libpq. asyncpg is faster but asynchronous only; psycopg2
is in maintenance mode and has none of the above.

The SQL is the store's shared dialect with ``?`` parameters, turned into psycopg's ``%s`` here (``%`` in the
text is escaped, ``?`` inside a quoted literal is left alone). Text columns use the "C" collation so that
timestamps stored as ISO 8601 text sort and compare exactly as in SQLite.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.rows import dict_row

from dso_server.errors import StoreError, StoreIntegrityError, StoreUnavailable
from dso_server.metrics import timed_store
from dso_server.store.engine import Database, Params, Row, redact

SCHEMA_LOCK_KEY = 0x44_53_4F_5F_53_43_48  # "DSO_SCH": the advisory lock migrations take
CONNECT_TIMEOUT_S = 10


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key of a lock name (stable across processes and versions)."""
    return int.from_bytes(hashlib.sha256(f"dso_server:{name}".encode()).digest()[:8], "big", signed=True)


@lru_cache(maxsize=1024)
def to_psycopg(sql: str) -> str:
    """``?`` parameters as ``%s`` and literal ``%`` as ``%%``, outside single-quoted literals."""
    parts = re.split(r"('(?:[^']|'')*')", sql)
    return "".join(part if index % 2 else part.replace("%", "%%").replace("?", "%s")
                   for index, part in enumerate(parts))


class _BoolAsInt(Dumper):
    """Python booleans into the integer columns the schema shares with SQLite (0/1)."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


def _error(error: psycopg.Error, location: str) -> StoreError:
    text = " ".join(str(error).split())  # libpq's messages span lines; an error here is one line
    if isinstance(error, psycopg.errors.IntegrityError):
        return StoreIntegrityError(f"The database refused a write: {text}.")
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable(f"cannot use the database {redact(location)}: {text}")
    return StoreError(f"database {redact(location)}: {type(error).__name__}: {text}")


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.location = url
        self._connection = self._connect()

    def _connect(self) -> psycopg.Connection[Row]:
        try:
            connection = psycopg.connect(self.location, autocommit=True, row_factory=dict_row,
                                         connect_timeout=CONNECT_TIMEOUT_S, application_name="dso-server")
        except psycopg.Error as error:
            raise _error(error, self.location) from None
        connection.adapters.register_dumper(bool, _BoolAsInt)
        return connection

    def _usable(self) -> psycopg.Connection[Row]:
        """The connection; a new one when the old broke (a server restart) and no transaction was open."""
        if self._connection.broken and self._depth == 0:
            self._connection = self._connect()
        return self._connection

    def query(self, sql: str, params: Params | Mapping[str, Any] = ()) -> list[Row]:
        with self._lock, timed_store("read"):
            try:
                return self._usable().execute(to_psycopg(sql), params or None).fetchall()
            except psycopg.Error as error:
                raise _error(error, self.location) from None

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._lock, timed_store("write"):
            try:
                return self._usable().execute(to_psycopg(sql), params or None).rowcount
            except psycopg.Error as error:
                raise _error(error, self.location) from None

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        with self._lock, self.transaction(), timed_store("write"):
            try:
                with self._connection.cursor() as cursor:
                    cursor.executemany(to_psycopg(sql), rows)
                    return cursor.rowcount
            except psycopg.Error as error:
                raise _error(error, self.location) from None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        depth = self._depth
        connection = self._usable()
        self._depth = depth + 1
        transaction = connection.transaction()
        try:
            transaction.__enter__()
            try:
                yield
            except BaseException as error:
                transaction.__exit__(type(error), error, error.__traceback__)
                raise
            with timed_store("commit"):
                transaction.__exit__(None, None, None)
        except psycopg.Error as error:  # raised by BEGIN or COMMIT (a deferred check, a lost connection)
            raise _error(error, self.location) from None
        finally:
            self._depth = depth

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def reopen(self) -> Database:
        return PostgresDatabase(self.location)

    def table_columns(self, table: str) -> list[str]:
        rows = self.query("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                          "AND table_name = ? ORDER BY ordinal_position", [table])
        return [row["column_name"] for row in rows]

    def schema_version(self) -> int:
        if self.query("SELECT to_regclass('dso_schema') AS t")[0]["t"] is None:
            return 0
        rows = self.query("SELECT version FROM dso_schema")
        return int(rows[0]["version"]) if rows else 0

    def set_schema_version(self, version: int) -> None:
        self.execute("CREATE TABLE IF NOT EXISTS dso_schema (version INTEGER NOT NULL)")
        self.execute("DELETE FROM dso_schema")
        self.execute("INSERT INTO dso_schema (version) VALUES (?)", [version])

    def lock_schema(self) -> None:
        self.query("SELECT pg_advisory_xact_lock(?) AS locked", [SCHEMA_LOCK_KEY])

    def try_lock(self, name: str) -> bool:
        """A session advisory lock: PostgreSQL releases it when this connection ends, also when its process
        was killed (the server notices the closed socket)."""
        return bool(self.query("SELECT pg_try_advisory_lock(?) AS locked", [lock_key(name)])[0]["locked"])

    def unlock(self, name: str) -> None:
        if not self._connection.closed:
            self.query("SELECT pg_advisory_unlock(?) AS unlocked", [lock_key(name)])
