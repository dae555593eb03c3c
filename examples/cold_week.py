"""A cold week in one household: how exactly the HEMS keeps a tight evening limit, and why it went over where it did.

Seven days from Monday 00:00 local at -8 to +2 °C (synthetic weather), the simulated household of
``hems_client.devices`` with a heat pump, an EV (150 km needed at 06:00), a 10 kWh battery and 5 kWp of PV,
the demo's time-of-use tariff, and a firm import limit 16:00-21:00 local that changes every evening between
0 and 3 kW (0 kW twice). The controller runs with the convex optimiser and the local guard on a simulated clock
(no network; about 10-20 s). It prints the daily KPIs with the reason for every interval whose mean import
went over its limit (``hems_client.control.over_limit``), then each such interval.

    python examples/cold_week.py [--days 7] [--seed 5] [--tolerance-kw 0.0]

``--tolerance-kw`` is what counts as over in the table: 0 lists every interval over its limit at all.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hems_client.control.controller import Controller
from hems_client.control.signal_book import SignalBook
from hems_client.devices import Household, Weather, make_household
from hems_client.kpi import KpiTracker, format_kpi_table
from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    ComfortTerms,
    Firmness,
    HouseholdContract,
    TariffInterval,
    TouTariff,
    make_ean18,
)
from protocol.clock import ManualClock
from protocol.oadr20b.events import DecodedEvent, EventMeta, EventStatus

ZONE = ZoneInfo("Europe/Amsterdam")
START = datetime(2027, 1, 11, 0, 0, tzinfo=ZONE).astimezone(UTC)  # a Monday
EVENING_LIMITS_KW = (0.0, 1.0, 2.0, 3.0, 0.0, 1.5, 3.0)
"""The firm import limit 16:00-21:00 local, Monday to Sunday; no DSO limit the rest of the day."""
CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000042"), contracted_max_import_kw=17.0,
    contracted_max_export_kw=10.0, failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
    comfort=ComfortTerms(indoor_setpoint_c=20.0, temperature_band_k=1.0, ev_departure_local=time(6, 0),
                         ev_required_range_km=150.0, timezone="Europe/Amsterdam"),
)


def evening_limit_kw(start: datetime) -> float | None:
    local = start.astimezone(ZONE)
    day = (local.date() - START.astimezone(ZONE).date()).days
    return EVENING_LIMITS_KW[day % 7] if 16 <= local.hour < 21 else None


def import_price_eur_per_kwh(start: datetime) -> float:
    hour = start.astimezone(ZONE).hour
    return 0.42 if 17 <= hour < 21 else 0.28 if 7 <= hour < 17 else 0.22 if hour >= 21 else 0.16


def signals(days: int) -> list[DecodedEvent]:
    """One firm bandwidth and one tariff per day, as the DSO would publish them."""
    events = []
    for day in range(days + 1):
        starts = [START + (day * 96 + k) * INTERVAL for k in range(96)]
        limits = [(s, evening_limit_kw(s)) for s in starts]
        evening = [BandwidthInterval(start=s, import_limit_kw=kw, export_limit_kw=5.0) for s, kw in limits
                   if kw is not None]
        if evening:
            events.append(DecodedEvent(EventMeta(f"evening-{day}", 0, EventStatus.FAR, START),
                                       CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(evening))))
        events.append(DecodedEvent(EventMeta(f"tou-{day}", 0, EventStatus.FAR, START), TouTariff(intervals=tuple(
            TariffInterval(start=s, import_price_eur_per_kwh=import_price_eur_per_kwh(s),
                           export_price_eur_per_kwh=0.05) for s in starts))))
    return events


@dataclass
class ColdWeek:
    controller: Controller
    household: Household


def run_cold_week(*, days: int = 7, seed: int = 5, tolerance_kw: float = 0.0) -> ColdWeek:
    weather = Weather.synthetic(start=START - timedelta(hours=1), days=days + 2, seed=11, mean_temp_c=-3.0,
                                daily_amplitude_k=5.0, cloudiness=0.5)
    household = make_household(CONTRACT, weather=weather, seed=seed, pv_kw=5.0)
    book = SignalBook()
    for event in signals(days):
        book.apply(event, now=START)
    controller = Controller(contract=CONTRACT, household=household, clock=ManualClock(START), signal_book=book,
                            kpi=KpiTracker(timezone=CONTRACT.comfort.timezone, tolerance_kw=tolerance_kw))
    asyncio.run(controller.run(until=START + timedelta(days=days)))
    return ColdWeek(controller=controller, household=household)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7, help="simulated days from Monday 00:00 local (default 7)")
    parser.add_argument("--seed", type=int, default=5, help="seed of the household (default 5)")
    parser.add_argument("--tolerance-kw", type=float, default=0.0,
                        help="mean import above the limit that counts as over (default 0: every interval over)")
    args = parser.parse_args(argv)
    if not 1 <= args.days <= 28:
        parser.error(f"--days must be between 1 and 28, not {args.days}")
    if not 0.0 <= args.tolerance_kw <= 1.0:
        parser.error(f"--tolerance-kw must be between 0 and 1, not {args.tolerance_kw}")
    week = run_cold_week(days=args.days, seed=args.seed, tolerance_kw=args.tolerance_kw)
    days = week.controller.kpi.days()
    print(format_kpi_table([(CONTRACT.connection_point_id, day) for day in days]))
    print()
    for day in days:
        for interval in day.over_limit:
            print(f"{interval.start.astimezone(ZONE):%a %H:%M}  {interval.reason.value:<26} {interval.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
