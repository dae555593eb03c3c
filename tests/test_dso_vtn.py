"""The DSO VTN over real loopback HTTP, with stock openleadr VENs (``OpenADRClient``) as the households.

The VENs are driven by hand (``create_party_registration``, ``_poll``, ``sync_events``) instead of their
APScheduler loop, so every exchange happens exactly when the test says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from api_auth import bearer
from openleadr import OpenADRClient
from openleadr.messaging import create_message, parse_message, validate_xml_schema
from support.security import LabPki, plain_settings  # plain HTTP on loopback; mutual TLS: test_dso_vtn_tls.py

from dso_server.service import DsoServer
from dso_server.settings import DsoSettings
from protocol import (
    BandwidthInterval,
    CapacityBandwidth,
    ComfortStatus,
    Firmness,
    Plan,
    PlanInterval,
    Telemetry,
    TelemetryInterval,
    floor_to_interval,
    make_ean18,
)
from protocol.clock import WallClock
from protocol.oadr20b import (
    decode_event,
    encode_comfort_report,
    encode_plan_report,
    encode_telemetry_report,
    hems_report_metadata,
)

Q = timedelta(minutes=15)
EAN_A = make_ean18("87168712000000001")
EAN_B = make_ean18("87168712000000002")
CONTRACTS = """
[[household]]
connection_point_id = "{a}"
group = "feeder-1"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
failsafe_import_kw = 4.2
failsafe_export_kw = 4.2
failsafe_duration_s = 7200

[[household]]
connection_point_id = "{b}"
group = "feeder-1"
contracted_max_import_kw = 25.0
contracted_max_export_kw = 10.0
failsafe_import_kw = 4.2
failsafe_export_kw = 4.2
failsafe_duration_s = 7200
raw_data_consent = true

[household.comfort]
indoor_setpoint_c = 21.0

[household.performance]
monthly_discount_eur = 12.0
"""
"""Household A has a plain contract; B a performance contract with consent to raw comfort readings."""
EVERY_REPORT = ("HEMS_TELEMETRY", "HEMS_PLAN", "HEMS_NEED", "HEMS_PERFORMANCE", "HEMS_COMFORT")


def start_of_test_signals() -> datetime:
    # The stock VEN judges 'completed' on the wall clock, so the signals lie ahead of it.
    return floor_to_interval(datetime.now(UTC)) + 8 * Q


def bandwidth(*imports: float, firmness: Firmness = Firmness.FIRM) -> CapacityBandwidth:
    start = start_of_test_signals()
    return CapacityBandwidth(firmness=firmness, intervals=tuple(
        BandwidthInterval(start=start + index * Q, import_limit_kw=value, export_limit_kw=6.0)
        for index, value in enumerate(imports)))


@pytest.fixture
def settings(tmp_path: Path) -> DsoSettings:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(CONTRACTS.format(a=EAN_A, b=EAN_B), encoding="utf-8")
    return plain_settings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, poll_interval_s=1,
                       contracts_file=contracts)


@pytest.fixture
async def dso(settings: DsoSettings) -> AsyncIterator[DsoServer]:
    async with DsoServer(settings, WallClock()) as server:
        yield server


class Ven:
    """A stock openleadr VEN plus what it saw."""

    def __init__(self, ven_name: str, vtn_url: str) -> None:
        self.client = OpenADRClient(ven_name=ven_name, vtn_url=vtn_url)
        self.seen: list[dict[str, Any]] = []

        async def on_event(event: dict[str, Any]) -> str:
            self.seen.append(event)
            return "optIn"

        self.client.add_handler("on_event", on_event)
        self.client.add_handler("on_update_event", on_event)

    async def register(self) -> None:
        await self.client.create_party_registration(ven_id=self.client.ven_id)

    async def poll(self) -> list[dict[str, Any]]:
        """One oadrPoll; the events it delivered (the VEN answers them with oadrCreatedEvent)."""
        before = len(self.seen)
        await self.client._poll()
        return self.seen[before:]

    async def close(self) -> None:
        if self.client.client_session is not None:
            await self.client.client_session.close()


@pytest.fixture
async def vens() -> AsyncIterator[Callable[[str, str], Ven]]:
    made: list[Ven] = []

    def make(ven_name: str, vtn_url: str) -> Ven:
        made.append(Ven(ven_name, vtn_url))
        return made[-1]

    yield make
    for ven in made:
        await ven.close()


async def api(dso: DsoServer, method: str, path: str, **kwargs: Any) -> Any:
    async with aiohttp.ClientSession(headers=bearer(dso)) as session, \
            session.request(method, dso.api_url + path, **kwargs) as reply:
        body = await reply.json()
        assert reply.status < 300, body
        return body


async def publish(dso: DsoServer, payload: CapacityBandwidth, **targets: Any) -> dict[str, Any]:
    return await api(dso, "POST", "/api/bandwidths", json={
        **(targets or {"connection_point_ids": [EAN_A]}), **payload.model_dump(mode="json")})


async def post_xml(dso: DsoServer, service: str, message: str) -> tuple[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
        f"{dso.vtn_url}/{service}", data=message.encode(), headers={"Content-Type": "application/xml"}
    ) as reply:
        assert reply.status == 200, await reply.text()
        return parse_message(await reply.read())


# ------------------------------------------------------------------------------------------------- tests


async def test_registration_is_stored_and_unknown_households_are_refused(dso: DsoServer, vens: Any) -> None:
    ven = vens(EAN_A, dso.vtn_url)
    await ven.register()
    assert ven.client.registration_id is not None
    [stored] = dso.store.vens()
    assert (stored.ven_id, stored.ven_name, stored.registration_id, stored.connection_point_id) == (
        ven.client.ven_id, EAN_A, ven.client.registration_id, EAN_A)
    assert ven.client.poll_frequency == timedelta(seconds=1)

    stranger = vens(make_ean18("87168712000000077"), dso.vtn_url)
    await stranger.register()
    assert stranger.client.registration_id is None
    assert len(dso.store.vens()) == 1

    again = vens(EAN_A, dso.vtn_url)  # the same household's VEN, e.g. after its restart
    await again.register()
    assert (again.client.ven_id, again.client.registration_id) == (ven.client.ven_id, ven.client.registration_id)

    await again.client.cancel_party_registration()
    assert again.client.registration_id is None  # the VTN answered oadrCanceledPartyRegistration 200
    assert dso.store.vens()[0].registration_id is None
    response_type, _ = await ven.client.poll()
    assert response_type == "oadrRequestReregistration"


async def test_a_published_bandwidth_arrives_exactly_and_the_answer_is_stored(dso: DsoServer, vens: Any) -> None:
    ven = vens(EAN_A, dso.vtn_url)
    await ven.register()
    published = bandwidth(5, 4.5, 3, 3)
    event_id = (await publish(dso, published))["events"][0]["event_id"]

    [event] = await ven.poll()
    decoded = decode_event(event)
    assert decoded.payload == published
    assert (decoded.meta.event_id, decoded.meta.modification_number, decoded.meta.status) == (event_id, 0, "far")
    assert event["targets"] == [{"ven_id": ven.client.ven_id}]
    assert await ven.poll() == []  # nothing new: the next poll is answered with oadrResponse

    # The stock VEN opts in but answers 460 (signal not supported) because of the x- signal names.
    [answer] = (await api(dso, "GET", "/api/responses", params={"event_id": event_id}))["responses"]
    assert (answer["ven_id"], answer["opt_type"], answer["response_code"], answer["response_description"],
            answer["modification_number"]) == (ven.client.ven_id, "optIn", 460, "ERROR", 0)


async def test_a_group_publish_reaches_each_ven_with_its_own_event(dso: DsoServer, vens: Any) -> None:
    ven_a, ven_b = vens(EAN_A, dso.vtn_url), vens(EAN_B, dso.vtn_url)
    await ven_a.register()
    await ven_b.register()
    publication = dso.publish(bandwidth(2, 2), group="feeder-1")  # from Python, as the demo does
    event_of = {s.connection_point_id: s.event_id for s in publication.signals}
    [event_a], [event_b] = await ven_a.poll(), await ven_b.poll()
    assert event_a["event_descriptor"]["event_id"] == event_of[EAN_A]
    assert event_b["event_descriptor"]["event_id"] == event_of[EAN_B]
    assert decode_event(event_b).payload == bandwidth(2, 2)


async def test_modification_replaces_and_cancellation_is_delivered(dso: DsoServer, vens: Any) -> None:
    ven = vens(EAN_A, dso.vtn_url)
    await ven.register()
    event_id = (await publish(dso, bandwidth(5, 5)))["events"][0]["event_id"]
    await ven.poll()

    modified = bandwidth(3, 2, 1, firmness=Firmness.NON_FIRM)
    await api(dso, "PUT", f"/api/signals/{event_id}", json=modified.model_dump(mode="json"))
    [event] = await ven.poll()
    decoded = decode_event(event)
    assert (decoded.meta.event_id, decoded.meta.modification_number, decoded.payload) == (event_id, 1, modified)

    await api(dso, "DELETE", f"/api/signals/{event_id}")
    [event] = await ven.poll()
    descriptor = event["event_descriptor"]
    assert (descriptor["event_id"], descriptor["modification_number"], descriptor["event_status"]) == (
        event_id, 2, "cancelled")
    answers = (await api(dso, "GET", "/api/responses", params={"event_id": event_id}))["responses"]
    assert [a["modification_number"] for a in answers] == [0, 1, 2]

    # The VEN acknowledged the cancellation: it is no longer among its events.
    assert await ven.poll() == []
    response_type, payload = await ven.client.request_event()
    assert response_type == "oadrDistributeEvent" and not payload.get("events")


async def test_a_restart_keeps_registrations_and_signals(settings: DsoSettings, vens: Any) -> None:
    async with DsoServer(settings, WallClock()) as first:
        ven = vens(EAN_A, first.vtn_url)
        await ven.register()
        published = bandwidth(4, 4)
        event_id = (await publish(first, published))["events"][0]["event_id"]
        await ven.poll()
        vtn_url, ports = first.vtn_url, {"vtn_port": first.vtn_port, "api_port": first.api_port}

    async with DsoServer(settings.model_copy(update=ports), WallClock()) as second:
        assert second.vtn_url == vtn_url
        response_type, _ = await ven.client.poll()
        assert response_type == "oadrResponse"  # known VEN (no oadrRequestReregistration), nothing new

        fresh = vens(EAN_A, second.vtn_url)  # a new session of the same household's VEN
        await fresh.register()
        assert fresh.client.ven_id == ven.client.ven_id
        await fresh.client.sync_events()
        [event] = fresh.seen
        decoded = decode_event(event)
        assert (decoded.meta.event_id, decoded.meta.modification_number, decoded.payload) == (event_id, 0, published)


async def test_a_refused_registration_carries_no_ven_id_and_no_registration_id(dso: DsoServer) -> None:
    """PROFILE §2.3: 463, a description naming the venName, and neither element (not even empty ones)."""
    unknown = make_ean18("87168712000000077")
    message = create_message("oadrCreatePartyRegistration", request_id="r1", ven_name=unknown, http_pull_model=True,
                             xml_signature=False, report_only=False, profile_name="2.0b", transport_name="simpleHttp")
    async with aiohttp.ClientSession() as session, session.post(
            f"{dso.vtn_url}/EiRegisterParty", data=message.encode(),
            headers={"Content-Type": "application/xml"}) as reply:
        raw = await reply.text()
    validate_xml_schema(raw.encode())
    assert "<ei:responseCode>463</ei:responseCode>" in raw and unknown in raw
    assert "venID" not in raw and "registrationID" not in raw
    accepted = create_message("oadrCreatedPartyRegistration", response={"response_code": 200, "response_description":
                              "OK", "request_id": "r"}, ven_id="v", registration_id="g", vtn_id="x", profiles=[])
    assert "<ei:registrationID>g</ei:registrationID><ei:venID>v</ei:venID>" in accepted


async def test_an_unknown_ven_id_is_asked_to_reregister(dso: DsoServer) -> None:
    message = create_message("oadrPoll", ven_id="ven-never-registered")
    response_type, _ = await post_xml(dso, "OadrPoll", message)
    assert response_type == "oadrRequestReregistration"


async def test_reports_land_in_the_store_and_a_bad_one_does_not_spoil_the_rest(dso: DsoServer, vens: Any) -> None:
    ven = vens(EAN_B, dso.vtn_url)
    await ven.register()
    ven_id = ven.client.ven_id
    now = datetime.now(UTC)
    offer = create_message("oadrRegisterReport", request_id="req-1", ven_id=ven_id, report_request_id=0,
                           reports=hems_report_metadata(resource_id=EAN_B, created_at=now, specifiers=EVERY_REPORT,
                                                        raw_data_consent=True))
    response_type, registered = await post_xml(dso, "EiReport", offer)
    assert response_type == "oadrRegisteredReport"
    request_of = {r["report_specifier"]["report_specifier_id"]: r["report_request_id"]
                  for r in registered["report_requests"]}
    assert set(request_of) == set(EVERY_REPORT)
    assert {(r.report_specifier_id, r.report_request_id) for r in dso.store.report_requests(ven_id)} == set(
        request_of.items())

    start = floor_to_interval(now) - 2 * Q
    telemetry = Telemetry(intervals=(TelemetryInterval(start=start, import_kw=2.5, export_kw=0.0),
                                     TelemetryInterval(start=start + Q, import_kw=0.0, export_kw=1.25)))
    plan = Plan(created_at=now, intervals=(PlanInterval(start=start + 2 * Q, net_import_kw=3.0),
                                           PlanInterval(start=start + 3 * Q, net_import_kw=-1.0)))
    comfort = ComfortStatus(measured_at=now, indoor_temperature_c=20.4, comfort_min_c=20, comfort_max_c=22,
                            ev_range_km=80, ev_required_range_km=150)
    earlier = Telemetry(intervals=(TelemetryInterval(start=start - 2 * Q, import_kw=9.0, export_kw=0.0),
                                   TelemetryInterval(start=start - Q, import_kw=9.0, export_kw=0.0)))
    broken = encode_telemetry_report(earlier, report_request_id=request_of["HEMS_TELEMETRY"], created_at=now)
    broken["intervals"] = broken["intervals"][:-1]  # its last interval lacks export_kw: the whole report is dropped
    update = create_message("oadrUpdateReport", request_id="req-2", ven_id=ven_id, reports=[
        broken,
        encode_telemetry_report(telemetry, report_request_id=request_of["HEMS_TELEMETRY"], created_at=now),
        encode_plan_report(plan, report_request_id=request_of["HEMS_PLAN"]),
        encode_comfort_report(comfort, report_request_id=request_of["HEMS_COMFORT"]),
    ])
    response_type, answered = await post_xml(dso, "EiReport", update)
    # PROFILE §9.2: refused per report, answered 454 naming the report and the field, never a silent 200.
    assert response_type == "oadrUpdatedReport" and answered["response"]["response_code"] == 454
    assert answered["response"]["response_description"].startswith("report[0] TELEMETRY_USAGE: report.intervals[")
    assert "lacks rID 'export_kw'" in answered["response"]["response_description"]

    answer = await api(dso, "GET", "/api/telemetry", params={"connection_point_id": EAN_B})
    assert [(i["start"], i["import_kw"], i["export_kw"]) for i in answer["intervals"]] == [
        (start.isoformat(), 2.5, 0.0), ((start + Q).isoformat(), 0.0, 1.25)]
    stored_plan = dso.store.latest_plan(EAN_B)
    stored_comfort = dso.store.latest_comfort(EAN_B)
    assert stored_plan is not None and stored_plan.plan == plan
    assert stored_comfort is not None and stored_comfort.status == comfort
    households = {h["connection_point_id"]: h for h in (await api(dso, "GET", "/api/households"))["households"]}
    assert households[EAN_B]["last_telemetry_interval_start"] == (start + Q).isoformat()
    assert households[EAN_B]["registered"] and not households[EAN_A]["registered"]


async def test_the_dso_asks_for_and_keeps_only_what_the_contract_calls_for(dso: DsoServer, vens: Any) -> None:
    """Household A (no performance contract, no consent) offers every report: the DSO requests telemetry and plan
    only, and what A sends beyond them (raw comfort readings, a need, a verdict) is dropped, never stored."""
    from dso_server.store.performance_store import PerformanceStore
    from protocol import CapacityNeed, NeedInterval, PerformanceReport
    from protocol.oadr20b import encode_need_report, encode_performance_report

    ven = vens(EAN_A, dso.vtn_url)
    await ven.register()
    ven_id = ven.client.ven_id
    now = datetime.now(UTC)
    offer = create_message("oadrRegisterReport", request_id="req-1", ven_id=ven_id, report_request_id=0,
                           reports=hems_report_metadata(resource_id=EAN_A, created_at=now, specifiers=EVERY_REPORT,
                                                        raw_data_consent=True))
    _, registered = await post_xml(dso, "EiReport", offer)
    assert {r["report_specifier"]["report_specifier_id"] for r in registered["report_requests"]} == {
        "HEMS_TELEMETRY", "HEMS_PLAN"}
    start = floor_to_interval(now)
    day = start - timedelta(hours=24)
    update = create_message("oadrUpdateReport", request_id="req-2", ven_id=ven_id, reports=[
        encode_comfort_report(ComfortStatus(measured_at=now, indoor_temperature_c=19.1, comfort_min_c=19,
                                            comfort_max_c=21), report_request_id="rr-x"),
        encode_need_report(CapacityNeed(created_at=now, intervals=(NeedInterval(start=start, import_kw=2.0),)),
                           report_request_id="rr-y"),
        encode_performance_report(PerformanceReport(start=day, end=start, created_at=now,
                                                    degree_hours_outside_band=0.0), report_request_id="rr-z"),
    ])
    response_type, _ = await post_xml(dso, "EiReport", update)
    assert response_type == "oadrUpdatedReport"
    assert dso.store.latest_comfort(EAN_A) is None
    assert PerformanceStore(dso.store).needs(EAN_A) == [] and PerformanceStore(dso.store).performance_reports() == []


async def test_signed_messages_stay_signed_when_another_vtn_lives_in_the_process(
    settings: DsoSettings, tmp_path: Path
) -> None:
    """A stock openleadr VEN over mutual TLS, signing its messages and checking the VTN's signatures against its
    fingerprint; a second, unsigned VTN in the same process does not take over the first one's signing key."""
    pki = LabPki.create(tmp_path / "pki")
    cert, key = pki.issue_ven(EAN_A)
    plain = settings.model_dump(exclude={"insecure", "cert", "key", "ca_file", "sign_messages"})
    signed_settings = pki.settings(**plain, sign_messages=True)
    async with DsoServer(signed_settings, WallClock()) as signed:
        pki.enrol(signed.store, EAN_A)
        fingerprint = signed.vtn.fingerprint
        assert fingerprint is not None
        async with DsoServer(settings.model_copy(update={"db_path": ":memory:"}), WallClock()) as unsigned:
            assert unsigned.vtn.fingerprint is None
            client = OpenADRClient(ven_name=EAN_A, vtn_url=signed.vtn_url, vtn_fingerprint=fingerprint,
                                   cert=str(cert), key=str(key), ca_file=str(pki.ca_file), show_fingerprint=False)
            try:
                await client.create_party_registration()
                assert client.registration_id is not None  # both signatures and the fingerprint checked out
                wrong = OpenADRClient(ven_name=EAN_A, vtn_url=unsigned.vtn_url, vtn_fingerprint=fingerprint)
                await wrong.create_party_registration()
                assert wrong.registration_id is None  # unsigned answers fail the VEN's check
                await wrong.client_session.close()
            finally:
                await client.client_session.close()


async def test_polls_follow_the_injected_clock_through_an_events_life() -> None:
    from dso_server.records import Household
    from dso_server.store.sqlite import DsoStore
    from dso_server.transport.oadr20b.vtn import DsoVtn
    from protocol import HouseholdContract
    from protocol.clock import ManualClock

    start = datetime(2030, 6, 1, 17, 0, tzinfo=UTC)
    clock = ManualClock(start - timedelta(hours=1))
    store = DsoStore()
    store.put_households([Household(HouseholdContract(
        connection_point_id=EAN_A, contracted_max_import_kw=17, contracted_max_export_kw=10, failsafe_import_kw=4,
        failsafe_export_kw=4, failsafe_duration_s=7200), None)], now=clock.now())
    vtn = DsoVtn(store=store, clock=clock)
    ven_id, _ = await vtn.on_create_party_registration({"ven_name": EAN_A})
    assert await vtn.on_poll(ven_id) is None  # nothing published yet

    payload = CapacityBandwidth(firmness=Firmness.FIRM, intervals=(
        BandwidthInterval(start=start, import_limit_kw=3, export_limit_kw=3),
        BandwidthInterval(start=start + Q, import_limit_kw=2, export_limit_kw=3)))
    event_id = store.publish({EAN_A: payload}, now=clock.now()).signals[0].event_id

    def status(answer: Any) -> list[tuple[str, int, str, float]]:
        assert answer is not None and answer[0] == "oadrDistributeEvent"
        return [(e["event_descriptor"]["event_id"], e["event_descriptor"]["modification_number"],
                 e["event_descriptor"]["event_status"], e["event_signals"][0]["current_value"])
                for e in answer[1]["events"]]

    async def answer(modification: int) -> None:
        await vtn.handle_created_event({"ven_id": ven_id, "event_responses": [
            {"event_id": event_id, "modification_number": modification, "opt_type": "optIn", "response_code": 200,
             "response_description": "OK"}]})

    assert status(await vtn.on_poll(ven_id)) == [(event_id, 0, "far", 0.0)]
    # PROFILE §7.4.3: until the VEN answered, every poll brings the distribution again.
    assert status(await vtn.on_poll(ven_id)) == [(event_id, 0, "far", 0.0)]
    await answer(0)
    assert await vtn.on_poll(ven_id) is None
    clock.advance(3600 + 900)  # into the second interval: the status changed, so the VEN hears it
    assert status(await vtn.on_poll(ven_id)) == [(event_id, 0, "active", 2.0)]
    assert await vtn.on_poll(ven_id) is None  # already answered: a new status alone is news only once
    store.cancel_signal(event_id, now=clock.now())
    assert status(await vtn.on_poll(ven_id)) == [(event_id, 1, "cancelled", 0.0)]  # 2.0b rule 14
    await answer(1)
    assert await vtn.on_poll(ven_id) is None  # acknowledged: gone without another message
    assert status(await vtn.handle_request_event({"ven_id": ven_id})) == []

    later = store.publish({EAN_A: CapacityBandwidth(firmness=Firmness.NON_FIRM, intervals=(
        BandwidthInterval(start=start + 2 * Q, import_limit_kw=1, export_limit_kw=1),))}, now=clock.now())
    assert status(await vtn.on_poll(ven_id))[0][:3] == (later.signals[0].event_id, 0, "far")
    clock.advance(3 * 900)  # past its end: completed events are not sent
    assert await vtn.on_poll(ven_id) is None
    assert status(await vtn.handle_request_event({"ven_id": ven_id})) == []
    store.close()
