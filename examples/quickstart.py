"""End-to-end demo: one DSO VTN and simulated households over real OpenADR 2.0b on loopback, over mutual TLS
with a CA and one certificate per household issued at start (in <output-dir>/pki, enrolled in the DSO's store).

The DSO publishes a time-of-use tariff and a capacity bandwidth that is tighter in the evening; each HEMS
plans its heat pump, EV, battery and PV inside it and reports back. A simulated day runs on an accelerated
clock (about two and a half minutes at the default speed). At the end it prints, per household and for the
feeder, the peak import against the limit, the intervals over the limit, energy cost, comfort and EV
readiness, and writes a plot of the feeder load against the summed limits.

    python examples/quickstart.py [--start 12:00] [--hours 24] [--speed 600] [--households 3] [--output-dir demo-output]

With --allocate the DSO decides the limits itself: the server loads a grid (default
examples/quickstart-grid.toml: one small transformer, one feeder, the demo's households as connection points,
as 'dso-server serve --grid' does) and its own planning loop publishes the firm limits day-ahead (at once for
the current day, at 14:00 local for the next) and non-firm limits every 5 minutes from measured headroom. The
demo only enrols the households and publishes the tariff. The table then judges each household against the
limits the DSO published (firm + non-firm, capped by the contract) and the transformer's load (the telemetry
summed) against its limit (capacity less the safety margin); the plot (transformer.png) shows that load
against the limit, the capacity and the summed firm and firm + non-firm limits.

The households of --allocate have performance contracts: each HEMS reports the least import per quarter-hour
with which it keeps its comfort band and EV range (its capacity need; the rest of the day at once, the next day
before 13:00), the planner's firm run allocates at least that where the transformer can carry it, and after
each local day the HEMS sends a daily verdict instead of temperatures. A second table then shows, per
household, its need against the firm limits it got, and the verdict the DSO received against the comfort the
simulated household actually had.

    python examples/quickstart.py --allocate [--grid examples/quickstart-grid.toml] [--hours 24] [--speed 600]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import time as wall_time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import aiohttp

from dso_server.api.performance_views import needs_in_force
from dso_server.capacity.grid import ConnectionPoint, Grid, GridFileError, Transformer, load_grid
from dso_server.capacity.planner import FIRM, NON_FIRM
from dso_server.records import TelemetryRow
from dso_server.security.pki import Pki
from dso_server.security.tokens import Role
from dso_server.service import DsoServer
from dso_server.settings import DsoSettings
from dso_server.store.certificates import CertificateStore, Enrolment
from dso_server.store.grid_store import AllocationRun, GridStore, contract_for
from dso_server.store.performance_store import PerformanceStore
from dso_server.store.sqlite import DsoStore
from hems_client.app import HemsApp, VenSecurity
from hems_client.devices.household import make_household
from hems_client.devices.weather import Weather
from hems_client.kpi import DailyKpi
from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    ComfortTerms,
    Firmness,
    HouseholdContract,
    PerformanceTerms,
    TariffInterval,
    TouTariff,
    effective_limits,
    make_ean18,
)
from protocol.clock import AcceleratedClock, sleep_until
from protocol.effective import lowest_limits
from protocol.limits import exceeds_limit

ZONE = ZoneInfo("Europe/Amsterdam")
# A cold winter day, starting at local noon so the evening peak, the night and the 06:00 EV departure all fall
# inside one simulated day.
SIM_START = datetime(2027, 1, 13, 12, 0, tzinfo=ZONE).astimezone(UTC)
DEFAULT_GRID = Path(__file__).resolve().parent / "quickstart-grid.toml"
GROUP = "feeder-1"
COMFORT = ComfortTerms(indoor_setpoint_c=20.0, temperature_band_k=1.0, ev_departure_local=time(6, 0),
                       ev_required_range_km=150.0, timezone="Europe/Amsterdam")
OVER_KW = 0.01
"""What the table counts as a summed load over a summed limit or a transformer's capacity (a household against its
own limit is judged by the profile's tolerance, ``protocol.limits.exceeds_limit``)."""
PERFORMANCE = PerformanceTerms(monthly_discount_eur=10.0, compensation_eur_per_degree_hour=1.0,
                               compensation_eur_per_missed_departure=5.0, need_deadline_local=time(13, 0))
"""The performance contract of --allocate's households: the DSO allocates for their capacity needs."""
ALLOCATE_LEAD = 8 * INTERVAL
"""--allocate starts the clock this long before the simulated period: the HEMSs register and report the rest of the
day's need, and the planner's catch-up firm run allocates for it, before the period begins."""

# (PV kWp, heat pump, EV, battery) per household; the list repeats for more households.
DEVICE_MIXES = [(5.0, True, True, True), (4.0, True, True, False), (6.0, True, False, True)]


def import_price_eur_per_kwh(local: datetime) -> float:
    if 17 <= local.hour < 21:
        return 0.42
    if 7 <= local.hour < 17:
        return 0.28
    if 21 <= local.hour < 24:
        return 0.22
    return 0.16


def evening_limit_kw(local: datetime, *, day_kw: float, evening_kw: float) -> float:
    return evening_kw if 16 <= local.hour < 21 else day_kw


@dataclass(frozen=True)
class Scenario:
    start: datetime
    intervals: int
    contracts: list[HouseholdContract]
    tariff: TouTariff
    bandwidth: CapacityBandwidth | None
    """What the operator publishes; None when the DSO's planner allocates (a grid is given)."""
    grid: Grid | None = None


def build_scenario(*, households: int, hours: float, evening_kw: float, grid: Grid | None = None,
                   start: datetime = SIM_START) -> Scenario:
    """With a grid, its connection points are the households (contracts as the grid store builds them, plus the
    demo's comfort terms) and the operator publishes no bandwidth: the DSO's planner does."""
    count = int(hours * 3600 / INTERVAL.total_seconds())
    # Signals reach a day past the simulated period, so no plan ever sees the edge of the published data.
    moments = [start + index * INTERVAL for index in range(count + 96)]
    if grid is not None:
        contracts = [contract_for(cp).model_copy(update={"comfort": COMFORT, "performance": PERFORMANCE})
                     for cp in grid.connection_points]
    else:
        contracts = [
            HouseholdContract(connection_point_id=make_ean18(f"8716871200000{index + 1:04d}"),
                              contracted_max_import_kw=17.0, contracted_max_export_kw=10.0, failsafe_import_kw=4.2,
                              failsafe_export_kw=4.2, failsafe_duration_s=7200, comfort=COMFORT)
            for index in range(households)
        ]
    tariff = TouTariff(intervals=tuple(
        TariffInterval(start=moment, import_price_eur_per_kwh=import_price_eur_per_kwh(moment.astimezone(ZONE)),
                       export_price_eur_per_kwh=0.05)
        for moment in moments
    ))
    bandwidth = None if grid is not None else CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=moment,
                          import_limit_kw=evening_limit_kw(moment.astimezone(ZONE), day_kw=8.0, evening_kw=evening_kw),
                          export_limit_kw=5.0)
        for moment in moments
    ))
    return Scenario(start=start, intervals=count, contracts=contracts, tariff=tariff, bandwidth=bandwidth,
                    grid=grid)


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with session.post(url, json=body) as reply:
        answer = await reply.json()
        if reply.status >= 300:
            raise RuntimeError(f"DSO operator API refused {url}: {answer}")
        return answer


async def publish(api_url: str, token: str, scenario: Scenario) -> None:
    """What a DSO operator does, through the operator API with an operate token: enrol households, publish the
    tariff and (without a grid) the bandwidth."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        for contract in scenario.contracts:
            await _post(session, f"{api_url}/api/households", {**contract.model_dump(mode="json"), "group": GROUP})
        await _post(session, f"{api_url}/api/tariffs", {"group": GROUP, **scenario.tariff.model_dump(mode="json")})
        if scenario.bandwidth is not None:
            await _post(session, f"{api_url}/api/bandwidths",
                        {"group": GROUP, **scenario.bandwidth.model_dump(mode="json")})


def contracts_toml(contracts: Sequence[HouseholdContract], group: str) -> str:
    """The households as a contracts file ('dso-server serve --contracts', format in dso_server/contracts.py)."""

    def value(item: object) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, str):
            return f'"{item}"'
        return str(item)  # numbers, and local times as TOML local times (06:00:00)

    lines = []
    for contract in contracts:
        data = contract.model_dump()
        tables = {key: data.pop(key) for key in ("comfort", "performance") if data.get(key) is not None}
        data.pop("performance", None)
        lines += ["[[household]]", f'group = "{group}"', *(f"{key} = {value(item)}" for key, item in data.items())]
        for name, table in tables.items():
            lines += [f"[household.{name}]", *(f"{key} = {value(item)}" for key, item in table.items())]
        lines.append("")
    return "\n".join(lines)


async def first_firm_run(dso: DsoServer, clock: AcceleratedClock, *, by: datetime) -> AllocationRun:
    """The planner's firm run for the day of ``by``, which it makes at once on a day without one (for performance
    contracts once their HEMSs reported their needs)."""
    gstore = GridStore(dso.store)
    day = by.astimezone(ZONE).date().isoformat()
    while not (runs := gstore.runs(kind=FIRM, day=day, limit=1)):
        if clock.now() >= by:
            raise RuntimeError(f"the DSO's planner published no firm limits by {by.astimezone(ZONE):%H:%M} local; "
                               "see its log")
        await clock.sleep(10)
    return runs[0]


# ------------------------------------------------------------------------------- what the DSO received


@dataclass(frozen=True)
class Published:
    """One household as the DSO sees it: its contract, telemetry and the import limits it published."""

    contract: HouseholdContract
    telemetry: dict[datetime, TelemetryRow]
    limit_kw: dict[datetime, float]
    """Effective import limit (firm + non-firm, capped by the contract), as ``protocol.effective`` says."""
    firm_kw: dict[datetime, float]


def published(store: DsoStore, connection_point_id: str, *, start: datetime, count: int) -> Published:
    """From the DSO store: the household's telemetry and the limits of every bandwidth signal it holds for it
    (final versions: intervals already begun keep their values when the planner modifies an event)."""
    end = start + count * INTERVAL
    contract = store.household(connection_point_id).contract
    signals = store.bandwidths_overlapping([connection_point_id], since=start, until=end)[connection_point_id]
    bandwidths = [s.payload for s in signals if not s.cancelled and isinstance(s.payload, CapacityBandwidth)]
    limits = effective_limits(contract, bandwidths, start=start, count=count)
    firm = lowest_limits(bandwidths, Firmness.FIRM)
    maximum = contract.contracted_max_import_kw
    return Published(
        contract=contract,
        telemetry={row.interval_start: row for row in store.telemetry(connection_point_id, since=start, until=end)},
        limit_kw={limit.start: limit.import_limit_kw for limit in limits},
        firm_kw={limit.start: min(firm.get(limit.start, (maximum, 0.0))[0], maximum) for limit in limits},
    )


@dataclass
class FeederRow:
    label: str
    peak_import_kw: float
    limit_at_peak_kw: float
    intervals_over_limit: int
    energy_over_limit_kwh: float
    import_kwh: float
    cost_eur: float | None
    degree_hours_outside_band: float | None
    ev_range_km: float | None
    ev_required_km: float | None


@dataclass(frozen=True)
class TransformerSeries:
    transformer: Transformer
    connection_points: list[ConnectionPoint]
    starts: list[datetime]
    load_kw: list[float | None]
    """Sum of its households' telemetry (import - export); None where none reported."""
    reporting: list[int]
    firm_kw: list[float]
    limits_kw: list[float]
    """Summed effective (firm + non-firm) import limits of its households."""


def _summarise_kpis(days: list[DailyKpi]) -> tuple[float, float | None, float | None]:
    comfort = sum(day.degree_hours_outside_band for day in days)
    departures = [day for day in days if day.ev_range_at_departure_km is not None]
    ev_km = departures[-1].ev_range_at_departure_km if departures else None
    need_km = departures[-1].ev_required_range_km if departures else None
    return comfort, ev_km, need_km


def _cost_eur(telemetry: dict[datetime, TelemetryRow], tariff: TouTariff) -> float:
    """What the telemetry the DSO received costs under the published tariff: the simulated period only (the
    HEMS's own KPIs also count the half hour before it, when the households register)."""
    prices = {interval.start: interval for interval in tariff.intervals}
    return sum((row.import_kw * prices[start].import_price_eur_per_kwh
                - row.export_kw * prices[start].export_price_eur_per_kwh) * INTERVAL.total_seconds() / 3600
               for start, row in telemetry.items())


def _aggregate_row(label: str, load: dict[datetime, float], limit: dict[datetime, float],
                   households: list[FeederRow]) -> FeederRow:
    starts = sorted(limit)
    over = [load[s] - limit[s] for s in starts if s in load and load[s] > limit[s] + OVER_KW]
    peak = max(starts, key=lambda s: load.get(s, float("-inf")))
    return FeederRow(
        label=label, peak_import_kw=load.get(peak, 0.0), limit_at_peak_kw=limit[peak],
        intervals_over_limit=len(over), energy_over_limit_kwh=sum(over) * 0.25,
        import_kwh=sum(row.import_kwh for row in households),
        cost_eur=sum(row.cost_eur or 0.0 for row in households), degree_hours_outside_band=None, ev_range_km=None,
        ev_required_km=None,
    )


def measured_rows(dso: DsoServer, scenario: Scenario, apps: list[HemsApp]
                  ) -> tuple[list[FeederRow], dict, list[TransformerSeries]]:
    """Per household: what the DSO received as telemetry, against the limits it published (read back from its
    store). Then the feeder (all households against their summed limits) or, with a grid, each transformer
    (its load against its limit)."""
    rows: list[FeederRow] = []
    seen: dict[str, Published] = {}
    for contract, app in zip(scenario.contracts, apps, strict=True):
        house = seen[contract.connection_point_id] = published(dso.store, contract.connection_point_id,
                                                               start=scenario.start, count=scenario.intervals)
        telemetry, limits = house.telemetry, house.limit_kw
        over = [row.import_kw - limits[start] for start, row in telemetry.items()
                if exceeds_limit(row.import_kw, limits[start])]
        peak_start = max(telemetry, key=lambda start: telemetry[start].import_kw) if telemetry else scenario.start
        comfort, ev_km, need_km = _summarise_kpis(app.kpi.days())
        cost = _cost_eur(telemetry, scenario.tariff)
        rows.append(FeederRow(
            label=contract.connection_point_id,
            peak_import_kw=telemetry[peak_start].import_kw if telemetry else 0.0,
            limit_at_peak_kw=limits[peak_start],
            intervals_over_limit=len(over),
            energy_over_limit_kwh=sum(over) * 0.25,
            import_kwh=sum(row.import_kw for row in telemetry.values()) * 0.25,
            cost_eur=cost, degree_hours_outside_band=comfort, ev_range_km=ev_km, ev_required_km=need_km,
        ))
    households = list(rows)
    starts = [scenario.start + index * INTERVAL for index in range(scenario.intervals)]
    if scenario.grid is None:
        feeder_load: dict[datetime, float] = {}
        for house in seen.values():
            for start, row in house.telemetry.items():
                feeder_load[start] = feeder_load.get(start, 0.0) + row.import_kw - row.export_kw
        feeder_limit = {s: sum(house.limit_kw[s] for house in seen.values()) for s in starts}
        rows.append(_aggregate_row("feeder (all)", feeder_load, feeder_limit, households))
        return rows, {"starts": starts, "load": [feeder_load.get(s) for s in starts],
                      "limit": [feeder_limit[s] for s in starts]}, []
    grid = scenario.grid
    measured = GridStore(dso.store).transformer_load(since=scenario.start, until=starts[-1] + INTERVAL)
    transformers = []
    for transformer in grid.transformers:
        points = grid.connection_points_of(transformer.id)
        mine = [seen[cp.ean] for cp in points]
        load = {s: kw for s, (kw, _) in measured.get(transformer.id, {}).items()}
        transformers.append(TransformerSeries(
            transformer=transformer, connection_points=points, starts=starts, load_kw=[load.get(s) for s in starts],
            reporting=[measured.get(transformer.id, {}).get(s, (0.0, 0))[1] for s in starts],
            firm_kw=[sum(house.firm_kw[s] for house in mine) for s in starts],
            limits_kw=[sum(house.limit_kw[s] for house in mine) for s in starts]))
        eans = {cp.ean for cp in points}
        rows.append(_aggregate_row(f"transformer {transformer.id}", load, dict.fromkeys(starts, transformer.limit_kw),
                                   [row for row in households if row.label in eans]))
    return rows, {}, transformers


def format_rows(rows: list[FeederRow]) -> str:
    def number(value: float | None, pattern: str) -> str:
        return "-" if value is None else pattern.format(value)

    header = ["household (EAN)", "peak kW", "limit@peak", "over #", "over kWh", "import kWh", "cost EUR",
              "K·h outside band", "EV km @06:00", "needed km"]
    table = [header] + [
        [row.label, f"{row.peak_import_kw:.2f}", f"{row.limit_at_peak_kw:.2f}", str(row.intervals_over_limit),
         f"{row.energy_over_limit_kwh:.2f}", f"{row.import_kwh:.1f}", number(row.cost_eur, "{:.2f}"),
         number(row.degree_hours_outside_band, "{:.2f}"), number(row.ev_range_km, "{:.0f}"),
         number(row.ev_required_km, "{:.0f}")]
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_dso_summary(store: DsoStore, rows: list[FeederRow], transformers: list[TransformerSeries]) -> str:
    """What a DSO reads off the run: per transformer its load against limit and capacity, what its planner
    allocated, and which households went over their published limits."""
    lines = []
    for series in transformers:
        t = series.transformer
        loads = [(kw, s) for kw, s in zip(series.load_kw, series.starts, strict=True) if kw is not None]
        peak_kw, peak_at = max(loads, default=(0.0, series.starts[0]))
        over_limit = sum(kw > t.limit_kw + OVER_KW for kw, _ in loads)
        over_capacity = sum(kw > t.capacity_kw + OVER_KW for kw, _ in loads)
        points = series.connection_points
        incomplete = sum(n < len(points) for n in series.reporting)
        guaranteed_kw = sum(cp.guaranteed_min_import_kw for cp in points)
        contracted_kw = sum(cp.contracted_max_import_kw for cp in points)
        lines += [
            f"transformer {t.id}: {t.rating_kva:g} kVA, capacity {t.capacity_kw:.2f} kW, limit {t.limit_kw:.2f} kW "
            f"(safety margin {t.safety_margin:.0%}); {len(points)} households with section 14a guarantees of "
            f"{guaranteed_kw:.2f} kW and contracts of {contracted_kw:.2f} kW in all",
            f"  peak load {peak_kw:.2f} kW at {peak_at.astimezone(ZONE):%H:%M} local "
            f"({peak_kw / t.limit_kw:.0%} of the limit); {over_limit} of {len(loads)} intervals over the limit, "
            f"{over_capacity} over the capacity" + (f"; {incomplete} interval(s) with incomplete telemetry"
                                                      if incomplete else ""),
            f"  summed firm limits {min(series.firm_kw):.2f}-{max(series.firm_kw):.2f} kW, firm + non-firm "
            f"{min(series.limits_kw):.2f}-{max(series.limits_kw):.2f} kW",
        ]
    gstore = GridStore(store)
    start, end = transformers[0].starts[0], transformers[0].starts[-1] + INTERVAL
    firm_runs, non_firm_runs = ([run for run in gstore.runs(kind=kind, limit=100_000)
                                 if run.window_start < end and run.window_end > start] for kind in (FIRM, NON_FIRM))
    forced = sum(run.summary.get("minimum_forced_intervals", 0) for run in firm_runs)
    released = max((run.summary.get("non_firm_import_kw", 0.0) for run in non_firm_runs), default=0.0)
    lines.append(f"DSO planner: {len(firm_runs)} firm run(s) (days {', '.join(sorted(r.day or '?' for r in firm_runs))}"
                 f"; section 14a minimums scaled down in {forced} interval(s)), {len(non_firm_runs)} non-firm run(s) "
                 f"(at most {released:.2f} kW released at once)")
    households = [row for row in rows if not row.label.startswith(("transformer ", "feeder "))]
    over = [row for row in households if row.intervals_over_limit]
    lines.append("every household stayed within the limits the DSO published" if not over else
                 "over the published limit: " + ", ".join(f"{row.label} in {row.intervals_over_limit} interval(s) "
                                                          f"({row.energy_over_limit_kwh:.2f} kWh)" for row in over))
    return "\n".join(lines)


def format_needs(store: DsoStore, scenario: Scenario, apps: list[HemsApp]) -> str:
    """Per household: the capacity need its HEMS reported against the firm limits the planner gave it (read from the
    DSO's store), and each daily performance verdict the DSO received against the comfort the simulated household
    actually had (the HEMS's own KPIs of the same local day)."""
    start = scenario.start
    end = start + scenario.intervals * INTERVAL
    header = ["household (EAN)", "need intervals", "peak need kW", "firm@peak", "need kWh", "firm kWh",
              "not honoured #", "shortfall kWh"]
    table = [header]
    verdicts = []
    for contract, app in zip(scenario.contracts, apps, strict=True):
        ean = contract.connection_point_id
        needs = needs_in_force(store, ean, since=start, until=end, timezone=ZONE.key)
        firm = published(store, ean, start=start, count=scenario.intervals).firm_kw
        short = {s: kw - firm[s] for s, kw in needs.items() if firm[s] < kw - 0.001}
        peak = max(needs, key=needs.__getitem__) if needs else None
        table.append([ean, str(len(needs)), f"{needs[peak]:.2f}" if peak else "-", f"{firm[peak]:.2f}" if peak else "-",
                      f"{sum(needs.values()) * 0.25:.1f}", f"{sum(firm[s] for s in needs) * 0.25:.1f}",
                      str(len(short)), f"{sum(short.values()) * 0.25:.2f}"])
        kpis = {day.day: day for day in app.kpi.days()}
        for stored in PerformanceStore(store).performance_reports(ean):
            report = stored.report
            day = report.start.astimezone(ZONE).date()
            kpi = kpis.get(day)
            ev = ("-" if report.ev is None else
                  f"EV {'ready' if report.ev.ready else f'{report.ev.shortfall_km:.0f} km short'}")
            verdicts.append(f"  {ean} {day}: {report.degree_hours_outside_band:.3f} K·h outside the band "
                            f"({len(report.comfort_losses)} interval(s), "
                            f"{sum(loss.limit_below_need for loss in report.comfort_losses)} with the DSO's limit "
                            f"below the need); the household had "
                            f"{kpi.degree_hours_outside_band if kpi else float('nan'):.3f} K·h; {ev}")
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    lines = ["Capacity needs of the performance contracts against the firm limits the DSO's planner gave "
             "(from the DSO's store):"]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in table]
    lines.insert(2, "  ".join("-" * width for width in widths))
    lines.append("Daily performance verdicts the DSO received (no indoor temperature or EV range left the homes):")
    lines += verdicts or ["  none yet: a verdict follows the end of each local day"]
    return "\n".join(lines)


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _steps(starts: list[datetime], values: list[float | None]) -> tuple[list[datetime], list[float]]:
    """A step plot needs the end of the last interval too."""
    local = [start.astimezone(ZONE) for start in [*starts, starts[-1] + INTERVAL]]
    return local, [value if value is not None else float("nan") for value in [*values, values[-1]]]


def plot(series: dict, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(11, 4.5))
    axis.step(*_steps(series["starts"], series["limit"]), where="post", color="tab:red",
              label="summed import limits (DSO)")
    axis.step(*_steps(series["starts"], series["load"]), where="post", color="tab:blue",
              label="feeder net import (telemetry received by DSO)")
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.set_ylabel("kW")
    axis.set_xlabel("local time (Europe/Amsterdam)")
    axis.set_title("Feeder load against the capacity the DSO published")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_transformers(transformers: list[TransformerSeries], path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(len(transformers), 1, figsize=(11, 4.8 * len(transformers)), squeeze=False)
    for axis, series in zip(axes[:, 0], transformers, strict=True):
        t = series.transformer
        axis.axhline(t.capacity_kw, color="black", linestyle="--", linewidth=1,
                     label=f"capacity {t.capacity_kw:.1f} kW")
        axis.step(*_steps(series.starts, series.firm_kw), where="post", color="tab:green", linewidth=4, alpha=0.5,
                  label="summed firm limits (planner, day-ahead)")
        axis.axhline(t.limit_kw, color="tab:red", linewidth=1.2, label=f"limit {t.limit_kw:.1f} kW (capacity - margin)")
        axis.step(*_steps(series.starts, series.limits_kw), where="post", color="tab:orange",
                  label="summed firm + non-firm limits (planner)")
        axis.step(*_steps(series.starts, series.load_kw), where="post", color="tab:blue",
                  label="transformer load (telemetry received by DSO)")
        axis.axhline(0, color="grey", linewidth=0.5)
        axis.set_ylabel("kW")
        axis.set_xlabel("local time (Europe/Amsterdam)")
        axis.set_title(f"Transformer {t.id}: load against the limits the DSO's planner published")
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, frameon=False, fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


async def run(args: argparse.Namespace) -> int:
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    db_path = output / "dso.sqlite"
    db_path.unlink(missing_ok=True)
    scenario = build_scenario(households=args.households, hours=args.hours, evening_kw=args.evening_limit_kw,
                              grid=args.grid_model, start=args.start)
    # Start a little before the first interval so registration and delivery happen before it begins.
    clock = AcceleratedClock(start=scenario.start - (ALLOCATE_LEAD if args.allocate else 2 * INTERVAL),
                             speed=args.speed)
    weather = Weather.synthetic(start=scenario.start - timedelta(hours=1), days=int(args.hours // 24) + 2,
                                seed=args.seed, mean_temp_c=-1.0, daily_amplitude_k=4.0, cloudiness=0.5)
    # Mutual TLS, as in production: a CA, the VTN's certificate and one enrolled certificate per household.
    tls, securities = issue_certificates(output / "pki", db_path, scenario.contracts)
    # With --allocate the server loads the performance contracts and the grid at start, as 'dso-server serve
    # --contracts --grid' does, and plans on them; its catch-up firm run waits for the households' needs.
    contracts_file = None
    if args.allocate:
        contracts_file = output / "contracts.toml"
        contracts_file.write_text(contracts_toml(scenario.contracts, GROUP), encoding="utf-8")
    settings = DsoSettings(db_path=str(db_path), vtn_port=0, api_port=0, poll_interval_s=1.0,
                           grid_path=args.grid if args.allocate else None, contracts_file=contracts_file,
                           need_grace_s=(ALLOCATE_LEAD - INTERVAL).total_seconds(), **tls)
    began = wall_time.monotonic()
    async with DsoServer(settings, clock) as dso:
        print(f"DSO VTN at {dso.vtn_url} (mutual TLS, certificates in {output / 'pki'}), operator API at "
              f"{dso.api_url}, store {db_path}")
        # The operator's token, as 'dso-server token create --name demo-operator --role operate' makes it.
        await publish(dso.api_url, dso.create_token("demo-operator", Role.OPERATE), scenario)
        if scenario.grid is None:
            print(f"published a ToU tariff and a firm bandwidth ({args.evening_limit_kw} kW 16:00-21:00 local) "
                  f"to {len(scenario.contracts)} households")
        apps = []
        for index, contract in enumerate(scenario.contracts):
            pv_kw, heat_pump, ev, battery = DEVICE_MIXES[index % len(DEVICE_MIXES)]
            household = make_household(contract, weather=weather, seed=args.seed + index, pv_kw=pv_kw,
                                       heat_pump=heat_pump, ev=ev, battery=battery)
            # Poll often enough that a poll period stays well inside the 120 s failsafe window in clock time.
            apps.append(HemsApp(contract, household, clock, dso.vtn_url, poll_interval_s=min(0.1, 30 / args.speed),
                                security=securities[contract.connection_point_id]))
        end = scenario.start + scenario.intervals * INTERVAL
        await asyncio.gather(*(app.start(until=end) for app in apps))
        if scenario.grid is not None:
            firm = await first_firm_run(dso, clock, by=scenario.start)
            print(f"grid {args.grid}: {scenario.grid.summary()}")
            print(f"published a ToU tariff to {len(scenario.contracts)} households with performance contracts; "
                  f"they reported their capacity needs and the DSO's planner published their firm limits for "
                  f"{firm.day} at {firm.run_at.astimezone(ZONE):%H:%M} local (for "
                  f"{firm.summary.get('need_households', 0)} needs); the next day's follow at 14:00, non-firm every "
                  "5 min")
        print(f"{len(apps)} HEMS registered; simulating {args.hours:g} h at {args.speed:g}x ...")
        progress = asyncio.create_task(_progress(clock, scenario.start, end))
        try:
            await asyncio.gather(*(app.finished() for app in apps))
        finally:
            progress.cancel()
            await asyncio.gather(*(app.stop() for app in apps))
        await sleep_until(clock, clock.now())
        rows, series, transformers = measured_rows(dso, scenario, apps)
        summary = format_dso_summary(dso.store, rows, transformers) if transformers else None
        needs = format_needs(dso.store, scenario, apps) if scenario.grid is not None else None
    print()
    print(f"Simulated {args.hours:g} h from {scenario.start.astimezone(ZONE):%Y-%m-%d %H:%M} local "
          f"in {wall_time.monotonic() - began:.0f} s wall time.")
    print(format_rows(rows))
    if summary is not None:
        print(f"\n{summary}")
    if needs is not None:
        print(f"\n{needs}")
    if summary is not None:
        picture = output / "transformer.png"
        plot_transformers(transformers, picture)
    else:
        picture = output / "feeder.png"
        plot(series, picture)
    print(f"\nplot: {picture}\nDSO store: {db_path}")
    return 0


def issue_certificates(directory: Path, db_path: Path, contracts: Sequence[HouseholdContract]
                       ) -> tuple[dict[str, Path], dict[str, VenSecurity]]:
    """A fresh lab PKI for this run (as 'dso-server pki init / issue-vtn / issue-ven' make it): the VTN's TLS
    settings, and per household its VEN's certificate, enrolled in the DSO's store for that household only."""
    shutil.rmtree(directory, ignore_errors=True)
    pki = Pki(directory)
    pki.init(name="Quick-start demo CA")
    pki.issue_vtn()
    securities = {}
    with DsoStore(db_path) as store:
        for contract in contracts:
            ean = contract.connection_point_id
            issued = pki.issue_ven(ean=ean)
            cert_path, key_path = pki.ven_paths(ean)
            CertificateStore(store).enrol(Enrolment(
                fingerprint_sha256=issued.fingerprint_sha256, connection_point_id=ean, subject=issued.subject,
                serial=issued.serial, not_after=datetime.fromisoformat(issued.not_after),
                enrolled_at=datetime.now(UTC)))
            securities[ean] = VenSecurity(cert=str(cert_path), key=str(key_path), ca_file=str(pki.ca_cert_path))
    tls = {"cert": pki.vtn_cert_path, "key": pki.vtn_key_path, "ca_file": pki.ca_cert_path}
    return tls, securities


async def _progress(clock: AcceleratedClock, start: datetime, end: datetime) -> None:
    while True:
        await asyncio.sleep(15)
        done = min(1.0, max(0.0, (clock.now() - start) / (end - start)))
        print(f"  ... {done:.0%} of the simulated period", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    parser.add_argument("--start", default="12:00", metavar="HH:MM",
                        help=f"local time on {SIM_START.astimezone(ZONE):%Y-%m-%d} the simulated period starts at, on "
                             "a quarter-hour (default 12:00, so that the evening, the night and the 06:00 EV "
                             "departure fall inside 24 h)")
    parser.add_argument("--speed", type=float, default=600.0,
                        help="simulated seconds per wall second (default 600: 24 h in about 2.5 min)")
    parser.add_argument("--households", type=int, default=None,
                        help="number of simulated households (default 3; with --allocate the grid's connection "
                             "points are the households)")
    parser.add_argument("--evening-limit-kw", type=float, default=None,
                        help="firm import limit per household 16:00-21:00 local (default 3.0 kW; not with "
                             "--allocate, where the DSO's planner sets the limits)")
    parser.add_argument("--allocate", action="store_true",
                        help="let the DSO allocate: load a grid into the server and let its planning loop publish "
                             "firm (day-ahead) and non-firm (every 5 min) limits instead of the operator's "
                             "fixed bandwidth")
    parser.add_argument("--grid", type=Path, default=None, metavar="FILE",
                        help=f"grid file for --allocate (.toml or .csv, format in dso_server/capacity/grid.py; default "
                             f"{DEFAULT_GRID.relative_to(DEFAULT_GRID.parent.parent)})")
    parser.add_argument("--seed", type=int, default=7, help="seed for weather and household variation")
    parser.add_argument("--output-dir", default="demo-output", help="where the SQLite store and plot go")
    args = parser.parse_args(argv)
    try:  # before a run of minutes, not at its end: the plots need the demo extra
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error("the demo draws its plots with matplotlib, which is not installed here: "
                     ".venv/bin/pip install -e '.[demo]'")
    if not 0.25 <= args.hours <= 72:
        parser.error(f"--hours must be between 0.25 and 72, not {args.hours}")
    if not 1 <= args.speed <= 5000:
        parser.error(f"--speed must be between 1 and 5000, not {args.speed}")
    try:
        local_start = time.fromisoformat(args.start)
    except ValueError:
        parser.error(f"--start must be a local time such as 12:00, not {args.start!r}")
    if local_start.minute % 15 or local_start.second or local_start.microsecond or local_start.tzinfo:
        parser.error(f"--start must be a local time on a quarter-hour such as 16:45, not {args.start!r}")
    args.start = datetime.combine(SIM_START.astimezone(ZONE).date(), local_start, tzinfo=ZONE).astimezone(UTC)
    args.grid_model = None
    if args.allocate:
        for option, value in (("--households", args.households), ("--evening-limit-kw", args.evening_limit_kw)):
            if value is not None:
                parser.error(f"{option} does not go with --allocate: the grid's connection points are the households "
                             "and the DSO's planner sets their limits")
        args.grid = args.grid if args.grid is not None else DEFAULT_GRID
        try:
            args.grid_model = load_grid(args.grid)
        except GridFileError as error:
            parser.error(f"--grid: {error}")
        args.households = len(args.grid_model.connection_points)
    elif args.grid is not None:
        parser.error("--grid only goes with --allocate (without it the operator publishes a fixed bandwidth)")
    args.households = 3 if args.households is None else args.households
    args.evening_limit_kw = 3.0 if args.evening_limit_kw is None else args.evening_limit_kw
    if not 1 <= args.households <= 50:
        parser.error(f"--households must be between 1 and 50, not {args.households}"
                     + (f" (the connection points in {args.grid})" if args.allocate else ""))
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("openleadr").setLevel(logging.WARNING)  # it logs every poll at INFO
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
