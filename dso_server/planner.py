"""The DSO's planning runs over the store: forecasts from telemetry, the day-ahead firm and the near-real-time
non-firm allocation, published through the store's normal publish / modify path.

Theory of operation
-------------------
* **Day-ahead firm run** (``run_day_ahead``): once per local day, at ``day_ahead_time`` (default 14:00
  Europe/Amsterdam) for the next local day. It forecasts each transformer's load (p10/p50/p90, ``forecast``),
  allocates firm import and export limits per household (``allocation.allocate_envelopes``; with a grid model
  reduced by ``powerflow`` until voltages and line currents are within limits), stores the forecast, and
  publishes one firm bandwidth per household for the whole day (one publication per day). A day that already
  has its firm publication is never published again (a restart does not stack a second one); a server that
  starts after 14:00, or in the middle of a day without one, catches up at once.
* **Near-real-time non-firm run** (``run_near_real_time``): every ``near_real_time_interval_s`` (default 300 s).
  It takes the measured transformer load of the last complete interval and the intra-day forecast for the next
  ``non_firm_horizon_intervals`` intervals, and releases what they leave as non-firm import and export per
  household (``allocation.allocate_non_firm_envelopes``), from the next interval on. Each household holds one
  non-firm event per local day, *modified* at every run (modification number + 1; intervals already begun keep
  their values, so compliance judges them by what was in force). Stacking a second non-firm event would be
  wrong anyway: of one firmness the lowest applies (PROFILE §6.1), so a second event could only tighten.

Both runs only happen while a grid is loaded; without one the server behaves as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from dso_server.forecast import (
    QuantileForecast,
    cold_start,
    day_intervals,
    forecast_quantiles,
    history_matrix,
    local_slots,
    measured_days,
)
from dso_server.grid import Grid
from dso_server.grid_store import GridStore
from dso_server.store import DsoStore
from protocol.timebase import INTERVAL


@dataclass(frozen=True)
class PlannerConfig:
    timezone: str = "Europe/Amsterdam"
    day_ahead_time: time = time(14, 0)
    near_real_time_interval_s: float = 300.0
    non_firm_horizon_intervals: int = 8
    forecast_window_days: int = 28
    min_history_days: int = 7
    silent_after_intervals: int = 4
    min_voltage_pu: float = 0.9
    max_voltage_pu: float = 1.1


def _history_days(day: date, window_days: int) -> list[date]:
    return [day - timedelta(days=window_days - i) for i in range(window_days)]


def forecast_slots(store: DsoStore, grid: Grid, *, day: date, now: datetime, config: PlannerConfig
                   ) -> dict[str, QuantileForecast]:
    """Per transformer: the 96-slot forecast of local ``day`` from telemetry before the day (and before ``now``);
    cold start (H25) for a transformer with fewer than ``min_history_days`` measured days, and for slots never
    measured in the window."""
    days = _history_days(day, config.forecast_window_days)
    zone = ZoneInfo(config.timezone)
    since = datetime(days[0].year, days[0].month, days[0].day, tzinfo=zone).astimezone(ZoneInfo("UTC"))
    day_start = day_intervals(day, config.timezone)[0]
    until = min(day_start, now)
    load = GridStore(store).transformer_load(since=since, until=until) if until > since else {}
    t_ids = [t.id for t in grid.transformers]
    cps = {tid: grid.connection_points_of(tid) for tid in t_ids}
    cold = cold_start(day=day, annual_kwh=np.array([sum(c.annual_kwh for c in cps[tid]) for tid in t_ids]),
                      households=np.array([len(cps[tid]) for tid in t_ids], dtype=float))
    history = np.stack([history_matrix({s: v for s, (v, _) in load.get(tid, {}).items()}, days, config.timezone)
                        for tid in t_ids]) if t_ids else np.zeros((0, len(days), 96))
    learned = forecast_quantiles(history_kw=history, history_days=days, target_day=day,
                                 window_days=config.forecast_window_days)
    enough = measured_days(history) >= config.min_history_days
    out = {}
    for i, tid in enumerate(t_ids):
        parts = []
        for cold_q, learned_q in ((cold.p10_kw, learned.p10_kw), (cold.p50_kw, learned.p50_kw),
                                  (cold.p90_kw, learned.p90_kw)):
            row = learned_q[i] if enough[i] else cold_q[i]
            parts.append(np.where(np.isfinite(row), row, cold_q[i]))
        lo, mid, hi = np.sort(np.stack(parts), axis=0)
        out[tid] = QuantileForecast(lo, mid, hi)
    return out


def forecast_for_day(store: DsoStore, grid: Grid, *, day: date, now: datetime, config: PlannerConfig
                     ) -> dict[str, QuantileForecast]:
    """Per transformer: the day-ahead forecast for each interval of local ``day`` (92, 96 or 100 values)."""
    slots = local_slots(day_intervals(day, config.timezone), config.timezone)
    return {tid: fc.take(slots) for tid, fc in forecast_slots(store, grid, day=day, now=now, config=config).items()}


def next_day_ahead_run(now: datetime, config: PlannerConfig) -> datetime:
    """The next moment (UTC) at or after ``now`` when the day-ahead run is due."""
    zone = ZoneInfo(config.timezone)
    local = now.astimezone(zone)
    candidate = datetime.combine(local.date(), config.day_ahead_time, tzinfo=zone)
    if candidate < local:
        candidate = datetime.combine(local.date() + timedelta(days=1), config.day_ahead_time, tzinfo=zone)
    return candidate.astimezone(ZoneInfo("UTC"))


def days_due(now: datetime, config: PlannerConfig) -> Sequence[date]:
    """The local days whose firm allocation should exist by ``now``: today, and tomorrow after day_ahead_time."""
    zone = ZoneInfo(config.timezone)
    local = now.astimezone(zone)
    due = [local.date()]
    if local.time() >= config.day_ahead_time:
        due.append(local.date() + timedelta(days=1))
    return due


__all__ = ["INTERVAL", "PlannerConfig", "days_due", "forecast_for_day", "forecast_slots", "next_day_ahead_run"]
