"""The KPIs of one run, from its time series (the same arrays ``feeder_twin.series`` stores).

Definitions (over the KPI window: the period without its warm-up):

* transformer peak: the highest 15-minute mean of the power the transformer delivers to the LV network (the load
  plus the line losses, by power flow), in kW and per household; and its loading (apparent power / rating);
* hours above rating: quarter-hours whose mean loading exceeds 100 % of the rating, in hours (thermal: a
  transformer is judged on 15-minute means);
* feed-in peak: the highest 15-minute mean of the power fed back through the transformer (PV), in kW;
* lowest voltage and hours below 0.9 pu: the lowest node voltage of any sub-step, and the time any node spent
  below 0.9 pu (sub-step resolution, stricter than EN 50160's 10-minute means); likewise the highest voltage and
  the time above 1.1 pu (PV feed-in);
* line overloads: the time any line carried more than its ampacity (sub-step resolution), and the highest loading;
* EV sessions: a departure reaches its range when it leaves with at least the range it would have had in the
  uncontrolled run of the same households (same trips), capped at the range its contract asks for
  (``ev_required_range_km``): a managed EV need not be charged full, only as full as the owner needs and would
  have had. Without an uncontrolled reference the contract's range alone is the demand. 0.5 km tolerance;
* energy not served: the EV energy short of that demand at departure, in kWh;
* comfort: degree-hours outside each heat-pump household's comfort band (setpoint ± band), summed over sub-steps
  with the temperature at the end of each, as the HEMS's own KPI tracker counts them; the mean per heat-pump
  household over the window, and the worst household;
* cost: import times the import price minus export times the export price in force, per household over the
  window (mean), in EUR;
* PV curtailed: energy the PV could have produced and did not (the plan or the guard capped it), in kWh;
* firm covered (allocating strategies only, else None): the share of household-quarter-hours whose mean import
  stayed within the firm limit alone, where the DSO published one -- how often the guaranteed part sufficed;
* needs (performance strategy only, else None): the peak of the summed capacity needs in force (kW, 15-minute),
  and the share of household-quarter-hours with a need whose firm limit met it (1 W tolerance, as the DSO's
  allocation judges it); the DSO's own count of need shortfalls is kept beside it (``need_shortfalls``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from feeder_twin.runner import RunResult
from protocol.timebase import INTERVAL, INTERVAL_S

EV_TOLERANCE_KM = 0.5
NEED_TOLERANCE_KW = 0.001
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("peak_kw", "peak kW", "{:.0f}"),
    ("peak_kw_per_household", "kW/hh", "{:.2f}"),
    ("peak_loading", "load %", "{:.0%}"),
    ("hours_above_rating", "h >rating", "{:.2f}"),
    ("lowest_voltage_pu", "U min pu", "{:.3f}"),
    ("hours_below_0_9_pu", "h <0.9pu", "{:.2f}"),
    ("feed_in_peak_kw", "feed-in kW", "{:.0f}"),
    ("highest_voltage_pu", "U max pu", "{:.3f}"),
    ("line_overload_hours", "h line>100%", "{:.2f}"),
    ("ev_sessions_ok_share", "EV ok", "{:.1%}"),
    ("energy_not_served_kwh", "ENS kWh", "{:.1f}"),
    ("degree_hours_per_hp_household", "K·h/HP hh", "{:.2f}"),
    ("cost_eur_per_household", "EUR/hh", "{:.2f}"),
    ("pv_curtailed_kwh", "PV curt kWh", "{:.0f}"),
)


@dataclass(frozen=True)
class Kpis:
    strategy: str
    week: str
    households: int
    days: float
    peak_kw: float
    peak_kw_per_household: float
    peak_at: str
    peak_loading: float
    hours_above_rating: float
    lowest_voltage_pu: float
    hours_below_0_9_pu: float
    feed_in_peak_kw: float
    highest_voltage_pu: float
    hours_above_1_1_pu: float
    max_line_loading: float
    line_overload_hours: float
    ev_sessions: int
    ev_sessions_ok_share: float
    energy_not_served_kwh: float
    degree_hours_per_hp_household: float
    degree_hours_worst_household: float
    cost_eur_per_household: float
    import_kwh: float
    pv_curtailed_kwh: float
    ev_reference: str
    """'uncontrolled run' or 'contract range'."""
    firm_covered_share: float | None = None
    need_peak_kw: float | None = None
    need_met_share: float | None = None
    no_flow_substeps: int = 0
    """Sub-steps without a power-flow solution (voltage collapse), counted as beyond every limit."""
    dso_failures: int = 0
    """Planning steps of the DSO that failed in the run (warm-up included); the limits in force stayed."""

    def row(self) -> dict[str, object]:
        return asdict(self)


def _interval_means(values: np.ndarray, per_interval: int) -> np.ndarray:
    return values.reshape(-1, per_interval).mean(axis=1)


def ev_demand_km(result: RunResult, reference: RunResult | None) -> list[tuple[int, datetime, float, float]]:
    """(household row, departure, range km at departure, demanded km) of every departure in the KPI window."""
    kpi_start = result.spec.period.kpi_start
    reached = {}
    if reference is not None:
        reached = {(row, at): km for row, at, km, _ in reference.departures}
    out = []
    for row, at, km, _ in result.departures:
        if at < kpi_start:
            continue
        required = result.households[row].contract.comfort.ev_required_range_km
        demand = min(required, reached[(row, at)]) if (row, at) in reached else required
        out.append((row, at, km, demand))
    return out


def compute(result: RunResult, reference: RunResult | None = None) -> Kpis:
    """The KPIs of ``result``; ``reference`` is the uncontrolled run of the same households (for the EV demand)."""
    mask = result.kpi_mask()
    dt_h = result.substep_s / 3600
    per_interval = round(INTERVAL_S / result.substep_s)
    power = _interval_means(result.transformer_kw[mask], per_interval)
    loading = _interval_means(result.transformer_loading[mask], per_interval)
    peak = int(np.argmax(power))
    kpi_start = result.spec.period.kpi_start
    n_h = len(result.households)
    u_min = result.u_min_pu[mask]
    u_max = result.u_max_pu[mask]
    lines = result.line_loading_max[mask]

    sessions = ev_demand_km(result, reference)
    ok = [km >= demand - EV_TOLERANCE_KM for _, _, km, demand in sessions]
    ens = sum(max(0.0, demand - km) * result.households[row].ev.kwh_per_km  # type: ignore[union-attr]
              for row, _, km, demand in sessions)

    heated = [row for row, h in enumerate(result.households) if h.heat_pump is not None]
    degree_hours = np.zeros(len(heated))
    for position, row in enumerate(heated):
        comfort = result.households[row].contract.comfort
        temps = result.indoor_c[row, mask]
        outside = np.maximum(np.maximum(comfort.comfort_min_c - temps, temps - comfort.comfort_max_c), 0.0)
        degree_hours[position] = float(outside.sum() * dt_h)

    net = result.net_kw[:, mask]
    interval_of_step = (np.arange(result.net_kw.shape[1]) // per_interval)[mask]
    import_price = result.import_price[:, interval_of_step]
    export_price = result.export_price[:, interval_of_step]
    cost = (np.maximum(net, 0.0) * import_price - np.maximum(-net, 0.0) * export_price).sum(axis=1) * dt_h
    firm = result.firm_kw[:, np.unique(interval_of_step)]
    mean_import = np.maximum(net, 0.0).reshape(n_h, -1, per_interval).mean(axis=2)
    published = ~np.isnan(firm)
    covered = float((mean_import[published] <= firm[published] + 1e-6).mean()) if published.any() else None
    need_peak = need_met = None
    if result.need_kw is not None:
        need = result.need_kw[:, np.unique(interval_of_step)]
        stated = ~np.isnan(need)
        need_peak = float(np.where(stated, need, 0.0).sum(axis=0).max())
        met = stated & ~np.isnan(firm)
        need_met = float((firm[met] >= need[met] - NEED_TOLERANCE_KW).mean()) if met.any() else None
    return Kpis(
        strategy=result.spec.strategy.name, week=result.spec.period.week.name, households=n_h,
        days=float(mask.sum() * dt_h / 24),
        peak_kw=float(power[peak]), peak_kw_per_household=float(power[peak] / n_h),
        peak_at=(kpi_start + peak * INTERVAL).isoformat(),
        peak_loading=float(loading.max()),
        hours_above_rating=float((loading > 1.0).sum() * 0.25),
        lowest_voltage_pu=float(u_min.min()), hours_below_0_9_pu=float((u_min < 0.9).sum() * dt_h),
        feed_in_peak_kw=float(max(0.0, -power.min())), highest_voltage_pu=float(u_max.max()),
        hours_above_1_1_pu=float((u_max > 1.1).sum() * dt_h),
        max_line_loading=float(lines.max()), line_overload_hours=float((lines > 1.0).sum() * dt_h),
        ev_sessions=len(sessions), ev_sessions_ok_share=float(np.mean(ok)) if ok else 1.0,
        energy_not_served_kwh=float(ens),
        degree_hours_per_hp_household=float(degree_hours.mean()) if len(heated) else 0.0,
        degree_hours_worst_household=float(degree_hours.max()) if len(heated) else 0.0,
        cost_eur_per_household=float(cost.mean()),
        import_kwh=float(np.maximum(net, 0.0).sum() * dt_h),
        pv_curtailed_kwh=float(sum(s.pv_curtailed_kwh for s in result.summaries)),
        ev_reference="uncontrolled run" if reference is not None else "contract range",
        firm_covered_share=covered, need_peak_kw=need_peak, need_met_share=need_met,
        no_flow_substeps=int((u_min == 0.0).sum()), dso_failures=result.dso_failures,
    )


def format_table(rows: Sequence[Kpis]) -> str:
    """A plain-text table, one row per run."""
    header = ["strategy", "week", *(title for _, title, _ in COLUMNS)]
    lines = [header]
    for kpis in rows:
        lines.append([kpis.strategy, kpis.week, *(pattern.format(getattr(kpis, name)) for name, _, pattern in COLUMNS)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(out)
