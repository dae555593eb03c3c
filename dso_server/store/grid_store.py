"""The grid, its forecasts and the allocation runs in the DSO's SQLite file (tables of schema 2, see ``store``).

How the grid and the households relate: the ``households`` table holds each connection point's contract (the
commercial side: contracted maxima, failsafe, comfort) and is what the VTN serves; the grid adds where the
connection point hangs (feeder, node) and what the allocation needs beyond the contract (section 14a devices,
annual consumption for the cold start). Every connection point of a grid is a household:

* a connection point without a household gets one when the grid is saved, with a contract built from its row
  (its contracted maxima; failsafe limits of 4.2 kW, or its section 14a guarantee when higher, capped by the
  maxima; failsafe duration 2 h) and the feeder id as its group;
* a connection point whose household exists must agree with its contract on both contracted maxima, otherwise
  the grid is refused (``GridConflict``) and nothing is stored.

Saving a grid replaces the previous grid as a whole, in one transaction. Households of an earlier grid stay (their
contracts are not the grid's to delete); they are simply no longer under a transformer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from dso_server.capacity.grid import ConnectionPoint, Feeder, Grid, Line, Node, Transformer
from dso_server.errors import Conflict
from dso_server.records import Household
from dso_server.store.sqlite import DsoStore, from_text, new_id, to_text, where_clause
from protocol import HouseholdContract

DEFAULT_FAILSAFE_KW = 4.2
DEFAULT_FAILSAFE_DURATION_S = 7200


class GridConflict(Conflict):
    """The grid disagrees with what the store holds (a contract); nothing was stored."""


@dataclass(frozen=True)
class SavedGrid:
    grid: Grid
    created_households: tuple[str, ...]


@dataclass(frozen=True)
class ForecastRow:
    interval_start: datetime
    kind: str
    p10_kw: float
    p50_kw: float
    p90_kw: float
    made_at: datetime


@dataclass(frozen=True)
class AllocationRun:
    run_id: str
    kind: str
    day: str | None
    window_start: datetime
    window_end: datetime
    publication_id: str | None
    run_at: datetime
    summary: dict[str, Any]
    status: str = "ok"
    """"ok", or "failed" with ``error`` saying why (the run published nothing then)."""
    error: str | None = None
    worker: str | None = None
    """The server process that ran it (``DsoStore.origin``)."""


def contract_for(cp: ConnectionPoint) -> HouseholdContract:
    """The contract a connection point gets when the grid creates its household."""
    return HouseholdContract(
        connection_point_id=cp.ean,
        contracted_max_import_kw=cp.contracted_max_import_kw,
        contracted_max_export_kw=cp.contracted_max_export_kw,
        failsafe_import_kw=min(max(DEFAULT_FAILSAFE_KW, cp.guaranteed_min_import_kw), cp.contracted_max_import_kw),
        failsafe_export_kw=min(DEFAULT_FAILSAFE_KW, cp.contracted_max_export_kw),
        failsafe_duration_s=DEFAULT_FAILSAFE_DURATION_S,
    )


def check_against_households(grid: Grid, households: Mapping[str, Household]) -> list[str]:
    """Every connection point whose contracted maxima differ from its household's contract."""
    problems = []
    for index, cp in enumerate(grid.connection_points):
        known = households.get(cp.ean)
        if known is None:
            continue
        for field in ("contracted_max_import_kw", "contracted_max_export_kw"):
            mine, theirs = getattr(cp, field), getattr(known.contract, field)
            if abs(mine - theirs) > 1e-9:
                problems.append(f"connection_point #{index} {cp.ean}: {field} {mine:g} differs from the household's "
                                f"contract ({theirs:g}); change the contract or the grid file")
    return problems


class GridStore:
    """Grid, forecasts and allocation bookkeeping over a ``DsoStore`` (same file, same transactions)."""

    def __init__(self, store: DsoStore) -> None:
        self.store = store
        self.db = store.db

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self.db.query(sql, params)

    # ------------------------------------------------------------------------------------------------ grid

    def save_grid(self, grid: Grid, *, now: datetime, source: str) -> SavedGrid:
        """Replace the stored grid by ``grid`` and add missing households (one transaction, all or nothing)."""
        problems = grid.validate_grid()
        if problems:
            raise GridConflict("invalid grid:\n" + "\n".join(map(str, problems)), field="grid")
        households = {h.connection_point_id: h for h in self.store.households()}
        problems = check_against_households(grid, households)
        if problems:
            raise GridConflict("\n".join(problems), field="connection_point")
        created = []
        with self.store.transaction():
            for table in ("grid_connection_points", "grid_lines", "grid_nodes", "grid_feeders", "grid_transformers",
                          "grid_meta"):
                self.db.execute(f"DELETE FROM {table}")
            feeder_ids = {f.id: f for f in grid.feeders}
            for cp in grid.connection_points:
                if cp.ean not in households:
                    self.store.put_household(contract_for(cp), group=feeder_ids[cp.feeder_id].id, now=now)
                    created.append(cp.ean)
            for table, items in (("grid_transformers", grid.transformers), ("grid_feeders", grid.feeders),
                                 ("grid_nodes", grid.nodes), ("grid_lines", grid.lines),
                                 ("grid_connection_points", grid.connection_points)):
                self.db.insert(table, [{"position": i, **item.model_dump()} for i, item in enumerate(items)])
            self.db.insert("grid_meta", [{"key": "source", "value": source},
                                         {"key": "loaded_at", "value": to_text(now)}])
        return SavedGrid(grid, tuple(created))

    def grid(self) -> Grid | None:
        """The stored grid, or None when none was loaded."""
        transformers = self._rows("SELECT * FROM grid_transformers ORDER BY position")
        if not transformers:
            return None

        def clean(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: v for k, v in row.items() if k != "position" and v is not None} for row in rows]

        def read(table: str, model: type[Any]) -> tuple[Any, ...]:
            return tuple(model.model_validate(r) for r in clean(self._rows(f"SELECT * FROM {table} ORDER BY position")))

        return Grid(transformers=tuple(Transformer.model_validate(r) for r in clean(transformers)),
                    feeders=read("grid_feeders", Feeder),
                    connection_points=read("grid_connection_points", ConnectionPoint),
                    nodes=read("grid_nodes", Node), lines=read("grid_lines", Line))

    def grid_source(self) -> tuple[str, datetime] | None:
        meta = {r["key"]: r["value"] for r in self._rows("SELECT * FROM grid_meta")}
        if "source" not in meta:
            return None
        return meta["source"], from_text(meta["loaded_at"])

    # ------------------------------------------------------------------------------------------- telemetry

    def transformer_load(self, *, since: datetime, until: datetime) -> dict[str, dict[datetime, tuple[float, int]]]:
        """Per transformer and interval start: (sum of import - export of its households, households reporting)."""
        rows = self._rows(
            "SELECT f.transformer_id AS tid, t.interval_start AS start, SUM(t.import_kw - t.export_kw) AS net_kw, "
            "COUNT(*) AS n FROM telemetry t JOIN grid_connection_points c ON c.ean = t.connection_point_id "
            "JOIN grid_feeders f ON f.id = c.feeder_id WHERE t.interval_start >= ? AND t.interval_start < ? "
            "GROUP BY f.transformer_id, t.interval_start", [to_text(since), to_text(until)])
        out: dict[str, dict[datetime, tuple[float, int]]] = {}
        for row in rows:
            out.setdefault(row["tid"], {})[from_text(row["start"])] = (float(row["net_kw"]), int(row["n"]))
        return out

    def household_energy(self, *, since: datetime, until: datetime) -> dict[str, float]:
        """Net imported energy share basis per connection point of the grid: sum of import - export (kW x intervals)."""
        rows = self._rows(
            "SELECT t.connection_point_id AS cp, SUM(t.import_kw - t.export_kw) AS net FROM telemetry t "
            "JOIN grid_connection_points c ON c.ean = t.connection_point_id "
            "WHERE t.interval_start >= ? AND t.interval_start < ? GROUP BY t.connection_point_id",
            [to_text(since), to_text(until)])
        return {row["cp"]: float(row["net"]) for row in rows}

    def last_reports(self) -> dict[str, datetime | None]:
        """Latest telemetry interval start per connection point of the grid (None: never reported)."""
        rows = self._rows("SELECT c.ean AS cp, MAX(t.interval_start) AS last FROM grid_connection_points c "
                          "LEFT JOIN telemetry t ON t.connection_point_id = c.ean GROUP BY c.ean")
        return {row["cp"]: from_text(row["last"]) if row["last"] else None for row in rows}

    # ------------------------------------------------------------------------------------------- forecasts

    def put_forecast(self, transformer_id: str, kind: str, starts: Sequence[datetime], p10_kw: np.ndarray,
                     p50_kw: np.ndarray, p90_kw: np.ndarray, *, now: datetime) -> None:
        self.db.upsert("forecasts", [
            {"transformer_id": transformer_id, "interval_start": to_text(s), "kind": kind, "p10_kw": float(a),
             "p50_kw": float(b), "p90_kw": float(c), "made_at": to_text(now)}
            for s, a, b, c in zip(starts, p10_kw, p50_kw, p90_kw, strict=True)
        ], pk=("transformer_id", "interval_start", "kind"))

    def forecasts(self, transformer_id: str, *, since: datetime, until: datetime) -> list[ForecastRow]:
        rows = self._rows("SELECT * FROM forecasts WHERE transformer_id = ? AND interval_start >= ? AND "
                          "interval_start < ? ORDER BY interval_start, kind",
                          [transformer_id, to_text(since), to_text(until)])
        return [ForecastRow(from_text(r["interval_start"]), r["kind"], r["p10_kw"], r["p50_kw"], r["p90_kw"],
                            from_text(r["made_at"])) for r in rows]

    # ------------------------------------------------------------------------------------- allocation runs

    def record_run(self, *, kind: str, day: str | None, window_start: datetime, window_end: datetime,
                   publication_id: str | None, now: datetime, summary: Mapping[str, Any],
                   error: str | None = None) -> AllocationRun:
        """Record a run; with ``error`` a failed one (status "failed"), which published nothing."""
        run_id = new_id("run")
        self.db.insert("allocation_runs", {
            "run_id": run_id, "kind": kind, "day": day, "window_start": to_text(window_start),
            "window_end": to_text(window_end), "publication_id": publication_id, "run_at": to_text(now),
            "summary": json.dumps(dict(summary), allow_nan=False), "status": "failed" if error else "ok",
            "error": error, "worker": self.store.origin,
        })
        return self._runs(" WHERE run_id = ?", [run_id], 1)[0]

    def runs(self, *, kind: str | None = None, day: str | None = None, status: str | None = None,
             limit: int = 100) -> list[AllocationRun]:
        """Runs, newest first; ``status`` "ok" or "failed" to see only those."""
        where, params = where_clause(("kind = ?", kind), ("day = ?", day), ("status = ?", status))
        return self._runs(where, params, limit)

    def _runs(self, where: str, params: list[Any], limit: int) -> list[AllocationRun]:
        sql = "SELECT * FROM allocation_runs" + where
        rows = self._rows(sql + " ORDER BY run_at DESC, rowid DESC LIMIT ?", [*params, limit])
        return [AllocationRun(r["run_id"], r["kind"], r["day"], from_text(r["window_start"]),
                              from_text(r["window_end"]), r["publication_id"], from_text(r["run_at"]),
                              json.loads(r["summary"]), r["status"], r["error"], r["worker"]) for r in rows]

    def allocation_event(self, connection_point_id: str, kind: str) -> str | None:
        rows = self._rows("SELECT event_id FROM allocation_events WHERE connection_point_id = ? AND kind = ?",
                          [connection_point_id, kind])
        return rows[0]["event_id"] if rows else None

    def allocation_events(self, kind: str) -> dict[str, str]:
        """connection point id -> its allocation event of ``kind`` (every household that has one)."""
        rows = self._rows("SELECT connection_point_id, event_id FROM allocation_events WHERE kind = ?", [kind])
        return {row["connection_point_id"]: row["event_id"] for row in rows}

    def set_allocation_event(self, connection_point_id: str, kind: str, event_id: str, *, now: datetime) -> None:
        self.set_allocation_events(kind, {connection_point_id: event_id}, now=now)

    def set_allocation_events(self, kind: str, events: Mapping[str, str], *, now: datetime) -> None:
        """Make these (connection point id -> event id) the households' allocation events of ``kind``."""
        self.db.upsert("allocation_events", [
            {"connection_point_id": cp, "kind": kind, "event_id": event_id, "updated_at": to_text(now)}
            for cp, event_id in events.items()], pk=("connection_point_id", "kind"))
