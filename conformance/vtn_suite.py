"""Plays a VEN (raw OpenADR 2.0b XML built and parsed by openleadr.messaging) against a VTN under test.

The publish, modify and cancel steps need the operator API of our DSO server (``--admin-url``, with an operate
token from ``--admin-token-file`` or ``$DSO_API_TOKEN``):
``POST /api/households``, ``POST /api/bandwidths``, ``PUT``/``DELETE /api/signals/{event_id}``. A VTN without it
gets the verdict "not run" for the rules those steps check.

Time: the VTN under test runs on its own clock, which the profile requires to be within ``CLOCK_SYNC_S`` of true
time; the suite reads its own (injected) clock. eventStatus and currentValue depend on the moment the VTN built
its message, which the suite knows only to lie between sending the request and receiving the answer, widened by
the clock tolerance. When an edge of the event (its start, its end, an interval boundary) falls in that window the
suite waits until the edge is well past and asks again, so the rules are judged whenever the run starts.
"""

from __future__ import annotations

import random
import re
import ssl
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from openleadr.messaging import create_message, parse_message

from conformance.certificates import SuiteCertificates
from conformance.rules import Side
from conformance.verdicts import Recorder, Report, Verdict, suite_facts
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
from protocol.clock import Clock, WallClock
from protocol.oadr20b import encode_telemetry_report, hems_report_metadata
from protocol.oadr20b.names import (
    PROGRAM_CAPACITY_FIRM,
    RID_IMPORT_KW,
    SIGNAL_EXPORT_LIMIT,
    SIGNAL_IMPORT_LIMIT,
    SIGNAL_TYPE_LIMIT,
    SPECIFIER_COMFORT,
    SPECIFIER_NEED,
    SPECIFIER_PERFORMANCE,
    SPECIFIER_PLAN,
    SPECIFIER_TELEMETRY,
)
from protocol.reports import Telemetry, TelemetryInterval

PUBLISH_RULES = ("VTN-SHP-01", "VTN-SHP-02", "VTN-SHP-03", "VTN-SHP-04", "VTN-SHP-05", "VTN-SHP-06", "VTN-EVT-01",
                 "VTN-EVT-02", "VTN-EVT-03", "VTN-EVT-04", "VTN-EVT-05", "VTN-EVT-06", "VTN-ANS-01", "VTN-POLL-04",
                 "VTN-POLL-05", "VTN-CLK-01")
POLLS_PER_CHANGE = 5
CLOCK_SYNC_S = 2.0
"""PROFILE: both ends keep their clocks within 2 s of true time."""
STATUS_ATTEMPTS = 3
_TIMESTAMP = re.compile(r"(?:date-time|DateTime)>([^<]+)<")
_ID_ELEMENTS = re.compile(r"<(?:\w+:)?(venID|registrationID)[\s/>]")
HEADERS = {"Content-Type": "application/xml"}


class VtnSession:
    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.last_raw = ""
        self.servers: list[str] = []
        """The distinct HTTP Server headers the VTN answered with (its product and version, when it says)."""

    async def send(self, service: str, message_type: str, **payload: Any) -> tuple[str, dict[str, Any]]:
        return await self.send_raw(service, create_message(message_type, **payload))

    async def send_raw(self, service: str, xml: str) -> tuple[str, dict[str, Any]]:
        async with self.http.post(f"{self.url}/{service}", data=xml.encode(), headers=HEADERS) as reply:
            body = await reply.read()
            server = reply.headers.get("Server")
            if server and server not in self.servers:
                self.servers.append(server)
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


async def run_vtn_suite(url: str, admin_url: str | None, *, ean: str | None = None, seed: int | None = None,
                        admin_token: str | None = None, certificates: SuiteCertificates | None = None,
                        vtn_ca: Path | None = None, clock: Clock | None = None) -> list[Verdict]:
    """Runs every VTN scenario and returns the verdicts (see ``run_vtn_suite_report``)."""
    return (await run_vtn_suite_report(url, admin_url, ean=ean, seed=seed, admin_token=admin_token,
                                       certificates=certificates, vtn_ca=vtn_ca, clock=clock)).verdicts


async def run_vtn_suite_report(url: str, admin_url: str | None, *, ean: str | None = None, seed: int | None = None,
                               admin_token: str | None = None, certificates: SuiteCertificates | None = None,
                               vtn_ca: Path | None = None, clock: Clock | None = None) -> Report:
    """Runs every VTN scenario; ``ean`` is a connection point the VTN already serves (else one is added).
    ``admin_token`` is the operator API's bearer token (operate role); it goes to the operator API only, never
    to the VTN under test. ``clock`` is the suite's (the wall clock unless a test injects one).

    Over https the suite is a VEN with the certificates of ``certificates`` (``hems-conformance certificates``:
    the VTN must trust their CA and have enrolled the first two households' certificates) and verifies the VTN
    against ``vtn_ca``; the main scenario runs as the first household, and the security rules are judged. Over
    plain http the security rules are not run.
    """
    clock = clock if clock is not None else WallClock()
    rec = Recorder(Side.VTN)
    servers: list[str] = []
    await _run(url, admin_url, ean, seed, admin_token, certificates, vtn_ca, clock, rec, servers)
    return rec.report(**suite_facts(), url=url, product=", ".join(servers) or None)


async def _run(url: str, admin_url: str | None, ean: str | None, seed: int | None, admin_token: str | None,
               certificates: SuiteCertificates | None, vtn_ca: Path | None, clock: Clock, rec: Recorder,
               servers: list[str]) -> None:
    rng = random.Random(seed)
    tls = url.startswith("https://")
    if tls:
        if certificates is None or vtn_ca is None or len(certificates.eans()) < 2:
            raise ValueError("an https VTN needs the suite's certificates for two households (hems-conformance "
                             "certificates) and the CA of the VTN's certificate")
        ean = certificates.eans()[0]
        context = certificates.client_context(certificates.ven(ean), vtn_ca=vtn_ca)
    else:
        for rule_id in SECURITY_RULES:
            rec.skip(rule_id, "the VTN was tested over plain http; give its https URL with --certs and --vtn-ca")
        context = None
    ean = ean or make_ean18("8716871" + "".join(str(rng.randrange(10)) for _ in range(10)))
    timeout = aiohttp.ClientTimeout(total=15)
    admin_headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else None
    connector = aiohttp.TCPConnector(ssl=context) if context is not None else None
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as vtn_http, \
            aiohttp.ClientSession(timeout=timeout, headers=admin_headers) as http:
        vtn = VtnSession(url, vtn_http)
        vtn.servers = servers
        admin = await _add_household(http, admin_url, ean, rec)
        if tls and admin is not None and certificates is not None:
            await _add_household(http, admin_url, certificates.eans()[1], rec)
        ven_id = await _registration(vtn, ean, rec)
        if ven_id is None:
            return
        await _polls(vtn, ven_id, rec)
        await _reports(vtn, ven_id, ean, rec, clock)
        if admin is None:
            for rule_id in PUBLISH_RULES:
                rec.skip(rule_id, "no operator API (--admin-url) to publish an event")
        else:
            await _lifecycle(vtn, http, admin, ven_id, ean, rec, clock)
    if tls and certificates is not None and vtn_ca is not None:
        await _security(url, certificates, vtn_ca, rec)


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
    ids = _ID_ELEMENTS.findall(vtn.last_raw)
    rec.check("VTN-REG-02", kind.startswith("HTTP 4") or (_code(refused) == 463 and not ids),
              f"registration of {bad} answered {kind} code {_code(refused)}"
              + (f" with {', '.join(sorted(set(ids)))} element(s), which a refusal must not carry" if ids else
                 ", no venID and no registrationID"), raw=vtn.last_raw)
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
    rec.check("VTN-POLL-02", kind == "oadrRequestReregistration",
              f"oadrPoll from an unknown venID answered {kind} code {_code(payload)} (oadrRequestReregistration "
              "expected, PROFILE §2.8)", raw=vtn.last_raw)
    broken = "<?xml version='1.0'?><oadrPayload><oadrSignedObject><oadrPoll><venID>x</venID>"
    try:
        kind, payload = await vtn.send_raw("EiEvent", broken)
        code = _code(payload)
    except Exception as error:
        kind, code = f"unparseable answer ({type(error).__name__})", None
    rec.check("VTN-POLL-03", kind.startswith("HTTP 4") or (code is not None and code >= 400),
              f"a truncated XML request answered {kind} code {code}", raw=vtn.last_raw[:2000])


async def _reports(vtn: VtnSession, ven_id: str, ean: str, rec: Recorder, clock: Clock) -> None:
    # Every report of the profile is offered, raw comfort readings included: the household's contract (no consent)
    # decides what the VTN may request (VTN-PRIV-01).
    offer = hems_report_metadata(resource_id=ean, created_at=clock.now(), raw_data_consent=True,
                                 specifiers=(SPECIFIER_TELEMETRY, SPECIFIER_PLAN, SPECIFIER_NEED,
                                             SPECIFIER_PERFORMANCE, SPECIFIER_COMFORT))
    kind, payload = await vtn.send("EiReport", "oadrRegisterReport", request_id="req-reports", ven_id=ven_id,
                                   report_request_id=0, reports=offer)
    requests = payload.get("report_requests") or []
    rec.check("VTN-RPT-01", kind == "oadrRegisteredReport" and len(requests) > 0,
              f"oadrRegisterReport answered {kind} with {len(requests)} report request(s)", raw=vtn.last_raw)
    if kind == "oadrRegisteredReport":
        specifiers = [(r.get("report_specifier") or {}).get("report_specifier_id") for r in requests]
        rec.check("VTN-PRIV-01", SPECIFIER_COMFORT not in specifiers,
                  f"offered every report, raw comfort readings included, by a household without consent; the VTN "
                  f"requested {specifiers}", raw=vtn.last_raw)
    request_id = next((str(r.get("report_request_id")) for r in requests
                       if (r.get("report_specifier") or {}).get("report_specifier_id") == SPECIFIER_TELEMETRY), None)
    if request_id is None:
        rec.skip("VTN-RPT-02", f"the VTN requested no {SPECIFIER_TELEMETRY} report")
        return
    await vtn.send("EiReport", "oadrCreatedReport", ven_id=ven_id, pending_reports=[{"report_request_id": request_id}],
                   response={"response_code": 200, "response_description": "OK", "request_id": "req-reports"})
    last = floor_to_interval(clock.now()) - INTERVAL
    telemetry = Telemetry(intervals=(TelemetryInterval(start=last, import_kw=1.25, export_kw=0.0),))
    kind, payload = await vtn.send("EiReport", "oadrUpdateReport", request_id="req-update", ven_id=ven_id, reports=[
        encode_telemetry_report(telemetry, report_request_id=request_id, created_at=clock.now())])
    rec.check("VTN-RPT-02", kind == "oadrUpdatedReport" and _code(payload) == 200,
              f"oadrUpdateReport with one {SPECIFIER_TELEMETRY} interval answered {kind} code {_code(payload)}",
              raw=vtn.last_raw)
    broken = encode_telemetry_report(telemetry, report_request_id=request_id, created_at=clock.now())
    for interval in broken["intervals"]:
        if interval["report_payload"]["r_id"] == RID_IMPORT_KW:
            interval["report_payload"]["value"] = -1.25  # registers are magnitudes (PROFILE §4.3, §4.6)
    kind, payload = await vtn.send("EiReport", "oadrUpdateReport", request_id="req-broken", ven_id=ven_id,
                                   reports=[broken])
    description = str((payload.get("response") or {}).get("response_description") or "")
    rec.check("VTN-RPT-03", kind == "oadrUpdatedReport" and _code(payload) == 454 and "report[0]" in description
              and RID_IMPORT_KW in description, f"a TELEMETRY_USAGE report with import_kw -1.25 was answered {kind} "
              f"code {_code(payload)} {description!r} (454 naming report[0] and {RID_IMPORT_KW} expected)",
              raw=vtn.last_raw)


def _bandwidth(import_kw: list[float], now: datetime, *, first: int = 8) -> CapacityBandwidth:
    """A firm bandwidth from ``first`` intervals after the current one (0: active now)."""
    start = floor_to_interval(now) + first * INTERVAL
    return CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=start + i * INTERVAL, import_limit_kw=v, export_limit_kw=5.0)
        for i, v in enumerate(import_kw)))


async def _admin(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as reply:
        try:
            return reply.status, await reply.json()
        except (aiohttp.ContentTypeError, ValueError):
            return reply.status, None


async def _publish(http: aiohttp.ClientSession, admin: str, ean: str, bandwidth: CapacityBandwidth) -> str | None:
    """Publish through the operator API; the new event's id, or None."""
    status, answer = await _admin(http, "POST", f"{admin}/api/bandwidths",
                                  {"connection_point_ids": [ean], **bandwidth.model_dump(mode="json")})
    if status >= 300 or not isinstance(answer, dict):
        return None
    return next((str(e.get("event_id")) for e in answer.get("events", []) if e.get("event_id")), None)


async def _poll_for_distribution(vtn: VtnSession, ven_id: str) -> tuple[list[str], dict[str, Any] | None, str]:
    """Poll until an oadrDistributeEvent or oadrResponse comes (at most a few polls): the kinds seen, the
    distribution and its raw XML."""
    kinds: list[str] = []
    for _ in range(POLLS_PER_CHANGE):
        kind, payload = await vtn.send("OadrPoll", "oadrPoll", ven_id=ven_id)
        kinds.append(kind)
        if kind == "oadrDistributeEvent":
            return kinds, payload, vtn.last_raw
        if kind == "oadrResponse" or kind.startswith("HTTP"):
            break
    return kinds, None, vtn.last_raw


def _events(distribution: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {str(e["event_descriptor"]["event_id"]): e for e in (distribution or {}).get("events") or []}


async def _after_change(vtn: VtnSession, ven_id: str, rec: Recorder, change: str,
                        expected: dict[str, int]) -> tuple[dict[str, dict[str, Any]], str]:
    """After ``change``, the next poll must bring an oadrDistributeEvent carrying every event of ``expected``
    (event id -> the modificationNumber it must have by now); while the suite does not answer it, the next poll
    must bring it again; once the suite answered it, a poll must bring nothing new."""
    kinds, distribution, raw = await _poll_for_distribution(vtn, ven_id)
    rec.check("VTN-POLL-04", distribution is not None, f"after {change} oadrPoll was answered {kinds}", raw=raw)
    events = _events(distribution)
    if distribution is not None:
        _check_carried(rec, change, events, expected, raw)
        kind, repeated = await vtn.send("OadrPoll", "oadrPoll", ven_id=ven_id)
        rec.check("VTN-POLL-05", kind == "oadrDistributeEvent", f"after {change}, the next poll, with the "
                  f"distribution not answered yet, was answered {kind} (the distribution again expected)",
                  raw=vtn.last_raw)
        if kind == "oadrDistributeEvent":
            _check_carried(rec, f"{change} (sent again)", _events(repeated), expected, vtn.last_raw)
        await _answer_all(vtn, ven_id, distribution, repeated if kind == "oadrDistributeEvent" else None)
        again, _, raw_again = await _poll_for_distribution(vtn, ven_id)
        rec.check("VTN-POLL-04", again[-1] == "oadrResponse", f"once it was answered, the next poll was answered "
                  f"{again} (nothing new: oadrResponse expected)", raw=raw_again)
    return events, raw


def _check_carried(rec: Recorder, change: str, events: dict[str, dict[str, Any]], expected: dict[str, int],
                   raw: str) -> None:
    carried = {e: int(events[e]["event_descriptor"]["modification_number"]) for e in expected if e in events}
    rec.check("VTN-EVT-06", carried.keys() == expected.keys(), f"after {change} the oadrDistributeEvent carried "
              f"{sorted(events)}; the VEN holds {sorted(expected)}", raw=raw)


async def _answer_all(vtn: VtnSession, ven_id: str, *distributions: dict[str, Any] | None) -> None:
    """Answer every event the ``distributions`` brought optIn 200, as a conforming VEN does (PROFILE §8.1)."""
    latest = [d for d in distributions if d is not None]
    request_id = latest[-1].get("request_id") if latest else None
    versions = {str(e["event_descriptor"]["event_id"]): e["event_descriptor"]["modification_number"]
                for d in latest for e in d.get("events") or []}
    responses = [{"response_code": 200, "response_description": "OK", "request_id": request_id,
                  "event_id": event_id, "opt_type": "optIn", "modification_number": modification}
                 for event_id, modification in versions.items()]
    if responses:
        await vtn.send("EiEvent", "oadrCreatedEvent", ven_id=ven_id, event_responses=responses, response={
            "response_code": 200, "response_description": "OK", "request_id": request_id})


def _answer_created(ven_id: str, event_id: str, modification: int, opt: str) -> dict[str, Any]:
    return {"ven_id": ven_id, "response": {"response_code": 200, "response_description": "OK",
                                           "request_id": "req-events"},
            "event_responses": [{"response_code": 200, "response_description": "OK", "request_id": "req-events",
                                 "event_id": event_id, "modification_number": modification, "opt_type": opt}]}


async def _lifecycle(vtn: VtnSession, http: aiohttp.ClientSession, admin: str, ven_id: str, ean: str,
                     rec: Recorder, clock: Clock) -> None:
    """Publish a future event A and an active event B; modify A; cancel A. After each change poll, check the
    distribution, and check shape, modification numbers, status and currentValue."""
    await _poll_for_distribution(vtn, ven_id)  # take whatever is pending before the test's own events
    published = _bandwidth([5.0, 4.0, 3.0, 6.0], clock.now())
    now_active = _bandwidth([7.0, 7.5, 8.0, 8.5], clock.now(), first=0)
    before = clock.now()
    event_a = await _publish(http, admin, ean, published)
    after = clock.now()
    event_b = await _publish(http, admin, ean, now_active)
    if event_a is None or event_b is None:
        for rule_id in PUBLISH_RULES:
            rec.skip(rule_id, "publishing via the operator API failed")
        return
    events, raw = await _after_change(vtn, ven_id, rec, "publishing events A and B", {event_a: 0, event_b: 0})
    _, limited = await vtn.send("EiEvent", "oadrRequestEvent", request_id="req-limit", ven_id=ven_id, reply_limit=1)
    limited_raw = vtn.last_raw
    _, unlimited = await vtn.send("EiEvent", "oadrRequestEvent", request_id="req-all", ven_id=ven_id)
    carried, everything = sorted(_events(limited)), sorted(_events(unlimited))
    if {event_a, event_b} <= set(everything):  # else the VTN leaves events out anyway: VTN-EVT-06's business
        rec.check("VTN-POLL-01", set(everything) <= set(carried), f"oadrRequestEvent with replyLimit 1 was answered "
                  f"with {carried}, without it with {everything} (PROFILE §2.5: replyLimit is ignored)",
                  raw=limited_raw)
    if event_a not in events:  # a VTN that does not distribute by poll may still answer oadrRequestEvent
        _, requested = await vtn.send("EiEvent", "oadrRequestEvent", request_id="req-events", ven_id=ven_id)
        events, raw = {**_events(requested), **events}, vtn.last_raw
    if event_a not in events:
        for rule_id in PUBLISH_RULES:
            rec.skip(rule_id, f"the published event {event_a} never arrived")
        return
    event = events[event_a]
    _check_shape(event, raw, published, rec, ven_id)
    _check_clock(event, before, after, rec)
    mod0 = event["event_descriptor"]["modification_number"]
    rec.check("VTN-EVT-01", mod0 == 0, f"new event {event_a} has modificationNumber {mod0}")
    await _check_status(vtn, ven_id, event_b, now_active, rec, "active event B", clock)
    await _check_status(vtn, ven_id, event_a, published, rec, "future event A", clock)
    for opt in ("optIn", "optOut"):
        kind, payload = await vtn.send("EiEvent", "oadrCreatedEvent", **_answer_created(ven_id, event_a, mod0, opt))
        rec.check("VTN-ANS-01", kind == "oadrResponse" and _code(payload) == 200,
                  f"oadrCreatedEvent {opt} answered {kind} code {_code(payload)}", raw=vtn.last_raw)

    changed = _bandwidth([4.0, 4.0, 2.0, 6.0], clock.now())
    await _admin(http, "PUT", f"{admin}/api/signals/{event_a}", changed.model_dump(mode="json"))
    events, _ = await _after_change(vtn, ven_id, rec, f"modifying {event_a}", {event_a: mod0 + 1, event_b: 0})
    modified = events.get(event_a)
    mod1 = modified["event_descriptor"]["modification_number"] if modified else None
    rec.check("VTN-EVT-02", mod1 == mod0 + 1, f"after a modification {event_a} has modificationNumber {mod1}, "
              f"before {mod0}", raw=vtn.last_raw)
    await _admin(http, "DELETE", f"{admin}/api/signals/{event_a}")
    events, _ = await _after_change(vtn, ven_id, rec, f"cancelling {event_a}", {event_a: (mod1 or 0) + 1, event_b: 0})
    cancelled = events.get(event_a)
    mod2 = cancelled["event_descriptor"]["modification_number"] if cancelled else None
    status2 = cancelled["event_descriptor"]["event_status"] if cancelled else None
    rec.check("VTN-EVT-03", mod1 is not None and mod2 == mod1 + 1 and status2 == "cancelled",
              f"after cancellation {event_a} has modificationNumber {mod2} (before {mod1}), status {status2}",
              raw=vtn.last_raw)
    if cancelled:
        values = [s.get("current_value") for s in cancelled["event_signals"]]
        rec.check("VTN-EVT-04", all(not v for v in values), f"cancelled event currentValues {values}")
    await _admin(http, "DELETE", f"{admin}/api/signals/{event_b}")


async def _check_status(vtn: VtnSession, ven_id: str, event_id: str, published: CapacityBandwidth, rec: Recorder,
                        what: str, clock: Clock) -> None:
    """eventStatus and currentValue against the suite's clock, from a fresh oadrRequestEvent whose answer the VTN
    built when no edge of the event was within the clock tolerance (the suite waits past an edge and asks again)."""
    edges = [published.start, published.end, *(i.start for i in published.intervals)]
    for _ in range(STATUS_ATTEMPTS):
        before = clock.now()
        _, payload = await vtn.send("EiEvent", "oadrRequestEvent", request_id="req-status", ven_id=ven_id)
        after = clock.now()
        event = _events(payload).get(event_id)
        if event is None:
            rec.check("VTN-EVT-06", False, f"{what} ({event_id}) was missing from the answer to oadrRequestEvent",
                      raw=vtn.last_raw)
            return
        sync = timedelta(seconds=CLOCK_SYNC_S)
        near = [edge for edge in edges if before - sync <= edge <= after + sync]
        if not near:
            _judge_status(event, published, rec, what, before, after)
            return
        rec.evidence("VTN-EVT-05", f"{what}: the VTN built its answer between {before:%H:%M:%S.%f} and "
                     f"{after:%H:%M:%S.%f} (± {CLOCK_SYNC_S:g} s clock tolerance), across the edge "
                     f"{max(near):%H:%M:%S}; asking again after it")
        await clock.sleep((max(near) + sync - clock.now()).total_seconds() + 0.2)
    for rule_id in ("VTN-EVT-04", "VTN-EVT-05"):
        rec.inconclusive(rule_id, f"{what}: every answer was built too close to an edge of the event to judge its "
                         "status")


def _judge_status(event: dict[str, Any], published: CapacityBandwidth, rec: Recorder, what: str,
                  before: datetime, after: datetime) -> None:
    status = event["event_descriptor"].get("event_status")
    expected = "far" if before < published.start else "active" if before < published.end else "completed"
    rec.check("VTN-EVT-05", status == expected, f"{what} ({published.start:%H:%M} .. {published.end:%H:%M}Z) has "
              f"eventStatus {status!r}, built between {before:%H:%M:%S} and {after:%H:%M:%S}; expected {expected!r}")
    current = next((i.import_limit_kw for i in published.intervals if i.start <= before < i.start + INTERVAL), 0.0)
    values = {s.get("signal_name"): s.get("current_value") for s in event["event_signals"]}
    got = values.get(SIGNAL_IMPORT_LIMIT)
    rec.check("VTN-EVT-04", got is not None and abs(float(got) - current) < 1e-6,
              f"{what}: currentValue of {SIGNAL_IMPORT_LIMIT} is {got}, the interval in progress says {current}")


def _check_clock(event: dict[str, Any], before: datetime, after: datetime, rec: Recorder) -> None:
    """VTN-CLK-01: a version made while the suite published it carries that moment (PROFILE §3.7, §5.1)."""
    sync = timedelta(seconds=CLOCK_SYNC_S)
    descriptor = event["event_descriptor"]
    for name in ("created_date_time", "modification_date_time"):
        stamp = descriptor.get(name)
        rec.check("VTN-CLK-01", isinstance(stamp, datetime) and before - sync <= stamp <= after + sync,
                  f"{name} {stamp} of an event published between {before:%H:%M:%S.%f} and {after:%H:%M:%S.%f} (±"
                  f"{CLOCK_SYNC_S:g} s)")


def _check_shape(event: dict[str, Any], raw: str, published: CapacityBandwidth, rec: Recorder, ven_id: str) -> None:
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
    descriptor = event["event_descriptor"]
    targets = event.get("targets") or []
    target_ids = [str(t.get("ven_id")) for t in targets if isinstance(t, dict)]
    tolerance = (period.get("tolerance") or {}) if isinstance(period, dict) else {}
    rec.check("VTN-SHP-06", target_ids == [ven_id] and descriptor.get("priority") in (0, None)
              and descriptor.get("test_event") in (False, "false", None) and not tolerance,
              f"targets {target_ids} (delivered to {ven_id!r}), priority {descriptor.get('priority')!r}, "
              f"testEvent {descriptor.get('test_event')!r}, randomisation {tolerance or 'none'}")


# ------------------------------------------------------------------------------------------------ security

SECURITY_RULES = ("VTN-SEC-01", "VTN-SEC-02", "VTN-SEC-03")


async def _exchange(url: str, service: str, message: str, context: ssl.SSLContext
                    ) -> tuple[str, dict[str, Any], str]:
    """(kind, payload, raw) of one request on a fresh connection; kind 'TLS refused: ...' when no TLS session
    came about (or the connection was cut during the handshake)."""
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context),
                                         timeout=aiohttp.ClientTimeout(total=15)) as http, http.post(
                f"{url.rstrip('/')}/{service}", data=message.encode(), headers=HEADERS) as reply:
            body = await reply.read()
            if reply.status >= 300:
                return f"HTTP {reply.status}", {"status": reply.status}, body.decode(errors="replace")[:500]
            return (*parse_message(body), body.decode(errors="replace"))
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError) as error:
        return f"TLS refused: {type(error).__name__}: {error}"[:300], {}, ""


def _refused(kind: str, payload: dict[str, Any]) -> bool:
    """No service: the handshake failed, an HTTP 4xx, or an OpenADR answer with 463."""
    return kind.startswith(("TLS refused", "HTTP 4")) or _code(payload) == 463


async def _security(url: str, certs: SuiteCertificates, vtn_ca: Path, rec: Recorder) -> None:
    ean_a, ean_b = certs.eans()[:2]
    a, b = (certs.client_context(certs.ven(e), vtn_ca=vtn_ca) for e in (ean_a, ean_b))
    query = create_message("oadrQueryRegistration", request_id="sec-query")

    old = certs.client_context(certs.ven(ean_a), vtn_ca=vtn_ca)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    kind, _, _ = await _exchange(url, "EiRegisterParty", query, old)
    rec.check("VTN-SEC-01", kind.startswith("TLS refused"), f"a TLS 1.1 client got {kind}")
    kind, payload, raw = await _exchange(url, "EiRegisterParty", query, certs.client_context(None, vtn_ca=vtn_ca))
    rec.check("VTN-SEC-01", _refused(kind, payload), f"a client without certificate got {kind} code "
              f"{_code(payload)}", raw=raw)
    suites = []
    for suite in ("ECDHE-ECDSA-AES128-SHA256", "AES128-SHA256"):
        mandated = certs.client_context(certs.ven(ean_a), vtn_ca=vtn_ca)
        mandated.maximum_version = ssl.TLSVersion.TLSv1_2
        mandated.set_ciphers(suite)
        kind, payload, _ = await _exchange(url, "EiRegisterParty", query, mandated)
        suites.append(f"{suite}: {kind}")
        if not kind.startswith("TLS refused"):
            break
    rec.check("VTN-SEC-01", not kind.startswith("TLS refused"), "TLS 1.2 with a 2.0b suite: " + "; ".join(suites))

    registration = create_message("oadrCreatePartyRegistration", **_register_payload(ean_a))
    for label, cert_key in (("a certificate of the suite's CA no household enrolled", certs.stranger),
                            ("a certificate of a CA the VTN does not trust", certs.impostor_ven)):
        kind, payload, raw = await _exchange(url, "EiRegisterParty", registration,
                                             certs.client_context(cert_key, vtn_ca=vtn_ca))
        rec.check("VTN-SEC-02", _refused(kind, payload) and not payload.get("registration_id"),
                  f"{label} registering as {ean_a} got {kind} code {_code(payload)}", raw=raw)

    kind, payload, raw = await _exchange(url, "EiRegisterParty", create_message(
        "oadrCreatePartyRegistration", **_register_payload(ean_b)), b)
    ven_b = payload.get("ven_id")
    if kind != "oadrCreatedPartyRegistration" or _code(payload) != 200 or not ven_b:
        rec.skip("VTN-SEC-03", f"household {ean_b} could not register with its own certificate ({kind} code "
                 f"{_code(payload)}); enrol the suite's certificates at the VTN")
        rec.evidence("VTN-SEC-03", f"registration of {ean_b} with its certificate: {kind}", raw=raw)
        return
    for label, service, message in (
            (f"registering as {ean_b}", "EiRegisterParty",
             create_message("oadrCreatePartyRegistration", **_register_payload(ean_b))),
            (f"polling as {ean_b}'s venID", "OadrPoll", create_message("oadrPoll", ven_id=ven_b)),
            (f"cancelling {ean_b}'s registration", "EiRegisterParty", create_message(
                "oadrCancelPartyRegistration", request_id="sec-cancel", registration_id=payload.get(
                    "registration_id"), ven_id=ven_b))):
        kind, answer, raw = await _exchange(url, service, message, a)
        rec.check("VTN-SEC-03", _refused(kind, answer), f"{ean_a}'s certificate {label} got {kind} code "
                  f"{_code(answer)}", raw=raw)
    kind, answer, raw = await _exchange(url, "OadrPoll", create_message("oadrPoll", ven_id=ven_b), b)
    rec.check("VTN-SEC-03", kind != "oadrRequestReregistration" and not _refused(kind, answer),
              f"afterwards {ean_b} polls with its own certificate and gets {kind} code {_code(answer)} (still "
              "registered)", raw=raw)
