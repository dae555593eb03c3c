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
* **Performance contracts** (``need_allocation``): the day-ahead run allocates for the capacity needs their HEMSs
  reported (the latest need made and received before the run, per interval): each at least its need, then the
  fair rule; needs a transformer cannot carry are scaled by ``need_scaling_rule`` and recorded per household and
  interval (``need_shortfalls``) and in the run's summary. A run that catches up (the day's regular time has
  passed, e.g. after a restart) waits up to ``need_grace_s`` after the planner started for the needs of every
  performance household under the grid, which a HEMS sends right after it registers.
* **Near-real-time non-firm run** (``run_near_real_time``): every ``near_real_time_interval_s`` (default 300 s).
  It takes the measured transformer load of the last complete interval and the intra-day forecast for the next
  ``non_firm_horizon_intervals`` intervals, and releases what they leave as non-firm import and export per
  household (``allocation.allocate_non_firm_envelopes``), from the next interval on. Each household holds one
  non-firm event per local day, *modified* at every run (modification number + 1; intervals already begun keep
  their values, so compliance judges them by what was in force). Stacking a second non-firm event would be
  wrong anyway: of one firmness the lowest applies (PROFILE §6.1), so a second event could only tighten.
  **Lead time**: an interval that starts within ``lead_time_s`` of the run (one poll period of the VENs, in
  server-clock seconds) keeps the non-firm limits in force for every household: a VEN that learns of a lower
  limit only at its next poll would otherwise be over it until then. Keeping all households' values of that
  interval (not only the lowered ones) keeps the transformer invariant the run that set them checked. A
  household whose non-firm event did not change is not modified, so its VEN is sent nothing.

Both runs only happen while a grid is loaded; without one the server behaves as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dso_server.capacity.allocation import baselines_kw
from dso_server.capacity.forecast import (
    QuantileForecast,
    cold_start,
    day_intervals,
    forecast_quantiles,
    history_matrix,
    intraday,
    local_day,
    local_slots,
    measured_days,
)
from dso_server.capacity.grid import Grid
from dso_server.capacity.grid_allocation import GridAllocation, firm_for_grid, non_firm_for_grid
from dso_server.capacity.need_allocation import ScalingRule
from dso_server.capacity.powerflow import FeederModel, Limits
from dso_server.errors import IllegalSignalChange
from dso_server.lifecycle import SignalAction, check_move
from dso_server.records import Signal
from dso_server.store.grid_store import AllocationRun, GridStore
from dso_server.store.performance_store import PerformanceStore, shortfall_rows
from dso_server.store.sqlite import DsoStore
from protocol.effective import lowest_limits
from protocol.signals import BandwidthInterval, CapacityBandwidth, Firmness
from protocol.timebase import INTERVAL, floor_to_interval

logger = logging.getLogger(__name__)
FIRM, NON_FIRM = "firm", "non_firm"
RECENT_INTERVALS = 4
"""Measured intervals the intra-day correction looks back on (one hour)."""


class PlannerConfig(BaseModel):
    """How the capacity planning runs: the one place these settings and their defaults are declared.

    ``DsoSettings`` inherits these fields (so ``dso-server serve`` gets an option, a ``DSO_*`` variable and a
    config key for each) and hands the server's planner ``DsoSettings.planner_config()``; a study that plans in
    process builds one directly, e.g. ``PlannerConfig(timezone="UTC")``. Each description is the option's help."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    timezone: str = Field("Europe/Amsterdam", description=(
        "the DSO's local IANA time zone: the days of the forecast, the allocation and the operator API, and the "
        "clock of --day-ahead-time"))
    day_ahead_time: time = Field(time(14, 0), description=(
        "local time (HH:MM, no offset) at which the firm allocation of the next day is released"))
    near_real_time_interval_s: float = Field(300.0, ge=1, le=3600, description=(
        "server-clock seconds between two near-real-time runs, which recompute the non-firm allocation from "
        "measured headroom"))
    non_firm_horizon_intervals: int = Field(8, ge=1, le=96, description=(
        "quarter-hours ahead that each near-real-time run releases non-firm capacity for"))
    forecast_window_days: int = Field(28, ge=1, le=365, description=(
        "days of measured telemetry the transformer load forecast learns from"))
    min_history_days: int = Field(7, ge=1, le=365, description=(
        "measured days a transformer needs before its learned forecast replaces the H25 cold start; at most "
        "--forecast-window-days"))
    silent_after_intervals: int = Field(4, ge=1, le=96, description=(
        "a household whose last telemetry is older than this many quarter-hours counts as silent (offline)"))
    min_voltage_pu: float = Field(0.9, gt=0.5, lt=1.0, description=(
        "lowest node voltage (per unit) the allocation may cause where a grid model is loaded (EN 50160: -10 %)"))
    max_voltage_pu: float = Field(1.1, gt=1.0, lt=1.5, description=(
        "highest node voltage (per unit) export may cause where a grid model is loaded (EN 50160: +10 %)"))
    lead_time_s: float | None = Field(None, ge=0, le=3600, description=(
        "server-clock seconds before an interval starts within which a near-real-time run no longer changes its "
        "non-firm limits, so no VEN learns of a lower limit too late (default: one VEN poll period, "
        "--poll-interval-s scaled to the server's clock)"))
    need_scaling_rule: ScalingRule = Field("proportional", description=(
        "how the firm allocation scales the capacity needs of performance contracts a transformer cannot carry: "
        "'proportional' (every need to the same share) or 'equal_cap' (small needs in full, the largest cut most)"))
    need_grace_s: float = Field(900.0, ge=0, le=86400, description=(
        "server-clock seconds a firm run that catches up after a start waits for the capacity needs of the "
        "performance households (each HEMS sends one right after it registers)"))

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not an IANA time zone, e.g. Europe/Amsterdam") from None
        return value

    @field_validator("day_ahead_time")
    @classmethod
    def _local(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("must be a local time without offset (the zone is --timezone)")
        return value

    @model_validator(mode="after")
    def _history_fits_window(self) -> Self:
        if self.min_history_days > self.forecast_window_days:
            raise ValueError(f"min_history_days {self.min_history_days} exceeds forecast_window_days "
                             f"{self.forecast_window_days}: no transformer could ever leave the cold start")
        return self


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




# ----------------------------------------------------------------------------------------------- helpers


def _weights(store: DsoStore, grid: Grid, *, until: datetime, config: PlannerConfig) -> np.ndarray | None:
    """Baseline weights per connection point: its share of net energy over the forecast window (equal when
    nothing was measured; a household without telemetry gets the mean of the measured ones)."""
    energy = GridStore(store).household_energy(since=until - timedelta(days=config.forecast_window_days),
                                               until=until)
    if not energy:
        return None
    values = np.array([max(energy.get(c.ean, np.nan), 0.0) if c.ean in energy else np.nan
                       for c in grid.connection_points])
    mean = float(np.nanmean(values)) if np.isfinite(values).any() else 1.0
    values = np.where(np.isfinite(values), values, mean)
    return values if values.sum() > 0 else None


def _limits(config: PlannerConfig) -> Limits:
    return Limits(min_voltage_pu=config.min_voltage_pu, max_voltage_pu=config.max_voltage_pu)


def _bandwidth(starts: Sequence[datetime], import_kw: np.ndarray, export_kw: np.ndarray,
               firmness: Firmness) -> CapacityBandwidth:
    return CapacityBandwidth(firmness=firmness, intervals=tuple(
        BandwidthInterval(start=s, import_limit_kw=float(i), export_limit_kw=float(e))
        for s, i, e in zip(starts, import_kw, export_kw, strict=True)))


# ---------------------------------------------------------------------------------------- day-ahead run


def needs_matrix(store: DsoStore, grid: Grid, starts: Sequence[datetime], *, as_of: datetime
                 ) -> tuple[np.ndarray, list[str]]:
    """(connection points in grid order x ``starts``) the needs in force ``as_of`` of the performance households
    (NaN where none), and the performance households of the grid."""
    performance = [c.ean for c in grid.connection_points if store.household(c.ean).contract.performance is not None]
    needs = np.full((len(grid.connection_points), len(starts)), np.nan)
    if not performance or not starts:
        return needs, performance
    found = PerformanceStore(store).needs_in_force(performance, since=starts[0], until=starts[-1] + INTERVAL,
                                                   as_of=as_of)
    column = {start: i for i, start in enumerate(starts)}
    for h, c in enumerate(grid.connection_points):
        for start, kw in found.get(c.ean, {}).items():
            needs[h, column[start]] = kw
    return needs, performance


def run_day_ahead(store: DsoStore, grid: Grid, *, day: date, now: datetime, config: PlannerConfig,
                  models: dict[str, FeederModel] | None = None, wait_for_needs_until: datetime | None = None
                  ) -> AllocationRun | None:
    """Forecast, allocate and publish the firm bandwidths of local ``day`` (the intervals still to come), for the
    capacity needs of performance contracts. None when the day has its firm publication already, nothing of it is
    left, or (before ``wait_for_needs_until``) a performance household has yet to report a need for it."""
    gstore = GridStore(store)
    key = day.isoformat()
    if gstore.runs(kind=FIRM, day=key, status="ok", limit=1):
        return None
    starts = day_intervals(day, config.timezone)
    first = floor_to_interval(now) + INTERVAL
    keep = np.array([s >= first for s in starts])
    if not keep.any():
        return None
    needs, performance = needs_matrix(store, grid, starts, as_of=now)
    if wait_for_needs_until is not None and now < wait_for_needs_until:
        reported = {c.ean for h, c in enumerate(grid.connection_points) if np.isfinite(needs[h, keep]).any()}
        if set(performance) - reported:
            return None
    fc = forecast_for_day(store, grid, day=day, now=now, config=config)
    t_ids = [t.id for t in grid.transformers]
    p10 = np.stack([fc[t].p10_kw for t in t_ids])
    p90 = np.stack([fc[t].p90_kw for t in t_ids])
    alloc = firm_for_grid(grid, p90_kw=p90, p10_kw=p10, weights=_weights(store, grid, until=min(starts[0], now),
                                                                           config=config),
                          limits=_limits(config), models=models, need_kw=needs if performance else None,
                          rule=config.need_scaling_rule)
    published = [s for s, k in zip(starts, keep, strict=True) if k]
    payloads = {ean: _bandwidth(published, alloc.import_kw[h, keep], alloc.export_kw[h, keep], Firmness.FIRM)
                for h, ean in enumerate(alloc.eans)}
    with store.transaction():
        for tid in t_ids:
            gstore.put_forecast(tid, "day_ahead", starts, fc[tid].p10_kw, fc[tid].p50_kw, fc[tid].p90_kw, now=now)
        publication = store.publish(payloads, now=now) if payloads else None
        summary = alloc.summary()
        if alloc.need_kw is not None and alloc.shortfall_kw is not None:  # the intervals published only
            summary = firm_need_summary(alloc, keep)
        run = gstore.record_run(kind=FIRM, day=key, window_start=published[0], window_end=published[-1] + INTERVAL,
                                publication_id=publication.publication_id if publication else None, now=now,
                                summary=summary)
        if alloc.need_kw is not None and alloc.shortfall_kw is not None:
            PerformanceStore(store).record_shortfalls(run.run_id, shortfall_rows(
                alloc.eans, published, alloc.need_kw[:, keep], alloc.import_kw[:, keep], alloc.shortfall_kw[:, keep]))
    logger.info("Day-ahead firm allocation for %s: %d household(s), %s", key, len(payloads), alloc.summary())
    return run


def firm_need_summary(alloc: GridAllocation, keep: np.ndarray) -> dict[str, object]:
    """The run's summary over the published intervals only (a catch-up run publishes the rest of a day)."""
    assert alloc.need_kw is not None and alloc.shortfall_kw is not None
    published = GridAllocation(
        eans=alloc.eans, import_kw=alloc.import_kw[:, keep], export_kw=alloc.export_kw[:, keep],
        baseline_import_kw=alloc.baseline_import_kw[:, keep], baseline_export_kw=alloc.baseline_export_kw[:, keep],
        minimums_forced={t: v[keep] for t, v in alloc.minimums_forced.items()},
        voltage_limited={t: v[keep] for t, v in alloc.voltage_limited.items()},
        voltage_forced={t: v[keep] for t, v in alloc.voltage_forced.items()}, power_flows=alloc.power_flows,
        need_kw=alloc.need_kw[:, keep], shortfall_kw=alloc.shortfall_kw[:, keep])
    return published.summary()


# ------------------------------------------------------------------------------------ near-real-time run


def _day_ahead_band(store: DsoStore, grid: Grid, *, starts: Sequence[datetime], now: datetime,
                    config: PlannerConfig) -> dict[str, QuantileForecast]:
    """The stored day-ahead forecast of each transformer for ``starts``; computed now where none was stored."""
    gstore = GridStore(store)
    out = {}
    computed: dict[date, dict[str, QuantileForecast]] = {}
    for t in grid.transformers:
        rows = {r.interval_start: r for r in gstore.forecasts(t.id, since=starts[0], until=starts[-1] + INTERVAL)
                if r.kind == "day_ahead"}
        bands = []
        for s in starts:
            if s in rows:
                bands.append((rows[s].p10_kw, rows[s].p50_kw, rows[s].p90_kw))
                continue
            d = local_day(s, config.timezone)
            if d not in computed:
                computed[d] = forecast_for_day(store, grid, day=d, now=now, config=config)
            fc = computed[d][t.id]
            i = day_intervals(d, config.timezone).index(s)
            bands.append((fc.p10_kw[i], fc.p50_kw[i], fc.p90_kw[i]))
        arr = np.array(bands, dtype=float).T
        out[t.id] = QuantileForecast(arr[0], arr[1], arr[2])
    return out


def run_near_real_time(store: DsoStore, grid: Grid, *, now: datetime, config: PlannerConfig,
                       models: dict[str, FeederModel] | None = None) -> AllocationRun | None:
    """Release non-firm capacity for the next ``non_firm_horizon_intervals`` (within the local day of the next
    interval) from the last measured interval and the intra-day forecast; modify each household's non-firm
    event of the day, or publish one."""
    gstore = GridStore(store)
    first = floor_to_interval(now) + INTERVAL
    day = local_day(first, config.timezone)
    day_starts = day_intervals(day, config.timezone)
    starts = [s for s in day_starts if s >= first][: config.non_firm_horizon_intervals]
    t_ids = [t.id for t in grid.transformers]
    cps = list(grid.connection_points)
    eans = [c.ean for c in cps]
    # What was measured: the last complete interval and the hour before it, per transformer.
    recent = [floor_to_interval(now) - (RECENT_INTERVALS - i) * INTERVAL for i in range(RECENT_INTERVALS)]
    measured = gstore.transformer_load(since=recent[0], until=recent[-1] + INTERVAL)
    band = _day_ahead_band(store, grid, starts=[*recent, *starts], now=now, config=config)
    k = len(recent)
    expected_imp, expected_exp, intra = [], [], {}
    for tid in t_ids:
        m = np.array([measured.get(tid, {}).get(s, (np.nan, 0))[0] for s in recent])
        ahead = band[tid].take(np.arange(k, k + len(starts)))
        fc = intraday(QuantileForecast(ahead.p10_kw[None], ahead.p50_kw[None], ahead.p90_kw[None]),
                      recent_measured_kw=m[None], recent_p50_kw=band[tid].p50_kw[None, :k],
                      horizon_intervals=len(starts))
        intra[tid] = fc
        last = m[-1] if np.isfinite(m[-1]) else np.nan
        expected_imp.append(np.fmax(fc.p90_kw[0], last if np.isfinite(last) else -np.inf))
        expected_exp.append(np.fmax(-fc.p10_kw[0], -last if np.isfinite(last) else -np.inf))
    # The firm limits in force (as published), contract max where none covers an interval.
    signals = store.bandwidths_overlapping(eans, since=starts[0], until=starts[-1] + INTERVAL)
    firm_imp = np.empty((len(cps), len(starts)))
    firm_exp = np.empty_like(firm_imp)
    for h, c in enumerate(cps):
        lowest = lowest_limits([s.payload for s in signals[c.ean] if not s.cancelled
                                and isinstance(s.payload, CapacityBandwidth)], Firmness.FIRM)
        for i, s in enumerate(starts):
            firm_imp[h, i], firm_exp[h, i] = lowest.get(s, (c.contracted_max_import_kw, c.contracted_max_export_kw))
    group = np.array([t_ids.index(grid.transformer_of(c)) for c in cps], dtype=np.intp)
    weights = _weights(store, grid, until=now, config=config)
    w = np.ones(len(cps)) if weights is None else weights
    p90 = np.stack([band[t].p90_kw[k:] for t in t_ids])
    p10 = np.stack([band[t].p10_kw[k:] for t in t_ids])
    firm = GridAllocation(eans=tuple(eans), import_kw=firm_imp, export_kw=firm_exp,
                          baseline_import_kw=baselines_kw(transformer_kw=p90, group=group, weight=w),
                          baseline_export_kw=baselines_kw(transformer_kw=-p10, group=group,
                                                          weight=np.array([c.contracted_max_export_kw for c in cps])))
    nf = non_firm_for_grid(grid, firm=firm, expected_import_kw=np.stack(expected_imp),
                           expected_export_kw=np.stack(expected_exp), limits=_limits(config), models=models)
    nf = _keep_within_lead_time(nf, signals, starts, now=now, lead_time_s=config.lead_time_s or 0.0)
    new: dict[str, CapacityBandwidth] = {}
    modified = 0
    with store.transaction():
        for tid in t_ids:
            fc = intra[tid]
            gstore.put_forecast(tid, "intra_day", starts, fc.p10_kw[0], fc.p50_kw[0], fc.p90_kw[0], now=now)
        # Each household's event of the day, read in a few statements; then every modification in one.
        event_ids = gstore.allocation_events(NON_FIRM)
        current = store.signals_by_id([event_ids[ean] for ean in eans if ean in event_ids])
        modifications: dict[str, CapacityBandwidth] = {}
        for h, ean in enumerate(eans):
            event_id = event_ids.get(ean)
            update = _non_firm_update(current.get(event_id) if event_id else None, starts, nf.import_kw[h],
                                      nf.export_kw[h], now=now, day=day, config=config)
            if isinstance(update, tuple):
                modifications[update[0]] = update[1]
            elif update is not None:
                new[ean] = update
        store.modify_signals(modifications, now=now, current=current)
        modified = len(modifications)
        publication = store.publish(new, now=now) if new else None
        if publication is not None:
            gstore.set_allocation_events(NON_FIRM, {s.connection_point_id: s.event_id for s in publication.signals},
                                         now=now)
        summary = {**nf.summary(), "modified": modified, "published": len(new),
                   "non_firm_import_kw": round(float(nf.import_kw.sum(axis=0).max(initial=0.0)), 3)}
        run = gstore.record_run(kind=NON_FIRM, day=day.isoformat(), window_start=starts[0],
                                window_end=starts[-1] + INTERVAL,
                                publication_id=publication.publication_id if publication else None, now=now,
                                summary=summary)
    logger.info("Near-real-time non-firm allocation from %s: %s", starts[0].isoformat(), summary)
    return run


def _keep_within_lead_time(nf: GridAllocation, signals: dict[str, list[Signal]], starts: Sequence[datetime], *,
                           now: datetime, lead_time_s: float) -> GridAllocation:
    """``nf`` with the intervals that start within the lead time set back to the non-firm limits in force."""
    frozen = [i for i, s in enumerate(starts) if s < now + timedelta(seconds=lead_time_s)]
    if not frozen:
        return nf
    import_kw, export_kw = nf.import_kw.copy(), nf.export_kw.copy()
    for h, ean in enumerate(nf.eans):
        in_force = lowest_limits([s.payload for s in signals[ean] if not s.cancelled
                                  and isinstance(s.payload, CapacityBandwidth)], Firmness.NON_FIRM)
        for i in frozen:
            import_kw[h, i], export_kw[h, i] = in_force.get(starts[i], (0.0, 0.0))
    return replace(nf, import_kw=import_kw, export_kw=export_kw)


def _non_firm_update(signal: Signal | None, starts: Sequence[datetime], import_kw: np.ndarray,
                     export_kw: np.ndarray, *, now: datetime, day: date,
                     config: PlannerConfig) -> CapacityBandwidth | tuple[str, CapacityBandwidth] | None:
    """For one household: (event id, payload) to modify its non-firm event of ``day`` with, or a bandwidth to
    publish anew, or None when nothing needs sending (no event yet and nothing to release, or no change)."""
    fresh = _bandwidth(starts, import_kw, export_kw, Firmness.NON_FIRM)
    usable = (signal is not None and check_allows_modify(signal, now)
              and isinstance(signal.payload, CapacityBandwidth)
              and local_day(signal.start, config.timezone) == day and signal.start <= starts[0])
    if not usable:
        return fresh if (import_kw.any() or export_kw.any()) else None
    assert signal is not None and isinstance(signal.payload, CapacityBandwidth)
    kept = [it for it in signal.payload.intervals if it.start < starts[0]]
    gap_start = kept[-1].end if kept else signal.start
    gap = []
    while gap_start < starts[0]:  # intervals the server did not release (it was down): nothing extra
        gap.append(BandwidthInterval(start=gap_start, import_limit_kw=0.0, export_limit_kw=0.0))
        gap_start += INTERVAL
    payload = CapacityBandwidth(firmness=Firmness.NON_FIRM, intervals=(*kept, *gap, *fresh.intervals))
    if payload == signal.payload:
        return None
    return signal.event_id, payload


def check_allows_modify(signal: Signal, now: datetime) -> bool:
    try:
        check_move(signal, SignalAction.MODIFY, now)
    except IllegalSignalChange:
        return False
    return True
