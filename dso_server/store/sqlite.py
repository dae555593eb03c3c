"""The DSO's source of truth: households, VEN registrations, published signals and what the VENs sent back.

One SQLite file through sqlite-utils (or ":memory:" in tests). Every method that writes several rows does so
in one transaction (``Database.atomic``), so an error leaves nothing half-written. Timestamps are stored as
UTC ISO 8601 strings with microseconds, which sort like the instants they name; models as their JSON.

The store is synchronous and meant for one thread (the server's event loop): a method runs to its end before
another starts, so check-then-write sequences inside one method cannot interleave.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from dso_server.errors import (
    Conflict,
    IllegalSignalChange,
    SchemaError,
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
    SignalKind,
    SignalPayload,
    StoredComfort,
    StoredPlan,
    StoredResponse,
    TelemetryRow,
    Ven,
    kind_of,
)
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

SCHEMA_VERSION = 4
"""1: signals, registrations, reports. 2 (additive): the grid, forecasts and allocation runs (``grid_store``).
3 (additive): operator API tokens, web sessions and the audit log (``security_store``); VEN certificates
enrolled per household (``certificates``). 4 (additive): capacity needs, performance reports and the needs an
allocation run could not honour (``performance_store``)."""
MEMORY = ":memory:"


def new_id(prefix: str) -> str:
    """A fresh opaque id such as ``ev-3f2a9c0d41b7e615`` (64 random bits)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


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


# table -> (columns, primary key, not null, foreign keys); created in this order.
_TABLES: tuple[tuple[str, dict[str, type], str | tuple[str, ...], set[str], list[tuple[str, str, str]]], ...] = (
    ("households", {"connection_point_id": str, "group_name": str, "contract": str, "updated_at": str},
     "connection_point_id", {"contract", "updated_at"}, []),
    ("vens", {"ven_id": str, "ven_name": str, "registration_id": str, "connection_point_id": str,
              "registered_at": str, "last_seen_at": str, "fingerprint": str},
     "ven_id", {"ven_name", "connection_point_id", "registered_at"},
     [("connection_point_id", "households", "connection_point_id")]),
    ("signals", {"event_id": str, "connection_point_id": str, "kind": str, "payload": str,
                 "modification_number": int, "created_at": str, "modified_at": str, "cancelled": int,
                 "publication_id": str, "start_at": str, "end_at": str},
     "event_id", {"connection_point_id", "kind", "payload", "modification_number", "created_at", "modified_at",
                  "cancelled", "publication_id", "start_at", "end_at"},
     [("connection_point_id", "households", "connection_point_id")]),
    ("deliveries", {"ven_id": str, "delivered": str, "delivered_at": str},
     "ven_id", {"delivered", "delivered_at"}, [("ven_id", "vens", "ven_id")]),
    ("responses", {"id": int, "ven_id": str, "event_id": str, "modification_number": int, "opt_type": str,
                   "response_code": int, "response_description": str, "received_at": str},
     "id", {"ven_id", "event_id", "opt_type", "received_at"},
     [("ven_id", "vens", "ven_id"), ("event_id", "signals", "event_id")]),
    ("report_offers", {"ven_id": str, "report_specifier_id": str, "report_name": str, "r_ids": str,
                       "offered_at": str},
     ("ven_id", "report_specifier_id"), {"r_ids", "offered_at"}, [("ven_id", "vens", "ven_id")]),
    ("report_requests", {"report_request_id": str, "ven_id": str, "report_specifier_id": str, "requested_at": str},
     "report_request_id", {"ven_id", "report_specifier_id", "requested_at"}, [("ven_id", "vens", "ven_id")]),
    ("telemetry", {"connection_point_id": str, "interval_start": str, "import_kw": float, "export_kw": float,
                   "received_at": str},
     ("connection_point_id", "interval_start"), {"import_kw", "export_kw", "received_at"},
     [("connection_point_id", "households", "connection_point_id")]),
    ("plans", {"connection_point_id": str, "created_at": str, "plan": str, "received_at": str},
     ("connection_point_id", "created_at"), {"plan", "received_at"},
     [("connection_point_id", "households", "connection_point_id")]),
    ("comfort", {"connection_point_id": str, "measured_at": str, "status": str, "received_at": str},
     ("connection_point_id", "measured_at"), {"status", "received_at"},
     [("connection_point_id", "households", "connection_point_id")]),
    # Schema 2: the grid (dso_server.capacity.grid), replaced as a whole by GridStore.save_grid.
    ("grid_transformers", {"id": str, "position": int, "rating_kva": float, "power_factor": float,
                           "safety_margin": float, "busbar_node": str, "u1_kv": float, "u2_kv": float,
                           "uk_percent": float, "pk_kw": float},
     "id", {"position", "rating_kva", "power_factor", "safety_margin", "u1_kv", "u2_kv", "uk_percent", "pk_kw"}, []),
    ("grid_feeders", {"id": str, "position": int, "transformer_id": str},
     "id", {"position", "transformer_id"}, [("transformer_id", "grid_transformers", "id")]),
    ("grid_nodes", {"id": str, "position": int, "transformer_id": str, "u_rated_kv": float},
     "id", {"position", "transformer_id", "u_rated_kv"}, [("transformer_id", "grid_transformers", "id")]),
    ("grid_lines", {"id": str, "position": int, "from_node": str, "to_node": str, "r_ohm": float, "x_ohm": float,
                    "c_nf": float, "i_max_a": float},
     "id", {"position", "from_node", "to_node", "r_ohm", "x_ohm", "c_nf", "i_max_a"},
     [("from_node", "grid_nodes", "id"), ("to_node", "grid_nodes", "id")]),
    ("grid_connection_points", {"ean": str, "position": int, "feeder_id": str, "node_id": str,
                                "contracted_max_import_kw": float, "contracted_max_export_kw": float,
                                "controllable_devices": int, "guaranteed_kw_per_device": float, "annual_kwh": float},
     "ean", {"position", "feeder_id", "contracted_max_import_kw", "contracted_max_export_kw", "controllable_devices",
             "guaranteed_kw_per_device", "annual_kwh"},
     [("ean", "households", "connection_point_id"), ("feeder_id", "grid_feeders", "id"),
      ("node_id", "grid_nodes", "id")]),
    ("grid_meta", {"key": str, "value": str}, "key", {"value"}, []),
    ("forecasts", {"transformer_id": str, "interval_start": str, "kind": str, "p10_kw": float, "p50_kw": float,
                   "p90_kw": float, "made_at": str},
     ("transformer_id", "interval_start", "kind"), {"p10_kw", "p50_kw", "p90_kw", "made_at"}, []),
    ("allocation_runs", {"run_id": str, "kind": str, "day": str, "window_start": str, "window_end": str,
                         "publication_id": str, "run_at": str, "summary": str},
     "run_id", {"kind", "window_start", "window_end", "run_at", "summary"}, []),
    ("allocation_events", {"connection_point_id": str, "kind": str, "event_id": str, "updated_at": str},
     ("connection_point_id", "kind"), {"event_id", "updated_at"},
     [("connection_point_id", "households", "connection_point_id"), ("event_id", "signals", "event_id")]),
    # Schema 3: operator API credentials (only hashes), web sessions and the audit log (security_store).
    ("api_tokens", {"token_id": str, "name": str, "role": str, "secret_sha256": str, "cert_sha256": str,
                    "created_at": str, "created_by": str, "expires_at": str, "revoked_at": str, "revoked_by": str},
     "token_id", {"name", "role", "created_at", "created_by"}, []),
    ("api_sessions", {"session_sha256": str, "token_id": str, "created_at": str, "expires_at": str},
     "session_sha256", {"token_id", "created_at", "expires_at"}, [("token_id", "api_tokens", "token_id")]),
    ("audit_log", {"id": int, "at": str, "actor": str, "action": str, "target": str, "outcome": str, "detail": str},
     "id", {"at", "actor", "action", "outcome", "detail"}, []),
    # Schema 4: performance contracts (performance_store): what the HEMS reported, what the planner could not honour.
    ("capacity_needs", {"connection_point_id": str, "created_at": str, "start_at": str, "end_at": str, "need": str,
                        "received_at": str},
     ("connection_point_id", "created_at", "start_at"), {"end_at", "need", "received_at"},
     [("connection_point_id", "households", "connection_point_id")]),
    ("performance_reports", {"connection_point_id": str, "day_start": str, "day_end": str, "report": str,
                             "created_at": str, "received_at": str},
     ("connection_point_id", "day_start"), {"day_end", "report", "created_at", "received_at"},
     [("connection_point_id", "households", "connection_point_id")]),
    ("need_shortfalls", {"run_id": str, "connection_point_id": str, "interval_start": str, "need_kw": float,
                         "firm_kw": float},
     ("run_id", "connection_point_id", "interval_start"), {"need_kw", "firm_kw"},
     [("run_id", "allocation_runs", "run_id"), ("connection_point_id", "households", "connection_point_id")]),
    # Schema 3: which certificate speaks for which household (dso_server.store.certificates). No foreign key to
    # households: certificates are issued and enrolled before the contracts file is loaded.
    ("ven_certificates", {"fingerprint_sha256": str, "connection_point_id": str, "subject": str, "serial": str,
                          "not_after": str, "enrolled_at": str, "revoked_at": str, "revocation_reason": str},
     "fingerprint_sha256", {"connection_point_id", "subject", "serial", "not_after", "enrolled_at"}, []),
)
_INDEXES = (
    ("vens", ["ven_name"], True),
    ("vens", ["connection_point_id"], True),
    ("signals", ["connection_point_id", "end_at"], False),
    ("signals", ["publication_id"], False),
    ("responses", ["event_id"], False),
    ("responses", ["ven_id", "event_id", "modification_number"], False),
    ("telemetry", ["interval_start"], False),
    ("grid_connection_points", ["feeder_id"], False),
    ("allocation_runs", ["kind", "day"], False),
    ("api_tokens", ["secret_sha256"], True),
    ("api_tokens", ["cert_sha256"], True),
    ("api_sessions", ["token_id"], False),
    ("audit_log", ["at"], False),
    ("audit_log", ["actor", "at"], False),
    ("capacity_needs", ["start_at"], False),
    ("need_shortfalls", ["connection_point_id", "interval_start"], False),
    ("ven_certificates", ["connection_point_id"], False),
)


class DsoStore:
    """Repository over one SQLite database. Raises ``dso_server.errors`` exceptions, never half-writes."""

    def __init__(self, path: str | Path = MEMORY, *, id_factory: Callable[[str], str] = new_id) -> None:
        if not hasattr(Database, "atomic"):  # sqlite-utils 3.x commits inside every write: no safe transactions
            raise RuntimeError("dso_server needs sqlite-utils >= 4.0 (Database.atomic); upgrade sqlite-utils")
        self.path = str(path)
        self._new_id = id_factory
        self.db = Database(self.path)
        self.db.execute("PRAGMA foreign_keys = ON")
        if self.path != MEMORY:
            self.db.enable_wal()
        self._create_schema()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> DsoStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; nested uses become savepoints. Rolls back everything on any exception."""
        with self.db.atomic():
            yield

    def _create_schema(self) -> None:
        version = next(self.db.query("PRAGMA user_version"))["user_version"]
        if version > SCHEMA_VERSION:
            raise SchemaError(f"The database {self.path} has schema version {version}; this server knows only "
                              f"up to {SCHEMA_VERSION}. Use a newer dso-server or another --db file.")
        with self.transaction():
            for name, columns, pk, not_null, foreign_keys in _TABLES:
                self.db.table(name).create(columns, pk=pk, not_null=not_null, foreign_keys=foreign_keys or None,
                                     if_not_exists=True)
            for table, columns, unique in _INDEXES:
                self.db.table(table).create_index(columns, unique=unique, if_not_exists=True)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, params))

    # ------------------------------------------------------------------------------------------ households

    def put_household(self, contract: HouseholdContract, *, group: str | None, now: datetime) -> bool:
        """Add a household or replace its contract and group. True when it was new."""
        created = not self._rows("SELECT 1 FROM households WHERE connection_point_id = ?",
                                 [contract.connection_point_id])
        with self.transaction():
            self.db.table("households").upsert({
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

    def group_members(self, group: str) -> list[str]:
        """The connection point ids of ``group``; UnknownGroup when it has none."""
        rows = self._rows("SELECT connection_point_id FROM households WHERE group_name = ? "
                          "ORDER BY connection_point_id", [group])
        if not rows:
            raise UnknownGroup(group)
        return [row["connection_point_id"] for row in rows]

    def check_households(self, connection_point_ids: Sequence[str], *, field: str = "connection_point_ids") -> None:
        """Raise UnknownHousehold for the first id that names no household (``field[index]`` in the error)."""
        for index, connection_point_id in enumerate(connection_point_ids):
            if not self._rows("SELECT 1 FROM households WHERE connection_point_id = ?", [connection_point_id]):
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
                self.db.table("vens").update(ven_id, {
                    "registration_id": known[0]["registration_id"] or self._new_id("reg"),
                    "last_seen_at": to_text(now),
                    "fingerprint": fingerprint or known[0]["fingerprint"],
                })
            else:
                ven_id = self._new_id("ven")
                self.db.table("vens").insert({
                    "ven_id": ven_id, "ven_name": ven_name, "registration_id": self._new_id("reg"),
                    "connection_point_id": ven_name, "registered_at": to_text(now), "last_seen_at": to_text(now),
                    "fingerprint": fingerprint,
                })
            self.db.execute("DELETE FROM deliveries WHERE ven_id = ?", [ven_id])
        ven = self.ven(ven_id)
        assert ven is not None
        return ven

    def ven(self, ven_id: str) -> Ven | None:
        rows = self._rows("SELECT * FROM vens WHERE ven_id = ?", [ven_id])
        return _ven(rows[0]) if rows else None

    def ven_for(self, connection_point_id: str) -> Ven | None:
        rows = self._rows("SELECT * FROM vens WHERE connection_point_id = ?", [connection_point_id])
        return _ven(rows[0]) if rows else None

    def vens(self) -> list[Ven]:
        return [_ven(row) for row in self._rows("SELECT * FROM vens ORDER BY ven_name")]

    def touch_ven(self, ven_id: str, *, now: datetime) -> None:
        self.db.execute("UPDATE vens SET last_seen_at = ? WHERE ven_id = ?", [to_text(now), ven_id])

    def cancel_registration(self, ven_id: str) -> Ven:
        """The VEN left (oadrCancelPartyRegistration): it must register again before it is served."""
        if self.ven(ven_id) is None:
            raise UnknownVen(ven_id)
        with self.transaction():
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
        publication_id = self._new_id("pub")
        event_ids = []
        with self.transaction():
            for connection_point_id, payload in payloads.items():
                event_id = self._new_id("ev")
                self.db.table("signals").insert({
                    "event_id": event_id, "connection_point_id": connection_point_id,
                    "kind": kind_of(payload).value, "payload": payload.model_dump_json(), "modification_number": 0,
                    "created_at": to_text(now), "modified_at": to_text(now), "cancelled": 0,
                    "publication_id": publication_id, "start_at": to_text(payload.start),
                    "end_at": to_text(payload.end),
                })
                event_ids.append(event_id)
        return Publication(publication_id, tuple(self.signal(event_id) for event_id in event_ids))

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
        ids = list(connection_point_ids)
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            rows = self._rows(f"SELECT * FROM signals WHERE kind = 'bandwidth' AND start_at < ? AND end_at > ? "
                              f"AND connection_point_id IN ({marks}) ORDER BY start_at, created_at, rowid",
                              [to_text(until), to_text(since), *part])
            for row in rows:
                out[row["connection_point_id"]].append(_signal(row))
        return out

    def publication(self, publication_id: str) -> Publication:
        signals = self.signals(publication_id=publication_id)
        if not signals:
            raise UnknownPublication(publication_id)
        return Publication(publication_id, tuple(sorted(signals, key=lambda s: s.connection_point_id)))

    def modify_signal(self, event_id: str, payload: SignalPayload, *, now: datetime) -> Signal:
        """Replace what the event says; modificationNumber + 1. The same payload again changes nothing."""
        signal = self.signal(event_id)
        check_move(signal, SignalAction.MODIFY, now)
        if signal.kind is not kind_of(payload):
            raise WrongSignalKind(event_id, signal.kind.value, kind_of(payload).value)
        if payload == signal.payload:
            return signal
        with self.transaction():
            self.db.table("signals").update(event_id, {
                "payload": payload.model_dump_json(), "modification_number": signal.modification_number + 1,
                "modified_at": to_text(now), "start_at": to_text(payload.start), "end_at": to_text(payload.end),
            })
        return self.signal(event_id)

    def cancel_signal(self, event_id: str, *, now: datetime) -> Signal:
        """Cancel the event; modificationNumber + 1. A cancelled event is never modified again."""
        signal = self.signal(event_id)
        check_move(signal, SignalAction.CANCEL, now)
        with self.transaction():
            self.db.table("signals").update(event_id, {
                "cancelled": 1, "modification_number": signal.modification_number + 1, "modified_at": to_text(now),
            })
        return self.signal(event_id)

    def modify_publication(
        self, publication_id: str, payload: SignalPayload, *, now: datetime
    ) -> tuple[Publication, list[IllegalSignalChange]]:
        """Modify every open event of a publication (one transaction). Cancelled or ended events are skipped and
        returned with the reason; when no event can be modified, the first reason is raised."""
        return self._change_publication(publication_id, now, lambda event_id: self.modify_signal(
            event_id, payload, now=now))

    def cancel_publication(
        self, publication_id: str, *, now: datetime
    ) -> tuple[Publication, list[IllegalSignalChange]]:
        """Cancel every open event of a publication (one transaction); see ``modify_publication``."""
        return self._change_publication(publication_id, now, lambda event_id: self.cancel_signal(event_id, now=now))

    def _change_publication(
        self, publication_id: str, now: datetime, change: Callable[[str], Signal]
    ) -> tuple[Publication, list[IllegalSignalChange]]:
        publication = self.publication(publication_id)
        skipped: list[IllegalSignalChange] = []
        with self.transaction():
            for signal in publication.signals:
                try:
                    change(signal.event_id)
                except IllegalSignalChange as error:
                    skipped.append(error)
            if len(skipped) == len(publication.signals):
                raise skipped[0]
        return self.publication(publication_id), skipped

    # ------------------------------------------------------------------------------------------ deliveries

    def delivered(self, ven_id: str) -> frozenset[DeliveryKey] | None:
        """What the last oadrDistributeEvent to this VEN carried; None when nothing since it registered."""
        rows = self._rows("SELECT delivered FROM deliveries WHERE ven_id = ?", [ven_id])
        if not rows:
            return None
        return frozenset((str(e), int(m), str(s)) for e, m, s in json.loads(rows[0]["delivered"]))

    def record_delivery(self, ven_id: str, keys: frozenset[DeliveryKey], *, now: datetime) -> None:
        self.db.table("deliveries").upsert(
            {"ven_id": ven_id, "delivered": json.dumps(sorted(keys)), "delivered_at": to_text(now)}, pk="ven_id")

    # ------------------------------------------------------------------------------------------- responses

    def record_responses(self, ven_id: str, responses: Iterable[EventResponse], *, now: datetime) -> list[str]:
        """Store the VEN's eventResponses as received (one transaction). Returns the event ids it ignored
        because they name no event of this VEN's household."""
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
                self.db.table("responses").insert({
                    "ven_id": ven_id, "event_id": response.event_id,
                    "modification_number": response.modification_number, "opt_type": response.opt_type,
                    "response_code": response.response_code, "response_description": response.response_description,
                    "received_at": to_text(now),
                })
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
                self.db.table("report_offers").upsert({
                    "ven_id": ven_id, "report_specifier_id": specifier_id, "report_name": report_name,
                    "r_ids": json.dumps(r_ids), "offered_at": to_text(now),
                }, pk=("ven_id", "report_specifier_id"))
            for request_id, specifier_id in requests:
                self.db.table("report_requests").insert({
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
                    self.db.table("telemetry").upsert_all([
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
                    self.db.table("plans").upsert({
                        "connection_point_id": connection_point_id, "created_at": to_text(report.created_at),
                        "plan": report.model_dump_json(), "received_at": received,
                    }, pk=("connection_point_id", "created_at"))
                else:
                    self.db.table("comfort").upsert({
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

    def last_telemetry_start(self, connection_point_id: str) -> datetime | None:
        rows = self._rows("SELECT MAX(interval_start) AS last FROM telemetry WHERE connection_point_id = ?",
                          [connection_point_id])
        return _maybe(rows[0]["last"])

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
