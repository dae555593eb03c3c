"""The capacity need and the daily performance verdict (PROFILE §9.5, §9.6): models that refuse what breaks the
profile, 2.0b codecs through openleadr's real XML (validated against the XSD), offers that follow the contract,
and raw readings only under consent."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openleadr.messaging import create_message, parse_message, validate_xml_schema

from protocol import (
    INTERVAL,
    CapacityNeed,
    ComfortLoss,
    EvVerdict,
    HouseholdContract,
    NeedInterval,
    PerformanceReport,
    PerformanceTerms,
    ProfileError,
    make_ean18,
)
from protocol.oadr20b import (
    decode_report,
    encode_need_report,
    encode_performance_report,
    hems_report_metadata,
    names,
    offered_specifiers,
    report_requests_for,
)

ZONE = ZoneInfo("Europe/Amsterdam")
DAY = datetime(2027, 1, 13, tzinfo=ZONE).astimezone(UTC)
"""Start of a local day of 24 h (23:00Z)."""
EAN = make_ean18("87168712000000001")
SETTINGS = settings(max_examples=40, deadline=None)


def through_xml(report: dict[str, Any]) -> dict[str, Any]:
    xml = create_message("oadrUpdateReport", ven_id="ven-1", request_id="req-1", reports=[report])
    validate_xml_schema(xml)
    _, payload = parse_message(xml)
    (parsed,) = payload["reports"]
    return parsed


def need(*kw: float, start: datetime = DAY) -> CapacityNeed:
    return CapacityNeed(created_at=start - timedelta(hours=10), intervals=tuple(
        NeedInterval(start=start + i * INTERVAL, import_kw=value) for i, value in enumerate(kw)))


def report(losses: tuple[ComfortLoss, ...] = (), ev: EvVerdict | None = None, hours: int = 24) -> PerformanceReport:
    return PerformanceReport(start=DAY, end=DAY + timedelta(hours=hours), created_at=DAY + timedelta(hours=25),
                             degree_hours_outside_band=round(sum(loss.degree_hours for loss in losses), 6),
                             comfort_losses=losses, ev=ev)


# ------------------------------------------------------------------------------------------------ models


def test_need_is_a_contiguous_series_of_magnitudes() -> None:
    assert need(1.5, 2.0).by_start() == {DAY: 1.5, DAY + INTERVAL: 2.0}
    with pytest.raises(ValueError, match="negative"):
        need(1.0, -0.5)
    with pytest.raises(ValueError, match="exceeds the plausible"):
        need(3000.0)
    with pytest.raises(ValueError, match="gap"):
        CapacityNeed(created_at=DAY, intervals=(NeedInterval(start=DAY, import_kw=1),
                                                NeedInterval(start=DAY + 2 * INTERVAL, import_kw=1)))
    with pytest.raises(ValueError, match="at most 192"):
        need(*([1.0] * 193))


def test_comfort_loss_says_whether_the_limit_was_below_the_need() -> None:
    assert ComfortLoss(start=DAY, degree_hours=0.1, limit_kw=2.0, need_kw=2.5).limit_below_need
    assert not ComfortLoss(start=DAY, degree_hours=0.1, limit_kw=2.5, need_kw=2.5).limit_below_need
    assert not ComfortLoss(start=DAY, degree_hours=0.1, limit_kw=2.4995, need_kw=2.5).limit_below_need  # 1 W
    assert not ComfortLoss(start=DAY, degree_hours=0.1, limit_kw=0.0).limit_below_need  # no need reported
    with pytest.raises(ValueError, match="greater than 0"):
        ComfortLoss(start=DAY, degree_hours=0.0, limit_kw=1.0)


def test_performance_report_covers_one_local_day_and_adds_up() -> None:
    losses = (ComfortLoss(start=DAY + 70 * INTERVAL, degree_hours=0.25, limit_kw=2.0, need_kw=3.0),
              ComfortLoss(start=DAY + 71 * INTERVAL, degree_hours=0.125, limit_kw=3.0, need_kw=3.0))
    verdict = report(losses)
    assert verdict.intervals == 96
    assert verdict.degree_hours_limit_below_need == 0.25
    report(hours=23)
    report(hours=25)
    with pytest.raises(ValueError, match="covers 1 day, 2:00:00"):
        report(hours=26)
    with pytest.raises(ValueError, match="not the sum"):
        PerformanceReport(start=DAY, end=DAY + timedelta(hours=24), created_at=DAY, degree_hours_outside_band=1.0,
                          comfort_losses=losses)
    with pytest.raises(ValueError, match="outside the day"):
        report((ComfortLoss(start=DAY + 96 * INTERVAL, degree_hours=0.1, limit_kw=1.0),))
    with pytest.raises(ValueError, match="overlaps"):
        report((losses[0], losses[0]))


def test_performance_terms_and_consent_are_contract_fields_off_by_default() -> None:
    plain = HouseholdContract(connection_point_id=EAN, contracted_max_import_kw=17, contracted_max_export_kw=10,
                              failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200)
    assert plain.performance is None and plain.raw_data_consent is False
    terms = PerformanceTerms()
    assert terms.need_deadline_local == time(13, 0)
    with pytest.raises(ValueError):
        PerformanceTerms(monthly_discount_eur=-1)


# ------------------------------------------------------------------------------------------------ codecs

powers = st.floats(min_value=0.0, max_value=250.0, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(values=st.lists(powers, min_size=1, max_size=192), offset=st.integers(0, 3 * 96))
def test_need_round_trip_through_oadr_update_report(values: list[float], offset: int) -> None:
    original = need(*values, start=DAY + offset * INTERVAL)
    encoded = encode_need_report(original, report_request_id="rr-n")
    assert encoded["report_name"] == "x-CAPACITY_NEED"
    assert decode_report(through_xml(encoded)) == original


@st.composite
def reports(draw: st.DrawFn) -> PerformanceReport:
    slots = sorted(draw(st.sets(st.integers(0, 95), max_size=12)))
    losses = tuple(ComfortLoss(start=DAY + k * INTERVAL,
                               degree_hours=draw(st.floats(min_value=0.0001, max_value=5.0)),
                               limit_kw=draw(powers), need_kw=draw(st.none() | powers),
                               failsafe=draw(st.booleans())) for k in slots)
    ev = draw(st.none() | st.builds(EvVerdict, shortfall_km=st.floats(min_value=0, max_value=500),
                                    limit_below_need=st.booleans(),
                                    range_km=st.none() | st.floats(min_value=0, max_value=600)))
    return PerformanceReport(start=DAY, end=DAY + timedelta(hours=24), created_at=DAY + timedelta(hours=25),
                             degree_hours_outside_band=sum(loss.degree_hours for loss in losses),
                             comfort_losses=losses, ev=ev)


@SETTINGS
@given(original=reports())
def test_performance_report_round_trip_through_oadr_update_report(original: PerformanceReport) -> None:
    encoded = encode_performance_report(original, report_request_id="rr-p")
    assert encoded["duration"] == timedelta(hours=24)
    assert decode_report(through_xml(encoded)) == original


def test_performance_report_carries_no_raw_reading_without_the_range() -> None:
    verdict = report((ComfortLoss(start=DAY, degree_hours=0.3, limit_kw=1.0, need_kw=2.0),),
                     ev=EvVerdict(shortfall_km=12.5, limit_below_need=True))
    xml = create_message("oadrUpdateReport", ven_id="ven-1", request_id="req-1",
                         reports=[encode_performance_report(verdict, report_request_id="rr-p")])
    for rid in names.RAW_COMFORT_RIDS:
        assert rid not in xml
    consented = report(ev=EvVerdict(shortfall_km=0.0, limit_below_need=False, range_km=171.0))
    assert names.RID_EV_RANGE_AT_DEPARTURE_KM in create_message(
        "oadrUpdateReport", ven_id="ven-1", request_id="req-1",
        reports=[encode_performance_report(consented, report_request_id="rr-p")])


DAY_LEN = timedelta(hours=24)


def _entry(start: datetime, duration: timedelta, rid: str, value: object) -> dict[str, Any]:
    return {"dtstart": start, "duration": duration, "report_payload": {"r_id": rid, "value": value}}


def _raw_performance(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"report_name": "x-PERFORMANCE", "report_specifier_id": "HEMS_PERFORMANCE", "dtstart": DAY,
            "duration": timedelta(hours=24), "created_date_time": DAY + timedelta(hours=25), "intervals": list(entries)}


@pytest.mark.parametrize(("entries", "field", "reason"), [
    ((), "report.intervals", "lacks the day's 'degree_hours_outside_band'"),
    ((_entry(DAY, INTERVAL, "degree_hours_outside_band", 0.0),), "report.intervals[degree_hours_outside_band]",
     "last one local day"),
    ((_entry(DAY, DAY_LEN, "degree_hours_outside_band", 0.0), _entry(DAY, INTERVAL, "ev_shortfall_km", 0.0)),
     "report.intervals[1]", "describes the day"),
    ((_entry(DAY, DAY_LEN, "degree_hours_outside_band", 0.5),), "report", "not the sum"),
    ((_entry(DAY, DAY_LEN, "degree_hours_outside_band", 0.5), _entry(DAY, INTERVAL, "comfort_lost_kh", 0.5)),
     "report.intervals[2023-01-12", "lacks rID 'limit_kw'"),
    ((_entry(DAY, DAY_LEN, "degree_hours_outside_band", 0.5), _entry(DAY, INTERVAL, "comfort_lost_kh", 0.5),
      _entry(DAY, INTERVAL, "limit_kw", 1.0), _entry(DAY, INTERVAL, "failsafe", 0.5)),
     "report.intervals[3].value", "a flag is 0 or 1"),
    ((_entry(DAY, DAY_LEN, "degree_hours_outside_band", 0.0), _entry(DAY, DAY_LEN, "ev_shortfall_km", 3.0)),
     "report.intervals", "lacks 'ev_limit_below_need'"),
    ((_entry(DAY, DAY_LEN, "degree_hours_outside_band", float("nan")),), "report.intervals[0].value",
     "finite number"),
    ((_entry(DAY, DAY_LEN, "degree_hours_outside_band", 0.5), _entry(DAY, timedelta(hours=1), "comfort_lost_kh", 0.5)),
     "report.intervals[1].duration", "PT15M"),
])
def test_bad_performance_reports_are_refused_naming_the_field(entries: tuple[dict[str, Any], ...], field: str,
                                                              reason: str) -> None:
    with pytest.raises(ProfileError) as error:
        decode_report(_raw_performance(*entries))
    assert error.value.field.startswith(field.replace("2023-01-12", DAY.date().isoformat())), error.value
    assert reason in error.value.reason


def test_unknown_rids_are_dropped_not_kept() -> None:
    decoded = decode_report(_raw_performance(_entry(DAY, DAY_LEN, "degree_hours_outside_band", 0.0),
                                             _entry(DAY, INTERVAL, "indoor_temperature_c", 18.2)))
    assert isinstance(decoded, PerformanceReport) and decoded.comfort_losses == ()
    assert "18.2" not in decoded.model_dump_json()


def test_bad_need_reports_are_refused_naming_the_field() -> None:
    base = encode_need_report(need(1.0, 2.0), report_request_id="rr")
    broken = {**base, "intervals": [*base["intervals"], dict(base["intervals"][0])]}
    with pytest.raises(ProfileError, match="repeats rID"):
        decode_report(broken)
    negative = {**base, "intervals": [{**base["intervals"][0], "report_payload": {"r_id": "need_import_kw",
                                                                                  "value": -1.0}}]}
    with pytest.raises(ProfileError) as error:
        decode_report(negative)
    assert error.value.field == "report.intervals[0].import_kw" and "negative" in error.value.reason
    with pytest.raises(ProfileError, match="holds no"):
        decode_report({**base, "intervals": []})


# ------------------------------------------------------------------------------------------------ offers


def _contract(**fields: Any) -> HouseholdContract:
    return HouseholdContract(connection_point_id=EAN, contracted_max_import_kw=17, contracted_max_export_kw=10,
                             failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200, **fields)


def test_offers_follow_the_contract_and_raw_readings_need_consent() -> None:
    assert offered_specifiers(_contract()) == ("HEMS_TELEMETRY", "HEMS_PLAN")
    assert offered_specifiers(_contract(performance=PerformanceTerms())) == (
        "HEMS_TELEMETRY", "HEMS_PLAN", "HEMS_NEED", "HEMS_PERFORMANCE")
    assert offered_specifiers(_contract(performance=PerformanceTerms(), raw_data_consent=True))[-1] == "HEMS_COMFORT"

    private = hems_report_metadata(resource_id=EAN, created_at=DAY,
                                   specifiers=offered_specifiers(_contract(performance=PerformanceTerms())))
    xml = create_message("oadrRegisterReport", request_id="r", ven_id="v", reports=private, report_request_id=0)
    validate_xml_schema(xml)
    assert not [rid for rid in names.RAW_COMFORT_RIDS if rid in xml]
    _, parsed = parse_message(xml)
    requests = report_requests_for(parsed["reports"], request_ids=iter(["rr-1", "rr-2", "rr-3", "rr-4"]))
    assert [r["report_specifier"]["report_specifier_id"] for r in requests] == [
        "HEMS_TELEMETRY", "HEMS_PLAN", "HEMS_NEED", "HEMS_PERFORMANCE"]

    consented = hems_report_metadata(resource_id=EAN, created_at=DAY, raw_data_consent=True,
                                     specifiers=offered_specifiers(_contract(performance=PerformanceTerms(),
                                                                             raw_data_consent=True)))
    performance = next(r for r in consented if r["report_specifier_id"] == "HEMS_PERFORMANCE")
    assert "ev_range_at_departure_km" in [d["r_id"] for d in performance["report_descriptions"]]
    with pytest.raises(ValueError, match="reportSpecifierID"):
        hems_report_metadata(resource_id=EAN, created_at=DAY, specifiers=("HEMS_SOMETHING",))
