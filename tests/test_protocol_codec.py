"""The OpenADR 2.0b codecs, through openleadr's real XML: decode(encode(x)) == x for every message, messages valid
against the 2.0b XSD, out-of-profile events rejected with the field and the response code (PROFILE §5, §7–§9)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openleadr.messaging import create_message, parse_message, validate_xml_schema

import protocol
from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    ComfortStatus,
    Firmness,
    Plan,
    PlanInterval,
    ProfileError,
    TariffInterval,
    Telemetry,
    TelemetryInterval,
    TouTariff,
)
from protocol.errors import OADR_INVALID_DATA, OADR_SIGNAL_NOT_SUPPORTED
from protocol.limits import (
    MAX_ABS_PRICE_EUR_PER_KWH,
    MAX_POWER_KW,
    MAX_VEN_MESSAGE_BYTES,
    MAX_VTN_MESSAGE_BYTES,
)
from protocol.oadr20b import (
    PROGRAM_CAPACITY_FIRM,
    PROGRAM_CAPACITY_NON_FIRM,
    PROGRAM_TOU_TARIFF,
    Cancellation,
    EventStatus,
    decode_event,
    decode_report,
    encode_comfort_report,
    encode_event,
    encode_plan_report,
    encode_telemetry_report,
    event_status_at,
    hems_report_metadata,
    names,
    read_event,
    report_requests_for,
)
from protocol.reports import MAX_REPORT_INTERVALS
from protocol.signals import MAX_SIGNAL_INTERVALS

SETTINGS = settings(max_examples=50, deadline=None)
BASE = datetime(2020, 1, 1, tzinfo=UTC)
T0 = datetime(2025, 1, 15, 16, 0, tzinfo=UTC)
CREATED = datetime(2025, 1, 14, 12, 0, tzinfo=UTC)
EAN = "871687120000000011"
VEN_ID = "ven-8c1d2e"
OK = {"response_code": 200, "response_description": "OK", "request_id": "req-1"}


def through_xml(message_type: str, **payload: Any) -> dict[str, Any]:
    """Render with openleadr, validate against the 2.0b XSD, parse back; the parsed payload."""
    xml = create_message(message_type, **payload)
    validate_xml_schema(xml)
    parsed_type, parsed = parse_message(xml)
    assert parsed_type == message_type
    return parsed


def distribute(*events: dict[str, Any]) -> list[dict[str, Any]]:
    return through_xml("oadrDistributeEvent", request_id="req-1", response=OK, vtn_id="DSO-VTN",
                       events=list(events))["events"]


def update_report(report: dict[str, Any]) -> dict[str, Any]:
    (parsed,) = through_xml("oadrUpdateReport", ven_id=VEN_ID, request_id="req-2", reports=[report])["reports"]
    return parsed


def encode(payload: CapacityBandwidth | TouTariff, *, now: datetime = T0 - timedelta(hours=1),
           modification_number: int = 0, cancelled: bool = False, event_id: str = "ev-1") -> dict[str, Any]:
    return encode_event(payload, event_id=event_id, modification_number=modification_number, ven_id=VEN_ID,
                        created_at=CREATED, modified_at=CREATED, now=now, cancelled=cancelled)


def bandwidth(*imports: float, export: float = 5.0, firmness: Firmness = Firmness.FIRM) -> CapacityBandwidth:
    return CapacityBandwidth(firmness=firmness, intervals=tuple(
        BandwidthInterval(start=T0 + i * INTERVAL, import_limit_kw=value, export_limit_kw=export)
        for i, value in enumerate(imports)))


def tariff(*imports: float, export: float = 0.05) -> TouTariff:
    return TouTariff(intervals=tuple(
        TariffInterval(start=T0 + i * INTERVAL, import_price_eur_per_kwh=value, export_price_eur_per_kwh=export)
        for i, value in enumerate(imports)))


def signal(event: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [s for s in event["event_signals"] if s["signal_name"] == name]
    return found


# --------------------------------------------------------------------------------------------- strategies

grid_starts = st.integers(min_value=0, max_value=20 * 365 * 96).map(lambda k: BASE + k * INTERVAL)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC))
powers = st.floats(min_value=0.0, max_value=250.0, allow_nan=False, allow_infinity=False)
signed_powers = st.floats(min_value=-250.0, max_value=250.0, allow_nan=False, allow_infinity=False)
prices = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, allow_infinity=False)
event_ids = st.from_regex(r"ev-[0-9a-f]{1,16}", fullmatch=True)


@st.composite
def bandwidths(draw: st.DrawFn) -> CapacityBandwidth:
    start = draw(grid_starts)
    pairs = draw(st.lists(st.tuples(powers, powers), min_size=1, max_size=12))
    return CapacityBandwidth(firmness=draw(st.sampled_from(Firmness)), intervals=tuple(
        BandwidthInterval(start=start + i * INTERVAL, import_limit_kw=a, export_limit_kw=b)
        for i, (a, b) in enumerate(pairs)))


@st.composite
def tariffs(draw: st.DrawFn) -> TouTariff:
    start = draw(grid_starts)
    pairs = draw(st.lists(st.tuples(prices, prices), min_size=1, max_size=12))
    return TouTariff(intervals=tuple(
        TariffInterval(start=start + i * INTERVAL, import_price_eur_per_kwh=a, export_price_eur_per_kwh=b)
        for i, (a, b) in enumerate(pairs)))


@st.composite
def telemetries(draw: st.DrawFn) -> Telemetry:
    first = draw(grid_starts)
    offsets = sorted(draw(st.sets(st.integers(min_value=0, max_value=200), min_size=1, max_size=10)))
    return Telemetry(intervals=tuple(
        TelemetryInterval(start=first + k * INTERVAL, import_kw=draw(powers), export_kw=draw(powers))
        for k in offsets))


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    start = draw(grid_starts)
    values = draw(st.lists(signed_powers, min_size=1, max_size=12))
    return Plan(created_at=draw(moments), intervals=tuple(
        PlanInterval(start=start + i * INTERVAL, net_import_kw=v) for i, v in enumerate(values)))


@st.composite
def comfort_statuses(draw: st.DrawFn) -> ComfortStatus:
    temperatures = st.floats(min_value=-30.0, max_value=60.0, allow_nan=False)
    low, high = sorted((draw(temperatures), draw(temperatures)))
    ranges = st.none() | st.floats(min_value=0.0, max_value=2000.0, allow_nan=False)
    return ComfortStatus(measured_at=draw(moments), indoor_temperature_c=draw(temperatures), comfort_min_c=low,
                         comfort_max_c=high, ev_range_km=draw(ranges), ev_required_range_km=draw(ranges))


# ------------------------------------------------------------------------------------------- round trips


@SETTINGS
@given(payload=bandwidths() | tariffs(), event_id=event_ids, modification_number=st.integers(0, 10**6),
       offset_min=st.integers(-2000, 2000), cancelled=st.booleans())
def test_event_round_trip_through_openleadr_xml(payload: CapacityBandwidth | TouTariff, event_id: str,
                                                modification_number: int, offset_min: int, cancelled: bool) -> None:
    now = payload.start + timedelta(minutes=offset_min)
    (parsed,) = distribute(encode(payload, now=now, modification_number=modification_number, cancelled=cancelled,
                                  event_id=event_id))
    decoded = decode_event(parsed)
    assert decoded.payload == payload
    assert decoded.meta.event_id == event_id
    assert decoded.meta.modification_number == modification_number
    assert decoded.meta.status is event_status_at(payload.start, payload.end, now, cancelled=cancelled)
    assert decoded.meta.created_at == CREATED
    assert decoded.meta.test_event is False
    assert parsed["response_required"] == "always"


@SETTINGS
@given(telemetry=telemetries(), created_at=moments)
def test_telemetry_round_trip_through_oadr_update_report(telemetry: Telemetry, created_at: datetime) -> None:
    report = update_report(encode_telemetry_report(telemetry, report_request_id="rr-1", created_at=created_at))
    assert report["report_name"] == "TELEMETRY_USAGE" and report["report_request_id"] == "rr-1"
    assert decode_report(report) == telemetry


@SETTINGS
@given(plan=plans())
def test_plan_round_trip_through_oadr_update_report(plan: Plan) -> None:
    report = update_report(encode_plan_report(plan, report_request_id="rr-2"))
    assert report["report_name"] == "x-HEMS_PLAN"
    assert report["created_date_time"] == plan.created_at  # createdDateTime is the plan's time
    assert decode_report(report) == plan


@SETTINGS
@given(status=comfort_statuses())
def test_comfort_status_round_trip_through_oadr_update_report(status: ComfortStatus) -> None:
    report = update_report(encode_comfort_report(status, report_request_id="rr-3"))
    assert report["report_name"] == "x-COMFORT_STATUS"
    assert decode_report(report) == status


def test_a_full_week_of_limits_round_trips() -> None:
    payload = CapacityBandwidth(firmness=Firmness.NON_FIRM, intervals=tuple(
        BandwidthInterval(start=T0 + i * INTERVAL, import_limit_kw=(i % 40) / 4, export_limit_kw=(i % 7) * 1.25)
        for i in range(MAX_SIGNAL_INTERVALS)))
    (parsed,) = distribute(encode(payload))
    assert parsed["active_period"]["duration"] == timedelta(days=7)
    assert decode_event(parsed).payload == payload


def test_a_day_ahead_plan_of_96_intervals_round_trips() -> None:
    plan = Plan(created_at=T0 + timedelta(seconds=3.25), intervals=tuple(
        PlanInterval(start=T0 + i * INTERVAL, net_import_kw=math.sin(i / 7) * 6) for i in range(96)))
    assert decode_report(update_report(encode_plan_report(plan, report_request_id="rr-2"))) == plan


def test_every_timestamp_on_the_wire_is_utc() -> None:
    xml = create_message("oadrDistributeEvent", request_id="req-1", response=OK, vtn_id="DSO-VTN",
                         events=[encode(bandwidth(5, 4)), encode(tariff(0.3, 0.4))])
    stamps = re.findall(r"<(?:\w+:)?date-time>([^<]*)<", xml)
    assert stamps and all(stamp.endswith("Z") for stamp in stamps), stamps


# ------------------------------------------------------------------------------------- names on the wire


def test_capacity_event_uses_the_profile_names() -> None:
    for firmness, program in ((Firmness.FIRM, PROGRAM_CAPACITY_FIRM), (Firmness.NON_FIRM, PROGRAM_CAPACITY_NON_FIRM)):
        (event,) = distribute(encode(bandwidth(5, 4, firmness=firmness)))
        assert event["event_descriptor"]["market_context"] == program
        for name, signal_id in (("x-IMPORT_CAPACITY_LIMIT", "import-limit"),
                                ("x-EXPORT_CAPACITY_LIMIT", "export-limit")):
            found = signal(event, name)
            assert (found["signal_type"], found["signal_id"]) == ("setpoint", signal_id)
            item = found["measurement"]
            assert (item["name"], item["unit"], item["scale"]) == ("powerReal", "W", "k")
            assert [i["uid"] for i in found["intervals"]] == [0, 1]
            assert [i["duration"] for i in found["intervals"]] == [INTERVAL, INTERVAL]


def test_tariff_event_uses_the_profile_names() -> None:
    (event,) = distribute(encode(tariff(0.3, 0.4)))
    assert event["event_descriptor"]["market_context"] == PROGRAM_TOU_TARIFF
    for name, signal_id in (("ELECTRICITY_PRICE", "import-price"), ("x-EXPORT_PRICE", "export-price")):
        found = signal(event, name)
        assert (found["signal_type"], found["signal_id"]) == ("price", signal_id)
        item = found["measurement"]
        assert (item["name"], item["unit"], item["scale"]) == ("currencyPerKWh", "EUR", "none")


def test_profile_md_spells_every_wire_name_and_bound() -> None:
    """PROFILE.md is what vendors implement: every name the codecs put on the wire must appear in it verbatim."""
    text = (Path(protocol.__file__).parent / "PROFILE.md").read_text(encoding="utf-8")
    wire = [value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)]
    wire += [value for item in (names.ITEM_POWER_KW, names.ITEM_PRICE_EUR_PER_KWH)
             for key, value in item.items() if key in ("name", "unit", "scale")]
    wire += [report["report_name"] for report in hems_report_metadata(
        resource_id=EAN, created_at=T0, specifiers=EVERY_REPORT, raw_data_consent=True)]
    assert [value for value in wire if f"`{value}`" not in text] == []
    bounds = (f"{MAX_POWER_KW:g} kW", f"{MAX_ABS_PRICE_EUR_PER_KWH:g} EUR/kWh", f"{MAX_SIGNAL_INTERVALS} intervals")
    assert [bound for bound in bounds if bound not in text] == []


def test_profile_md_examples_are_valid_openadr() -> None:
    """The XML examples in PROFILE.md (trimmed, pretty-printed) still validate against the 2.0b XSD, and the
    report examples decode to profile models."""
    text = (Path(protocol.__file__).parent / "PROFILE.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```xml\n(.*?)```", text, flags=re.S) if b.startswith("<oadr:oadrPayload")]
    assert len(blocks) >= 7
    kinds: dict[str, int] = {}
    for block in blocks:
        validate_xml_schema(block)
        message_type, payload = parse_message(block)
        kinds[message_type] = kinds.get(message_type, 0) + 1
        if message_type == "oadrUpdateReport":
            decode_report(payload["reports"][0])
        if message_type == "oadrCreatedEvent":
            assert [r["opt_type"] for r in payload["event_responses"]] == ["optIn", "optOut"]
        if message_type == "oadrCreatePartyRegistration":
            assert str(payload["ven_name"]) == EAN
    assert kinds == {"oadrCreatePartyRegistration": 1, "oadrCreatedPartyRegistration": 1, "oadrDistributeEvent": 1,
                     "oadrCreatedEvent": 1, "oadrRegisterReport": 1, "oadrRegisteredReport": 1,
                     "oadrUpdateReport": 5}


# ----------------------------------------------------------------------------------- report registration


EVERY_REPORT = (names.SPECIFIER_TELEMETRY, names.SPECIFIER_PLAN, names.SPECIFIER_NEED, names.SPECIFIER_PERFORMANCE,
                names.SPECIFIER_COMFORT)


def test_report_registration_validates_and_leads_to_15_minute_requests() -> None:
    offered = hems_report_metadata(resource_id=EAN, created_at=T0, specifiers=(
        names.SPECIFIER_TELEMETRY, names.SPECIFIER_PLAN, names.SPECIFIER_COMFORT))
    parsed = through_xml("oadrRegisterReport", request_id="req-3", ven_id=VEN_ID, reports=offered,
                         report_request_id=0)["reports"]
    by_name = {report["report_name"]: report for report in parsed}
    assert set(by_name) == {"METADATA_TELEMETRY_USAGE", "x-METADATA_HEMS_PLAN", "x-METADATA_COMFORT_STATUS"}
    telemetry = by_name["METADATA_TELEMETRY_USAGE"]
    assert telemetry["report_specifier_id"] == names.SPECIFIER_TELEMETRY
    assert [(d["r_id"], d["reading_type"], d["measurement"]["name"], d["measurement"]["scale"])
            for d in telemetry["report_descriptions"]] == [("import_kw", "Mean", "powerReal", "k"),
                                                           ("export_kw", "Mean", "powerReal", "k")]
    plan = by_name["x-METADATA_HEMS_PLAN"]
    assert [(d["r_id"], d["reading_type"]) for d in plan["report_descriptions"]] == [("net_import_kw", "Projected")]
    comfort = by_name["x-METADATA_COMFORT_STATUS"]
    assert [d["r_id"] for d in comfort["report_descriptions"]] == [
        "indoor_temperature_c", "comfort_min_c", "comfort_max_c", "ev_range_km", "ev_required_range_km"]
    items = {d["r_id"]: (d["measurement"]["name"], d["measurement"]["unit"]) for d in comfort["report_descriptions"]}
    assert items == {
        "indoor_temperature_c": ("temperature", "celsius"), "comfort_min_c": ("temperature", "celsius"),
        "comfort_max_c": ("temperature", "celsius"), "ev_range_km": ("customUnit", None),
        "ev_required_range_km": ("customUnit", None)}

    # The VTN requests every offered report, from what it parsed, every 15 minutes.
    requests = report_requests_for(parsed, request_ids=iter(["rr-1", "rr-2", "rr-3"]))
    answer = through_xml("oadrRegisteredReport", ven_id=VEN_ID, response=OK, report_requests=requests)
    specifiers = {r["report_request_id"]: r["report_specifier"] for r in answer["report_requests"]}
    assert {rid: s["report_specifier_id"] for rid, s in specifiers.items()} == {
        "rr-1": "HEMS_TELEMETRY", "rr-2": "HEMS_PLAN", "rr-3": "HEMS_COMFORT"}
    assert {s["granularity"] for s in specifiers.values()} == {INTERVAL}
    assert [p["r_id"] for p in specifiers["rr-1"]["specifier_payloads"]] == ["import_kw", "export_kw"]


def test_report_requests_skip_reports_and_rids_outside_the_profile() -> None:
    offered = [
        {"report_specifier_id": "SOMETHING_ELSE", "report_descriptions": [{"r_id": "import_kw"}]},
        {"report_specifier_id": names.SPECIFIER_TELEMETRY,
         "report_descriptions": [{"r_id": "voltage"}, {"r_id": "import_kw", "reading_type": "Direct Read"}]},
        {"report_specifier_id": names.SPECIFIER_PLAN, "report_descriptions": [{"r_id": "unknown"}]},
    ]
    (request,) = report_requests_for(offered, request_ids=iter(["rr-9"]))
    assert request["report_specifier"]["specifier_payloads"] == [{"r_id": "import_kw", "reading_type": "Direct Read"}]


def test_unknown_report_name_is_not_supported() -> None:
    report = encode_telemetry_report(Telemetry(intervals=(TelemetryInterval(start=T0, import_kw=1, export_kw=0),)),
                                     report_request_id="rr-1", created_at=T0)
    report["report_name"] = "TELEMETRY_STATUS"
    with pytest.raises(ProfileError) as caught:
        decode_report(report)
    assert caught.value.field == "report.reportName" and caught.value.response_code == OADR_SIGNAL_NOT_SUPPORTED


def test_telemetry_report_missing_a_register_names_the_rid() -> None:
    report = encode_telemetry_report(Telemetry(intervals=(TelemetryInterval(start=T0, import_kw=1, export_kw=0),)),
                                     report_request_id="rr-1", created_at=T0)
    report["intervals"] = [i for i in report["intervals"] if i["report_payload"]["r_id"] != "export_kw"]
    with pytest.raises(ProfileError, match="lacks rID 'export_kw'"):
        decode_report(report)


def test_negative_telemetry_register_is_rejected_naming_the_field() -> None:
    report = encode_telemetry_report(Telemetry(intervals=(TelemetryInterval(start=T0, import_kw=1, export_kw=0),)),
                                     report_request_id="rr-1", created_at=T0)
    report["intervals"][1]["report_payload"]["value"] = -2.0
    with pytest.raises(ProfileError) as caught:
        decode_report(report)
    assert "export_kw" in caught.value.field and "negative" in caught.value.reason


# -------------------------------------------------------------------------------------- out-of-profile events


def rejection(event: dict[str, Any]) -> ProfileError:
    with pytest.raises(ProfileError) as caught:
        decode_event(event)
    return caught.value


def test_unknown_market_context_is_not_supported() -> None:
    event = encode(bandwidth(5, 4))
    event["event_descriptor"]["market_context"] = "urn:other-dso:program:flex"
    error = rejection(event)
    assert error.field == "event.eventDescriptor.marketContext"
    assert error.response_code == OADR_SIGNAL_NOT_SUPPORTED == 460
    assert "urn:other-dso:program:flex" in error.reason and PROGRAM_CAPACITY_FIRM[:-1] + "x" in error.reason


def test_missing_export_signal_is_invalid_data() -> None:
    event = encode(bandwidth(5, 4))
    event["event_signals"] = [signal(event, "x-IMPORT_CAPACITY_LIMIT")]
    error = rejection(event)
    assert error.field == "event.eventSignals"
    assert "x-EXPORT_CAPACITY_LIMIT" in error.reason and error.response_code == OADR_INVALID_DATA == 454


def test_foreign_signal_name_is_not_supported() -> None:
    event = encode(bandwidth(5, 4))
    signal(event, "x-EXPORT_CAPACITY_LIMIT")["signal_name"] = "x-loadControlCapacity"
    error = rejection(event)
    assert error.field == "event.eventSignals[1].signalName" and error.response_code == 460


def test_price_signal_in_a_capacity_program_is_not_supported() -> None:
    event = encode(bandwidth(5, 4))
    event["event_signals"].append(encode(tariff(0.3, 0.3))["event_signals"][0])
    assert rejection(event).response_code == 460


def test_duplicate_signal_is_invalid() -> None:
    event = encode(bandwidth(5, 4))
    event["event_signals"].append(dict(event["event_signals"][0]))
    error = rejection(event)
    assert error.field == "event.eventSignals[2].signalName" and "appears twice" in error.reason


def test_wrong_signal_type_is_invalid() -> None:
    event = encode(bandwidth(5, 4))
    signal(event, "x-IMPORT_CAPACITY_LIMIT")["signal_type"] = "x-loadControlCapacity"
    error = rejection(event)
    assert error.field == "event.eventSignals[0].signalType" and "'setpoint'" in error.reason
    assert error.response_code == 454


def test_wrong_item_base_scale_is_invalid_data_also_after_xml() -> None:
    event = encode(bandwidth(5, 4))
    signal(event, "x-IMPORT_CAPACITY_LIMIT")["measurement"]["scale"] = "none"  # W where kW is meant
    (parsed,) = distribute(event)
    error = rejection(parsed)
    assert error.field == "event.eventSignals[x-IMPORT_CAPACITY_LIMIT].itemBase.siScaleCode"
    assert "'k'" in error.reason and error.response_code == 454


def test_wrong_currency_is_invalid_data() -> None:
    event = encode(tariff(0.3, 0.4))
    signal(event, "x-EXPORT_PRICE")["measurement"]["unit"] = "USD"
    error = rejection(event)
    assert error.field == "event.eventSignals[x-EXPORT_PRICE].itemBase.itemUnits" and "'EUR'" in error.reason


def test_missing_item_base_is_invalid_data() -> None:
    event = encode(bandwidth(5, 4))
    del signal(event, "x-EXPORT_CAPACITY_LIMIT")["measurement"]
    error = rejection(event)
    assert error.field == "event.eventSignals[x-EXPORT_CAPACITY_LIMIT].itemBase" and "missing" in error.reason


def test_uid_gap_is_invalid_data() -> None:
    event = encode(bandwidth(5, 4, 3))
    signal(event, "x-IMPORT_CAPACITY_LIMIT")["intervals"][2]["uid"] = 3
    error = rejection(event)
    assert error.field == "event.eventSignals[x-IMPORT_CAPACITY_LIMIT].intervals[2].uid"
    assert "0, 1, 2" in error.reason and error.response_code == 454


def test_uid_gap_in_xml_from_another_vtn_is_caught_after_parsing() -> None:
    # openleadr renders uid from the loop index, so only another VTN's XML can carry a gap: edit the XML.
    xml = create_message("oadrDistributeEvent", request_id="req-1", response=OK, vtn_id="DSO-VTN",
                         events=[encode(bandwidth(5, 4, 3))])
    uid = '<uid xmlns="urn:ietf:params:xml:ns:icalendar-2.0"><text>2</text></uid>'
    assert uid in xml
    xml = xml.replace(uid, uid.replace(">2<", ">3<"), 1)
    validate_xml_schema(xml)
    _, parsed = parse_message(xml)
    error = rejection(parsed["events"][0])
    assert error.field == "event.eventSignals[x-IMPORT_CAPACITY_LIMIT].intervals[2].uid"


def test_interval_duration_other_than_15_minutes_is_invalid() -> None:
    event = encode(bandwidth(5))
    signal(event, "x-EXPORT_CAPACITY_LIMIT")["intervals"][0]["duration"] = timedelta(hours=1)
    event["active_period"]["duration"] = timedelta(hours=1)
    error = rejection(event)
    assert error.field == "event.eventSignals[x-IMPORT_CAPACITY_LIMIT].intervals"  # the import column fails first
    signal(event, "x-IMPORT_CAPACITY_LIMIT")["intervals"][0]["duration"] = timedelta(hours=1)
    assert rejection(event).field == "event.eventSignals[x-IMPORT_CAPACITY_LIMIT].intervals[0].duration"


def test_duration_mismatch_is_invalid_data() -> None:
    # (openleadr's create_message silently "corrects" the active period on the sending side, so this is a dict.)
    event = encode(bandwidth(5, 4))
    event["active_period"]["duration"] = timedelta(hours=2)
    error = rejection(event)
    assert error.field == "event.eventSignals[x-IMPORT_CAPACITY_LIMIT].intervals"
    assert "add up to 0:30:00" in error.reason and "2:00:00" in error.reason and error.response_code == 454


def test_interval_dtstart_out_of_step_is_invalid() -> None:
    event = encode(bandwidth(5, 4))
    signal(event, "x-EXPORT_CAPACITY_LIMIT")["intervals"][1]["dtstart"] = T0 + 2 * INTERVAL
    assert rejection(event).field == "event.eventSignals[x-EXPORT_CAPACITY_LIMIT].intervals[1].dtstart"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "5", None, True])
def test_non_finite_or_non_numeric_payload_is_invalid(value: Any) -> None:
    event = encode(bandwidth(5, 4))
    signal(event, "x-IMPORT_CAPACITY_LIMIT")["intervals"][1]["signal_payload"] = value
    error = rejection(event)
    assert error.field == "event.eventSignals[x-IMPORT_CAPACITY_LIMIT].intervals[1].signalPayload"
    assert "finite number" in error.reason and error.response_code == 454


def test_negative_limit_is_invalid_data_and_points_to_export() -> None:
    event = encode(bandwidth(5, 4))
    signal(event, "x-IMPORT_CAPACITY_LIMIT")["intervals"][1]["signal_payload"] = -3.0
    (parsed,) = distribute(event)
    error = rejection(parsed)
    assert error.field == "event.eventSignals[x-IMPORT_CAPACITY_LIMIT].intervals[1].signalPayload"
    assert error.response_code == 454
    assert "negative" in error.reason and "export" in error.reason


def test_limit_in_watts_is_invalid_data() -> None:
    event = encode(bandwidth(5, 4))
    signal(event, "x-EXPORT_CAPACITY_LIMIT")["intervals"][0]["signal_payload"] = 5000.0
    error = rejection(event)
    assert error.field == "event.eventSignals[x-EXPORT_CAPACITY_LIMIT].intervals[0].signalPayload"
    assert "W sent as kW" in error.reason


def test_price_in_eur_per_mwh_is_invalid_data() -> None:
    event = encode(tariff(0.3, 0.4))
    signal(event, "ELECTRICITY_PRICE")["intervals"][0]["signal_payload"] = 300.0
    error = rejection(event)
    assert error.field == "event.eventSignals[ELECTRICITY_PRICE].intervals[0].signalPayload"
    assert "EUR/MWh" in error.reason


def test_off_grid_active_period_is_invalid_data() -> None:
    event = encode(bandwidth(5, 4))
    shifted = T0 + timedelta(minutes=5)
    event["active_period"]["dtstart"] = shifted
    for found in event["event_signals"]:
        for index, interval in enumerate(found["intervals"]):
            interval["dtstart"] = shifted + index * INTERVAL
    error = rejection(event)
    assert error.field == "event.activePeriod.dtstart" and "15-minute grid" in error.reason


def test_naive_active_period_is_invalid_data() -> None:
    event = encode(bandwidth(5))
    event["active_period"]["dtstart"] = T0.replace(tzinfo=None)
    assert rejection(event).field == "event.activePeriod.dtstart"


def test_negative_modification_number_is_invalid() -> None:
    event = encode(bandwidth(5))
    event["event_descriptor"]["modification_number"] = -1
    assert rejection(event).field == "event.eventDescriptor.modificationNumber"
    with pytest.raises(ValueError, match="modification_number"):
        encode(bandwidth(5), modification_number=-1)


def test_unknown_event_status_is_invalid() -> None:
    event = encode(bandwidth(5))
    event["event_descriptor"]["event_status"] = "paused"
    assert rejection(event).field == "event.eventDescriptor.eventStatus"


def test_missing_descriptor_is_invalid() -> None:
    event = encode(bandwidth(5))
    del event["event_descriptor"]
    error = rejection(event)
    assert error.field.startswith("event.") and "missing" in error.reason


def test_series_longer_than_a_week_is_a_profile_error() -> None:
    payload = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=T0 + i * INTERVAL, import_limit_kw=3, export_limit_kw=3)
        for i in range(MAX_SIGNAL_INTERVALS)))
    event = encode(payload)
    for found in event["event_signals"]:
        found["intervals"].append({"dtstart": payload.end, "duration": INTERVAL, "uid": MAX_SIGNAL_INTERVALS,
                                   "signal_payload": 3.0})
    event["active_period"]["duration"] += INTERVAL
    error = rejection(event)
    assert error.field == "event.eventSignals[x-IMPORT_CAPACITY_LIMIT].intervals"
    assert "672" in error.reason and error.response_code == 454


def test_test_events_are_flagged() -> None:
    event = encode(bandwidth(5))
    event["event_descriptor"]["test_event"] = True
    (parsed,) = distribute(event)
    assert decode_event(parsed).meta.test_event is True


# ------------------------------------------------------------------------------ eventStatus and currentValue


def current_values(event: dict[str, Any]) -> list[float]:
    return [found["current_value"] for found in event["event_signals"]]


def test_current_value_is_zero_before_and_after_and_the_interval_value_during() -> None:
    payload = bandwidth(5, 4.5, 3, export=6.0)
    cases = [
        (T0 - timedelta(seconds=1), EventStatus.FAR, [0.0, 0.0]),
        (T0, EventStatus.ACTIVE, [5.0, 6.0]),
        (T0 + INTERVAL + timedelta(minutes=14, seconds=59), EventStatus.ACTIVE, [4.5, 6.0]),
        (T0 + 2 * INTERVAL, EventStatus.ACTIVE, [3.0, 6.0]),
        (payload.end, EventStatus.COMPLETED, [0.0, 0.0]),
        (payload.end + timedelta(days=1), EventStatus.COMPLETED, [0.0, 0.0]),
    ]
    for now, status, values in cases:
        (event,) = distribute(encode(payload, now=now))
        assert event["event_descriptor"]["event_status"] == status.value, now
        assert current_values(event) == values, now


def test_a_cancelled_event_has_current_value_zero() -> None:
    # 2.0b conformance rule 14: currentValue is 0 whenever the event is not active; cancelled is not active.
    (event,) = distribute(encode(bandwidth(5, 4), now=T0 + INTERVAL, modification_number=1, cancelled=True))
    assert event["event_descriptor"]["event_status"] == "cancelled"
    assert current_values(event) == [0.0, 0.0]


@SETTINGS
@given(payload=bandwidths() | tariffs(), offset_s=st.integers(-86_400, 8 * 86_400), cancelled=st.booleans())
def test_current_value_follows_the_clock(payload: CapacityBandwidth | TouTariff, offset_s: int,
                                         cancelled: bool) -> None:
    now = payload.start + timedelta(seconds=offset_s)
    event = encode(payload, now=now, cancelled=cancelled)
    status = EventStatus(event["event_descriptor"]["event_status"])
    assert status is event_status_at(payload.start, payload.end, now, cancelled=cancelled)
    if status is EventStatus.ACTIVE:
        interval = payload.intervals[int((now - payload.start) / INTERVAL)]
        expected = [*interval.model_dump(exclude={"start"}).values()]
    else:
        expected = [0.0, 0.0]
    assert current_values(event) == expected


def test_event_status_at_the_boundaries() -> None:
    end = T0 + INTERVAL
    assert event_status_at(T0, end, T0 - timedelta(microseconds=1)) is EventStatus.FAR
    assert event_status_at(T0, end, T0) is EventStatus.ACTIVE
    assert event_status_at(T0, end, end) is EventStatus.COMPLETED
    assert event_status_at(T0, end, T0 - timedelta(days=1), cancelled=True) is EventStatus.CANCELLED


# ------------------------------------------------------------------------ PROFILE 1.0: §1.6, §5.5 in order


@pytest.mark.parametrize(("version", "accepted"), [("1.0", True), ("1.7", True), ("2.0", False), ("0.9", False),
                                                   (None, False)])
def test_a_program_of_the_same_major_version_is_accepted_and_any_other_is_460(version: str | None,
                                                                                accepted: bool) -> None:
    event = encode(bandwidth(5, 4))
    base = PROGRAM_CAPACITY_FIRM.rsplit(":", 1)[0]
    event["event_descriptor"]["market_context"] = base if version is None else f"{base}:{version}"
    (parsed,) = distribute(event)
    if accepted:
        assert decode_event(parsed).payload == bandwidth(5, 4)
    else:
        error = rejection(parsed)
        assert (error.field, error.response_code) == ("event.eventDescriptor.marketContext", 460)


def test_an_event_for_another_ven_is_a_target_mismatch() -> None:
    (parsed,) = distribute(encode(bandwidth(5, 4)))
    assert decode_event(parsed, ven_id=VEN_ID).payload == bandwidth(5, 4)
    with pytest.raises(ProfileError) as caught:
        decode_event(parsed, ven_id="ven-someone-else")
    assert (caught.value.field, caught.value.response_code) == ("event.eiTarget.venID", 462)


def test_a_readable_cancellation_is_valid_whatever_else_it_holds() -> None:
    """§5.5 row 2: answered optIn 200 and honoured even when its body is out of profile."""
    event = encode(bandwidth(5, 4), modification_number=3, cancelled=True)
    signal(event, "x-IMPORT_CAPACITY_LIMIT")["intervals"][0]["signal_payload"] = -1.0
    (parsed,) = distribute(event)
    assert read_event(parsed) == Cancellation("ev-1", 3)
    assert rejection(parsed).field.endswith("signalPayload")  # decode_event alone still refuses the body
    del parsed["event_descriptor"]["modification_number"]
    with pytest.raises(ProfileError, match="modificationNumber"):
        read_event(parsed)


def test_the_first_matching_row_decides_and_a_timestamp_without_z_is_invalid() -> None:
    """An unknown program and a wrong signal type: row 5 (460) before row 7; an offset instead of Z (which
    openleadr does not read as a time) is row 8; a signal without intervals row 10."""
    event = encode(bandwidth(5, 4))
    event["event_descriptor"]["market_context"] = "urn:other-dso:program:flex"
    signal(event, "x-IMPORT_CAPACITY_LIMIT")["signal_type"] = "level"
    assert rejection(event).response_code == 460
    (parsed,) = distribute(encode(bandwidth(5, 4)))
    parsed["active_period"]["dtstart"] = "2025-01-15T16:00:00+00:00"
    assert rejection(parsed).field == "event.activePeriod.dtstart"
    (parsed,) = distribute(encode(bandwidth(5, 4)))
    signal(parsed, "x-EXPORT_CAPACITY_LIMIT")["intervals"] = []
    error = rejection(parsed)
    assert (error.field, error.response_code) == ("event.eventSignals[x-EXPORT_CAPACITY_LIMIT].intervals", 454)


@pytest.mark.slow
def test_the_largest_messages_the_ceilings_allow_fit_the_byte_limits_of_profile_1_5() -> None:
    """PROFILE §1.5: 32 events of 672 intervals (UUID ids) stay below the 16 MiB a VEN accepts, a 192-interval plan
    and a 96-interval telemetry report below the 1 MiB a VTN accepts, and the profile states both limits."""
    text = (Path(protocol.__file__).parent / "PROFILE.md").read_text(encoding="utf-8")
    assert "at most **1 MiB**" in text and MAX_VEN_MESSAGE_BYTES == 1024 * 1024
    assert "at most **16 MiB**" in text and MAX_VTN_MESSAGE_BYTES == 16 * 1024 * 1024
    uuid = "c3f1a0b2-1234-4cde-9f00-0123456789ab"
    week = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=T0 + k * INTERVAL, import_limit_kw=123.456, export_limit_kw=98.765)
        for k in range(MAX_SIGNAL_INTERVALS)))
    event = encode_event(week, event_id=uuid, modification_number=99, ven_id=uuid, created_at=T0, modified_at=T0,
                         now=T0 - timedelta(days=1))
    distribution = create_message("oadrDistributeEvent", request_id=uuid, vtn_id=uuid, events=[event] * 32,
                                  response={"response_code": 200, "response_description": "OK", "request_id": uuid})
    assert 12 * 1024 * 1024 < len(distribution.encode()) < MAX_VTN_MESSAGE_BYTES
    plan = Plan(created_at=T0, intervals=tuple(PlanInterval(start=T0 + k * INTERVAL, net_import_kw=-123.456)
                                               for k in range(MAX_REPORT_INTERVALS)))
    telemetry = Telemetry(intervals=tuple(TelemetryInterval(start=T0 + k * INTERVAL, import_kw=123.456,
                                                            export_kw=98.765) for k in range(96)))
    for report in (encode_plan_report(plan, report_request_id=uuid),
                   encode_telemetry_report(telemetry, report_request_id=uuid, created_at=T0)):
        message = create_message("oadrUpdateReport", request_id=uuid, ven_id=uuid, reports=[report])
        assert len(message.encode()) < MAX_VEN_MESSAGE_BYTES / 8
