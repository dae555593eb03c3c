"""A small VEN speaking raw OpenADR 2.0b XML, correct in mode ``good`` and broken in exactly one way otherwise.

Run as ``python ven_script.py MODE VTN_URL EAN START SPEED CONTRACT [CERT KEY CA_FILE]`` (with the three files
it speaks mutual TLS, verifying the VTN against CA_FILE). It wants 6 kW whenever import is cheaper
than 0.2 EUR/kWh and 0.4 kW otherwise, and imports what it wants up to the limit it believes in; each finished
interval it reports the mean, and whenever its limits change it reports a plan.

Modes (each breaks one rule of the profile):
``good``              none.
``silent``            registers and polls, but ignores every answer: never requests events, never answers, never
                      reports, never registers again.
``greedy``            ignores every limit (imports what it wants) and opts in to every event.
``forgetful``         forgets all its limits when an out-of-profile event arrives (§5.5).
``stale``             applies whatever version of an event arrives, also a lower modificationNumber (§7.3.4).
``keeps_cancelled``   keeps applying a cancelled event (§7.3.2).
``no_implied_cancel`` keeps events that are left out of a later distribution (§7.4.2).
``trusts_status``     drops events whose eventStatus says completed, whatever their active period (§7.2.3).
``no_rereg``          ignores oadrRequestReregistration (§2.8).
``no_failsafe``       keeps its limits when the VTN is gone (§10.2).
``sticky_failsafe``   never leaves the failsafe once in it (§10.3).
``no_backfill``       drops telemetry it could not deliver (§9.3.2).
``answers_all``       answers every event, also those whose oadrResponseRequired is never (§8.1).
``trusts_any_vtn``    over TLS, does not verify the VTN's certificate (§12.3).
``leaky``             sends the indoor temperature (x-COMFORT_STATUS) every interval without the household's
                      consent (§14).

Under a performance contract (the suite's) every mode but ``silent`` reports a capacity need after registering
(2 kW for the rest of the local day and the next) and a performance report for each local day that ends.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import tomllib
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
from protocol.effective import effective_limits
from protocol.errors import ProfileError
from protocol.oadr20b import (
    decode_event,
    encode_comfort_report,
    encode_need_report,
    encode_performance_report,
    encode_plan_report,
    encode_telemetry_report,
    hems_report_metadata,
    offered_specifiers,
)
from protocol.oadr20b.names import SPECIFIER_NEED, SPECIFIER_PERFORMANCE, SPECIFIER_PLAN, SPECIFIER_TELEMETRY
from protocol.reports import Plan, PlanInterval, Telemetry, TelemetryInterval
from protocol.timebase import local_day_bounds

MODES = ("good", "silent", "greedy", "forgetful", "stale", "keeps_cancelled", "no_implied_cancel", "trusts_status",
         "no_rereg", "no_failsafe", "sticky_failsafe", "no_backfill", "answers_all", "trusts_any_vtn", "leaky")
NEED_KW = 2.0
WANT_CHEAP_KW, WANT_DEAR_KW, CHEAP_EUR_PER_KWH = 6.0, 0.4, 0.2
FAILSAFE_AFTER = timedelta(seconds=120)
POLL_WALL_S = 0.2


@dataclass
class Held:
    modification_number: int
    payload: CapacityBandwidth | TouTariff
    cancelled: bool = False


@dataclass
class Ven:
    mode: str
    contract: HouseholdContract
    events: dict[str, Held] = field(default_factory=dict)
    known: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    """Per event id: the highest modificationNumber seen and the answer given to it (opt type, code)."""
    last_contact: datetime | None = None
    failsafe: bool = False
    fresh_since_lost: bool = False

    # ------------------------------------------------------------------------------------------- events

    def on_distribution(self, events: list[dict[str, Any]], request_id: str | None) -> list[dict[str, Any]]:
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
                answers.append(_answer(event_id, modification, request_id, seen[1], seen[2]))
                continue
            try:
                decoded = decode_event(raw)
            except ProfileError:
                opt, code = ("optIn", 200) if self.mode == "greedy" else ("optOut", 454)
                self.known[event_id] = (modification, opt, code)
                answers.append(_answer(event_id, modification, request_id, opt, code))
                if self.mode == "forgetful":
                    for held in [e for e, h in self.events.items() if isinstance(h.payload, CapacityBandwidth)]:
                        del self.events[held]
                continue
            self.known[event_id] = (modification, "optIn", 200)
            answers.append(_answer(event_id, modification, request_id, "optIn", 200))
            cancelled = decoded.meta.status.value == "cancelled"
            believed_over = self.mode == "trusts_status" and decoded.meta.status.value == "completed"
            if believed_over or (cancelled and self.mode != "keeps_cancelled"):
                self.events.pop(event_id, None)
            else:
                self.events[event_id] = Held(modification, decoded.payload, cancelled)
            self._fresh(decoded.payload)
        if self.mode != "no_implied_cancel":
            for gone in [e for e in self.events if e not in present]:
                self._fresh(self.events.pop(gone).payload)
        return [a for a in answers if a["event_id"] not in unanswered]

    def _fresh(self, payload: CapacityBandwidth | TouTariff) -> None:
        if isinstance(payload, CapacityBandwidth) and self.failsafe and self.last_contact is not None:
            self.fresh_since_lost = True

    # ------------------------------------------------------------------------------------------- limits

    def contact(self, now: datetime, ok: bool) -> None:
        if ok:
            self.last_contact = now
        silent_for = now - (self.last_contact or now)
        if not self.failsafe and silent_for > FAILSAFE_AFTER and self.mode != "no_failsafe":
            self.failsafe, self.fresh_since_lost = True, False
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
        return want if self.mode == "greedy" else min(want, self.limit_kw(moment))


def _answer(event_id: str, modification: int, request_id: str | None, opt: str, code: int) -> dict[str, Any]:
    return {"response_code": code, "response_description": "OK" if code == 200 else "invalid data",
            "request_id": request_id, "event_id": event_id, "modification_number": modification, "opt_type": opt}


async def main(mode: str, url: str, ean: str, start: datetime, speed: float, contract_path: Path,
               tls: tuple[str, str, str] | None = None) -> None:
    loop = asyncio.get_running_loop()
    wall0 = loop.time()

    def now() -> datetime:
        return start + timedelta(seconds=(loop.time() - wall0) * speed)

    contract = HouseholdContract.model_validate(tomllib.loads(contract_path.read_text()))
    ven = Ven(mode, contract)
    ven_id: str | None = None
    requests: dict[str, str] = {}
    samples: dict[datetime, list[float]] = {}
    backlog: list[TelemetryInterval] = []
    planned_for: float | None = None

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
            except (aiohttp.ClientError, TimeoutError):
                answer = (None, {})
            ven.contact(now(), answer[0] is not None)
            return answer

        async def register() -> None:
            nonlocal ven_id
            _, reg = await send("EiRegisterParty", "oadrCreatePartyRegistration", request_id="r1", ven_name=ean,
                                http_pull_model=True, xml_signature=False, report_only=False, profile_name="2.0b",
                                transport_name="simpleHttp")
            ven_id = reg.get("ven_id") or ven_id
            if mode == "silent":
                return
            leaky = mode == "leaky"
            offer = hems_report_metadata(resource_id=ean, created_at=now(), raw_data_consent=leaky,
                                         specifiers=offered_specifiers(contract.model_copy(
                                             update={"raw_data_consent": leaky})))
            _, registered = await send("EiReport", "oadrRegisterReport", request_id="r3", ven_id=ven_id,
                                       report_request_id=0, reports=offer)
            for request in registered.get("report_requests") or []:
                requests[request["report_specifier"]["report_specifier_id"]] = request["report_request_id"]
            await send_needs()
            kind, payload = await send("EiEvent", "oadrRequestEvent", request_id="r2", ven_id=ven_id)
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
                    await send("EiReport", "oadrUpdateReport", request_id="r6", ven_id=ven_id, reports=[
                        encode_need_report(need, report_request_id=requests[SPECIFIER_NEED])])

        async def on_events(payload: dict[str, Any]) -> None:
            answers = ven.on_distribution(payload.get("events") or [], payload.get("request_id"))
            if answers:
                await send("EiEvent", "oadrCreatedEvent", ven_id=ven_id, event_responses=answers, response={
                    "response_code": 200, "response_description": "OK", "request_id": payload.get("request_id")})

        await register()
        reported = floor_to_interval(now())
        zone = contract.comfort.timezone
        day = now().astimezone(ZoneInfo(zone)).date()
        while True:
            kind, payload = await send("OadrPoll", "oadrPoll", ven_id=ven_id)
            if mode != "silent":
                if kind == "oadrDistributeEvent":
                    await on_events(payload)
                elif kind == "oadrRequestReregistration" and mode != "no_rereg":
                    await register()
            moment = now()
            samples.setdefault(floor_to_interval(moment), []).append(ven.import_kw(moment))
            if mode != "silent" and SPECIFIER_TELEMETRY in requests:
                closed = floor_to_interval(moment) > reported
                while floor_to_interval(moment) > reported:
                    values = samples.pop(reported, None) or [ven.import_kw(reported)]
                    backlog.append(TelemetryInterval(start=reported, import_kw=sum(values) / len(values),
                                                     export_kw=0.0))
                    reported += INTERVAL
                if backlog:
                    kind, _ = await send("EiReport", "oadrUpdateReport", request_id="r4", ven_id=ven_id, reports=[
                        encode_telemetry_report(Telemetry(intervals=tuple(backlog[-192:])),
                                                report_request_id=requests[SPECIFIER_TELEMETRY],
                                                created_at=now())])
                    if kind is not None or mode == "no_backfill":
                        backlog.clear()
                if mode == "leaky" and closed:  # the indoor temperature every interval, though the contract says no
                    status = ComfortStatus(measured_at=moment, indoor_temperature_c=19.6, comfort_min_c=19.0,
                                           comfort_max_c=21.0)
                    await send("EiReport", "oadrUpdateReport", request_id="r7", ven_id=ven_id, reports=[
                        encode_comfort_report(status, report_request_id="rr-unrequested")])
                start_of_day, end_of_day = local_day_bounds(day, zone)
                if moment >= end_of_day and SPECIFIER_PERFORMANCE in requests:
                    verdict = PerformanceReport(start=start_of_day, end=end_of_day, created_at=moment,
                                                degree_hours_outside_band=0.0)
                    kind, _ = await send("EiReport", "oadrUpdateReport", request_id="r8", ven_id=ven_id, reports=[
                        encode_performance_report(verdict, report_request_id=requests[SPECIFIER_PERFORMANCE])])
                    if kind is not None:
                        day += timedelta(days=1)
                limit_now = ven.limit_kw(moment)
                if SPECIFIER_PLAN in requests and limit_now != planned_for:
                    first = floor_to_interval(moment)
                    plan = Plan(created_at=moment, intervals=tuple(
                        PlanInterval(start=first + k * INTERVAL, net_import_kw=ven.import_kw(first + k * INTERVAL))
                        for k in range(96)))
                    kind, _ = await send("EiReport", "oadrUpdateReport", request_id="r5", ven_id=ven_id, reports=[
                        encode_plan_report(plan, report_request_id=requests[SPECIFIER_PLAN])])
                    if kind is not None:
                        planned_for = limit_now
            await asyncio.sleep(POLL_WALL_S)


if __name__ == "__main__":
    if len(sys.argv) not in (7, 10) or sys.argv[1] not in MODES:
        sys.exit(f"usage: ven_script.py {{{'|'.join(MODES)}}} VTN_URL EAN START SPEED CONTRACT [CERT KEY CA_FILE]")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], datetime.fromisoformat(sys.argv[4]).astimezone(UTC),
                     float(sys.argv[5]), Path(sys.argv[6]),
                     (sys.argv[7], sys.argv[8], sys.argv[9]) if len(sys.argv) == 10 else None))
