"""Plays a VEN (raw OpenADR 2.0b XML built and parsed by openleadr.messaging) against a VTN under test.

The publish, modify and cancel steps need the operator API of our DSO server (``--admin-url``):
``POST /api/households``, ``POST /api/bandwidths``, ``PUT``/``DELETE /api/signals/{event_id}``. A VTN without it
gets the verdict "not run" for the rules those steps check.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from openleadr.messaging import create_message, parse_message

from conformance.rules import Side
from conformance.verdicts import Recorder, Verdict
from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    ComfortTerms,
    Firmness,
    HouseholdContract,
    floor_to_interval,
    make_ean18,
)
from protocol.oadr20b import hems_report_metadata
from protocol.oadr20b.names import (
    PROGRAM_CAPACITY_FIRM,
    SIGNAL_EXPORT_LIMIT,
    SIGNAL_IMPORT_LIMIT,
    SIGNAL_TYPE_LIMIT,
)

PUBLISH_RULES = ("VTN-SHP-01", "VTN-SHP-02", "VTN-SHP-03", "VTN-SHP-04", "VTN-SHP-05", "VTN-EVT-01", "VTN-EVT-02",
                 "VTN-EVT-03", "VTN-EVT-04", "VTN-ANS-01")
_TIMESTAMP = re.compile(r"(?:date-time|DateTime)>([^<]+)<")
HEADERS = {"Content-Type": "application/xml"}


class VtnSession:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.last_raw = ""

    async def send(self, service: str, message_type: str, **payload: Any) -> tuple[str, dict[str, Any]]:
        return await self.send_raw(service, create_message(message_type, **payload))

    async def send_raw(self, service: str, xml: str) -> tuple[str, dict[str, Any]]:
        async with self.http.post(f"{self.url}/{service}", data=xml.encode(), headers=HEADERS) as reply:
            body = await reply.read()
            self.last_raw = body.decode(errors="replace")
            if reply.status >= 300:
                return f"HTTP {reply.status}", {"status": reply.status}
            return parse_message(body)


def _register_payload(ven_name: str, ven_id: str | None = None) -> dict[str, Any]:
    return {"request_id": f"reg-{random.randrange(10**9)}", "ven_name": ven_name, "ven_id": ven_id,
            "http_pull_model": True, "xml_signature": False, "report_only": False, "profile_name": "2.0b",
            "transport_name": "simpleHttp"}


def _code(payload: dict[str, Any]) -> int | None:
    try:
        return int(payload["response"]["response_code"])
    except (KeyError, TypeError, ValueError):
        return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float):
        return float(value)
    return None


async def run_vtn_suite(url: str, admin_url: str | None, *, ean: str | None = None,
                        seed: int | None = None) -> list[Verdict]:
    """Runs every VTN scenario; ``ean`` is a connection point the VTN already serves (else one is added)."""
    rec = Recorder(Side.VTN)
    rng = random.Random(seed)
    ean = ean or make_ean18("8716871" + "".join(str(rng.randrange(10)) for _ in range(10)))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        vtn = VtnSession(url, http)
        admin = await _add_household(http, admin_url, ean, rec)
        ven_id = await _registration(vtn, ean, rec)
        if ven_id is None:
            return rec.verdicts()
        await _polls(vtn, ven_id, rec)
        await _reports(vtn, ven_id, ean, rec)
        if admin is None:
            for rule_id in PUBLISH_RULES:
                rec.skip(rule_id, "no operator API (--admin-url) to publish an event")
        else:
            await _lifecycle(vtn, http, admin, ven_id, ean, rec)
    return rec.verdicts()


async def _add_household(http: aiohttp.ClientSession, admin_url: str | None, ean: str, rec: Recorder) -> str | None:
    if not admin_url:
        return None
    contract = HouseholdContract(connection_point_id=ean, contracted_max_import_kw=17.0,
                                 contracted_max_export_kw=10.0, failsafe_import_kw=4.2, failsafe_export_kw=4.2,
                                 failsafe_duration_s=7200, comfort=ComfortTerms())
    admin = admin_url.rstrip("/")
    try:
        async with http.post(f"{admin}/api/households", json=contract.model_dump(mode="json")) as reply:
            ok = reply.status in (200, 201)
            rec.evidence("VTN-REG-01", "operator API: household added", ean=ean, http_status=reply.status)
    except aiohttp.ClientError as error:
        rec.evidence("VTN-REG-01", "operator API unreachable", error=str(error))
        ok = False
    return admin if ok else None


async def _registration(vtn: VtnSession, ean: str, rec: Recorder) -> str | None:
    kind, payload = await vtn.send("EiRegisterParty", "oadrCreatePartyRegistration", **_register_payload(ean))
    ven_id, reg_id = payload.get("ven_id"), payload.get("registration_id")
    freq = _seconds(payload.get("requested_oadr_poll_freq"))
    rec.check("VTN-REG-01", kind == "oadrCreatedPartyRegistration" and _code(payload) == 200 and bool(ven_id)
              and bool(reg_id) and freq is not None and freq <= 60,
              f"registration of {ean} answered {kind} code {_code(payload)}, venID {ven_id!r}, "
              f"registrationID {reg_id!r}, poll frequency {freq} s", raw=vtn.last_raw)
    bad = "871687100000000000"  # wrong check digit
    kind, refused = await vtn.send("EiRegisterParty", "oadrCreatePartyRegistration", **_register_payload(bad))
    rec.check("VTN-REG-02", kind.startswith("HTTP 4") or (_code(refused) == 463 and not refused.get("ven_id")),
              f"registration of {bad} answered {kind} code {_code(refused)}, venID {refused.get('ven_id')!r}",
              raw=vtn.last_raw)
    if not ven_id:
        return None
    _, again = await vtn.send("EiRegisterParty", "oadrCreatePartyRegistration", **_register_payload(ean))
    rec.check("VTN-REG-03", again.get("ven_id") == ven_id,
              f"second registration got venID {again.get('ven_id')!r}, first {ven_id!r}", raw=vtn.last_raw)
    return str(ven_id)


async def _polls(vtn: VtnSession, ven_id: str, rec: Recorder) -> None:
    kind, _ = await vtn.send("EiEvent", "oadrRequestEvent", request_id="req-events", ven_id=ven_id)
    rec.check("VTN-POLL-01", kind == "oadrDistributeEvent", f"oadrRequestEvent answered {kind}", raw=vtn.last_raw)
    kind, payload = await vtn.send("OadrPoll", "oadrPoll", ven_id="conformance-unknown-ven")
    code = _code(payload)
    rec.check("VTN-POLL-02", kind == "oadrRequestReregistration" or kind.startswith("HTTP 4")
              or (code is not None and code >= 400),
              f"oadrPoll from an unknown venID answered {kind} code {code}", raw=vtn.last_raw)
    broken = "<?xml version='1.0'?><oadrPayload><oadrSignedObject><oadrPoll><venID>x</venID>"
    try:
        kind, payload = await vtn.send_raw("EiEvent", broken)
        code = _code(payload)
    except Exception as error:
        kind, code = f"unparseable answer ({type(error).__name__})", None
    rec.check("VTN-POLL-03", kind.startswith("HTTP 4") or (code is not None and code >= 400),
              f"a truncated XML request answered {kind} code {code}", raw=vtn.last_raw[:2000])


async def _reports(vtn: VtnSession, ven_id: str, ean: str, rec: Recorder) -> None:
    kind, payload = await vtn.send("EiReport", "oadrRegisterReport", request_id="req-reports", ven_id=ven_id,
                                   report_request_id=0,
                                   reports=hems_report_metadata(resource_id=ean, created_at=datetime.now(UTC)))
    requests = payload.get("report_requests") or []
    rec.check("VTN-RPT-01", kind == "oadrRegisteredReport" and len(requests) > 0,
              f"oadrRegisterReport answered {kind} with {len(requests)} report request(s)", raw=vtn.last_raw)


def _bandwidth(import_kw: list[float]) -> CapacityBandwidth:
    start = floor_to_interval(datetime.now(UTC)) + 8 * INTERVAL
    return CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=start + i * INTERVAL, import_limit_kw=v, export_limit_kw=5.0)
        for i, v in enumerate(import_kw)))


async def _fetch(vtn: VtnSession, ven_id: str, event_id: str | None, known: set[str]) -> dict[str, Any] | None:
    _, payload = await vtn.send("EiEvent", "oadrRequestEvent", request_id="req-events", ven_id=ven_id)
    for event in payload.get("events") or []:
        found = event["event_descriptor"]["event_id"]
        if found == event_id or (event_id is None and found not in known):
            return event
    return None


async def _admin(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as reply:
        try:
            return reply.status, await reply.json()
        except (aiohttp.ContentTypeError, ValueError):
            return reply.status, None


async def _lifecycle(vtn: VtnSession, http: aiohttp.ClientSession, admin: str, ven_id: str, ean: str,
                     rec: Recorder) -> None:
    _, before = await vtn.send("EiEvent", "oadrRequestEvent", request_id="req-events", ven_id=ven_id)
    known = {e["event_descriptor"]["event_id"] for e in before.get("events") or []}
    published = _bandwidth([5.0, 4.0, 3.0, 6.0])
    status, answer = await _admin(http, "POST", f"{admin}/api/bandwidths",
                                  {"connection_point_ids": [ean], **published.model_dump(mode="json")})
    event_id = None
    if isinstance(answer, dict):
        event_id = next((e.get("event_id") for e in answer.get("events", [])), None)
    event = await _fetch(vtn, ven_id, event_id, known)
    if status >= 300 or event is None:
        for rule_id in PUBLISH_RULES:
            rec.skip(rule_id, f"publishing via the operator API failed (HTTP {status}) or the event never arrived")
        return
    event_id = event["event_descriptor"]["event_id"]
    _check_shape(event, vtn.last_raw, published, rec)
    mod0 = event["event_descriptor"]["modification_number"]
    rec.check("VTN-EVT-01", mod0 == 0, f"new event {event_id} has modificationNumber {mod0}")
    for opt in ("optIn", "optOut"):
        kind, payload = await vtn.send("EiEvent", "oadrCreatedEvent", ven_id=ven_id, response={
            "response_code": 200, "response_description": "OK", "request_id": "req-events"}, event_responses=[{
                "response_code": 200, "response_description": "OK", "request_id": "req-events",
                "event_id": event_id, "modification_number": mod0, "opt_type": opt}])
        rec.check("VTN-ANS-01", kind == "oadrResponse" and _code(payload) == 200,
                  f"oadrCreatedEvent {opt} answered {kind} code {_code(payload)}", raw=vtn.last_raw)

    changed = _bandwidth([4.0, 4.0, 2.0, 6.0])
    await _admin(http, "PUT", f"{admin}/api/signals/{event_id}", changed.model_dump(mode="json"))
    modified = await _fetch(vtn, ven_id, event_id, known)
    mod1 = modified["event_descriptor"]["modification_number"] if modified else None
    rec.check("VTN-EVT-02", mod1 == mod0 + 1, f"after a modification {event_id} has modificationNumber {mod1}, "
              f"before {mod0}", raw=vtn.last_raw)
    await _admin(http, "DELETE", f"{admin}/api/signals/{event_id}")
    cancelled = await _fetch(vtn, ven_id, event_id, known)
    mod2 = cancelled["event_descriptor"]["modification_number"] if cancelled else None
    status2 = cancelled["event_descriptor"]["event_status"] if cancelled else None
    rec.check("VTN-EVT-03", mod1 is not None and mod2 == mod1 + 1 and status2 == "cancelled",
              f"after cancellation {event_id} has modificationNumber {mod2} (before {mod1}), status {status2}",
              raw=vtn.last_raw)
    if cancelled:
        values = [s.get("current_value") for s in cancelled["event_signals"]]
        rec.check("VTN-EVT-04", all(not v for v in values), f"cancelled event currentValues {values}")


def _check_shape(event: dict[str, Any], raw: str, published: CapacityBandwidth, rec: Recorder) -> None:
    stamps = _TIMESTAMP.findall(raw)
    not_utc = [s for s in stamps if not s.strip().endswith("Z")]
    rec.check("VTN-SHP-01", bool(stamps) and not not_utc,
              f"{len(stamps)} timestamps, not UTC: {not_utc}", timestamps=stamps)
    period = event["active_period"]
    start, duration = period["dtstart"], _seconds(period["duration"])
    signals = event["event_signals"]
    for signal in signals:
        intervals = signal["intervals"]
        uids = [int(i["uid"]) for i in intervals]
        rec.check("VTN-SHP-02", uids == list(range(len(intervals))), f"{signal.get('signal_name')} uids {uids}")
        lengths = [_seconds(i["duration"]) for i in intervals]
        on_grid = start.minute % 15 == 0 and start.second == 0 and start.microsecond == 0
        starts_ok = all(i.get("dtstart") in (None, start + int(i["uid"]) * INTERVAL) for i in intervals)
        rec.check("VTN-SHP-03", on_grid and starts_ok and all(d == 900 for d in lengths) and sum(lengths) == duration,
                  f"{signal.get('signal_name')}: dtstart {start.isoformat()}, interval durations {lengths}, "
                  f"active period {duration} s")
    names = {s.get("signal_name"): s for s in signals}
    market = event["event_descriptor"].get("market_context")
    expected_import = [i.import_limit_kw for i in published.intervals]
    got_import = [float(i["signal_payload"]) for i in names.get(SIGNAL_IMPORT_LIMIT, {}).get("intervals", [])]
    measurement = names.get(SIGNAL_IMPORT_LIMIT, {}).get("measurement") or {}
    rec.check("VTN-SHP-04", market == PROGRAM_CAPACITY_FIRM and set(names) == {SIGNAL_IMPORT_LIMIT,
              SIGNAL_EXPORT_LIMIT} and all(s.get("signal_type") == SIGNAL_TYPE_LIMIT for s in signals)
              and measurement.get("scale") == "k" and measurement.get("unit") == "W"
              and got_import == expected_import,
              f"marketContext {market}, signals {sorted(map(str, names))}, itemBase {measurement}, "
              f"import values {got_import} (published {expected_import})")
    required = event.get("response_required")
    rec.check("VTN-SHP-05", required == "always", f"oadrResponseRequired {required!r}")
    status = event["event_descriptor"].get("event_status")
    values = [s.get("current_value") for s in signals]
    rec.check("VTN-EVT-04", status == "active" or all(not v for v in values),
              f"eventStatus {status}, currentValues {values}")
