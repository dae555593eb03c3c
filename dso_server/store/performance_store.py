"""Performance contracts in the DSO's store (tables of schema 4) and one household's data as a whole.

* ``capacity_needs``: every need a HEMS reported (one row per need, keyed by when it was made and where it starts:
  a HEMS may make the rest of today's and tomorrow's at one moment). The need *in force*
  for an interval, as of a moment, is the interval's value in the latest need made and received before it
  (``needs_in_force``): what the planner allocates for, and what settlement judges the guarantee by.
* ``performance_reports``: one daily verdict per household and local day (a later one replaces it).
* ``need_shortfalls``: per allocation run, each interval in which a household's firm limit fell short of its need,
  with both values: which contracts could not be honoured and by how much.

Household data as a whole: ``household_data`` is everything the DSO holds about one connection point (GDPR access),
``erase_household`` removes it (GDPR erasure; the caller records it in the audit log), and ``delete_before``
removes what is past its retention (``dso_server.retention``). Plain SQL with ``?`` parameters, so it ports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dso_server.store.changes import CERTIFICATE, SIGNALS, VEN, record_changes
from dso_server.store.sqlite import DsoStore, from_text, to_text, where_clause
from protocol import CapacityNeed, PerformanceReport


@dataclass(frozen=True)
class StoredNeed:
    connection_point_id: str
    need: CapacityNeed
    received_at: datetime


@dataclass(frozen=True)
class StoredPerformance:
    connection_point_id: str
    report: PerformanceReport
    received_at: datetime


@dataclass(frozen=True)
class Shortfall:
    run_id: str
    connection_point_id: str
    interval_start: datetime
    need_kw: float
    firm_kw: float

    @property
    def shortfall_kw(self) -> float:
        return self.need_kw - self.firm_kw


HOUSEHOLD_TABLES: tuple[tuple[str, str], ...] = (
    # (table, the column naming the connection point) in the order erasure must delete them (children first)
    ("need_shortfalls", "connection_point_id"),
    ("performance_reports", "connection_point_id"),
    ("capacity_needs", "connection_point_id"),
    ("comfort", "connection_point_id"),
    ("plans", "connection_point_id"),
    ("telemetry", "connection_point_id"),
    ("allocation_events", "connection_point_id"),
    ("ven_certificates", "connection_point_id"),
    ("grid_connection_points", "ean"),
)
"""Tables keyed directly by the connection point; those reached through its VEN or its signals come in
``household_data`` and ``erase_household`` by join."""
RETAINED: tuple[tuple[str, str], ...] = (
    ("telemetry", "interval_start"),
    ("plans", "created_at"),
    ("comfort", "measured_at"),
    ("capacity_needs", "end_at"),
    ("performance_reports", "day_end"),
)
"""What households sent, with the column that dates it: deleted past the retention (``delete_before``)."""


class PerformanceStore:
    def __init__(self, store: DsoStore) -> None:
        self.store = store

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self.store.db.query(sql, params))

    # ------------------------------------------------------------------------------------------------ needs

    def needs(self, connection_point_id: str | None = None, *, since: datetime | None = None,
              until: datetime | None = None) -> list[StoredNeed]:
        """Needs overlapping [since, until), oldest made first."""
        where, params = where_clause(("connection_point_id = ?", connection_point_id),
                                     ("end_at > ?", to_text(since) if since is not None else None),
                                     ("start_at < ?", to_text(until) if until is not None else None))
        rows = self._rows(f"SELECT * FROM capacity_needs{where} ORDER BY created_at, start_at, connection_point_id",
                          params)
        return [StoredNeed(r["connection_point_id"], CapacityNeed.model_validate_json(r["need"]),
                           from_text(r["received_at"])) for r in rows]

    def needs_in_force(self, connection_point_ids: Iterable[str], *, since: datetime, until: datetime,
                       as_of: datetime | None = None) -> dict[str, dict[datetime, float]]:
        """Per connection point and interval in [since, until): the need of the latest need made (and received)
        by ``as_of`` that covers it. Households without one are left out."""
        wanted = set(connection_point_ids)
        out: dict[str, dict[datetime, float]] = {}
        for stored in self.needs(since=since, until=until):
            if stored.connection_point_id not in wanted:
                continue
            if as_of is not None and (stored.need.created_at > as_of or stored.received_at > as_of):
                continue
            values = out.setdefault(stored.connection_point_id, {})
            for interval in stored.need.intervals:
                if since <= interval.start < until:
                    values[interval.start] = interval.import_kw  # later needs come later: they win
        return out

    # ------------------------------------------------------------------------------------------ verdicts

    def performance_reports(self, connection_point_id: str | None = None, *, since: datetime | None = None,
                            until: datetime | None = None) -> list[StoredPerformance]:
        """Daily reports of days starting in [since, until), by day then connection point."""
        where, params = where_clause(("connection_point_id = ?", connection_point_id),
                                     ("day_start >= ?", to_text(since) if since is not None else None),
                                     ("day_start < ?", to_text(until) if until is not None else None))
        rows = self._rows(f"SELECT * FROM performance_reports{where} ORDER BY day_start, connection_point_id", params)
        return [StoredPerformance(r["connection_point_id"], PerformanceReport.model_validate_json(r["report"]),
                                  from_text(r["received_at"])) for r in rows]

    # ----------------------------------------------------------------------------------------- shortfalls

    def record_shortfalls(self, run_id: str, shortfalls: Iterable[tuple[str, datetime, float, float]]) -> int:
        """(connection point, interval start, need, firm) of one run; returns how many."""
        count = 0
        for ean, start, need, firm in shortfalls:
            self.store.db.execute("INSERT INTO need_shortfalls (run_id, connection_point_id, interval_start, need_kw, "
                                  "firm_kw) VALUES (?, ?, ?, ?, ?)", [run_id, ean, to_text(start), need, firm])
            count += 1
        return count

    def shortfalls(self, *, run_id: str | None = None, connection_point_id: str | None = None,
                   since: datetime | None = None, until: datetime | None = None) -> list[Shortfall]:
        where, params = where_clause(("run_id = ?", run_id), ("connection_point_id = ?", connection_point_id),
                                     ("interval_start >= ?", to_text(since) if since is not None else None),
                                     ("interval_start < ?", to_text(until) if until is not None else None))
        rows = self._rows(f"SELECT * FROM need_shortfalls{where} ORDER BY interval_start, connection_point_id", params)
        return [Shortfall(r["run_id"], r["connection_point_id"], from_text(r["interval_start"]), r["need_kw"],
                          r["firm_kw"]) for r in rows]

    # ----------------------------------------------------------------------------------- household as a whole

    def household_data(self, connection_point_id: str) -> dict[str, list[dict[str, Any]]]:
        """Every row the store holds about one connection point, by table (JSON columns parsed). Raises
        UnknownHousehold for an EAN the store does not know."""
        self.store.household(connection_point_id)
        data: dict[str, list[dict[str, Any]]] = {
            "households": self._rows("SELECT * FROM households WHERE connection_point_id = ?", [connection_point_id]),
        }
        for table, column in reversed(HOUSEHOLD_TABLES):
            data[table] = self._rows(f"SELECT * FROM {table} WHERE {column} = ?", [connection_point_id])
        vens = "SELECT ven_id FROM vens WHERE connection_point_id = ?"
        data["vens"] = self._rows("SELECT * FROM vens WHERE connection_point_id = ?", [connection_point_id])
        for table in ("deliveries", "report_offers", "report_requests", "responses"):
            data[table] = self._rows(f"SELECT * FROM {table} WHERE ven_id IN ({vens})", [connection_point_id])
        data["signals"] = self._rows("SELECT * FROM signals WHERE connection_point_id = ?", [connection_point_id])
        data["audit_log"] = self._rows("SELECT * FROM audit_log WHERE target = ? OR detail LIKE ? ORDER BY id",
                                       [connection_point_id, f"%{connection_point_id}%"])
        for rows in data.values():
            for row in rows:
                for key in ("contract", "payload", "need", "report", "plan", "status", "detail", "r_ids", "delivered"):
                    if isinstance(row.get(key), str):
                        row[key] = _json(row[key])
        return data

    def erase_household(self, connection_point_id: str) -> dict[str, int]:
        """Delete everything the store holds about one connection point, in one transaction; rows per table.
        The audit log keeps its entries (the record of who changed what, the erasure included)."""
        self.store.household(connection_point_id)
        deleted: dict[str, int] = {}
        execute = self.store.db.execute
        vens = "SELECT ven_id FROM vens WHERE connection_point_id = ?"
        signals = "SELECT event_id FROM signals WHERE connection_point_id = ?"
        with self.store.transaction():
            for table, column in HOUSEHOLD_TABLES:
                deleted[table] = execute(f"DELETE FROM {table} WHERE {column} = ?", [connection_point_id])
            deleted["responses"] = execute(f"DELETE FROM responses WHERE ven_id IN ({vens}) OR event_id IN "
                                           f"({signals})", [connection_point_id, connection_point_id])
            for table in ("deliveries", "report_offers", "report_requests"):
                deleted[table] = execute(f"DELETE FROM {table} WHERE ven_id IN ({vens})",
                                         [connection_point_id])
            deleted["signals"] = execute("DELETE FROM signals WHERE connection_point_id = ?",
                                         [connection_point_id])
            deleted["vens"] = execute("DELETE FROM vens WHERE connection_point_id = ?", [connection_point_id])
            deleted["households"] = execute("DELETE FROM households WHERE connection_point_id = ?",
                                            [connection_point_id])
            # VTN workers' caches drop what they held of it at their next change-log read.
            for kind in (SIGNALS, VEN, CERTIFICATE):
                record_changes(self.store.db, kind, [connection_point_id], origin=self.store.origin)
        return {table: count for table, count in deleted.items() if count}

    def delete_before(self, cutoff: datetime) -> dict[str, int]:
        """Delete what households sent about moments before ``cutoff`` (retention); rows per table."""
        deleted = {}
        with self.store.transaction():
            for table, column in RETAINED:
                count = self.store.db.execute(f"DELETE FROM {table} WHERE {column} < ?", [to_text(cutoff)])
                if count:
                    deleted[table] = count
        return deleted


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def shortfall_rows(eans: Sequence[str], starts: Sequence[datetime], need_kw: Any, firm_kw: Any,
                   shortfall_kw: Any) -> list[tuple[str, datetime, float, float]]:
    """(connection point, interval start, need, firm) where ``shortfall_kw`` (households x intervals) is positive."""
    rows = []
    for h, ean in enumerate(eans):
        for i, start in enumerate(starts):
            if shortfall_kw[h, i] > 0:
                rows.append((ean, start, round(float(need_kw[h, i]), 3), round(float(firm_kw[h, i]), 3)))
    return rows
