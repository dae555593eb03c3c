"""The per-step time series of every run, in one SQLite file, so that every KPI can be recomputed without this
package (``tests/test_feeder_study.py`` does, with plain SQL and numpy).

Tables (times in seconds from the run's start; ``row`` is the household's position in the grid):

    runs           run_id, label, strategy, week, scenario, grid, start (ISO UTC), kpi_start, end, substep_s,
                   households, rating_kva, seed, backend, wall_s
    households     run_id, row, ean, node_id, persons, annual_kwh, heat_pump_kw, ev_kwh, ev_kwh_per_km, pv_kwp,
                   battery_kwh, comfort_min_c, comfort_max_c, required_km, description
    household_step run_id, row, step, net_kw, indoor_c     (indoor NULL without a heat pump)
    grid_step      run_id, step, t_s, transformer_kw, transformer_loading, u_min_pu, u_max_pu, line_loading_max,
                   u_min_node
    prices         run_id, row, interval, import_eur_per_kwh, export_eur_per_kwh
    limits         run_id, row, interval, firm_kw, limit_kw          (what the DSO published; allocating runs)
    needs          run_id, row, interval, need_kw                    (capacity need in force; performance runs)
    verdicts       run_id, row, day_start (ISO UTC), degree_hours, degree_hours_limit_below_need, report (JSON)
                                                                     (each HEMS's daily performance verdict)
    ev_departures  run_id, row, at (ISO UTC), range_km, soc_kwh
    hems_days      run_id, row, day, cost_eur, degree_hours          (each HEMS's own KPI tracker)
    kpis           run_id, name, value                                (``feeder_twin.kpi``, as printed)
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np

from feeder_twin.kpi import Kpis
from feeder_twin.runner import RunResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run_id INTEGER PRIMARY KEY, label TEXT NOT NULL, strategy TEXT NOT NULL,
    week TEXT NOT NULL, scenario TEXT NOT NULL, grid TEXT NOT NULL, start TEXT NOT NULL, kpi_start TEXT NOT NULL,
    end TEXT NOT NULL, substep_s REAL NOT NULL, households INTEGER NOT NULL, rating_kva REAL NOT NULL,
    seed INTEGER NOT NULL, backend TEXT NOT NULL, wall_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS households (run_id INTEGER NOT NULL REFERENCES runs, row INTEGER NOT NULL,
    ean TEXT NOT NULL, node_id TEXT, persons INTEGER, annual_kwh REAL, heat_pump_kw REAL, ev_kwh REAL,
    ev_kwh_per_km REAL, pv_kwp REAL, battery_kwh REAL, comfort_min_c REAL, comfort_max_c REAL, required_km REAL,
    description TEXT, PRIMARY KEY (run_id, row));
CREATE TABLE IF NOT EXISTS household_step (run_id INTEGER NOT NULL, row INTEGER NOT NULL, step INTEGER NOT NULL,
    net_kw REAL NOT NULL, indoor_c REAL, PRIMARY KEY (run_id, row, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grid_step (run_id INTEGER NOT NULL, step INTEGER NOT NULL, t_s REAL NOT NULL,
    transformer_kw REAL NOT NULL, transformer_loading REAL NOT NULL, u_min_pu REAL NOT NULL, u_max_pu REAL NOT NULL,
    line_loading_max REAL NOT NULL, u_min_node INTEGER NOT NULL, PRIMARY KEY (run_id, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS prices (run_id INTEGER NOT NULL, row INTEGER NOT NULL, interval INTEGER NOT NULL,
    import_eur_per_kwh REAL NOT NULL, export_eur_per_kwh REAL NOT NULL,
    PRIMARY KEY (run_id, row, interval)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS limits (run_id INTEGER NOT NULL, row INTEGER NOT NULL, interval INTEGER NOT NULL,
    firm_kw REAL, limit_kw REAL, PRIMARY KEY (run_id, row, interval)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS needs (run_id INTEGER NOT NULL, row INTEGER NOT NULL, interval INTEGER NOT NULL,
    need_kw REAL NOT NULL, PRIMARY KEY (run_id, row, interval)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verdicts (run_id INTEGER NOT NULL, row INTEGER NOT NULL, day_start TEXT NOT NULL,
    degree_hours REAL NOT NULL, degree_hours_limit_below_need REAL NOT NULL, report TEXT NOT NULL,
    PRIMARY KEY (run_id, row, day_start));
CREATE TABLE IF NOT EXISTS ev_departures (run_id INTEGER NOT NULL, row INTEGER NOT NULL, at TEXT NOT NULL,
    range_km REAL NOT NULL, soc_kwh REAL NOT NULL, PRIMARY KEY (run_id, row, at));
CREATE TABLE IF NOT EXISTS hems_days (run_id INTEGER NOT NULL, row INTEGER NOT NULL, day TEXT NOT NULL,
    cost_eur REAL NOT NULL, degree_hours REAL NOT NULL, PRIMARY KEY (run_id, row, day));
CREATE TABLE IF NOT EXISTS kpis (run_id INTEGER NOT NULL, name TEXT NOT NULL, value, PRIMARY KEY (run_id, name));
"""


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class SeriesStore:
    """Writes runs into one SQLite file (appending: a study's runs share it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SeriesStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def write(self, result: RunResult, kpis: Kpis) -> int:
        """Store one run and its KPIs in one transaction; the run's id."""
        spec = result.spec
        period = spec.period
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO runs (label, strategy, week, scenario, grid, start, kpi_start, end, substep_s, "
                "households, rating_kva, seed, backend, wall_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [spec.label, spec.strategy.name, period.week.name, spec.scenario, spec.grid_name,
                 period.start.isoformat(), period.kpi_start.isoformat(), period.end.isoformat(), spec.substep_s,
                 len(result.households), result.transformer_rating_kva, spec.seed, result.backend, result.wall_s])
            run_id = int(cursor.lastrowid or 0)
            self.db.executemany(
                "INSERT INTO households VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(run_id, row, h.ean, h.node_id, h.persons, h.annual_kwh,
                  h.heat_pump.max_electric_kw if h.heat_pump else None, h.ev.capacity_kwh if h.ev else None,
                  h.ev.kwh_per_km if h.ev else None, h.pv_kwp, h.battery.capacity_kwh if h.battery else None,
                  h.contract.comfort.comfort_min_c, h.contract.comfort.comfort_max_c,
                  h.contract.comfort.ev_required_range_km, h.describe())
                 for row, h in enumerate(result.households)])
            n_h, n_s = result.net_kw.shape
            self.db.executemany(
                "INSERT INTO household_step VALUES (?,?,?,?,?)",
                ((run_id, row, step, float(result.net_kw[row, step]), _number(result.indoor_c[row, step]))
                 for row in range(n_h) for step in range(n_s)))
            self.db.executemany(
                "INSERT INTO grid_step VALUES (?,?,?,?,?,?,?,?,?)",
                ((run_id, step, float(result.step_start[step]), float(result.transformer_kw[step]),
                  float(result.transformer_loading[step]), float(result.u_min_pu[step]), float(result.u_max_pu[step]),
                  float(result.line_loading_max[step]), int(result.u_min_node[step])) for step in range(n_s)))
            n_i = result.import_price.shape[1]
            self.db.executemany(
                "INSERT INTO prices VALUES (?,?,?,?,?)",
                ((run_id, row, k, float(result.import_price[row, k]), float(result.export_price[row, k]))
                 for row in range(n_h) for k in range(n_i)))
            if not np.all(np.isnan(result.limit_kw)):
                self.db.executemany(
                    "INSERT INTO limits VALUES (?,?,?,?,?)",
                    ((run_id, row, k, _number(result.firm_kw[row, k]), _number(result.limit_kw[row, k]))
                     for row in range(n_h) for k in range(n_i)))
            if result.need_kw is not None:
                rows, ks = np.nonzero(~np.isnan(result.need_kw))
                self.db.executemany("INSERT INTO needs VALUES (?,?,?,?)",
                                    ((run_id, int(r), int(k), float(result.need_kw[r, k]))
                                     for r, k in zip(rows, ks, strict=True)))
            self.db.executemany("INSERT INTO verdicts VALUES (?,?,?,?,?,?)",
                                [(run_id, row, v.start.isoformat(), v.degree_hours_outside_band,
                                  v.degree_hours_limit_below_need, v.model_dump_json())
                                 for row, v in result.verdicts])
            self.db.executemany("INSERT INTO ev_departures VALUES (?,?,?,?,?)",
                                [(run_id, row, at.isoformat(), km, kwh) for row, at, km, kwh in result.departures])
            self.db.executemany(
                "INSERT INTO hems_days VALUES (?,?,?,?,?)",
                [(run_id, row, day, summary.hems_cost_eur[day], summary.hems_degree_hours[day])
                 for row, summary in enumerate(result.summaries) for day in summary.hems_cost_eur])
            self.db.executemany("INSERT INTO kpis VALUES (?,?,?)",
                                [(run_id, name, value) for name, value in kpis.row().items()])
        return run_id
