"""A scripted VTN on aiohttp that speaks raw OpenADR 2.0b (openleadr.messaging) to one VEN under test.

It records every message with the wall time it arrived and the suite's simulated time, answers as the profile
says, distributes what the scenario tells it to, can ask the VEN to register again, and can disappear (the port
is closed, open connections are cut) and come back on the same port.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from openleadr.messaging import create_message, parse_message

from protocol import CapacityBandwidth, CapacityNeed, HouseholdContract, PerformanceReport, TouTariff
from protocol.errors import ProfileError
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
VTN_ID = "CONFORMANCE-VTN"
POLL_FREQ = timedelta(seconds=1)
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
    """Sent with a negative import limit: out of profile, owed an optOut."""
    status_lie: str | None = None
    """An eventStatus to send instead of the true one."""
    response_required: str = "always"

    @property
    def opt_type(self) -> str:
        """The answer owed: optIn, optOut, or none (responseRequired never)."""
        if self.response_required == "never":
            return "none"
        return "optOut" if self.invalid else "optIn"

    def render(self, now: datetime) -> dict[str, Any]:
        event = encode_event(self.payload, event_id=self.event_id, modification_number=self.modification_number,
                             ven_id=VEN_ID, created_at=self.created_at, modified_at=self.modified_at, now=now,
                             cancelled=self.cancelled)
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


@dataclass(frozen=True)
class Distribution:
    wall: float
    """When it left (the answer to the poll or request that carried it)."""
    request_id: str
    expected: tuple[Expected, ...]


@dataclass
class Received:
    """Decoded reports, each with the suite's simulated time at arrival."""

    telemetry: list[tuple[datetime, datetime | None, Telemetry]] = field(default_factory=list)
    """(arrival, the report's createdDateTime, what it says)."""
    plans: list[tuple[datetime, Plan]] = field(default_factory=list)
    needs: list[tuple[datetime, CapacityNeed]] = field(default_factory=list)
    performance: list[tuple[datetime, PerformanceReport]] = field(default_factory=list)
    bad_reports: list[tuple[str, str]] = field(default_factory=list)
    """(report name, why it could not be decoded)."""


class ScriptedVtn:
    def __init__(self, sim_now: Callable[[], datetime], ssl_context: ssl.SSLContext | None = None,
                 contract: HouseholdContract | None = None) -> None:
        self.sim_now = sim_now
        self.contract = contract
        """The household's contract: the VTN requests only the reports it calls for (PROFILE §9.2); all offered
        ones when None."""
        self.raw: list[tuple[float, str]] = []
        """(wall time, XML) of every message the VEN sent, as it arrived (what VEN-PRIV-01 reads)."""
        self.ssl_context = ssl_context
        """Serve https with this context (the suite's certificates) instead of plain http."""
        self.log: list[Message] = []
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
        answer_kind, answer = self._answer(kind, payload)
        answer.setdefault("response", {"response_code": 200, "response_description": "OK",
                                       "request_id": payload.get("request_id")})
        return web.Response(text=create_message(answer_kind, **answer), content_type="application/xml")

    def _distribute(self, events: list[EventSpec]) -> tuple[str, dict[str, Any]]:
        request_id = f"dist-{next(self._ids)}"
        now = self.sim_now()
        self.distributions.append(Distribution(time.monotonic(), request_id, tuple(
            Expected(e.event_id, e.modification_number, e.opt_type, e.rule) for e in events)))
        return "oadrDistributeEvent", {"events": [e.render(now) for e in events], "vtn_id": VTN_ID,
                                       "request_id": request_id}

    def _answer(self, kind: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if kind in ("oadrCreatePartyRegistration", "oadrQueryRegistration"):
            if kind == "oadrCreatePartyRegistration":
                self._queued = list(self.events) if self.events else None  # §2.4: all events undelivered again
            return "oadrCreatedPartyRegistration", {
                "ven_id": VEN_ID, "registration_id": "reg-1", "vtn_id": VTN_ID,
                "profiles": [{"profile_name": "2.0b", "transports": [{"transport_name": "simpleHttp"}]}],
                "requested_oadr_poll_freq": POLL_FREQ}
        if kind == "oadrRequestEvent":
            self._queued = None
            return self._distribute(self.events)
        if kind == "oadrPoll":
            if self._reregister:
                self._reregister = False
                return "oadrRequestReregistration", {"ven_id": VEN_ID}
            if self._queued is not None:
                queued, self._queued = self._queued, None
                return self._distribute(queued)
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
        now = self.sim_now()
        for report in payload.get("reports") or []:
            name = str(report.get("report_name"))
            if name not in (REPORT_TELEMETRY, REPORT_PLAN, REPORT_NEED, REPORT_PERFORMANCE):
                continue
            try:
                decoded = decode_report(report)
            except (ProfileError, ValueError, KeyError, TypeError) as error:
                self.received.bad_reports.append((name, str(error)))
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
