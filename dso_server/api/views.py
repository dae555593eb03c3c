"""What the operator sees, composed from the store: transformers, a transformer's day, a household's violations.

Read-only; each function reads the store, calls the pure modules (forecast, compliance) and returns plain data
the API encodes as JSON. Days are *local* days of the DSO's time zone (settings ``timezone``, default
Europe/Amsterdam): a transformer's day has 96 quarter-hours, 92 or 100 on the DST change days.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from dso_server.api.performance_views import transformer_needs
from dso_server.capacity.compliance import Violation, find_violations
from dso_server.capacity.forecast import day_intervals
from dso_server.capacity.grid import Grid
from dso_server.capacity.planner import PlannerConfig, forecast_for_day
from dso_server.records import Signal
from dso_server.store.grid_store import GridStore
from dso_server.store.sqlite import DsoStore
from protocol import TelemetryInterval
from protocol.performance import NEED_TOLERANCE_KW
from protocol.signals import CapacityBandwidth, Firmness
from protocol.timebase import INTERVAL


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _num(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def transformers_json(grid: Grid) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for cp in grid.connection_points:
        tid = grid.transformer_of(cp)
        counts[tid] = counts.get(tid, 0) + 1
    return {"transformers": [
        {"id": t.id, "rating_kva": t.rating_kva, "capacity_kw": round(t.capacity_kw, 4),
         "limit_kw": round(t.limit_kw, 4), "households": counts.get(t.id, 0)}
        for t in grid.transformers
    ]}


def lowest_per_interval(signals: Sequence[Signal], firmness: Firmness, key: str) -> dict[datetime, float]:
    """Per interval start: the lowest ``key`` limit among the household's non-cancelled bandwidths of this
    firmness (PROFILE §6.1: the lowest of one firmness applies)."""
    lowest: dict[datetime, float] = {}
    for signal in signals:
        payload = signal.payload
        if signal.cancelled or not isinstance(payload, CapacityBandwidth) or payload.firmness is not firmness:
            continue
        for interval in payload.intervals:
            value = getattr(interval, key)
            known = lowest.get(interval.start)
            lowest[interval.start] = value if known is None else min(known, value)
    return lowest


def _telemetry(store: DsoStore, ean: str, since: datetime, until: datetime) -> list[TelemetryInterval]:
    return [TelemetryInterval(start=r.interval_start, import_kw=r.import_kw, export_kw=r.export_kw)
            for r in store.telemetry(ean, since=since, until=until)]


def household_violations(store: DsoStore, ean: str, *, since: datetime, until: datetime) -> list[Violation]:
    """Runs over the effective limit (firm + non-firm, capped by the contract) in [since, until)."""
    household = store.household(ean)
    signals = store.bandwidths_overlapping([ean], since=since, until=until)[ean]
    return find_violations(household.contract, [s.payload for s in signals if not s.cancelled
                                                and isinstance(s.payload, CapacityBandwidth)],
                           _telemetry(store, ean, since, until))


def violation_json(v: Violation) -> dict[str, Any]:
    return {"start": _iso(v.start), "end": _iso(v.start + v.duration), "duration_s": int(v.duration.total_seconds()),
            "intervals": v.intervals, "max_excess_kw": round(v.max_over_kw, 4),
            "energy_kwh": round(v.energy_over_kwh, 4)}


def transformer_day_json(store: DsoStore, grid: Grid, transformer_id: str, *, day: date, now: datetime,
                         config: PlannerConfig) -> dict[str, Any]:
    """One transformer's local day: measured load, forecast band, firm and non-firm allocation, households."""
    transformer = grid.transformer(transformer_id)  # KeyError for an unknown id: the API answers 404
    gstore = GridStore(store)
    starts = day_intervals(day, config.timezone)
    since, until = starts[0], starts[-1] + INTERVAL
    cps = grid.connection_points_of(transformer_id)
    eans = [cp.ean for cp in cps]
    load = gstore.transformer_load(since=since, until=until).get(transformer_id, {})

    stored: dict[datetime, dict[str, tuple[float, float, float]]] = {}
    for row in gstore.forecasts(transformer_id, since=since, until=until):
        stored.setdefault(row.interval_start, {})[row.kind] = (row.p10_kw, row.p50_kw, row.p90_kw)
    fallback = None
    if any(s not in stored for s in starts):
        fallback = forecast_for_day(store, grid, day=day, now=now, config=config)[transformer_id]

    signals = store.bandwidths_overlapping(eans, since=since, until=until)
    firm = {cp: lowest_per_interval(sig, Firmness.FIRM, "import_limit_kw") for cp, sig in signals.items()}
    needs = transformer_needs(store, eans, starts, config.timezone)
    non_firm = {cp: lowest_per_interval(sig, Firmness.NON_FIRM, "import_limit_kw") for cp, sig in signals.items()}

    def total(per_household: dict[str, dict[datetime, float]], start: datetime) -> float | None:
        values = [limits[start] for limits in per_household.values() if start in limits]
        return sum(values) if values else None

    intervals = []
    for index, start in enumerate(starts):
        kinds = stored.get(start, {})
        band = kinds.get("intra_day") or kinds.get("day_ahead")
        if band is None and fallback is not None:
            band = (fallback.p10_kw[index], fallback.p50_kw[index], fallback.p90_kw[index])
        measured = load.get(start)
        intervals.append({
            "start": _iso(start),
            "load_kw": _num(measured[0]) if measured else None,
            "forecast_p10_kw": _num(band[0]) if band else None,
            "forecast_p50_kw": _num(band[1]) if band else None,
            "forecast_p90_kw": _num(band[2]) if band else None,
            "firm_kw": _num(total(firm, start)),
            "non_firm_kw": _num(total(non_firm, start)),
            "need_kw": _num(sum(n[start][0] for n in needs.values() if start in n))
            if any(start in n for n in needs.values()) else None,
            "needs_not_honoured": sum(1 for n in needs.values()
                                      if start in n and n[start][1] < n[start][0] - NEED_TOLERANCE_KW),
        })

    last = gstore.last_reports()
    silent_after = config.silent_after_intervals * INTERVAL
    households = []
    for cp in cps:
        reported = last.get(cp.ean)
        online = reported is not None and now - (reported + INTERVAL) <= silent_after
        violations = household_violations(store, cp.ean, since=since, until=min(until, now + INTERVAL))
        mine = needs.get(cp.ean, {})
        short = [need - granted for need, granted in mine.values() if granted < need - NEED_TOLERANCE_KW]
        households.append({
            "connection_point_id": cp.ean, "feeder_id": cp.feeder_id, "online": online,
            "last_report_at": _iso(reported), "violations": len(violations),
            "violation_kwh": round(sum(v.energy_over_kwh for v in violations), 4),
            "performance": cp.ean in needs or store.household(cp.ean).contract.performance is not None,
            "need_intervals": len(mine), "needs_not_honoured": len(short),
            "need_shortfall_kwh": round(sum(short) * INTERVAL.total_seconds() / 3600, 4),
        })
    return {"id": transformer.id, "rating_kva": transformer.rating_kva,
            "capacity_kw": round(transformer.capacity_kw, 4), "limit_kw": round(transformer.limit_kw, 4),
            "day": day.isoformat(), "timezone": config.timezone, "intervals": intervals, "households": households}


def default_window(now: datetime, *, days: int = 30) -> tuple[datetime, datetime]:
    return now - timedelta(days=days), now + INTERVAL
