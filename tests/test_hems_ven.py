"""The HEMS VEN over real loopback HTTP against a minimal real VTN (a plain openleadr OpenADRServer).

Checks registration, report registration, a bandwidth decoded exactly, oadrCreatedEvent optIn/200 for a valid
event and optOut/454 for out-of-profile ones with the last valid limits kept, modification, cancellation,
implied cancel, reports arriving, and VTN loss handled without a crash.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openleadr import OpenADRServer
from support.security import PLAIN_HTTP  # plain HTTP on loopback: this module is not about security

from hems_client.control.signal_book import SignalBook
from hems_client.transport.oadr20b.ven import HemsVen, is_contact, judge_event, reregistration_wait
from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    CapacityNeed,
    ComfortStatus,
    Firmness,
    HouseholdContract,
    NeedInterval,
    PerformanceReport,
    PerformanceTerms,
    Plan,
    PlanInterval,
    TariffInterval,
    Telemetry,
    TelemetryInterval,
    TouTariff,
    floor_to_interval,
    make_ean18,
)
from protocol.clock import ManualClock, WallClock
from protocol.oadr20b import decode_report, encode_event, names, report_requests_for

CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000042"), contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
    failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
)
PERFORMANCE = CONTRACT.model_copy(update={"performance": PerformanceTerms()})
"""A performance contract without consent to raw readings (the default)."""
CONSENTING = PERFORMANCE.model_copy(update={"raw_data_consent": True})
VEN_ID = "ven-under-test"


class MiniVtn:
    """A plain openleadr VTN with just enough handlers: registration, report requests for the profile's
    reports, and a record of every oadrCreatedEvent and oadrUpdateReport it receives."""

    def __init__(self) -> None:
        self.registration_id: str | None = None
        self.created_events: list[dict[str, Any]] = []
        self.created_reports: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.server = OpenADRServer(vtn_id="TEST_VTN", http_host="127.0.0.1", http_port=0, show_fingerprint=False,
                                    requested_poll_freq=timedelta(seconds=1), ven_lookup=self._lookup)
        self.server.add_handler("on_create_party_registration", self._register)
        events = self.server.services["event_service"]
        original_created = events.handlers["oadrCreatedEvent"]

        async def created_event(payload: dict[str, Any]) -> Any:
            self.created_events.append(payload)
            return await original_created(payload)

        events.handlers["oadrCreatedEvent"] = created_event
        reports = self.server.services["report_service"].handlers
        reports["oadrRegisterReport"] = self._register_report
        reports["oadrUpdateReport"] = self._update_report
        reports["oadrCreatedReport"] = self._created_report
        self._ids = (f"req-{n}" for n in range(1000))

    def _lookup(self, ven_id: str) -> dict[str, Any] | None:
        if ven_id != VEN_ID or self.registration_id is None:
            return None
        return {"ven_id": VEN_ID, "ven_name": CONTRACT.connection_point_id, "fingerprint": None,
                "registration_id": self.registration_id}

    def _register(self, payload: dict[str, Any]) -> tuple[str, str] | bool:
        # openleadr's parser turns an all-digit venName into an int: compare as text.
        if str(payload.get("ven_name")) != CONTRACT.connection_point_id:
            return False
        self.registration_id = "reg-1"
        return VEN_ID, self.registration_id

    async def _register_report(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "oadrRegisteredReport", {"report_requests": report_requests_for(payload["reports"],
                                                                                request_ids=self._ids)}

    async def _update_report(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.reports.extend(payload["reports"])
        return "oadrUpdatedReport", {}

    async def _created_report(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.created_reports.append(payload)
        return "oadrResponse", {}

    @property
    def url(self) -> str:
        port = self.server.app_runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b"

    # Events live in openleadr's in-memory queue; tests change them in place, as a VTN with a store would.
    def _events(self) -> list[Any]:
        return self.server.services["event_service"].events.setdefault(VEN_ID, [])

    def put_event(self, event: dict[str, Any]) -> None:
        event_id = event["event_descriptor"]["event_id"]
        queue = self._events()
        queue[:] = [e for e in queue if e["event_descriptor"]["event_id"] != event_id] + [event]
        self.server.services["poll_service"].events_updated[VEN_ID] = True

    def drop_event(self, event_id: str) -> None:
        queue = self._events()
        queue[:] = [e for e in queue if e["event_descriptor"]["event_id"] != event_id]
        self.server.services["poll_service"].events_updated[VEN_ID] = True

    def answers_for(self, event_id: str, modification_number: int) -> list[dict[str, Any]]:
        return [r for message in self.created_events for r in message["event_responses"]
                if r["event_id"] == event_id and r["modification_number"] == modification_number]


@pytest.fixture
async def vtn() -> AsyncIterator[MiniVtn]:
    server = MiniVtn()
    await server.server.run()
    try:
        yield server
    finally:
        await server.server.stop()


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met within the timeout")
        await asyncio.sleep(0.02)


def bandwidth(start: Any, limits: list[float], firmness: Firmness = Firmness.FIRM) -> CapacityBandwidth:
    return CapacityBandwidth(firmness=firmness, intervals=tuple(
        BandwidthInterval(start=start + index * INTERVAL, import_limit_kw=value, export_limit_kw=5.0)
        for index, value in enumerate(limits)))


def as_event(payload: CapacityBandwidth | TouTariff, event_id: str, modification: int, now: Any,
             *, cancelled: bool = False) -> dict[str, Any]:
    return encode_event(payload, event_id=event_id, modification_number=modification, ven_id=VEN_ID,
                        created_at=now, modified_at=now, now=now, cancelled=cancelled)


async def test_ven_receives_bandwidth_answers_events_and_reports(vtn: MiniVtn) -> None:
    wall_now = WallClock().now()
    clock = ManualClock(wall_now)
    start = floor_to_interval(wall_now) + timedelta(hours=1)
    changes: list[int] = []
    book = SignalBook()
    ven = HemsVen(contract=CONSENTING, vtn_url=vtn.url, clock=clock, signal_book=book, poll_interval_s=0.05,
                  on_signals_changed=lambda: changes.append(book.version), insecure=True)
    try:
        await ven.run()
        # Registration under the connection point, and the five reports of a consenting performance contract.
        assert ven.registered and ven.ven_id == VEN_ID and ven.ven_name == CONTRACT.connection_point_id
        assert ven.last_contact_at == wall_now
        assert set(ven.report_request_ids) == {names.SPECIFIER_TELEMETRY, names.SPECIFIER_PLAN,
                                               names.SPECIFIER_NEED, names.SPECIFIER_PERFORMANCE,
                                               names.SPECIFIER_COMFORT}
        assert {p["report_request_id"] for p in vtn.created_reports[0]["pending_reports"]} == set(
            ven.report_request_ids.values())

        # A valid bandwidth: decoded exactly, opted in with 200, and the controller notified.
        first = bandwidth(start, [3.0, 2.5, 4.0, 3.5])
        vtn.put_event(as_event(first, "bw-1", 0, wall_now))
        await eventually(lambda: bool(vtn.answers_for("bw-1", 0)))
        assert book.signals["bw-1"].payload == first
        assert changes
        answer = vtn.answers_for("bw-1", 0)[0]
        assert (answer["opt_type"], answer["response_code"]) == ("optIn", 200)

        # Out of profile: the limit in W (scale 'none') -> optOut 454 naming itemBase.siScaleCode; last limits kept.
        bad_scale = as_event(bandwidth(start, [1.0, 1.0, 1.0, 1.0]), "bw-1", 1, wall_now)
        for signal in bad_scale["event_signals"]:
            signal["measurement"]["scale"] = "none"
        vtn.put_event(bad_scale)
        await eventually(lambda: bool(vtn.answers_for("bw-1", 1)))
        answer = vtn.answers_for("bw-1", 1)[0]
        assert (answer["opt_type"], answer["response_code"]) == ("optOut", 454)
        assert "itemBase.siScaleCode" in answer["response_description"]
        assert book.signals["bw-1"].payload == first and book.signals["bw-1"].modification_number == 0

        # A negative limit in a new event -> optOut 454 naming the field; nothing stored.
        negative = as_event(bandwidth(start, [2.0, 2.0, 2.0, 2.0], Firmness.NON_FIRM), "bw-2", 0, wall_now)
        negative["event_signals"][0]["intervals"][1]["signal_payload"] = -1.0
        vtn.put_event(negative)
        await eventually(lambda: bool(vtn.answers_for("bw-2", 0)))
        answer = vtn.answers_for("bw-2", 0)[0]
        assert (answer["opt_type"], answer["response_code"]) == ("optOut", 454)
        assert "import_limit_kw" in answer["response_description"]
        assert set(book.signals) == {"bw-1"} and book.signals["bw-1"].payload == first

        # A valid modification replaces the stored version.
        second = bandwidth(start, [2.0, 2.0, 2.0, 2.0])
        vtn.drop_event("bw-2")
        vtn.put_event(as_event(second, "bw-1", 2, wall_now))
        await eventually(lambda: bool(vtn.answers_for("bw-1", 2)))
        assert book.signals["bw-1"].payload == second and book.signals["bw-1"].modification_number == 2
        limits = book.effective_limits(CONTRACT, start=start, count=2)
        assert [limit.import_limit_kw for limit in limits] == [2.0, 2.0]

        # A tariff arrives; then the VTN cancels the bandwidth: it is removed, the tariff stays.
        tariff = TouTariff(intervals=tuple(TariffInterval(start=start + i * INTERVAL, import_price_eur_per_kwh=0.2,
                                                          export_price_eur_per_kwh=0.05) for i in range(4)))
        vtn.put_event(as_event(tariff, "tou-1", 0, wall_now))
        await eventually(lambda: "tou-1" in book.signals)
        assert book.signals["tou-1"].payload == tariff
        vtn.server.cancel_event(VEN_ID, "bw-1")
        await eventually(lambda: bool(vtn.answers_for("bw-1", 3)))
        assert "bw-1" not in book.signals and "tou-1" in book.signals
        assert vtn.answers_for("bw-1", 3)[0]["opt_type"] == "optIn"

        # Reports: telemetry, plan and comfort arrive and decode to what was sent.
        telemetry = Telemetry(intervals=(TelemetryInterval(start=start, import_kw=1.25, export_kw=0.0),))
        plan = Plan(created_at=wall_now, intervals=tuple(
            PlanInterval(start=start + i * INTERVAL, net_import_kw=1.0 - i) for i in range(3)))
        comfort = ComfortStatus(measured_at=wall_now, indoor_temperature_c=20.3, comfort_min_c=19.0,
                                comfort_max_c=21.0, ev_range_km=120.0, ev_required_range_km=150.0)
        need = CapacityNeed(created_at=wall_now, intervals=tuple(
            NeedInterval(start=start + i * INTERVAL, import_kw=2.0 + i) for i in range(3)))
        day = floor_to_interval(wall_now) - timedelta(hours=24)
        verdict = PerformanceReport(start=day, end=day + timedelta(hours=24), created_at=wall_now,
                                    degree_hours_outside_band=0.0)
        assert await ven.send_telemetry(telemetry)
        assert await ven.send_plan(plan)
        assert await ven.send_comfort(comfort)
        assert await ven.send_need(need)
        assert await ven.send_performance(verdict)
        assert [decode_report(report) for report in vtn.reports] == [telemetry, plan, comfort, need, verdict]

        # responseRequired 'never': stored, but no oadrCreatedEvent answers it.
        quiet = as_event(bandwidth(start, [6.0]), "quiet", 0, wall_now)
        quiet["response_required"] = "never"
        vtn.put_event(quiet)
        await eventually(lambda: "quiet" in book.signals)
        await asyncio.sleep(0.2)
        assert not [r for m in vtn.created_events for r in m["event_responses"] if r["event_id"] == "quiet"]

        # Implied cancel: the tariff disappears from the next distribution.
        vtn.drop_event("tou-1")
        vtn.put_event(as_event(bandwidth(start, [5.0]), "bw-3", 0, wall_now))
        await eventually(lambda: "bw-3" in book.signals)
        assert "tou-1" not in book.signals

        # VTN loss: sending fails without an exception, contact time stays, the polling task survives.
        clock.advance(600)
        await vtn.server.stop()
        contact = ven.last_contact_at
        assert not await ven.send_telemetry(telemetry)
        await asyncio.sleep(0.3)
        assert ven.last_contact_at == contact
        assert ven._poll_task is not None and not ven._poll_task.done()
        assert "bw-3" in book.signals
    finally:
        await ven.stop()


async def test_ven_start_without_vtn_does_not_crash(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="openleadr")
    clock = ManualClock(WallClock().now())
    ven = HemsVen(contract=CONTRACT, vtn_url="http://127.0.0.1:9/OpenADR2/Simple/2.0b", clock=clock,
                  poll_interval_s=0.05, insecure=True)
    try:
        await ven.run()
        await asyncio.sleep(0.2)
        assert not ven.registered and ven.last_contact_at is None
        assert ven.last_attempt_at == clock.now()  # attempts end (refused): the failsafe sees silence
        assert ven._poll_task is not None and not ven._poll_task.done()
        assert not await ven.send_plan(Plan(created_at=clock.now(), intervals=(
            PlanInterval(start=floor_to_interval(clock.now()), net_import_kw=1.0),)))
    finally:
        await ven.stop()


def test_judge_event_rejects_out_of_profile_and_accepts_valid() -> None:
    now = floor_to_interval(WallClock().now())
    event = as_event(bandwidth(now, [3.0, 3.0]), "e", 0, now)
    decoded, answer = judge_event(event)
    assert decoded is not None and (answer.opt_type, answer.response_code) == ("optIn", 200)
    broken = copy.deepcopy(event)
    broken["event_descriptor"]["market_context"] = "urn:other"
    decoded, answer = judge_event(broken)
    assert decoded is None and answer.opt_type == "optOut" and answer.response_code == 460
    assert answer.response_description.startswith("event.eventDescriptor.marketContext")
    assert len(answer.response_description) <= 240
    garbage = copy.deepcopy(event)
    garbage["event_signals"] = {"event_signals": "nonsense"}
    decoded, answer = judge_event(garbage)
    assert decoded is None and answer.response_code == 454


async def test_hems_app_runs_household_against_vtn_and_reports(vtn: MiniVtn) -> None:
    """HemsApp over real loopback on an accelerated clock under a performance contract without consent: a tight
    bandwidth is kept; telemetry, plan and the capacity need reach the VTN, raw comfort readings do not."""
    from hems_client.app import HemsApp
    from hems_client.devices import Weather, make_household
    from protocol.clock import AcceleratedClock

    start = floor_to_interval(WallClock().now())
    clock = AcceleratedClock(start=start, speed=1800)
    tight = bandwidth(start, [2.5] * 8)
    vtn.put_event(as_event(tight, "tight", 0, start))
    household = make_household(PERFORMANCE, weather=Weather.constant(start=start, outdoor_temp_c=0.0), seed=5,
                               pv_kw=0.0)
    app = HemsApp(PERFORMANCE, household, clock, vtn.url, poll_interval_s=0.05, security=PLAIN_HTTP)
    try:
        await app.start(until=start + timedelta(hours=2))
        assert app.ven.registered and "tight" in app.signal_book.signals
        await asyncio.wait_for(app.finished(), 30)
    finally:
        await app.stop()
    received = [decode_report(report) for report in vtn.reports]
    telemetry = [i for r in received if isinstance(r, Telemetry) for i in r.intervals]
    assert [i.start for i in telemetry] == [start + k * INTERVAL for k in range(8)]
    assert all(i.import_kw <= 2.5 + 0.01 for i in telemetry), [round(i.import_kw, 2) for i in telemetry]
    assert any(isinstance(r, Plan) for r in received)
    assert not any(isinstance(r, ComfortStatus) for r in received)
    needs = [r for r in received if isinstance(r, CapacityNeed)]  # the rest of today, sent at start
    zone = ZoneInfo(PERFORMANCE.comfort.timezone)
    assert needs or (start + INTERVAL).astimezone(zone).date() != start.astimezone(zone).date()  # a day's last 15'
    assert all(need.start >= start + INTERVAL for need in needs)
    assert all(i.import_kw <= CONTRACT.contracted_max_import_kw for need in needs for i in need.intervals)
    assert app.controller.telemetry == telemetry
    assert app.controller.failsafe_transitions == []  # polled every 90 clock seconds: never silent for 120 s


def test_the_answer_follows_profile_5_5_in_order() -> None:
    """A readable cancellation is optIn 200 whatever else it holds; an event for another VEN is 462."""
    start = floor_to_interval(WallClock().now()) + 4 * INTERVAL
    payload = CapacityBandwidth(firmness=Firmness.FIRM, intervals=(
        BandwidthInterval(start=start, import_limit_kw=3.0, export_limit_kw=3.0),))
    cancelled = encode_event(payload, event_id="ev-c", modification_number=2, ven_id=VEN_ID, created_at=start,
                             modified_at=start, now=start, cancelled=True)
    cancelled["event_signals"][0]["intervals"][0]["signal_payload"] = -1.0
    _, answer = judge_event(cancelled, ven_id=VEN_ID)
    assert (answer.opt_type, answer.response_code, answer.modification_number) == ("optIn", 200, 2)
    other = encode_event(payload, event_id="ev-o", modification_number=0, ven_id="ven-of-the-neighbours",
                         created_at=start, modified_at=start, now=start)
    read, answer = judge_event(other, ven_id=VEN_ID)
    assert read is None and (answer.opt_type, answer.response_code) == ("optOut", 462)
    assert answer.response_description.startswith("event.eiTarget.venID: ")


def test_contact_is_an_answer_with_200_and_a_refusal_waits_longer_each_time() -> None:
    """PROFILE §10.1: 463 and oadrRequestReregistration are no contact; §2.11: 60 s doubling to 10 minutes, ±20 %."""
    ok = {"response": {"response_code": 200}}
    assert is_contact("oadrResponse", ok) and is_contact("oadrDistributeEvent", ok)
    assert not is_contact("oadrCreatedPartyRegistration", {"response": {"response_code": 463}})
    assert not is_contact("oadrUpdatedReport", {"response": {"response_code": 454}})
    assert not is_contact("oadrRequestReregistration", {}) and not is_contact(None, {})
    assert is_contact("oadrCreatedPartyRegistration", {**ok, "registration_id": "reg-1"})
    assert not is_contact("oadrCreatedPartyRegistration", ok)  # the answer to oadrQueryRegistration
    rng = random.Random(1)
    waits = [reregistration_wait(n, rng).total_seconds() for n in range(1, 8)]
    for wait, nominal in zip(waits, (60, 120, 240, 480, 600, 600, 600), strict=True):
        assert 0.8 * nominal <= wait <= 1.2 * nominal
