"""A small VEN speaking raw OpenADR 2.0b XML, correct in mode ``good`` and broken in exactly one way otherwise.

Run as ``python ven_script.py MODE VTN_URL EAN START SPEED CONTRACT [CERT KEY CA_FILE]`` (with the three files
it speaks mutual TLS, verifying the VTN against CA_FILE). It wants 6 kW whenever import is cheaper
than 0.2 EUR/kWh and 0.4 kW otherwise, and imports what it wants up to the limit it believes in; each finished
interval it reports the mean, and whenever its limits change it reports a plan (at most one per interval).

Modes (each breaks one rule of the profile):
``good``               none.
``silent``             registers and polls, but ignores every answer: never requests events, never answers, never
                       reports, never registers again.
``greedy``             ignores every limit (imports what it wants) and opts in to every event.
``forgetful``          forgets all its limits when an out-of-profile event arrives (§5.5).
``stale``              applies whatever version of an event arrives, also a lower modificationNumber (§7.3.4).
``keeps_cancelled``    keeps applying a cancelled event (§7.3.2).
``no_implied_cancel``  keeps events that are left out of a later distribution (§7.4.2).
``trusts_status``      drops events whose eventStatus says completed, whatever their active period (§7.2.3).
``no_rereg``           ignores oadrRequestReregistration (§2.8).
``no_failsafe``        keeps its limits when the VTN refuses it (§10.2).
``sticky_failsafe``    never leaves the failsafe once in it (§10.3).
``no_backfill``        drops telemetry it could not deliver (§9.3.3).
``answers_all``        answers every event, also those whose oadrResponseRequired is never (§8.1).
``offset``             keeps every limit 1.5 kW too high (an uncontrolled load outside its budget, §5.2.1).
``watts``              reports its telemetry in W instead of kW (§4.6).
``local_time``         labels its telemetry intervals in local time (UTC+1) written as UTC (§3.1).
``counts_refusals``    takes any answer for contact, a refusal and a request to re-register too (§10.1).
``early_release``      leaves the failsafe on any capacity event after contact returns, also one for later (§10.3).
``optout_cancel``      answers a cancellation whose body is out of profile optOut 454 (it still honours it, §7.3.2).
``no_backoff``         registers again at once after a refusal (§2.11).
``rereg_after_cancel`` registers again after the VTN cancelled its registration (§2.12).
``trusts_any_vtn``     over TLS, does not verify the VTN's certificate (§12.3).
``leaky``              sends the indoor temperature (x-COMFORT_STATUS) every interval without the household's
                       consent (§14).

Under a performance contract (the suite's) every mode but ``silent`` reports a capacity need after registering
(2 kW for the rest of the local day and the next) and a performance report for each local day that ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from openleadr.messaging import create_message, parse_message

from protocol import (
    INTERVAL,
    CapacityBandwidth,
    CapacityNeed,
    ComfortStatus,
    HouseholdContract,
    NeedInterval,
    PerformanceReport,
    TouTariff,
    floor_to_interval,
)
from protocol.contract_file import read_contract_file
from protocol.effective import effective_limits
from protocol.errors import ProfileError
from protocol.oadr20b import (
    Cancellation,
    decode_event,
    encode_comfort_report,
    encode_need_report,
    encode_performance_report,
    encode_plan_report,
    encode_telemetry_report,
    hems_report_metadata,
    offered_specifiers,
    read_event,
)
from protocol.oadr20b.names import SPECIFIER_NEED, SPECIFIER_PERFORMANCE, SPECIFIER_PLAN, SPECIFIER_TELEMETRY
from protocol.reports import Plan, PlanInterval, Telemetry, TelemetryInterval
from protocol.timebase import local_day_bounds

MODES = ("good", "silent", "greedy", "forgetful", "stale", "keeps_cancelled", "no_implied_cancel", "trusts_status",
         "offset", "watts", "local_time", "no_rereg", "no_failsafe", "sticky_failsafe", "no_backfill", "answers_all",
         "counts_refusals", "early_release", "optout_cancel", "no_backoff", "rereg_after_cancel",
         "trusts_any_vtn", "leaky")
NEED_KW = 2.0
WANT_CHEAP_KW, WANT_DEAR_KW, CHEAP_EUR_PER_KWH = 6.0, 0.4, 0.2
FAILSAFE_AFTER = timedelta(seconds=120)
OFFSET_KW = 1.5
POLL_WALL_S = 0.4
"""Wall seconds between polls: under the 1 s the scripted VTN asks for, and light on a machine that runs twenty of
these beside the suite."""
CHUNK = 96
FIRST_WAIT, MAX_WAIT = timedelta(seconds=60), timedelta(minutes=10)


@dataclass
class Held:
    modification_number: int
    payload: CapacityBandwidth | TouTariff


@dataclass
class Ven:
    mode: str
    contract: HouseholdContract
    ven_id: str | None = None
    events: dict[str, Held] = field(default_factory=dict)
    known: dict[str, tuple[int, str, int, str]] = field(default_factory=dict)
    """Per event id: the highest modificationNumber seen and the answer given to it (opt type, code, text)."""
    last_contact: datetime | None = None
    failsafe: bool = False
    held_at_loss: set[tuple[str, int]] = field(default_factory=set)
    fresh_since_lost: bool = False

    # ------------------------------------------------------------------------------------------- events

    def on_distribution(self, events: list[dict[str, Any]], request_id: str | None,
                        now: datetime) -> list[dict[str, Any]]:
        """Applies the events; returns the answers owed (those whose responseRequired is always)."""
        answers, present = [], set()
        unanswered = {str(e["event_descriptor"]["event_id"]) for e in events
                      if e.get("response_required") == "never" and self.mode != "answers_all"}
        for raw in events:
            descriptor = raw["event_descriptor"]
            event_id, modification = str(descriptor["event_id"]), int(descriptor["modification_number"])
            present.add(event_id)
            seen = self.known.get(event_id)
            if seen is not None and modification <= seen[0] and self.mode != "stale":  # a repeat or stale copy
                answers.append(_answer(event_id, modification, request_id, *seen[1:]))
                continue
            try:
                read = read_event(raw, ven_id=self.ven_id)
            except ProfileError as error:
                opt, code = ("optIn", 200) if self.mode == "greedy" else ("optOut", error.response_code)
                text = "OK" if code == 200 else f"{error.field}: {error.reason}"[:240]
                self.known[event_id] = (modification, opt, code, text)
                answers.append(_answer(event_id, modification, request_id, opt, code, text))
                if self.mode == "forgetful":
                    for held in [e for e, h in self.events.items() if isinstance(h.payload, CapacityBandwidth)]:
                        del self.events[held]
                continue
            if isinstance(read, Cancellation):
                opt, code = ("optOut", 454) if self.mode == "optout_cancel" and _bad_body(raw) else ("optIn", 200)
                text = "OK" if code == 200 else "event: a cancellation out of profile"
                self.known[event_id] = (modification, opt, code, text)
                answers.append(_answer(event_id, modification, request_id, opt, code, text))
                if self.mode == "keeps_cancelled":  # keeps what it held (or the new body, when it is valid)
                    with contextlib.suppress(ProfileError):
                        self.events[event_id] = Held(modification, decode_event(raw).payload)
                else:
                    self.events.pop(event_id, None)
                continue
            self.known[event_id] = (modification, "optIn", 200, "OK")
            answers.append(_answer(event_id, modification, request_id, "optIn", 200))
            believed_over = self.mode == "trusts_status" and read.meta.status.value == "completed"
            if believed_over:
                self.events.pop(event_id, None)
            else:
                self.events[event_id] = Held(modification, read.payload)
            self._fresh(event_id, modification, read.payload, now)
        if self.mode != "no_implied_cancel":
            for gone in [e for e in self.events if e not in present]:
                del self.events[gone]
        return [a for a in answers if a["event_id"] not in unanswered]

    def _fresh(self, event_id: str, modification: int, payload: CapacityBandwidth | TouTariff,
               now: datetime) -> None:
        """§10.3: a capacity bandwidth covering now in a version not held at the loss."""
        if not self.failsafe or not isinstance(payload, CapacityBandwidth):
            return
        if self.mode == "early_release" or (
                (event_id, modification) not in self.held_at_loss and payload.start <= now < payload.end):
            self.fresh_since_lost = True

    # ------------------------------------------------------------------------------------------- limits

    def contact(self, now: datetime, kind: str | None, answer: dict[str, Any]) -> None:
        code = (answer.get("response") or {}).get("response_code")
        ok = kind is not None and (self.mode == "counts_refusals" or (
            kind != "oadrRequestReregistration" and code in (200, "200", None)))
        if ok:
            self.last_contact = now
        silent_for = now - (self.last_contact or now)
        if not self.failsafe and silent_for > FAILSAFE_AFTER and self.mode != "no_failsafe":
            self.failsafe, self.fresh_since_lost = True, False
            self.held_at_loss = {(e, h.modification_number) for e, h in self.events.items()}
        if self.failsafe and ok and self.fresh_since_lost and self.mode != "sticky_failsafe":
            self.failsafe = False

    def limit_kw(self, moment: datetime) -> float:
        if self.failsafe:
            return self.contract.failsafe_import_kw
        bandwidths = [h.payload for h in self.events.values() if isinstance(h.payload, CapacityBandwidth)]
        return effective_limits(self.contract, bandwidths, start=moment, count=1)[0].import_limit_kw

    def import_kw(self, moment: datetime) -> float:
        prices = [i.import_price_eur_per_kwh for h in self.events.values() if isinstance(h.payload, TouTariff)
                  for i in h.payload.intervals if i.start == floor_to_interval(moment)]
        want = WANT_CHEAP_KW if prices and prices[-1] < CHEAP_EUR_PER_KWH else WANT_DEAR_KW
        if self.mode == "offset" and want == WANT_CHEAP_KW:
            want += OFFSET_KW  # it wants enough to show its offset over every limit, 5 kW included
        if self.mode == "greedy":
            return want
        return min(want, self.limit_kw(moment) + (OFFSET_KW if self.mode == "offset" else 0.0))


def _bad_body(raw: dict[str, Any]) -> bool:
    try:
        decode_event(raw)
    except ProfileError:
        return True
    return False


def _tamper(mode: str, report: dict[str, Any]) -> dict[str, Any]:
    """The telemetry report as the ``watts`` and ``local_time`` modes send it."""
    for interval in report["intervals"]:
        if mode == "watts":
            interval["report_payload"]["value"] *= 1000
        elif mode == "local_time":
            interval["dtstart"] += timedelta(hours=1)
    if mode == "local_time":
        report["dtstart"] += timedelta(hours=1)
    return report


def _answer(event_id: str, modification: int, request_id: str | None, opt: str, code: int,
            description: str = "OK") -> dict[str, Any]:
    return {"response_code": code, "response_description": description, "request_id": request_id,
            "event_id": event_id, "modification_number": modification, "opt_type": opt}


async def main(mode: str, url: str, ean: str, start: datetime, speed: float, contract_path: Path,
               tls: tuple[str, str, str] | None = None) -> None:
    loop = asyncio.get_running_loop()
    wall0 = loop.time()

    def now() -> datetime:
        return start + timedelta(seconds=(loop.time() - wall0) * speed)

    entries, problems = read_contract_file(contract_path.read_text())
    if problems or len(entries) != 1:
        sys.exit(f"{contract_path}: {problems or 'not exactly one household'}")
    contract = entries[0].contract
    ven = Ven(mode, contract)
    registered = False
    cancelled = False
    refusals = 0
    register_after: datetime | None = None
    requests: dict[str, str] = {}
    samples: dict[datetime, list[float]] = {}
    backlog: list[TelemetryInterval] = []
    planned: tuple[float, datetime] | None = None

    connector = None
    if tls is not None:
        cert, key, ca_file = tls
        context = ssl.create_default_context(cafile=ca_file)
        if mode == "trusts_any_vtn":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(cert, key)
        connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3), connector=connector) as http:
        async def send(service: str, kind: str, **payload: Any) -> tuple[str | None, dict[str, Any]]:
            try:
                async with http.post(f"{url}/{service}", data=create_message(kind, **payload)) as reply:
                    answer = parse_message(await reply.read()) if reply.status == 200 else (None, {})
            except (aiohttp.ClientError, TimeoutError, ValueError):
                answer = (None, {})
            ven.contact(now(), answer[0], answer[1])
            return answer

        async def register() -> None:
            nonlocal registered, refusals, register_after
            if register_after is not None and now() < register_after:
                return
            kind, reg = await send("EiRegisterParty", "oadrCreatePartyRegistration", request_id="r1", ven_name=ean,
                                   ven_id=ven.ven_id, http_pull_model=True, xml_signature=False, report_only=False,
                                   profile_name="2.0b", transport_name="simpleHttp")
            code = (reg.get("response") or {}).get("response_code")
            if kind != "oadrCreatedPartyRegistration" or code not in (200, "200"):
                if kind is not None and mode != "no_backoff":  # refused: wait, doubling (§2.11)
                    refusals += 1
                    register_after = now() + min(FIRST_WAIT * 2 ** (refusals - 1), MAX_WAIT)
                return
            registered, refusals, register_after = True, 0, None
            ven.ven_id = reg.get("ven_id") or ven.ven_id
            if mode == "silent":
                return
            leaky = mode == "leaky"
            offer = hems_report_metadata(resource_id=ean, created_at=now(), raw_data_consent=leaky,
                                         specifiers=offered_specifiers(contract.model_copy(
                                             update={"raw_data_consent": leaky})))
            _, offered = await send("EiReport", "oadrRegisterReport", request_id="r3", ven_id=ven.ven_id,
                                    report_request_id=0, reports=offer)
            requests.clear()
            for request in offered.get("report_requests") or []:
                requests[request["report_specifier"]["report_specifier_id"]] = request["report_request_id"]
            await send_needs()
            kind, payload = await send("EiEvent", "oadrRequestEvent", request_id="r2", ven_id=ven.ven_id)
            if kind == "oadrDistributeEvent":
                await on_events(payload)

        async def send_needs() -> None:
            """2 kW for the rest of the local day and the next (a performance contract's need, §9.5)."""
            if SPECIFIER_NEED not in requests:
                return
            zone = contract.comfort.timezone
            first = floor_to_interval(now()) + INTERVAL
            today = first.astimezone(ZoneInfo(zone)).date()
            end = local_day_bounds(today + timedelta(days=1), zone)[1]
            starts = [first + k * INTERVAL for k in range(int((end - first) / INTERVAL))]
            for chunk in (starts[:96], starts[96:]):
                if chunk:
                    need = CapacityNeed(created_at=now(), intervals=tuple(
                        NeedInterval(start=s, import_kw=NEED_KW) for s in chunk))
                    await send("EiReport", "oadrUpdateReport", request_id="r6", ven_id=ven.ven_id, reports=[
                        encode_need_report(need, report_request_id=requests[SPECIFIER_NEED])])

        async def on_events(payload: dict[str, Any]) -> None:
            answers = ven.on_distribution(payload.get("events") or [], payload.get("request_id"), now())
            if answers:
                await send("EiEvent", "oadrCreatedEvent", ven_id=ven.ven_id, event_responses=answers, response={
                    "response_code": 200, "response_description": "OK", "request_id": payload.get("request_id")})

        async def send_telemetry() -> None:
            """Each finished interval's mean; what could not be delivered again, oldest first, at most 96 a report
            (§9.3.3)."""
            nonlocal reported, backlog
            moment = now()
            if SPECIFIER_TELEMETRY not in requests:
                return
            while floor_to_interval(moment) > reported:
                values = samples.pop(reported, None) or [ven.import_kw(reported)]
                backlog.append(TelemetryInterval(start=reported, import_kw=sum(values) / len(values), export_kw=0.0))
                reported += INTERVAL
            backlog = backlog[-192:]
            while backlog:
                chunk = backlog[:CHUNK]
                kind, answer = await send("EiReport", "oadrUpdateReport", request_id="r4", ven_id=ven.ven_id,
                                          reports=[_tamper(mode, encode_telemetry_report(
                                              Telemetry(intervals=tuple(chunk)),
                                              report_request_id=requests[SPECIFIER_TELEMETRY], created_at=now()))])
                code = (answer.get("response") or {}).get("response_code")
                if (kind == "oadrUpdatedReport" and code in (200, "200", 454, "454")) or mode == "no_backfill":
                    backlog = backlog[len(chunk):]
                else:
                    break

        await register()
        reported = floor_to_interval(now())
        zone = contract.comfort.timezone
        day = now().astimezone(ZoneInfo(zone)).date()
        while True:
            sampled = now()
            samples.setdefault(floor_to_interval(sampled), []).append(ven.import_kw(sampled))
            if not registered:
                if not cancelled or mode == "rereg_after_cancel":
                    await register()
                if mode == "no_backfill":  # it keeps sending its telemetry, and drops what the VTN refused
                    await send_telemetry()
                await asyncio.sleep(POLL_WALL_S)
                continue
            kind, payload = await send("OadrPoll", "oadrPoll", ven_id=ven.ven_id)
            if mode != "silent":
                if kind == "oadrDistributeEvent":
                    await on_events(payload)
                elif kind == "oadrRequestReregistration" and mode != "no_rereg":
                    registered = False
                    await register()
                elif kind == "oadrCancelPartyRegistration":
                    await send("EiRegisterParty", "oadrCanceledPartyRegistration", ven_id=ven.ven_id,
                               registration_id=payload.get("registration_id"), response={
                                   "response_code": 200, "response_description": "OK",
                                   "request_id": payload.get("request_id")})
                    registered, cancelled = False, True
                    continue
            moment = now()
            closed = floor_to_interval(moment) > reported  # an interval ended since the last telemetry
            if mode != "silent":
                await send_telemetry()
            if mode != "silent" and SPECIFIER_TELEMETRY in requests:
                if mode == "leaky" and closed:  # the indoor temperature every interval, though the contract says no
                    status = ComfortStatus(measured_at=moment, indoor_temperature_c=19.6, comfort_min_c=19.0,
                                           comfort_max_c=21.0)
                    await send("EiReport", "oadrUpdateReport", request_id="r7", ven_id=ven.ven_id, reports=[
                        encode_comfort_report(status, report_request_id="rr-unrequested")])
                start_of_day, end_of_day = local_day_bounds(day, zone)
                if moment >= end_of_day and SPECIFIER_PERFORMANCE in requests:
                    verdict = PerformanceReport(start=start_of_day, end=end_of_day, created_at=moment,
                                                degree_hours_outside_band=0.0)
                    kind, _ = await send("EiReport", "oadrUpdateReport", request_id="r8", ven_id=ven.ven_id, reports=[
                        encode_performance_report(verdict, report_request_id=requests[SPECIFIER_PERFORMANCE])])
                    if kind is not None:
                        day += timedelta(days=1)
                limit_now = ven.limit_kw(moment)
                interval = floor_to_interval(moment)
                if SPECIFIER_PLAN in requests and (planned is None or (limit_now != planned[0]
                                                                       and interval != planned[1])):
                    plan = Plan(created_at=moment, intervals=tuple(
                        PlanInterval(start=interval + k * INTERVAL,
                                     net_import_kw=ven.import_kw(interval + k * INTERVAL)) for k in range(96)))
                    kind, _ = await send("EiReport", "oadrUpdateReport", request_id="r5", ven_id=ven.ven_id, reports=[
                        encode_plan_report(plan, report_request_id=requests[SPECIFIER_PLAN])])
                    if kind == "oadrUpdatedReport":
                        planned = (limit_now, interval)
            await asyncio.sleep(POLL_WALL_S)


if __name__ == "__main__":
    if len(sys.argv) not in (7, 10) or sys.argv[1] not in MODES:
        sys.exit(f"usage: ven_script.py {{{'|'.join(MODES)}}} VTN_URL EAN START SPEED CONTRACT [CERT KEY CA_FILE]")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], datetime.fromisoformat(sys.argv[4]).astimezone(UTC),
                     float(sys.argv[5]), Path(sys.argv[6]),
                     (sys.argv[7], sys.argv[8], sys.argv[9]) if len(sys.argv) == 10 else None))
