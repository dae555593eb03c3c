"""The HEMS's local store: contract, active DSO signals and failsafe state in SQLite (sqlite-utils).

A restarted HEMS reads them back before it talks to the VTN, so the limits in force before the restart (and a
failsafe in progress) stay in force while it reconnects. The controller writes on every change; each save is
one transaction, so a crash leaves the previous or the new state, never half of one.

Tables (one file per household):

| table                 | rows                                                                    |
| --------------------- | ----------------------------------------------------------------------- |
| contract              | id 1: connection_point_id, the contract as JSON                         |
| signals               | one per active event: event_id, modification_number, sequence, kind     |
|                       | ('bandwidth' / 'tariff'), payload JSON (the protocol model)             |
| known_modifications   | event_id -> highest modificationNumber seen (stale copies stay ignored) |
| book                  | id 1: version, limits_changed_at                                        |
| failsafe              | id 1: state, entered_at, contact_lost_after                             |
| needs                 | one per local day: day, the capacity need the DSO accepted (JSON)       |
| sent_messages         | every OpenADR message sent to the DSO but polls: sent_at, service,      |
|                       | message_type, delivered, the XML as sent (``hems-client data export``)  |

Timestamps are ISO 8601 UTC text.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from hems_client.control.failsafe import FailsafeSnapshot, FailsafeState
from hems_client.control.signal_book import ActiveSignal, BookSnapshot, SignalBook
from protocol.contract import HouseholdContract
from protocol.performance import CapacityNeed
from protocol.signals import CapacityBandwidth, TouTariff

SENT_LOG_RETENTION = timedelta(days=400)
"""What the HEMS sent is kept this long (13 months, like the DSO keeps it), then pruned."""
_PRUNE_EVERY = 500
"""Prune the sent log every this many messages."""

_KINDS: dict[str, type[CapacityBandwidth] | type[TouTariff]] = {"bandwidth": CapacityBandwidth, "tariff": TouTariff}


class StoreError(ValueError):
    """The store's content does not fit this household (or is not a HEMS store)."""


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


class HemsStore:
    """One household's store: a file path, or ':memory:' for tests."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite_utils.Database(memory=True) if self.path == ":memory:" else sqlite_utils.Database(path)
        with self._db.conn:
            self._db["contract"].create({"id": int, "connection_point_id": str, "json": str}, pk="id",
                                        if_not_exists=True)
            self._db["signals"].create({"event_id": str, "modification_number": int, "sequence": int, "kind": str,
                                        "payload": str, "received_at": str, "modified_at": str}, pk="event_id",
                                       if_not_exists=True)
            for column in ("received_at", "modified_at"):  # stores written before these columns existed
                if column not in self._db["signals"].columns_dict:
                    self._db["signals"].add_column(column, str)
            self._db["known_modifications"].create({"event_id": str, "modification_number": int}, pk="event_id",
                                                   if_not_exists=True)
            self._db["book"].create({"id": int, "version": int, "limits_changed_at": str}, pk="id",
                                    if_not_exists=True)
            self._db["failsafe"].create({"id": int, "state": str, "entered_at": str, "contact_lost_after": str},
                                        pk="id", if_not_exists=True)
            self._db.execute("CREATE TABLE IF NOT EXISTS needs (day TEXT PRIMARY KEY, need TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS sent_messages (id INTEGER PRIMARY KEY, sent_at TEXT NOT "
                             "NULL, service TEXT NOT NULL, message_type TEXT NOT NULL, delivered INTEGER NOT NULL, "
                             "xml TEXT NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS sent_messages_at ON sent_messages (sent_at)")
        self._logged = 0
        self.writes = 0
        """Saves so far (for tests and diagnostics)."""

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------------------------------ contract

    def save_contract(self, contract: HouseholdContract) -> None:
        """Store ``contract``; refuses one for another connection point (the signals belong to the stored one)."""
        stored = self.load_contract()
        if stored is not None and stored.connection_point_id != contract.connection_point_id:
            raise StoreError(f"store {self.path} belongs to connection point {stored.connection_point_id}, "
                             f"not {contract.connection_point_id}")
        with self._db.conn:
            self._db["contract"].upsert({"id": 1, "connection_point_id": contract.connection_point_id,
                                         "json": contract.model_dump_json()}, pk="id")
        self.writes += 1

    def load_contract(self) -> HouseholdContract | None:
        rows = list(self._db["contract"].rows_where("id = 1"))
        return HouseholdContract.model_validate_json(rows[0]["json"]) if rows else None

    # ------------------------------------------------------------------------------------------ signals

    def save_signal_book(self, book: SignalBook) -> None:
        """Replace the stored signals with ``book``'s (a handful of rows: rewriting them all is simplest)."""
        snapshot = book.snapshot()
        with self._db.conn:
            self._db["signals"].delete_where()
            self._db["signals"].insert_all(
                ({"event_id": s.event_id, "modification_number": s.modification_number, "sequence": s.sequence,
                  "kind": "bandwidth" if isinstance(s.payload, CapacityBandwidth) else "tariff",
                  "payload": s.payload.model_dump_json(), "received_at": _time(s.received_at),
                  "modified_at": _time(s.modified_at)} for s in snapshot.signals), pk="event_id")
            self._db["known_modifications"].delete_where()
            self._db["known_modifications"].insert_all(
                ({"event_id": event_id, "modification_number": number}
                 for event_id, number in snapshot.known_modifications.items()), pk="event_id")
            self._db["book"].upsert({"id": 1, "version": snapshot.version,
                                     "limits_changed_at": _time(snapshot.limits_changed_at)}, pk="id")
        self.writes += 1

    def load_signal_book(self) -> SignalBook:
        """The stored book (an empty one when nothing was stored)."""
        signals = []
        for row in self._db["signals"].rows_where(order_by="sequence"):
            kind = _KINDS.get(row["kind"])
            if kind is None:
                raise StoreError(f"store {self.path}: signal {row['event_id']!r} has unknown kind {row['kind']!r}")
            signals.append(ActiveSignal(row["event_id"], int(row["modification_number"]),
                                        kind.model_validate_json(row["payload"]), int(row["sequence"]),
                                        received_at=_parse_time(row.get("received_at")),
                                        modified_at=_parse_time(row.get("modified_at"))))
        known = {row["event_id"]: int(row["modification_number"])
                 for row in self._db["known_modifications"].rows}
        book_rows = list(self._db["book"].rows_where("id = 1"))
        version = int(book_rows[0]["version"]) if book_rows else 0
        changed_at = _parse_time(book_rows[0]["limits_changed_at"]) if book_rows else None
        return SignalBook.from_snapshot(BookSnapshot(signals=tuple(signals), known_modifications=known,
                                                     version=version, limits_changed_at=changed_at))

    # ------------------------------------------------------------------------------------------ failsafe

    def save_failsafe(self, snapshot: FailsafeSnapshot) -> None:
        with self._db.conn:
            self._db["failsafe"].upsert({"id": 1, "state": snapshot.state.value,
                                         "entered_at": _time(snapshot.entered_at),
                                         "contact_lost_after": _time(snapshot.contact_lost_after)}, pk="id")
        self.writes += 1

    def load_failsafe(self) -> FailsafeSnapshot | None:
        rows = list(self._db["failsafe"].rows_where("id = 1"))
        if not rows:
            return None
        row = rows[0]
        try:
            state = FailsafeState(row["state"])
        except ValueError:
            raise StoreError(f"store {self.path}: unknown failsafe state {row['state']!r}") from None
        return FailsafeSnapshot(state, _parse_time(row["entered_at"]), _parse_time(row["contact_lost_after"]))

    # ------------------------------------------------------------------------------------------ needs

    def save_need(self, day: date, need: CapacityNeed) -> None:
        """The need the DSO accepted for local ``day`` (replacing an earlier one)."""
        with self._db.conn:
            self._db.execute("INSERT OR REPLACE INTO needs (day, need) VALUES (?, ?)",
                             [day.isoformat(), need.model_dump_json()])
        self.writes += 1

    def load_needs(self) -> dict[date, CapacityNeed]:
        return {date.fromisoformat(day): CapacityNeed.model_validate_json(need)
                for day, need in self._db.execute("SELECT day, need FROM needs ORDER BY day").fetchall()}

    # ------------------------------------------------------------------------------------------ sent log

    def log_message(self, *, sent_at: datetime, service: str, message_type: str, delivered: bool, xml: str) -> None:
        """One message sent to the DSO, as sent; every ``_PRUNE_EVERY`` messages the log loses what is older than
        ``SENT_LOG_RETENTION``."""
        with self._db.conn:
            self._db.execute("INSERT INTO sent_messages (sent_at, service, message_type, delivered, xml) "
                             "VALUES (?, ?, ?, ?, ?)",
                             [sent_at.isoformat(), service, message_type, int(delivered), xml])
            self._logged += 1
            if self._logged % _PRUNE_EVERY == 0:
                self._db.execute("DELETE FROM sent_messages WHERE sent_at < ?",
                                 [(sent_at - SENT_LOG_RETENTION).isoformat()])

    def sent_messages(self) -> list[dict[str, Any]]:
        """Every logged message, oldest first: sent_at, service, message_type, delivered, xml."""
        cursor = self._db.execute("SELECT sent_at, service, message_type, delivered, xml FROM sent_messages "
                                  "ORDER BY id")
        return [{"sent_at": row[0], "service": row[1], "message_type": row[2], "delivered": bool(row[3]),
                 "xml": row[4]} for row in cursor.fetchall()]
