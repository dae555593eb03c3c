"""End-to-end demo: one DSO VTN and simulated households over real OpenADR 2.0b on loopback.

The DSO publishes a time-of-use tariff and a capacity bandwidth that is tighter in the evening; each HEMS
plans its heat pump, EV, battery and PV inside it and reports back. A simulated day runs on an accelerated
clock (about two and a half minutes at the default speed). At the end it prints, per household and for the
feeder, the peak import against the limit, the intervals over the limit, energy cost, comfort and EV
readiness, and writes a plot of the feeder load against the summed limits.

    python examples/quickstart.py [--hours 24] [--speed 600] [--households 3] [--output-dir demo-output]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time as wall_time
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp

from dso_server.service import DsoServer
from dso_server.settings import DsoSettings
from hems_client.app import HemsApp
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
    TariffInterval,
    TouTariff,
    effective_limits,
    make_ean18,
)
from protocol.clock import AcceleratedClock, sleep_until

ZONE = ZoneInfo("Europe/Amsterdam")
# A cold winter day, starting at local noon so the evening peak, the night and the 06:00 EV departure all fall
# inside one simulated day.
SIM_START = datetime(2027, 1, 13, 12, 0, tzinfo=ZONE).astimezone(UTC)

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
    bandwidth: CapacityBandwidth


def build_scenario(*, households: int, hours: float, evening_kw: float) -> Scenario:
    count = int(hours * 3600 / INTERVAL.total_seconds())
    # Signals reach a day past the simulated period, so no plan ever sees the edge of the published data.
    moments = [SIM_START + index * INTERVAL for index in range(count + 96)]
    contracts = [
        HouseholdContract(
            connection_point_id=make_ean18(f"8716871200000{index + 1:04d}"),
            contracted_max_import_kw=17.0,
            contracted_max_export_kw=10.0,
            failsafe_import_kw=4.2,
            failsafe_export_kw=4.2,
            failsafe_duration_s=7200,
            comfort=ComfortTerms(indoor_setpoint_c=20.0, temperature_band_k=1.0, ev_departure_local=time(6, 0),
                                 ev_required_range_km=150.0, timezone="Europe/Amsterdam"),
        )
        for index in range(households)
    ]
    tariff = TouTariff(intervals=tuple(
        TariffInterval(start=moment, import_price_eur_per_kwh=import_price_eur_per_kwh(moment.astimezone(ZONE)),
                       export_price_eur_per_kwh=0.05)
        for moment in moments
    ))
    bandwidth = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=moment,
                          import_limit_kw=evening_limit_kw(moment.astimezone(ZONE), day_kw=8.0, evening_kw=evening_kw),
                          export_limit_kw=5.0)
        for moment in moments
    ))
    return Scenario(start=SIM_START, intervals=count, contracts=contracts, tariff=tariff, bandwidth=bandwidth)


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with session.post(url, json=body) as reply:
        answer = await reply.json()
        if reply.status >= 300:
            raise RuntimeError(f"DSO operator API refused {url}: {answer}")
        return answer


async def publish(api_url: str, scenario: Scenario) -> None:
    """What a DSO operator does, through the operator API: enrol households, publish tariff and bandwidth."""
    async with aiohttp.ClientSession() as session:
        for contract in scenario.contracts:
            await _post(session, f"{api_url}/api/households",
                        {**contract.model_dump(mode="json"), "group": "feeder-1"})
        await _post(session, f"{api_url}/api/tariffs", {"group": "feeder-1", **scenario.tariff.model_dump(mode="json")})
        await _post(session, f"{api_url}/api/bandwidths",
                    {"group": "feeder-1", **scenario.bandwidth.model_dump(mode="json")})


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


def _summarise_kpis(days: list[DailyKpi]) -> tuple[float, float, float | None, float | None]:
    cost = sum(day.cost_eur for day in days)
    comfort = sum(day.degree_hours_outside_band for day in days)
    departures = [day for day in days if day.ev_range_at_departure_km is not None]
    ev_km = departures[-1].ev_range_at_departure_km if departures else None
    need_km = departures[-1].ev_required_range_km if departures else None
    return cost, comfort, ev_km, need_km


def measured_rows(dso: DsoServer, scenario: Scenario, apps: list[HemsApp]) -> tuple[list[FeederRow], dict]:
    """Per household and for the feeder: what the DSO received as telemetry, against the limits it published."""
    end = scenario.start + scenario.intervals * INTERVAL
    rows: list[FeederRow] = []
    feeder_load: dict[datetime, float] = {}
    feeder_limit: dict[datetime, float] = {}
    for contract, app in zip(scenario.contracts, apps, strict=True):
        telemetry = {row.interval_start: row for row in dso.store.telemetry(contract.connection_point_id,
                                                                    since=scenario.start, until=end)}
        limits = {limit.start: limit.import_limit_kw for limit in
                  effective_limits(contract, [scenario.bandwidth], start=scenario.start, count=scenario.intervals)}
        over = [row.import_kw - limits[start] for start, row in telemetry.items()
                if row.import_kw > limits[start] + 0.01]
        peak_start = max(telemetry, key=lambda start: telemetry[start].import_kw) if telemetry else scenario.start
        cost, comfort, ev_km, need_km = _summarise_kpis(app.kpi.days())
        rows.append(FeederRow(
            label=contract.connection_point_id,
            peak_import_kw=telemetry[peak_start].import_kw if telemetry else 0.0,
            limit_at_peak_kw=limits[peak_start],
            intervals_over_limit=len(over),
            energy_over_limit_kwh=sum(over) * 0.25,
            import_kwh=sum(row.import_kw for row in telemetry.values()) * 0.25,
            cost_eur=cost, degree_hours_outside_band=comfort, ev_range_km=ev_km, ev_required_km=need_km,
        ))
        for start, row in telemetry.items():
            feeder_load[start] = feeder_load.get(start, 0.0) + row.import_kw - row.export_kw
        for start, limit in limits.items():
            feeder_limit[start] = feeder_limit.get(start, 0.0) + limit
    starts = sorted(feeder_limit)
    over = [feeder_load.get(s, 0.0) - feeder_limit[s] for s in starts
            if feeder_load.get(s, 0.0) > feeder_limit[s] + 0.01]
    peak = max(starts, key=lambda s: feeder_load.get(s, 0.0))
    rows.append(FeederRow(
        label="feeder (all)", peak_import_kw=feeder_load.get(peak, 0.0), limit_at_peak_kw=feeder_limit[peak],
        intervals_over_limit=len(over), energy_over_limit_kwh=sum(over) * 0.25,
        import_kwh=sum(row.import_kwh for row in rows),
        cost_eur=sum(row.cost_eur or 0.0 for row in rows), degree_hours_outside_band=None, ev_range_km=None,
        ev_required_km=None,
    ))
    return rows, {"starts": starts, "load": [feeder_load.get(s) for s in starts],
                  "limit": [feeder_limit[s] for s in starts]}


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


def plot(series: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A step plot needs the end of the last interval too.
    local = [start.astimezone(ZONE) for start in [*series["starts"], series["starts"][-1] + INTERVAL]]
    figure, axis = plt.subplots(figsize=(11, 4.5))
    limits = [*series["limit"], series["limit"][-1]]
    axis.step(local, limits, where="post", color="tab:red", label="summed import limits (DSO)")
    load = [value if value is not None else float("nan") for value in [*series["load"], series["load"][-1]]]
    axis.step(local, load, where="post", color="tab:blue", label="feeder net import (telemetry received by DSO)")
    axis.axhline(0, color="grey", linewidth=0.5)
    axis.set_ylabel("kW")
    axis.set_xlabel("local time (Europe/Amsterdam)")
    axis.set_title("Feeder load against the capacity the DSO published")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


async def run(args: argparse.Namespace) -> int:
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    db_path = output / "dso.sqlite"
    db_path.unlink(missing_ok=True)
    scenario = build_scenario(households=args.households, hours=args.hours, evening_kw=args.evening_limit_kw)
    # Start a little before the first interval so registration and delivery happen before it begins.
    clock = AcceleratedClock(start=scenario.start - 2 * INTERVAL, speed=args.speed)
    weather = Weather.synthetic(start=scenario.start - timedelta(hours=1), days=int(args.hours // 24) + 2,
                                seed=args.seed, mean_temp_c=-1.0, daily_amplitude_k=4.0, cloudiness=0.5)
    settings = DsoSettings(db_path=str(db_path), vtn_port=0, api_port=0, poll_interval_s=1.0)
    began = wall_time.monotonic()
    async with DsoServer(settings, clock) as dso:
        print(f"DSO VTN at {dso.vtn_url}, operator API at {dso.api_url}, store {db_path}")
        await publish(dso.api_url, scenario)
        print(f"published a ToU tariff and a firm bandwidth ({args.evening_limit_kw} kW 16:00-21:00 local) "
              f"to {len(scenario.contracts)} households")
        apps = []
        for index, contract in enumerate(scenario.contracts):
            pv_kw, heat_pump, ev, battery = DEVICE_MIXES[index % len(DEVICE_MIXES)]
            household = make_household(contract, weather=weather, seed=args.seed + index, pv_kw=pv_kw,
                                       heat_pump=heat_pump, ev=ev, battery=battery)
            # Poll often enough that a poll period stays well inside the 120 s failsafe window in clock time.
            apps.append(HemsApp(contract, household, clock, dso.vtn_url, poll_interval_s=min(0.1, 30 / args.speed)))
        end = scenario.start + scenario.intervals * INTERVAL
        await asyncio.gather(*(app.start(until=end) for app in apps))
        print(f"{len(apps)} HEMS registered; simulating {args.hours:g} h at {args.speed:g}x ...")
        progress = asyncio.create_task(_progress(clock, scenario.start, end))
        try:
            await asyncio.gather(*(app.finished() for app in apps))
        finally:
            progress.cancel()
            await asyncio.gather(*(app.stop() for app in apps))
        await sleep_until(clock, clock.now())
        rows, series = measured_rows(dso, scenario, apps)
    print()
    print(f"Simulated {args.hours:g} h from {scenario.start.astimezone(ZONE):%Y-%m-%d %H:%M} local "
          f"in {wall_time.monotonic() - began:.0f} s wall time.")
    print(format_rows(rows))
    picture = output / "feeder.png"
    plot(series, picture)
    print(f"\nplot: {picture}\nDSO store: {db_path}")
    return 0


async def _progress(clock: AcceleratedClock, start: datetime, end: datetime) -> None:
    while True:
        await asyncio.sleep(15)
        done = min(1.0, max(0.0, (clock.now() - start) / (end - start)))
        print(f"  ... {done:.0%} of the simulated period", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    parser.add_argument("--speed", type=float, default=600.0,
                        help="simulated seconds per wall second (default 600: 24 h in about 2.5 min)")
    parser.add_argument("--households", type=int, default=3, help="number of simulated households (default 3)")
    parser.add_argument("--evening-limit-kw", type=float, default=3.0,
                        help="firm import limit per household 16:00-21:00 local (default 3.0 kW)")
    parser.add_argument("--seed", type=int, default=7, help="seed for weather and household variation")
    parser.add_argument("--output-dir", default="demo-output", help="where the SQLite store and plot go")
    args = parser.parse_args(argv)
    if not 0.25 <= args.hours <= 72:
        parser.error(f"--hours must be between 0.25 and 72, not {args.hours}")
    if not 1 <= args.speed <= 5000:
        parser.error(f"--speed must be between 1 and 5000, not {args.speed}")
    if not 1 <= args.households <= 50:
        parser.error(f"--households must be between 1 and 50, not {args.households}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("openleadr").setLevel(logging.WARNING)  # it logs every poll at INFO
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
