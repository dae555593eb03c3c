"""Monthly settlement of a performance contract (dso_server.settlement): guarantee honoured, comfort delivered and
the discount due, from the needs, the published limits and the performance reports."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dso_server.settlement import COLUMNS, month_bounds, settle_month
from protocol import (
    INTERVAL,
    ComfortLoss,
    ComfortTerms,
    EvVerdict,
    HouseholdContract,
    PerformanceReport,
    PerformanceTerms,
    make_ean18,
)

ZONE = ZoneInfo("Europe/Amsterdam")
CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000001"), contracted_max_import_kw=17, contracted_max_export_kw=10,
    failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
    comfort=ComfortTerms(ev_departure_local=time(6, 0)),
    performance=PerformanceTerms(monthly_discount_eur=12.0, compensation_eur_per_degree_hour=2.0,
                                 compensation_eur_per_missed_departure=5.0))


def day_start(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=ZONE).astimezone(UTC)


def report(d: date, losses: tuple[ComfortLoss, ...] = (), ev: EvVerdict | None = None) -> PerformanceReport:
    start = day_start(d)
    return PerformanceReport(start=start, end=day_start(d + timedelta(days=1)), created_at=start + timedelta(days=1),
                             degree_hours_outside_band=sum(loss.degree_hours for loss in losses),
                             comfort_losses=losses, ev=ev)


def test_month_bounds_follow_the_local_calendar() -> None:
    start, end = month_bounds(date(2027, 3, 17), "Europe/Amsterdam")
    assert start == datetime(2027, 2, 28, 23, tzinfo=UTC) and end == datetime(2027, 3, 31, 22, tzinfo=UTC)
    december = (datetime(2027, 12, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC))
    assert month_bounds(date(2027, 12, 5), "UTC") == december


def test_a_month_with_one_short_evening_and_one_dso_caused_cold_interval() -> None:
    d = date(2027, 1, 13)
    evening = day_start(d) + 68 * INTERVAL  # 17:00 local
    needs = {evening + k * INTERVAL: 3.0 for k in range(8)}  # two hours of need
    firm = {s: 3.0 for s in needs} | {evening: 2.0, evening + INTERVAL: 2.5}  # two intervals short
    effective = dict(firm) | {evening + INTERVAL: 3.2}  # non-firm covered the second one
    losses = (ComfortLoss(start=evening, degree_hours=0.25, limit_kw=2.0, need_kw=3.0),
              ComfortLoss(start=evening + INTERVAL, degree_hours=0.5, limit_kw=3.2, need_kw=3.0),
              ComfortLoss(start=evening + 2 * INTERVAL, degree_hours=0.25, limit_kw=3.0, need_kw=3.0))
    night = day_start(d + timedelta(days=1)) + 12 * INTERVAL  # 03:00 the next day: in the session before 06:00
    needs[night], firm[night], effective[night] = 4.0, 2.0, 2.0
    reports = [report(d, losses), report(d + timedelta(days=1), ev=EvVerdict(shortfall_km=20.0, limit_below_need=True)),
               report(date(2027, 2, 1))]  # another month: ignored
    row = settle_month(contract=CONTRACT, month=date(2027, 1, 1), need_kw=needs, firm_kw=firm, effective_kw=effective,
                       reports=reports)
    assert row.month == "2027-01" and row.days_reported == 2
    assert row.need_hours == 2.25 and row.not_honoured_hours == 0.75 and row.honoured_hours == 1.5
    assert row.shortfall_kwh == pytest.approx((1.0 + 0.5 + 2.0) * 0.25)
    assert row.degree_hours_outside_band == 1.0 and row.degree_hours_dso_caused == 0.25
    assert (row.ev_departures, row.ev_departures_short, row.ev_departures_short_dso_caused) == (1, 1, 1)
    assert row.disputed_intervals == 0
    assert row.discount_eur == 12.0 and row.compensation_eur == pytest.approx(2.0 * 0.25 + 5.0)
    assert row.total_eur == pytest.approx(17.5)
    assert list(row.as_row()) == list(COLUMNS)


def test_a_claim_the_dsos_records_do_not_support_is_disputed_and_not_paid() -> None:
    d = date(2027, 1, 13)
    moment = day_start(d) + 70 * INTERVAL
    claim = report(d, (ComfortLoss(start=moment, degree_hours=1.0, limit_kw=1.0, need_kw=3.0),),
                   ev=EvVerdict(shortfall_km=5.0, limit_below_need=True))
    row = settle_month(contract=CONTRACT, month=d, need_kw={moment: 3.0}, firm_kw={moment: 3.0},
                       effective_kw={moment: 3.0}, reports=[claim])
    assert row.disputed_intervals == 1 and row.degree_hours_dso_caused == 0.0
    assert row.ev_departures_short_dso_caused == 0 and row.compensation_eur == 0.0 and row.total_eur == 12.0


def test_only_performance_contracts_are_settled() -> None:
    with pytest.raises(ValueError, match="no performance contract"):
        settle_month(contract=CONTRACT.model_copy(update={"performance": None}), month=date(2027, 1, 1), need_kw={},
                     firm_kw={}, effective_kw={}, reports=[])
