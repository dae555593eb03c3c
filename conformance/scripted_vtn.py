"""A scripted VTN on aiohttp that speaks raw OpenADR 2.0b (openleadr.messaging) to one VEN under test.

It records every message with the wall time it arrived, answers as the profile says, distributes what the
scenario tells it to (and records what it served and when) and, as PROFILE.md §7.4.3 wants, sends the current
events again at every poll while the VEN has not answered the last distribution (the distribution or the answer may
have been lost on a busy machine). It can ask the VEN to register again, refuse it for a while, and cancel its
registration. Its events are rendered with the
VEN's clock as the suite estimates it (``sim_now``); its requested poll frequency is what the suite chose for the
VEN's kind of clock (``poll_freq``).
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from openleadr.messaging import create_message, parse_message

from protocol import CapacityBandwidth, CapacityNeed, HouseholdContract, PerformanceReport, TouTariff
from protocol.errors import OADR_INVALID_DATA, OADR_NOT_REGISTERED, OADR_TARGET_MISMATCH, ProfileError
from protocol.oadr20b import decode_report, encode_event, offered_specifiers, report_requests_for
from protocol.oadr20b.names import (
    REPORT_NEED,
    REPORT_PERFORMANCE,
    REPORT_PLAN,
    REPORT_TELEMETRY,
    SIGNAL_IMPORT_LIMIT,
)
from protocol.reports import Plan, Telemetry

VEN_ID = "conformance-ven-1"
FOREIGN_VEN_ID = "someone-elses-ven"
"""The venID an event for another VEN targets (PROFILE.md §5.5 row 4: 462)."""
VTN_ID = "CONFORMANCE-VTN"
REGISTRATION_ID = "reg-1"
PROFILES = [{"profile_name": "2.0b", "transports": [{"transport_name": "simpleHttp"}]}]
POLL_FREQ = timedelta(seconds=1)
"""The default requested poll frequency (for a VEN that runs its own simulated clock: wall time)."""
PATH = "/OpenADR2/Simple/2.0b"


@dataclass(frozen=True)
class Message:
    wall: float
    """time.monotonic() when it arrived."""
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class EventSpec:
    """One version of one event as the scripted VTN sends it; rendered with the VTN's clock when it leaves."""

    event_id: str
    modification_number: int
    payload: CapacityBandwidth | TouTariff
    rule: str
    """The rule that judges the VEN's answer to this version."""
    created_at: datetime
    modified_at: datetime
    cancelled: bool = False
    invalid: bool = False
    """Sent with a negative import limit: out of profile (454), unless it is a cancellation (valid whatever else it
    holds, PROFILE.md §5.5 row 2)."""
    foreign: bool = False
    """Targets another VEN's venID: out of profile (462)."""
    status_lie: str | None = None
    """An eventStatus to send instead of the true one."""
    response_required: str = "always"

    @property
    def applies(self) -> bool:
        """Whether a conforming VEN takes it (a valid event or a readable cancellation)."""
        return self.cancelled or not (self.invalid or self.foreign)

    @property
    def opt_type(self) -> str:
        """The answer owed: optIn, optOut, or none (responseRequired never)."""
        if self.response_required == "never":
            return "none"
        return "optIn" if self.applies else "optOut"

    @property
    def code(self) -> int:
        """The responseCode owed (PROFILE.md §5.5)."""
        return 200 if self.applies else OADR_TARGET_MISMATCH if self.foreign else OADR_INVALID_DATA

    def render(self, now: datetime) -> dict[str, Any]:
        event = encode_event(self.payload, event_id=self.event_id, modification_number=self.modification_number,
                             ven_id=FOREIGN_VEN_ID if self.foreign else VEN_ID, created_at=self.created_at,
                             modified_at=self.modified_at, now=now, cancelled=self.cancelled)
        if self.invalid:
            for signal in event["event_signals"]:
                if signal["signal_name"] == SIGNAL_IMPORT_LIMIT:
                    for interval in signal["intervals"]:
                        interval["signal_payload"] = -abs(float(interval["signal_payload"]))
        if self.status_lie is not None:
            event["event_descriptor"]["event_status"] = self.status_lie
        event["response_required"] = self.response_required
        return event


@dataclass(frozen=True)
class Expected:
    """One event of a distribution and the answer the VEN owes for it."""

    event_id: str
    modification_number: int
    opt_type: str
    rule: str
    code: int = 200
    """The responseCode owed."""


@dataclass(frozen=True)
class Distribution:
    wall: float
    """When it left (the answer to the poll or request that carried it)."""
    request_id: str
    expected: tuple[Expected, ...]
    events: tuple[EventSpec, ...] = ()
    """What it carried, as the scripted VTN built it."""
    delivered: bool = True
    """False when the VEN hung up before the answer carrying it went out (its timeout ran out first): then it was
    not served, and the next poll carries it again."""


@dataclass
class Received:
    """Decoded reports, each with the wall time (time.monotonic()) it arrived."""

    telemetry: list[tuple[float, datetime | None, Telemetry]] = field(default_factory=list)
    """(arrival, the report's createdDateTime, what it says)."""
    plans: list[tuple[float, Plan]] = field(default_factory=list)
    needs: list[tuple[float, CapacityNeed]] = field(default_factory=list)
    performance: list[tuple[float, PerformanceReport]] = field(default_factory=list)
    bad_reports: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    """(report name, why it could not be decoded, the report as parsed)."""


class ScriptedVtn:
    def __init__(self, sim_now: Callable[[], datetime], poll_freq: timedelta = POLL_FREQ,
                 ssl_context: ssl.SSLContext | None = None, contract: HouseholdContract | None = None) -> None:
        self.sim_now = sim_now
        self.poll_freq = poll_freq
        self.contract = contract
        """The household's contract: the VTN requests only the reports it calls for (PROFILE §9.2); all offered
        ones when None."""
        self.raw: list[tuple[float, str]] = []
        """(wall time, XML) of every message the VEN sent, as it arrived (what VEN-PRIV-01 reads)."""
        self.ssl_context = ssl_context
        """Serve https with this context (the suite's certificates) instead of plain http."""
        self.log: list[Message] = []
        self.user_agents: list[str] = []
        """The distinct HTTP User-Agent headers the VEN sent (its product and version, when it says)."""
        self._answered: set[str] = set()
        """requestIDs of distributions the VEN answered."""
        self.hung_up: list[tuple[float, str]] = []
        """(when, what): requests whose answer the VEN no longer waited for (its timeout ran out first)."""
        self.reregistration_served: float | None = None
        """time.monotonic() when a poll was answered with oadrRequestReregistration."""
        self.refusing = False
        self.registration_cancelled = False
        self._served_scenario_reregistration = False
        self._cancel_registration = False
        self.cancel_served: float | None = None
        """time.monotonic() when a poll was answered with oadrCancelPartyRegistration."""
        self.received = Received()
        self.distributions: list[Distribution] = []
        self.events: list[EventSpec] = []
        """What every distribution carries now."""
        self._queued: list[EventSpec] | None = None
        """The next poll's oadrDistributeEvent, when there is something new to tell."""
        self._reregister = False
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.url = ""

    # ------------------------------------------------------------------------------------------ scenario

    def set_events(self, events: list[EventSpec], once: list[EventSpec] | None = None) -> None:
        """From now on distribute ``events``; the next poll gets ``once`` instead if given (a stale copy)."""
        self.events = list(events)
        self._queued = list(once) if once is not None else list(events)

    def request_reregistration(self) -> None:
        self._reregister = True

    def refuse(self, refusing: bool) -> None:
        """While refusing, every registration is answered 463 and every other request oadrRequestReregistration:
        a VTN that is there but serves this VEN no longer (no contact, PROFILE.md §10.1)."""
        self.refusing = refusing

    def cancel_registration(self) -> None:
        """The next poll gets oadrCancelPartyRegistration (PROFILE.md §2.12)."""
        self._cancel_registration = True

    def first(self, kind: str, after: float = 0.0) -> Message | None:
        return next((m for m in self.log if m.kind == kind and m.wall >= after), None)

    # ------------------------------------------------------------------------------------------ transport

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.raw.append((time.monotonic(), body.decode("utf-8", "replace")))
        try:
            kind, payload = parse_message(body)
        except Exception as error:  # the VEN under test sent something unreadable: log it, answer 400
            self.log.append(Message(time.monotonic(), "unparseable", {"error": str(error)}))
            return web.Response(status=400, text=f"unreadable OpenADR message: {error}")
        self.log.append(Message(time.monotonic(), kind, payload))
        if kind == "oadrCreatedEvent":
            self._answered.update(str(r.get("request_id")) for r in payload.get("event_responses") or [])
        agent = request.headers.get("User-Agent")
        if agent and agent not in self.user_agents:
            self.user_agents.append(agent)
        answer_kind, answer = self._answer(kind, payload)
        answer.setdefault("response", {"response_code": 200, "response_description": "OK",
                                       "request_id": payload.get("request_id")})
        text = create_message(answer_kind, **answer)
        transport = request.transport
        if transport is None or transport.is_closing():
            self._lost(kind, answer_kind)
        return web.Response(text=text, content_type="application/xml")

    def _lost(self, kind: str, answer_kind: str) -> None:
        """The VEN gave up on its request before the answer went out: a distribution it carried was not served."""
        self.hung_up.append((time.monotonic(), kind))
        if answer_kind == "oadrDistributeEvent" and self.distributions:
            last = self.distributions[-1]
            self.distributions[-1] = replace(last, delivered=False)
            if self._queued is None:
                self._queued = list(last.events)
        elif answer_kind == "oadrRequestReregistration" and self._served_scenario_reregistration:
            self._reregister, self.reregistration_served = True, None
        elif answer_kind == "oadrCancelPartyRegistration":
            self._cancel_registration, self.registration_cancelled, self.cancel_served = True, False, None

    def _unanswered(self) -> bool:
        """Whether the last distribution the VEN received owes answers it has not sent."""
        served = [d for d in self.distributions if d.delivered]
        return bool(served) and served[-1].request_id not in self._answered and any(
            e.opt_type != "none" for e in served[-1].expected)

    def _distribute(self, events: list[EventSpec]) -> tuple[str, dict[str, Any]]:
        request_id = f"dist-{next(self._ids)}"
        now = self.sim_now()
        self.distributions.append(Distribution(time.monotonic(), request_id, tuple(
            Expected(e.event_id, e.modification_number, e.opt_type, e.rule, e.code) for e in events), tuple(events)))
        return "oadrDistributeEvent", {"events": [e.render(now) for e in events], "vtn_id": VTN_ID,
                                       "request_id": request_id}

    def _answer(self, kind: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self._served_scenario_reregistration = False
        if kind in ("oadrCreatePartyRegistration", "oadrQueryRegistration"):
            if kind == "oadrCreatePartyRegistration" and self.refusing:
                return "oadrCreatedPartyRegistration", {
                    "vtn_id": VTN_ID, "profiles": PROFILES, "response": {
                        "response_code": OADR_NOT_REGISTERED, "request_id": payload.get("request_id"),
                        "response_description": f"venName {payload.get('ven_name')} is not served at the moment"}}
            if kind == "oadrQueryRegistration" and (self.refusing or self.registration_cancelled):
                return "oadrCreatedPartyRegistration", {"vtn_id": VTN_ID, "profiles": PROFILES}  # not registered
            if kind == "oadrCreatePartyRegistration":
                self.registration_cancelled = False
                self._queued = list(self.events) if self.events else None  # §2.4: all events undelivered again
            return "oadrCreatedPartyRegistration", {
                "ven_id": VEN_ID, "registration_id": REGISTRATION_ID, "vtn_id": VTN_ID, "profiles": PROFILES,
                "requested_oadr_poll_freq": self.poll_freq}
        if self.refusing or self.registration_cancelled:
            # §2.8, §15: to a VEN it does not (or no longer) serve the VTN answers any request this way.
            return "oadrRequestReregistration", {"ven_id": VEN_ID}
        if kind == "oadrRequestEvent":
            self._queued = None
            return self._distribute(self.events)
        if kind == "oadrPoll":
            if self._cancel_registration:
                self._cancel_registration, self.registration_cancelled = False, True
                self.cancel_served = time.monotonic()
                return "oadrCancelPartyRegistration", {"ven_id": VEN_ID, "registration_id": REGISTRATION_ID,
                                                       "request_id": f"cancel-{next(self._ids)}"}
            if self._reregister:
                self._reregister, self._served_scenario_reregistration = False, True
                self.reregistration_served = time.monotonic()
                return "oadrRequestReregistration", {"ven_id": VEN_ID}
            if self._queued is not None:
                queued, self._queued = self._queued, None
                return self._distribute(queued)
            if self._unanswered():
                return self._distribute(self.events)  # §7.4.3: again, until it is answered
            return "oadrResponse", {"ven_id": VEN_ID}
        if kind == "oadrRegisterReport":
            ids = (f"rr-{i}" for i in itertools.count())
            offered = payload.get("reports") or []
            if self.contract is not None:
                wanted = offered_specifiers(self.contract)
                offered = [r for r in offered if r.get("report_specifier_id") in wanted]
            return "oadrRegisteredReport", {"ven_id": VEN_ID, "report_requests": report_requests_for(
                offered, request_ids=ids)}
        if kind == "oadrUpdateReport":
            self._store_reports(payload)
            return "oadrUpdatedReport", {"ven_id": VEN_ID}
        return "oadrResponse", {"ven_id": VEN_ID}

    def _store_reports(self, payload: dict[str, Any]) -> None:
        now = time.monotonic()
        for report in payload.get("reports") or []:
            name = str(report.get("report_name"))
            if name not in (REPORT_TELEMETRY, REPORT_PLAN, REPORT_NEED, REPORT_PERFORMANCE):
                continue
            try:
                decoded = decode_report(report)
            except (ProfileError, ValueError, KeyError, TypeError) as error:
                self.received.bad_reports.append((name, str(error), report))
                continue
            if isinstance(decoded, Telemetry):
                created = report.get("created_date_time")
                self.received.telemetry.append((now, created if isinstance(created, datetime) else None, decoded))
            elif isinstance(decoded, Plan):
                self.received.plans.append((now, decoded))
            elif isinstance(decoded, CapacityNeed):
                self.received.needs.append((now, decoded))
            elif isinstance(decoded, PerformanceReport):
                self.received.performance.append((now, decoded))

    async def up(self) -> None:
        """Listen (on a free port the first time, on the same port after ``down``)."""
        app = web.Application()
        app.router.add_post(PATH + "/{service}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = int(runner.addresses[0][1])
        scheme = "https" if self.ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}{PATH}"
        self._runner = runner

    async def down(self) -> None:
        """Disappear: stop listening and cut open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def is_up(self) -> bool:
        return self._runner is not None

    async def __aenter__(self) -> ScriptedVtn:
        await self.up()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.down()
