"""The DSO's source of truth: households, VEN registrations, published signals and what the VENs sent back.

One database: a SQLite file (the embedded default, or ":memory:" in tests) or PostgreSQL for a region with
many VTN workers (``dso_server.store.engine``); the SQL here is written once for both. The schema and its
migrations live in ``dso_server.store.schema``. Every method that writes several rows does so in one
transaction, so an error leaves nothing half-written. Timestamps are stored as UTC ISO 8601 strings with
microseconds, which sort like the instants they name; models as their JSON.

The store is synchronous; one instance is one connection, used by one thread at a time (another thread gets its
own with ``reopen()``). Check-then-write sequences that must not interleave with another writer run inside one
transaction.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dso_server.errors import (
    Conflict,
    IllegalSignalChange,
    UnknownEvent,
    UnknownGroup,
    UnknownHousehold,
    UnknownPublication,
    UnknownVen,
    WrongSignalKind,
)
from dso_server.lifecycle import DeliveryKey, SignalAction, check_move
from dso_server.records import (
    EventResponse,
    Household,
    Publication,
    ReportRequest,
    Signal,
    SignalHead,
    SignalKind,
    SignalPayload,
    StoredComfort,
    StoredPlan,
    StoredResponse,
    TelemetryRow,
    Ven,
    VenView,
    kind_of,
)
from dso_server.store.changes import ACK, DELIVERY, SIGNALS, VEN, record_changes
from dso_server.store.engine import MEMORY, Database, open_database
from dso_server.store.schema import SCHEMA_VERSION, migrate
from protocol import (
    CapacityBandwidth,
    CapacityNeed,
    ComfortStatus,
    HouseholdContract,
    PerformanceReport,
    Plan,
    Telemetry,
    TouTariff,
)
from protocol.limits import MAX_EVENTS_PER_VEN

__all__ = ["MEMORY", "SCHEMA_VERSION", "DsoStore", "from_text", "new_id", "to_text", "where_clause"]


def new_id(prefix: str) -> str:
    """A fresh opaque id such as ``ev-3f2a9c0d41b7e615`` (64 random bits)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def default_origin() -> str:
    """This process as a writer of the store: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def to_text(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}; the store keeps timezone-aware UTC instants")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_text(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def where_clause(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """`` WHERE a = ? AND ...`` and its parameters, for the conditions whose value is not None ("" if none is)."""
    kept = [(sql, value) for sql, value in conditions if value is not None]
    return (" WHERE " + " AND ".join(sql for sql, _ in kept) if kept else ""), [value for _, value in kept]


def _maybe(text: str | None) -> datetime | None:
    return None if text is None else from_text(text)


class DsoStore:
    """Repository over the store's database. Raises ``dso_server.errors`` exceptions, never half-writes."""

    def __init__(self, location: str | Path | Database = MEMORY, *,
                 id_factory: Callable[[str], str] = new_id, origin: str | None = None) -> None:
        """Open (and create or migrate) the store at ``location``: a SQLite file, ":memory:", a
        ``postgresql://`` URL, or an open engine. ``origin`` names the server process writing (host:pid by
        default); it is recorded with allocation runs and changes."""
        self.db: Database = location if isinstance(location, Database) else open_database(location)
        self.path = self.db.location
        self.origin = origin or default_origin()
        self._new_id = id_factory
        try:
            migrate(self.db)
        except BaseException:
            self.db.close()
            raise

    def reopen(self) -> DsoStore:
        """The same store over a connection of its own, for another thread (see ``engine.Database.reopen``)."""
        return DsoStore(self.db.reopen(), id_factory=self._new_id, origin=self.origin)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> DsoStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def transaction(self) -> AbstractContextManager[None]:
        """One transaction; nested uses become savepoints. Rolls back everything on any exception."""
        return self.db.transaction()

    def batch(self) -> AbstractContextManager[None]:
        """One transaction for many writes that all stand or fall together (``Database.batch``)."""
        return self.db.batch()

    def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        return self.db.query(sql, params)

    def _rows_in(self, sql: str, ids: Sequence[str], params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """``sql`` (with ``{marks}`` where the ids go, after ``params``) for any number of ids, 500 at a time."""
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            part = list(ids[start:start + 500])
            rows += self._rows(sql.format(marks=",".join("?" * len(part))), [*params, *part])
        return rows

    # ------------------------------------------------------------------------------------------ households

    def put_household(self, contract: HouseholdContract, *, group: str | None, now: datetime) -> bool:
        """Add a household or replace its contract and group. True when it was new."""
        created = not self._rows("SELECT 1 FROM households WHERE connection_point_id = ?",
                                 [contract.connection_point_id])
        with self.transaction():
            self.db.upsert("households", {
                "connection_point_id": contract.connection_point_id, "group_name": group,
                "contract": contract.model_dump_json(), "updated_at": to_text(now),
            }, pk="connection_point_id")
        return created

    def put_households(self, households: Iterable[Household], *, now: datetime) -> None:
        """Add or replace several households in one transaction (a contracts file)."""
        with self.transaction():
            for household in households:
                self.put_household(household.contract, group=household.group, now=now)

    def household(self, connection_point_id: str) -> Household:
        rows = self._rows("SELECT * FROM households WHERE connection_point_id = ?", [connection_point_id])
        if not rows:
            raise UnknownHousehold(connection_point_id)
        return _household(rows[0])

    def households(self) -> list[Household]:
        return [_household(row) for row in self._rows("SELECT * FROM households ORDER BY connection_point_id")]

    def households_page(self, *, limit: int, after: str | None = None) -> list[Household]:
        """At most ``limit`` households in connection point id order, those after ``after`` when given."""
        where, params = ("WHERE connection_point_id > ? ", [after]) if after is not None else ("", [])
        return [_household(row) for row in self._rows(
            f"SELECT * FROM households {where}ORDER BY connection_point_id LIMIT ?", [*params, limit])]

    def group_members(self, group: str) -> list[str]:
        """The connection point ids of ``group``; UnknownGroup when it has none."""
        rows = self._rows("SELECT connection_point_id FROM households WHERE group_name = ? "
                          "ORDER BY connection_point_id", [group])
        if not rows:
            raise UnknownGroup(group)
        return [row["connection_point_id"] for row in rows]

    def check_households(self, connection_point_ids: Sequence[str], *, field: str = "connection_point_ids") -> None:
        """Raise UnknownHousehold for the first id that names no household (``field[index]`` in the error)."""
        ids = list(connection_point_ids)
        known = {row["connection_point_id"] for row in self._rows_in(
            "SELECT connection_point_id FROM households WHERE connection_point_id IN ({marks})", ids)}
        for index, connection_point_id in enumerate(ids):
            if connection_point_id not in known:
                raise UnknownHousehold(connection_point_id, field=f"{field}[{index}]")

    # ------------------------------------------------------------------------------------------------ VENs

    def register_ven(self, ven_name: str, *, now: datetime, fingerprint: str | None = None) -> Ven:
        """Register the VEN of household ``ven_name`` (its connection point id).

        A VEN that registers again under the same name keeps its ven_id and registration_id (one is made
        afresh only after it cancelled its registration). Registration forgets what was delivered to it, so
        its next poll or oadrRequestEvent carries all its events.
        """
        self.household(ven_name)  # raises UnknownHousehold
        known = self._rows("SELECT * FROM vens WHERE ven_name = ?", [ven_name])
        with self.transaction():
            if known:
                ven_id = known[0]["ven_id"]
                self.db.execute("UPDATE vens SET registration_id = ?, last_seen_at = ?, fingerprint = ? "
                                "WHERE ven_id = ?",
                                [known[0]["registration_id"] or self._new_id("reg"), to_text(now),
                                 fingerprint or known[0]["fingerprint"], ven_id])
            else:
                ven_id = self._new_id("ven")
                self.db.insert("vens", {
                    "ven_id": ven_id, "ven_name": ven_name, "registration_id": self._new_id("reg"),
                    "connection_point_id": ven_name, "registered_at": to_text(now), "last_seen_at": to_text(now),
                    "fingerprint": fingerprint,
                })
            self.db.execute("DELETE FROM deliveries WHERE ven_id = ?", [ven_id])
            record_changes(self.db, VEN, [ven_name], origin=self.origin)
        ven = self.ven(ven_id)
        assert ven is not None
        return ven

    def ven(self, ven_id: str) -> Ven | None:
        rows = self._rows("SELECT * FROM vens WHERE ven_id = ?", [ven_id])
        return _ven(rows[0]) if rows else None

    def ven_for(self, connection_point_id: str) -> Ven | None:
        rows = self._rows("SELECT * FROM vens WHERE connection_point_id = ?", [connection_point_id])
        return _ven(rows[0]) if rows else None

    def vens(self, connection_point_ids: Sequence[str] | None = None) -> list[Ven]:
        """Every VEN, or those of these households."""
        if connection_point_ids is None:
            return [_ven(row) for row in self._rows("SELECT * FROM vens ORDER BY ven_name")]
        return sorted((_ven(row) for row in self._rows_in(
            "SELECT * FROM vens WHERE connection_point_id IN ({marks})", connection_point_ids)),
            key=lambda ven: ven.ven_name)

    def touch_ven(self, ven_id: str, *, now: datetime) -> None:
        self.touch_vens({ven_id: now})

    def touch_vens(self, last_seen: Mapping[str, datetime]) -> None:
        """Record when VENs were last heard from (one transaction); never moves a VEN's time backwards, so
        workers flushing what they saw in any order leave the latest."""
        rows = [(to_text(moment), ven_id, to_text(moment)) for ven_id, moment in last_seen.items()]
        if rows:
            self.db.executemany("UPDATE vens SET last_seen_at = ? WHERE ven_id = ? AND "
                                "(last_seen_at IS NULL OR last_seen_at < ?)", rows)

    def cancel_registration(self, ven_id: str) -> Ven:
        """The VEN left (oadrCancelPartyRegistration): it must register again before it is served."""
        known = self.ven(ven_id)
        if known is None:
            raise UnknownVen(ven_id)
        with self.transaction():
            record_changes(self.db, VEN, [known.connection_point_id], origin=self.origin)
            self.db.execute("UPDATE vens SET registration_id = NULL WHERE ven_id = ?", [ven_id])
            self.db.execute("DELETE FROM deliveries WHERE ven_id = ?", [ven_id])
            self.db.execute("DELETE FROM report_requests WHERE ven_id = ?", [ven_id])
        ven = self.ven(ven_id)
        assert ven is not None
        return ven

    # --------------------------------------------------------------------------------------------- signals

    def publish(self, payloads: Mapping[str, SignalPayload], *, now: datetime) -> Publication:
        """One new event (modificationNumber 0) per connection point, all under one new publication id."""
        if not payloads:
            raise Conflict("A publication needs at least one connection point.", field="connection_point_ids")
        self.check_households(list(payloads))
        self._check_room(list(payloads), now)
        publication_id = self._new_id("pub")
        at = to_text(now)
        signals = tuple(
            Signal(event_id=self._new_id("ev"), connection_point_id=connection_point_id, payload=payload,
                   modification_number=0, created_at=from_text(at), modified_at=from_text(at), cancelled=False,
                   publication_id=publication_id)
            for connection_point_id, payload in payloads.items())
        with self.transaction():
            self.db.insert("signals", [{
                "event_id": signal.event_id, "connection_point_id": signal.connection_point_id,
                "kind": signal.kind.value, "payload": signal.payload.model_dump_json(), "modification_number": 0,
                "created_at": at, "modified_at": at, "cancelled": 0, "publication_id": publication_id,
                "start_at": to_text(signal.start), "end_at": to_text(signal.end),
            } for signal in signals])
            record_changes(self.db, SIGNALS, payloads, origin=self.origin)
        return Publication(publication_id, signals)

    def _check_room(self, connection_point_ids: Sequence[str], now: datetime) -> None:
        """PROFILE.md §1.5: a VEN holds at most MAX_EVENTS_PER_VEN open events (not cancelled, not ended)."""
        marks = ", ".join("?" for _ in connection_point_ids)
        rows = self._rows(f"SELECT connection_point_id, COUNT(*) AS open_count FROM signals WHERE cancelled = 0 AND "
                          f"end_at > ? AND connection_point_id IN ({marks}) GROUP BY connection_point_id",
                          [to_text(now), *connection_point_ids])
        full = sorted(row["connection_point_id"] for row in rows if row["open_count"] >= MAX_EVENTS_PER_VEN)
        if full:
            raise Conflict(f"{', '.join(full)} already hold{'s' if len(full) == 1 else ''} {MAX_EVENTS_PER_VEN} open "
                           "signals, the most a VEN holds (PROFILE §1.5); cancel or modify one instead.",
                           field="connection_point_ids")

    def signal(self, event_id: str) -> Signal:
        rows = self._rows("SELECT * FROM signals WHERE event_id = ?", [event_id])
        if not rows:
            raise UnknownEvent(event_id)
        return _signal(rows[0])

    def signals(
        self, *, connection_point_id: str | None = None, publication_id: str | None = None,
        ending_after: datetime | None = None,
    ) -> list[Signal]:
        """Signals, oldest first, filtered by connection point, publication and end (``end > ending_after``)."""
        where, params = where_clause(("connection_point_id = ?", connection_point_id),
                                     ("publication_id = ?", publication_id),
                                     ("end_at > ?", to_text(ending_after) if ending_after is not None else None))
        sql = "SELECT * FROM signals" + where
        return [_signal(row) for row in self._rows(sql + " ORDER BY start_at, created_at, rowid", params)]

    def bandwidths_overlapping(self, connection_point_ids: Sequence[str], *, since: datetime, until: datetime
                               ) -> dict[str, list[Signal]]:
        """Per connection point, its bandwidth signals (cancelled ones included) that overlap [since, until)."""
        out: dict[str, list[Signal]] = {cp: [] for cp in connection_point_ids}
        for row in self._rows_in("SELECT * FROM signals WHERE kind = 'bandwidth' AND start_at < ? AND end_at > ? "
                                 "AND connection_point_id IN ({marks}) ORDER BY start_at, created_at, rowid",
                                 list(connection_point_ids), [to_text(until), to_text(since)]):
            out[row["connection_point_id"]].append(_signal(row))
        return out

    def publication(self, publication_id: str) -> Publication:
        signals = self.signals(publication_id=publication_id)
        if not signals:
            raise UnknownPublication(publication_id)
        return Publication(publication_id, tuple(sorted(signals, key=lambda s: s.connection_point_id)))

    def modify_signal(self, event_id: str, payload: SignalPayload, *, now: datetime) -> Signal:
        """Replace what the event says; modificationNumber + 1. The same payload again changes nothing."""
        return self.modify_signals({event_id: payload}, now=now)[event_id]

    def modify_signals(self, payloads: Mapping[str, SignalPayload], *, now: datetime,
                       current: Mapping[str, Signal] | None = None) -> dict[str, Signal]:
        """``modify_signal`` for many events in one transaction and a few statements (the planner's run over
        every household). ``current``: the events as the caller just read them (saves reading them again).
        All or nothing: the first event that may not change raises and nothing is modified."""
        known = dict(current or {})
        missing = [event_id for event_id in payloads if event_id not in known]
        if missing:
            known.update(self.signals_by_id(missing))
        out: dict[str, Signal] = {}
        rows = []
        at = to_text(now)
        for event_id, payload in payloads.items():
            signal = known.get(event_id)
            if signal is None:
                raise UnknownEvent(event_id)
            check_move(signal, SignalAction.MODIFY, now)
            if signal.kind is not kind_of(payload):
                raise WrongSignalKind(event_id, signal.kind.value, kind_of(payload).value)
            if payload == signal.payload:
                out[event_id] = signal
                continue
            out[event_id] = replace(signal, payload=payload, modification_number=signal.modification_number + 1,
                                    modified_at=from_text(at))
            rows.append((payload.model_dump_json(), signal.modification_number + 1, at, to_text(payload.start),
                         to_text(payload.end), event_id, signal.modification_number))
        if rows:
            with self.transaction():
                # The modification number in the WHERE clause: a concurrent change by another writer makes the
                # update miss, and the whole transaction is refused instead of overwriting it.
                changed = self.db.executemany(
                    "UPDATE signals SET payload = ?, modification_number = ?, modified_at = ?, start_at = ?, "
                    "end_at = ? WHERE event_id = ? AND modification_number = ?", rows)
                if changed != len(rows):
                    raise Conflict("An event changed while it was being modified; try again.", field="event_id")
                record_changes(self.db, SIGNALS, [out[row[5]].connection_point_id for row in rows],
                               origin=self.origin)
        return out

    def signals_by_id(self, event_ids: Sequence[str]) -> dict[str, Signal]:
        """The events with these ids (unknown ids are left out)."""
        signals = (_signal(row) for row in self._rows_in("SELECT * FROM signals WHERE event_id IN ({marks})",
                                                           list(event_ids)))
        return {signal.event_id: signal for signal in signals}

    def cancel_signal(self, event_id: str, *, now: datetime) -> Signal:
        """Cancel the event; modificationNumber + 1. A cancelled event is never modified again."""
        signal = self.signal(event_id)
        check_move(signal, SignalAction.CANCEL, now)
        self._cancel_signals([signal], now=now)
        return self.signal(event_id)

    def modify_publication(
        self, publication_id: str, payload: SignalPayload, *, now: datetime
    ) -> tuple[Publication, list[IllegalSignalChange]]:
        """Modify every open event of a publication (one transaction). Cancelled or ended events are skipped and
        returned with the reason; when no event can be modified, the first reason is raised."""
        publication, open_ids, skipped = self._open_events(publication_id, SignalAction.MODIFY, now)
        self.modify_signals(dict.fromkeys(open_ids, payload), now=now,
                            current={s.event_id: s for s in publication.signals})
        return self.publication(publication_id), skipped

    def cancel_publication(
        self, publication_id: str, *, now: datetime
    ) -> tuple[Publication, list[IllegalSignalChange]]:
        """Cancel every open event of a publication (one transaction); see ``modify_publication``."""
        publication, open_ids, skipped = self._open_events(publication_id, SignalAction.CANCEL, now)
        self._cancel_signals([s for s in publication.signals if s.event_id in set(open_ids)], now=now)
        return self.publication(publication_id), skipped

    def _open_events(self, publication_id: str, action: SignalAction, now: datetime
                     ) -> tuple[Publication, list[str], list[IllegalSignalChange]]:
        """The publication, the ids of its events ``action`` may change, and why it may not change the others
        (raised, the first reason, when it may change none)."""
        publication = self.publication(publication_id)
        open_ids: list[str] = []
        skipped: list[IllegalSignalChange] = []
        for signal in publication.signals:
            try:
                check_move(signal, action, now)
            except IllegalSignalChange as error:
                skipped.append(error)
            else:
                open_ids.append(signal.event_id)
        if not open_ids:
            raise skipped[0]
        return publication, open_ids, skipped

    def _cancel_signals(self, signals: Sequence[Signal], *, now: datetime) -> None:
        rows = [(signal.modification_number + 1, to_text(now), signal.event_id, signal.modification_number)
                for signal in signals]
        with self.transaction():
            changed = self.db.executemany("UPDATE signals SET cancelled = 1, modification_number = ?, modified_at = ? "
                                          "WHERE event_id = ? AND modification_number = ?", rows)
            if changed != len(rows):
                raise Conflict("An event changed while it was being cancelled; try again.", field="event_id")
            record_changes(self.db, SIGNALS, [signal.connection_point_id for signal in signals], origin=self.origin)

    # ------------------------------------------------------------------------------------------ deliveries

    def delivered(self, ven_id: str) -> frozenset[DeliveryKey] | None:
        """What the last oadrDistributeEvent to this VEN carried; None when nothing since it registered."""
        rows = self._rows("SELECT delivered FROM deliveries WHERE ven_id = ?", [ven_id])
        if not rows:
            return None
        return _keys(rows[0]["delivered"])

    def record_delivery(self, ven_id: str, keys: frozenset[DeliveryKey], *, now: datetime,
                        connection_point_id: str | None = None) -> None:
        """What the VEN was sent (or, when the set only shrank, now knows). ``connection_point_id`` saves a read
        when the caller knows it."""
        if connection_point_id is None:
            ven = self.ven(ven_id)
            if ven is None:
                raise UnknownVen(ven_id)
            connection_point_id = ven.connection_point_id
        with self.transaction():
            self.db.upsert("deliveries", {"ven_id": ven_id, "delivered": json.dumps(sorted(keys)),
                                          "delivered_at": to_text(now)}, pk="ven_id")
            record_changes(self.db, DELIVERY, [connection_point_id], origin=self.origin)

    # ------------------------------------------------------------------------------------------- responses

    def record_responses(self, ven_id: str, responses: Iterable[EventResponse], *, now: datetime) -> list[str]:
        """Store the VEN's eventResponses as received (one transaction). Returns the event ids it ignored
        because they name no event of this VEN's household."""
        responses = list(responses)
        ven = self.ven(ven_id)
        if ven is None:
            raise UnknownVen(ven_id)
        ignored = []
        with self.transaction():
            for response in responses:
                rows = self._rows("SELECT 1 FROM signals WHERE event_id = ? AND connection_point_id = ?",
                                  [response.event_id, ven.connection_point_id])
                if not rows:
                    ignored.append(response.event_id)
                    continue
                self.db.insert("responses", {
                    "ven_id": ven_id, "event_id": response.event_id,
                    "modification_number": response.modification_number, "opt_type": response.opt_type,
                    "response_code": response.response_code, "response_description": response.response_description,
                    "received_at": to_text(now),
                })
            if len(ignored) < len(responses):
                record_changes(self.db, ACK, [ven.connection_point_id], origin=self.origin)
        return ignored

    def responses(self, *, event_id: str | None = None, connection_point_id: str | None = None
                  ) -> list[StoredResponse]:
        where, params = where_clause(("r.event_id = ?", event_id), ("v.connection_point_id = ?", connection_point_id))
        sql = (f"SELECT r.*, v.connection_point_id FROM responses r JOIN vens v ON v.ven_id = r.ven_id{where}"
               " ORDER BY r.id")
        return [
            StoredResponse(
                ven_id=row["ven_id"], connection_point_id=row["connection_point_id"],
                response=EventResponse(event_id=row["event_id"], modification_number=row["modification_number"],
                                       opt_type=row["opt_type"], response_code=row["response_code"],
                                       response_description=row["response_description"]),
                received_at=from_text(row["received_at"]),
            )
            for row in self._rows(sql, params)
        ]

    def ven_views(self, ven_ids: Sequence[str], *, now: datetime) -> dict[str, VenView]:
        """What the VTN needs to answer each of these VENs (unknown ids are left out), in a few statements for
        any number of VENs: the VTN reloads every VEN whose household changed at once."""
        out: dict[str, VenView] = {}
        ids = list(dict.fromkeys(ven_ids))
        for first in range(0, len(ids), 500):
            part = ids[first:first + 500]
            marks = ",".join("?" * len(part))
            vens = {row["ven_id"]: _ven(row) for row in self._rows(f"SELECT * FROM vens WHERE ven_id IN ({marks})",
                                                                     part)}
            if not vens:
                continue
            households = {ven.connection_point_id: ven.ven_id for ven in vens.values()}
            cp_marks = ",".join("?" * len(households))
            signals: dict[str, list[SignalHead]] = {ven_id: [] for ven_id in vens}
            for row in self._rows(
                    "SELECT event_id, connection_point_id, modification_number, cancelled, start_at, end_at FROM "
                    f"signals WHERE connection_point_id IN ({cp_marks}) AND end_at > ? "
                    "ORDER BY start_at, created_at, rowid", [*households, to_text(now)]):
                signals[households[row["connection_point_id"]]].append(SignalHead(
                    row["event_id"], row["connection_point_id"], int(row["modification_number"]),
                    bool(row["cancelled"]), from_text(row["start_at"]), from_text(row["end_at"])))
            acknowledged: dict[str, set[tuple[str, int]]] = {ven_id: set() for ven_id in vens}
            for row in self._rows(
                    f"SELECT DISTINCT r.ven_id, r.event_id, r.modification_number FROM responses r JOIN signals s "
                    f"ON s.event_id = r.event_id WHERE r.ven_id IN ({marks}) AND s.end_at > ? "
                    "AND r.modification_number IS NOT NULL", [*part, to_text(now)]):
                acknowledged[row["ven_id"]].add((row["event_id"], int(row["modification_number"])))
            delivered = {row["ven_id"]: _keys(row["delivered"]) for row in self._rows(
                f"SELECT ven_id, delivered FROM deliveries WHERE ven_id IN ({marks})", part)}
            for ven_id, ven in vens.items():
                out[ven_id] = VenView(ven, tuple(signals[ven_id]), frozenset(acknowledged[ven_id]),
                                      delivered.get(ven_id))
        return out

    def acknowledged(self, ven_id: str) -> set[tuple[str, int]]:
        """(event id, modification number) pairs this VEN answered."""
        rows = self._rows("SELECT DISTINCT event_id, modification_number FROM responses "
                          "WHERE ven_id = ? AND modification_number IS NOT NULL", [ven_id])
        return {(row["event_id"], row["modification_number"]) for row in rows}

    # --------------------------------------------------------------------------------------------- reports

    def record_report_registration(
        self, ven_id: str, *, offered: Iterable[tuple[str, str, list[str]]], requests: Iterable[tuple[str, str]],
        now: datetime,
    ) -> None:
        """What the VEN offered (specifier id, report name, rIDs) and what we requested (request id, specifier
        id). Replaces the VEN's previous offer and requests (one transaction)."""
        with self.transaction():
            self.db.execute("DELETE FROM report_offers WHERE ven_id = ?", [ven_id])
            self.db.execute("DELETE FROM report_requests WHERE ven_id = ?", [ven_id])
            for specifier_id, report_name, r_ids in offered:
                self.db.upsert("report_offers", {
                    "ven_id": ven_id, "report_specifier_id": specifier_id, "report_name": report_name,
                    "r_ids": json.dumps(r_ids), "offered_at": to_text(now),
                }, pk=("ven_id", "report_specifier_id"))
            for request_id, specifier_id in requests:
                self.db.insert("report_requests", {
                    "report_request_id": request_id, "ven_id": ven_id, "report_specifier_id": specifier_id,
                    "requested_at": to_text(now),
                })

    def report_requests(self, ven_id: str) -> list[ReportRequest]:
        rows = self._rows("SELECT * FROM report_requests WHERE ven_id = ? ORDER BY report_specifier_id", [ven_id])
        return [ReportRequest(row["ven_id"], row["report_request_id"], row["report_specifier_id"]) for row in rows]

    def report_offers(self, ven_id: str) -> dict[str, list[str]]:
        """report specifier id -> the rIDs the VEN offered under it."""
        rows = self._rows("SELECT * FROM report_offers WHERE ven_id = ?", [ven_id])
        return {row["report_specifier_id"]: json.loads(row["r_ids"]) for row in rows}

    def store_reports(
        self, connection_point_id: str,
        reports: Iterable[Telemetry | Plan | ComfortStatus | CapacityNeed | PerformanceReport], *, now: datetime
    ) -> None:
        """Telemetry (upserted per interval), plans, comfort statuses, capacity needs and performance reports (one per
        local day: a later one replaces it) of one household, in one transaction."""
        self.household(connection_point_id)
        received = to_text(now)
        with self.transaction():
            for report in reports:
                if isinstance(report, Telemetry):
                    self.db.upsert("telemetry", [
                        {"connection_point_id": connection_point_id, "interval_start": to_text(interval.start),
                         "import_kw": interval.import_kw, "export_kw": interval.export_kw, "received_at": received}
                        for interval in report.intervals
                    ], pk=("connection_point_id", "interval_start"))
                elif isinstance(report, CapacityNeed):
                    self.db.execute(
                        "INSERT INTO capacity_needs (connection_point_id, created_at, start_at, end_at, need, "
                        "received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (connection_point_id, created_at, "
                        "start_at) DO UPDATE SET end_at = excluded.end_at, need = excluded.need, received_at = "
                        "excluded.received_at",
                        [connection_point_id, to_text(report.created_at), to_text(report.start), to_text(report.end),
                         report.model_dump_json(), received])
                elif isinstance(report, PerformanceReport):
                    self.db.execute(
                        "INSERT INTO performance_reports (connection_point_id, day_start, day_end, report, created_at, "
                        "received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (connection_point_id, day_start) DO "
                        "UPDATE SET day_end = excluded.day_end, report = excluded.report, created_at = "
                        "excluded.created_at, received_at = excluded.received_at",
                        [connection_point_id, to_text(report.start), to_text(report.end), report.model_dump_json(),
                         to_text(report.created_at), received])
                elif isinstance(report, Plan):
                    self.db.upsert("plans", {
                        "connection_point_id": connection_point_id, "created_at": to_text(report.created_at),
                        "plan": report.model_dump_json(), "received_at": received,
                    }, pk=("connection_point_id", "created_at"))
                else:
                    self.db.upsert("comfort", {
                        "connection_point_id": connection_point_id, "measured_at": to_text(report.measured_at),
                        "status": report.model_dump_json(), "received_at": received,
                    }, pk=("connection_point_id", "measured_at"))

    def telemetry(
        self, connection_point_id: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[TelemetryRow]:
        """Telemetry intervals with ``since <= start < until``, oldest first."""
        self.household(connection_point_id)
        where, params = where_clause(("connection_point_id = ?", connection_point_id),
                                     ("interval_start >= ?", to_text(since) if since is not None else None),
                                     ("interval_start < ?", to_text(until) if until is not None else None))
        rows = self._rows(f"SELECT * FROM telemetry{where} ORDER BY interval_start", params)
        return [
            TelemetryRow(row["connection_point_id"], from_text(row["interval_start"]), row["import_kw"],
                         row["export_kw"], from_text(row["received_at"]))
            for row in rows
        ]

    def last_telemetry_starts(self, connection_point_ids: Sequence[str] | None = None) -> dict[str, datetime]:
        """Per connection point (every one, or these), the start of its latest telemetry interval (one statement
        per 500)."""
        sql = ("SELECT connection_point_id, MAX(interval_start) AS last FROM telemetry {where}"
               "GROUP BY connection_point_id")
        rows = (self._rows(sql.format(where="")) if connection_point_ids is None else
                self._rows_in(sql.format(where="WHERE connection_point_id IN ({marks}) "), connection_point_ids))
        return {row["connection_point_id"]: from_text(row["last"]) for row in rows}

    def last_telemetry_start(self, connection_point_id: str) -> datetime | None:
        return self.last_telemetry_starts([connection_point_id]).get(connection_point_id)

    def latest_plan(self, connection_point_id: str) -> StoredPlan | None:
        self.household(connection_point_id)
        rows = self._rows("SELECT * FROM plans WHERE connection_point_id = ? ORDER BY created_at DESC LIMIT 1",
                          [connection_point_id])
        if not rows:
            return None
        return StoredPlan(connection_point_id, Plan.model_validate_json(rows[0]["plan"]),
                          from_text(rows[0]["received_at"]))

    def latest_comfort(self, connection_point_id: str) -> StoredComfort | None:
        self.household(connection_point_id)
        rows = self._rows("SELECT * FROM comfort WHERE connection_point_id = ? ORDER BY measured_at DESC LIMIT 1",
                          [connection_point_id])
        if not rows:
            return None
        return StoredComfort(connection_point_id, ComfortStatus.model_validate_json(rows[0]["status"]),
                             from_text(rows[0]["received_at"]))


# ------------------------------------------------------------------------------------------------ row codecs


def _keys(text: str) -> frozenset[DeliveryKey]:
    return frozenset((str(e), int(m), str(s)) for e, m, s in json.loads(text))


def _household(row: Mapping[str, Any]) -> Household:
    return Household(contract=HouseholdContract.model_validate_json(row["contract"]), group=row["group_name"])


def _ven(row: Mapping[str, Any]) -> Ven:
    return Ven(
        ven_id=row["ven_id"], ven_name=row["ven_name"], registration_id=row["registration_id"],
        connection_point_id=row["connection_point_id"], registered_at=from_text(row["registered_at"]),
        last_seen_at=_maybe(row["last_seen_at"]), fingerprint=row["fingerprint"],
    )


def _signal(row: Mapping[str, Any]) -> Signal:
    payload: SignalPayload
    if row["kind"] == SignalKind.BANDWIDTH:
        payload = CapacityBandwidth.model_validate_json(row["payload"])
    else:
        payload = TouTariff.model_validate_json(row["payload"])
    return Signal(
        event_id=row["event_id"], connection_point_id=row["connection_point_id"], payload=payload,
        modification_number=row["modification_number"], created_at=from_text(row["created_at"]),
        modified_at=from_text(row["modified_at"]), cancelled=bool(row["cancelled"]),
        publication_id=row["publication_id"],
    )
