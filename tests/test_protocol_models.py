"""The profile's models reject what the profile forbids, with a message naming the field and the reason
(PROFILE §3 time, §4 signs and bounds, §6 effective limit, §11 contract)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    ComfortStatus,
    ComfortTerms,
    Firmness,
    HouseholdContract,
    Plan,
    PlanInterval,
    TariffInterval,
    Telemetry,
    TelemetryInterval,
    TouTariff,
    effective_limits,
    floor_to_interval,
    make_ean18,
)
from protocol.contract import ean18_check_digit
from protocol.limits import MAX_ABS_PRICE_EUR_PER_KWH, MAX_POWER_KW
from protocol.signals import MAX_SIGNAL_INTERVALS

T0 = datetime(2025, 1, 15, 16, 0, tzinfo=UTC)
EAN = "871687120000000011"


def limits(*pairs: tuple[float, float], start: datetime = T0, firmness: Firmness = Firmness.FIRM) -> CapacityBandwidth:
    return CapacityBandwidth(firmness=firmness, intervals=tuple(
        BandwidthInterval(start=start + i * INTERVAL, import_limit_kw=imp, export_limit_kw=exp)
        for i, (imp, exp) in enumerate(pairs)))


def contract(**changes: Any) -> HouseholdContract:
    fields: dict[str, Any] = {
        "connection_point_id": EAN, "contracted_max_import_kw": 17.0, "contracted_max_export_kw": 10.0,
        "failsafe_import_kw": 4.2, "failsafe_export_kw": 4.2, "failsafe_duration_s": 7200,
    }
    return HouseholdContract(**{**fields, **changes})


def rejected(build: Any, *fragments: str) -> str:
    """Assert ``build()`` raises ValidationError whose text holds every fragment; return the text."""
    with pytest.raises(ValidationError) as caught:
        build()
    text = str(caught.value)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    return text


# ------------------------------------------------------------------------------------------------ time


def test_naive_datetime_is_rejected_naming_the_field() -> None:
    rejected(lambda: BandwidthInterval(start=datetime(2025, 1, 15, 16, 0), import_limit_kw=3, export_limit_kw=3),
             "start", "naive datetime", "UTC")
    rejected(lambda: Plan(created_at=datetime(2025, 1, 15, 16, 0), intervals=(
        PlanInterval(start=T0, net_import_kw=1.0),)), "created_at", "naive datetime")
    rejected(lambda: ComfortStatus(measured_at=datetime(2025, 1, 15, 16, 3), indoor_temperature_c=20,
                                   comfort_min_c=19, comfort_max_c=21), "measured_at", "naive datetime")


@pytest.mark.parametrize("start", [datetime(9999, 12, 31, 23, 45, tzinfo=UTC),
                                   datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=1))),
                                   datetime(1969, 12, 31, 23, 45, tzinfo=UTC), datetime(2201, 1, 1, tzinfo=UTC)])
def test_timestamps_near_the_ends_of_the_calendar_are_rejected_not_overflowed(start: datetime) -> None:
    # Without the bound, converting year 1 to UTC or adding an interval to year 9999 raises OverflowError.
    rejected(lambda: BandwidthInterval(start=start, import_limit_kw=3, export_limit_kw=3), "start",
             "outside the years 1970-2200")


def test_other_time_zones_are_normalised_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    interval = BandwidthInterval(start=datetime(2025, 1, 15, 17, 0, tzinfo=cet), import_limit_kw=3, export_limit_kw=3)
    assert interval.start == T0 and interval.start.tzinfo is UTC


@pytest.mark.parametrize("start", [T0 + timedelta(minutes=7), T0 + timedelta(seconds=30),
                                   T0 + timedelta(microseconds=1)])
def test_off_grid_start_is_rejected(start: datetime) -> None:
    rejected(lambda: BandwidthInterval(start=start, import_limit_kw=3, export_limit_kw=3),
             "start", "not on the 15-minute grid")
    rejected(lambda: TariffInterval(start=start, import_price_eur_per_kwh=0.3, export_price_eur_per_kwh=0.1),
             "start", "not on the 15-minute grid")


def test_grid_alignment_holds_for_zones_with_a_half_hour_offset() -> None:
    # 21:30 in India (+05:30) is 16:00 UTC: on the grid once in UTC.
    india = timezone(timedelta(hours=5, minutes=30))
    assert BandwidthInterval(start=datetime(2025, 1, 15, 21, 30, tzinfo=india), import_limit_kw=1,
                             export_limit_kw=1).start == T0
    rejected(lambda: BandwidthInterval(start=datetime(2025, 1, 15, 21, 40, tzinfo=india), import_limit_kw=1,
                                       export_limit_kw=1), "not on the 15-minute grid")


def test_unsorted_intervals_are_rejected() -> None:
    a = BandwidthInterval(start=T0, import_limit_kw=3, export_limit_kw=3)
    b = BandwidthInterval(start=T0 + INTERVAL, import_limit_kw=3, export_limit_kw=3)
    rejected(lambda: CapacityBandwidth(firmness=Firmness.FIRM, intervals=(b, a)),
             "intervals[1]", "before intervals[0]", "sorted")


def test_overlapping_intervals_are_rejected() -> None:
    a = BandwidthInterval(start=T0, import_limit_kw=3, export_limit_kw=3)
    rejected(lambda: CapacityBandwidth(firmness=Firmness.FIRM, intervals=(a, a)), "intervals[1]", "overlaps")
    tariff = TariffInterval(start=T0, import_price_eur_per_kwh=0.3, export_price_eur_per_kwh=0.1)
    rejected(lambda: TouTariff(intervals=(tariff, tariff)), "intervals[1]", "overlaps")
    point = TelemetryInterval(start=T0, import_kw=1, export_kw=0)
    rejected(lambda: Telemetry(intervals=(point, point)), "intervals[1]", "overlaps")


def test_gapped_intervals_are_rejected_in_signals_and_plans_but_not_in_telemetry() -> None:
    rejected(lambda: CapacityBandwidth(firmness=Firmness.NON_FIRM, intervals=(
        BandwidthInterval(start=T0, import_limit_kw=3, export_limit_kw=3),
        BandwidthInterval(start=T0 + 2 * INTERVAL, import_limit_kw=3, export_limit_kw=3))),
        "intervals[1]", "gap", "contiguous")
    rejected(lambda: TouTariff(intervals=(
        TariffInterval(start=T0, import_price_eur_per_kwh=0.3, export_price_eur_per_kwh=0.1),
        TariffInterval(start=T0 + 3 * INTERVAL, import_price_eur_per_kwh=0.3, export_price_eur_per_kwh=0.1))),
        "intervals[1]", "gap")
    rejected(lambda: Plan(created_at=T0, intervals=(
        PlanInterval(start=T0, net_import_kw=1), PlanInterval(start=T0 + 2 * INTERVAL, net_import_kw=1))),
        "intervals[1]", "gap")
    # Telemetry may have gaps: a backlog sent after a lost link (PROFILE §9.3).
    batch = Telemetry(intervals=(TelemetryInterval(start=T0, import_kw=1, export_kw=0),
                                 TelemetryInterval(start=T0 + 4 * INTERVAL, import_kw=2, export_kw=0)))
    assert len(batch.intervals) == 2


def test_a_series_holds_one_to_672_intervals() -> None:
    rejected(lambda: CapacityBandwidth(firmness=Firmness.FIRM, intervals=()), "intervals", "at least 1")
    week = limits(*[(3.0, 3.0)] * MAX_SIGNAL_INTERVALS)
    assert week.end - week.start == timedelta(days=7)
    rejected(lambda: limits(*[(3.0, 3.0)] * (MAX_SIGNAL_INTERVALS + 1)), "intervals", "at most 672")


# ------------------------------------------------------------------------------------- signs and bounds


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_limits_are_rejected(value: float) -> None:
    rejected(lambda: BandwidthInterval(start=T0, import_limit_kw=value, export_limit_kw=3),
             "import_limit_kw", "finite")
    rejected(lambda: BandwidthInterval(start=T0, import_limit_kw=3, export_limit_kw=value),
             "export_limit_kw", "finite")
    rejected(lambda: TelemetryInterval(start=T0, import_kw=value, export_kw=0), "import_kw", "finite")
    rejected(lambda: PlanInterval(start=T0, net_import_kw=value), "net_import_kw", "finite")


def test_negative_import_limit_is_rejected_and_the_message_points_to_export() -> None:
    # A negative import limit is usually an export limit sent with a sign: the reason must say so.
    rejected(lambda: BandwidthInterval(start=T0, import_limit_kw=-3, export_limit_kw=0),
             "import_limit_kw", "negative", ">= 0", "import and export travel in separate fields")
    rejected(lambda: BandwidthInterval(start=T0, import_limit_kw=3, export_limit_kw=-1), "export_limit_kw", "negative")
    rejected(lambda: TelemetryInterval(start=T0, import_kw=0, export_kw=-2), "export_kw", "negative")


def test_zero_limits_are_allowed() -> None:
    assert BandwidthInterval(start=T0, import_limit_kw=0, export_limit_kw=0).import_limit_kw == 0


@pytest.mark.parametrize("value", [3000.0, MAX_POWER_KW + 0.001, 11_000.0])
def test_absurd_power_is_rejected_as_a_unit_error(value: float) -> None:
    rejected(lambda: BandwidthInterval(start=T0, import_limit_kw=value, export_limit_kw=3),
             "import_limit_kw", "exceeds the plausible 250.0 kW", "W sent as kW")
    rejected(lambda: PlanInterval(start=T0, net_import_kw=-value), "net_import_kw", "exceeds the plausible")
    assert BandwidthInterval(start=T0, import_limit_kw=MAX_POWER_KW, export_limit_kw=0).import_limit_kw == 250.0


def test_plan_carries_a_signed_net_import() -> None:
    assert PlanInterval(start=T0, net_import_kw=-4.5).net_import_kw == -4.5


@pytest.mark.parametrize("value", [50.0, -10.5, 120.0])
def test_absurd_prices_are_rejected(value: float) -> None:
    rejected(lambda: TariffInterval(start=T0, import_price_eur_per_kwh=value, export_price_eur_per_kwh=0.1),
             "import_price_eur_per_kwh", "EUR/MWh sent as EUR/kWh")
    rejected(lambda: TariffInterval(start=T0, import_price_eur_per_kwh=0.3, export_price_eur_per_kwh=value),
             "export_price_eur_per_kwh", "beyond")


def test_negative_and_boundary_prices_are_allowed() -> None:
    interval = TariffInterval(start=T0, import_price_eur_per_kwh=-0.4,
                              export_price_eur_per_kwh=MAX_ABS_PRICE_EUR_PER_KWH)
    assert interval.import_price_eur_per_kwh == -0.4


def test_non_finite_price_is_rejected() -> None:
    rejected(lambda: TariffInterval(start=T0, import_price_eur_per_kwh=math.nan, export_price_eur_per_kwh=0.1),
             "import_price_eur_per_kwh", "finite")


def test_comfort_status_checks_its_band() -> None:
    rejected(lambda: ComfortStatus(measured_at=T0, indoor_temperature_c=20, comfort_min_c=22, comfort_max_c=18),
             "comfort_min_c 22.0 is above comfort_max_c 18.0")
    rejected(lambda: ComfortStatus(measured_at=T0, indoor_temperature_c=math.inf, comfort_min_c=19,
                                   comfort_max_c=21), "indoor_temperature_c")
    status = ComfortStatus(measured_at=T0 + timedelta(seconds=7), indoor_temperature_c=18.5, comfort_min_c=19,
                           comfort_max_c=21)
    assert not status.temperature_in_band and status.ev_range_km is None


def test_models_are_frozen_and_refuse_unknown_fields() -> None:
    interval = BandwidthInterval(start=T0, import_limit_kw=3, export_limit_kw=3)
    with pytest.raises(ValidationError):
        interval.import_limit_kw = 4  # type: ignore[misc]
    rejected(lambda: BandwidthInterval(start=T0, import_limit_kw=3, export_limit_kw=3, limit_w=3000),
             "limit_w", "Extra inputs are not permitted")


# ---------------------------------------------------------------------------------------------- contract


def test_ean_check_digit() -> None:
    assert ean18_check_digit(EAN[:17]) == EAN[17]
    assert make_ean18(EAN[:17]) == EAN
    assert contract().connection_point_id == EAN


@pytest.mark.parametrize("ean", ["871687120000000012", "871687120000000019"])
def test_bad_ean_check_digit_is_rejected(ean: str) -> None:
    rejected(lambda: contract(connection_point_id=ean), "connection_point_id", f"check digit {ean[17]}",
             f"expected {EAN[17]}")


@pytest.mark.parametrize("ean", ["87168712000000001", "8716871200000000111", "87168712000000001X"])
def test_malformed_ean_is_rejected(ean: str) -> None:
    rejected(lambda: contract(connection_point_id=ean), "connection_point_id", "is not an 18-digit EAN")


def test_failsafe_above_contract_is_rejected() -> None:
    rejected(lambda: contract(failsafe_import_kw=20.0), "failsafe_import_kw 20.0 exceeds contracted_max_import_kw 17.0")
    rejected(lambda: contract(failsafe_export_kw=11.0), "failsafe_export_kw 11.0 exceeds contracted_max_export_kw")


@pytest.mark.parametrize("seconds", [3600, 7199, 86401])
def test_failsafe_duration_lies_between_2_and_24_hours(seconds: int) -> None:
    rejected(lambda: contract(failsafe_duration_s=seconds), "failsafe_duration_s")


def test_unknown_time_zone_is_rejected() -> None:
    rejected(lambda: ComfortTerms(timezone="Europe/Atlantis"), "timezone", "unknown IANA time zone 'Europe/Atlantis'")
    rejected(lambda: contract(comfort={"timezone": "Mars/Olympus"}), "comfort.timezone", "unknown IANA time zone")


def test_default_comfort_terms_are_the_profile_defaults() -> None:
    terms = ComfortTerms()
    assert (terms.comfort_min_c, terms.comfort_max_c) == (19.0, 21.0)
    assert terms.ev_departure_local == time(6, 0) and terms.ev_required_range_km == 150.0
    assert terms.timezone == "Europe/Amsterdam"


# ------------------------------------------------------------------------------------------ effective limit


def effective(bandwidths: list[CapacityBandwidth], *, count: int = 4, start: datetime = T0,
              **contract_changes: Any) -> list[tuple[float, float, bool]]:
    return [(limit.import_limit_kw, limit.export_limit_kw, limit.constrained_by_dso)
            for limit in effective_limits(contract(**contract_changes), bandwidths, start=start, count=count)]


def test_firm_only() -> None:
    assert effective([limits((5, 6), (4, 6), (3, 2), (3, 2))]) == [
        (5, 6, True), (4, 6, True), (3, 2, True), (3, 2, True)]


def test_non_firm_adds_on_top_of_firm() -> None:
    firm = limits((3, 2), (3, 2))
    non_firm = limits((1.5, 0.5), (2, 1), firmness=Firmness.NON_FIRM)
    assert effective([firm, non_firm], count=2) == [(4.5, 2.5, True), (5, 3, True)]


def test_firm_plus_non_firm_is_capped_by_the_contract() -> None:
    firm = limits((12, 8))
    non_firm = limits((10, 10), firmness=Firmness.NON_FIRM)
    assert effective([firm, non_firm], count=1) == [(17.0, 10.0, True)]
    assert effective([limits((40, 40))], count=1) == [(17.0, 10.0, True)]  # a firm limit above the contract


def test_outside_any_bandwidth_the_contracted_maximum_applies() -> None:
    early = limits((3, 2), start=T0 + 2 * INTERVAL)
    assert effective([early], count=4) == [(17.0, 10.0, False), (17.0, 10.0, False), (3, 2, True),
                                           (17.0, 10.0, False)]
    assert effective([], count=1) == [(17.0, 10.0, False)]


def test_non_firm_alone_never_tightens_the_contract() -> None:
    assert effective([limits((1, 1), firmness=Firmness.NON_FIRM)], count=1) == [(17.0, 10.0, True)]


def test_lowest_of_overlapping_bandwidths_of_the_same_firmness() -> None:
    a = limits((5, 2), (5, 2), (5, 2))
    b = limits((4, 3), (6, 1), start=T0 + INTERVAL)
    assert effective([a, b], count=3) == [(5, 2, True), (4, 2, True), (5, 1, True)]
    assert effective([b, a], count=3) == effective([a, b], count=3)  # order does not matter
    na = limits((2, 2), firmness=Firmness.NON_FIRM)
    nb = limits((1, 3), firmness=Firmness.NON_FIRM)
    assert effective([a, na, nb], count=1) == [(6, 4, True)]  # 5 + min(2, 1), 2 + min(2, 3)


def test_effective_limits_start_from_the_interval_holding_start() -> None:
    moment = T0 + INTERVAL + timedelta(minutes=7, seconds=3)
    assert floor_to_interval(moment) == T0 + INTERVAL
    result = effective_limits(contract(), [limits((5, 6), (4, 6))], start=moment, count=2)
    assert [limit.start for limit in result] == [T0 + INTERVAL, T0 + 2 * INTERVAL]
    assert [limit.import_limit_kw for limit in result] == [4, 17.0]
