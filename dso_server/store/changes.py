"""The change log: how a server learns, cheaply and in order, what other writers changed for which household.

Every store method that changes what a VEN is sent writes, in the same transaction, one row per connection point
into ``changes``: the kind of change (``SIGNALS``: an event published, modified or cancelled; ``VEN``: registered
or cancelled; ``DELIVERY``: what was delivered to it; ``ACK``: an eventResponse stored; ``CERTIFICATE``: a
certificate enrolled for the household or revoked) and the writer
(``DsoStore.origin``). A VTN keeps what it needs about each VEN in memory and asks ``ChangeFeed.read`` what
changed since it last asked; one read answers for every request that arrived before it started, so a change
committed before a poll arrives is seen by that poll (``dso_server.transport.ven_cache``).

Reading in commit order is the subtle part. On SQLite writers take turns, so row ids grow in commit order and
"rows after the last id seen" is complete. On PostgreSQL ids come from a sequence, and a transaction that took a
smaller id may commit after a larger one was read. Each row therefore carries its transaction id (``xid``), and
each read also returns the transactions still open in its snapshot (``pg_snapshot_xip``); the next read asks for
rows after the last id *or* written by one of those transactions. A transaction that starts after a read takes
larger ids than every row that read could see, so nothing falls between two reads.

The log is pruned to its newest ``KEEP_ROWS`` rows (``prune``); a reader that fell further behind than that (a
stalled process) is told so (``ChangeBatch.complete`` False) and drops everything it cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from dso_server.store.engine import Database

SIGNALS: Final = "signals"
VEN: Final = "ven"
DELIVERY: Final = "delivery"
ACK: Final = "ack"
CERTIFICATE: Final = "certificate"
KEEP_ROWS = 1_000_000
"""Rows the log keeps (about 100 MB; minutes of a region-wide publication to a million households)."""

_XID = {"sqlite": "NULL", "postgresql": "pg_current_xact_id()::text::bigint"}


@dataclass(frozen=True)
class Change:
    id: int
    connection_point_id: str
    kind: str
    origin: str


@dataclass(frozen=True)
class ChangeBatch:
    changes: tuple[Change, ...]
    complete: bool
    """False when rows this reader had not seen were pruned: drop everything derived from the store."""


def record_changes(db: Database, kind: str, connection_point_ids: Iterable[str], *, origin: str) -> None:
    """Log a change of ``kind`` for each connection point; call inside the transaction that made it."""
    rows = [(connection_point_id, kind, origin) for connection_point_id in dict.fromkeys(connection_point_ids)]
    if not rows:
        return
    sql = (f"INSERT INTO changes (xid, connection_point_id, kind, origin) VALUES ({_XID[db.dialect]}, ?, ?, ?)")
    if len(rows) == 1:
        db.execute(sql, rows[0])
    else:
        db.executemany(sql, rows)


def prune(db: Database, *, keep_rows: int = KEEP_ROWS) -> int:
    """Delete all but the newest ``keep_rows`` rows; how many went."""
    newest = db.query("SELECT MAX(id) AS newest FROM changes")[0]["newest"]
    if newest is None:
        return 0
    return db.execute("DELETE FROM changes WHERE id <= ?", [int(newest) - keep_rows])


class ChangeFeed:
    """Reads the change log from where this reader started (``position``); not thread-safe."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._last_id = 0
        self._open: list[int] = []
        """PostgreSQL transactions open at the last read, whose rows may still appear below ``_last_id``."""
        self._started = False

    def start(self) -> None:
        """Start after every change already in the log (a reader caches nothing yet)."""
        self._last_id = int(self.db.query("SELECT COALESCE(MAX(id), 0) AS newest FROM changes")[0]["newest"])
        self._open = self._open_transactions()
        self._started = True

    def _open_transactions(self) -> list[int]:
        if self.db.dialect != "postgresql":
            return []
        rows = self.db.query("SELECT ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) AS x)"
                             " AS open")
        return list(rows[0]["open"])

    def read(self) -> ChangeBatch:
        """Every change committed since the last read (on PostgreSQL, possibly a few seen before again)."""
        if not self._started:
            self.start()
            return ChangeBatch((), True)
        if self.db.dialect == "postgresql":
            rows = self.db.query(
                "SELECT m.open, m.oldest, c.id, c.connection_point_id, c.kind, c.origin FROM "
                "(SELECT ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) AS x) AS open, "
                "(SELECT MIN(id) FROM changes) AS oldest) AS m "
                "LEFT JOIN changes c ON c.id > ? OR c.xid = ANY(?::bigint[]) ORDER BY c.id",
                [self._last_id, self._open])
            self._open = list(rows[0]["open"])
        else:
            rows = self.db.query(
                "SELECT m.oldest, c.id, c.connection_point_id, c.kind, c.origin FROM "
                "(SELECT MIN(id) AS oldest FROM changes) AS m LEFT JOIN changes c ON c.id > ? ORDER BY c.id",
                [self._last_id])
        oldest = rows[0]["oldest"]
        complete = oldest is None or int(oldest) <= self._last_id + 1
        changes = tuple(Change(int(r["id"]), r["connection_point_id"], r["kind"], r["origin"])
                        for r in rows if r["id"] is not None)
        if changes:
            self._last_id = max(self._last_id, max(c.id for c in changes))
        return ChangeBatch(changes, complete)


def connection_points(changes: Sequence[Change]) -> set[str]:
    return {change.connection_point_id for change in changes}
