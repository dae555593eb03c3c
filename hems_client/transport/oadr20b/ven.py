"""The HEMS's OpenADR 2.0b VEN: the profile's event answers and reports on ``OpenleadrVen``, which holds all that
is taken from openleadr's ``OpenADRClient`` (``openleadr_adapter``: TLS, the XML guard, signatures).

What it does differently from the stock client:
- events: every event of an oadrDistributeEvent is read with ``protocol.oadr20b.read_event`` (PROFILE.md §5.5 in
  order). A valid one is answered optIn/200 and goes into the :class:`SignalBook`; a cancellation whose id and
  version can be read is answered optIn/200 and honoured whatever else it holds; an invalid or out-of-profile one
  (an event for another venID included) is answered optOut with the ProfileError's response code and a
  description starting with the field's path, and the book keeps the last valid version. One oadrCreatedEvent
  answers all events whose responseRequired is 'always' (none is sent when no event requires it). Decisions never
  depend on the wall clock.
- reports: no ``add_report`` / APScheduler machinery. After registration the VEN offers the profile's reports
  (``hems_report_metadata``), remembers the reportRequestIDs the VTN asks for per reportSpecifierID, answers
  oadrCreatedReport, and sends oadrUpdateReport only when the controller calls ``send_telemetry`` /
  ``send_plan`` / ``send_comfort``.
- transport: one asyncio polling task on wall time (``poll_interval_s``, or else the VTN's
  oadrRequestedOadrPollFreq capped at ``max_poll_interval_s``), which re-registers when registration is lost
  and never lets a lost VTN crash the household. Each poll reads messages until the VTN answers oadrResponse
  (2.0b: keep polling while messages are queued).
- link health: ``last_contact_at`` is the clock time of the last successful exchange (PROFILE.md §10.1: an answer
  with responseCode 200; a refusal, any other code and oadrRequestReregistration are no contact),
  ``last_attempt_at`` of the last exchange that ended, answered or not (a request times out after 5 s to connect,
  10 s to read, wall time: the profile's 10 s request timeout on a real clock). An answer refused by the XML
  guard, the schema or the signature check is not contact either.
- registration: a refused registration is retried after 60 s, doubling up to 10 minutes, each wait ×0.8-1.2
  (§2.11); after the VTN's oadrCancelPartyRegistration the VEN answers, stops polling and never registers again of
  its own accord (§2.12).
- link loss is logged once: one warning when contact is lost (with the reason), one line when it returns
  (``_note_link``); the controller logs the failsafe's state changes.
- security: https with the VEN's certificate, the VTN verified against the configured CA; plain http only with
  ``insecure`` and only to loopback (``transport_problem``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import logging
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from hems_client.control.signal_book import SignalBook
from hems_client.transport.oadr20b.openleadr_adapter import OpenleadrVen, VenTls, new_request_id
from protocol.clock import Clock
from protocol.contract import HouseholdContract
from protocol.errors import OADR_INVALID_DATA, OADR_INVALID_ID, ProfileError
from protocol.oadr20b import (
    Cancellation,
    DecodedEvent,
    encode_comfort_report,
    encode_need_report,
    encode_performance_report,
    encode_plan_report,
    encode_telemetry_report,
    hems_report_metadata,
    names,
    offered_specifiers,
    read_event,
)
from protocol.performance import CapacityNeed, PerformanceReport
from protocol.reports import ComfortStatus, Plan, Telemetry

logger = logging.getLogger(__name__)

_EXCHANGE_STARTED: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("hems_ven_exchange_started",
                                                                                     default=None)
"""Inside a HemsVen request: the clock time it began (an answer to it may arrive after a later request failed)."""
SentLog = Callable[[datetime, str, str, bool, str], None]
"""(sent_at, service, message type, answered, XML) of every message but polls, as sent (the HEMS's store)."""
_MESSAGE_TYPE = re.compile(r"<(?:\w+:)?(oadr(?!Payload|SignedObject)\w+)[\s>/]")
MAX_DESCRIPTION_CHARS = 240
MAX_MESSAGES_PER_POLL = 20
DEFAULT_POLL_INTERVAL_S = 10.0
REREGISTER_FIRST_WAIT = timedelta(seconds=60)
REREGISTER_MAX_WAIT = timedelta(minutes=10)
REREGISTER_JITTER = 0.2
"""PROFILE.md §2.11: after a refusal wait 60 s, doubling up to 10 minutes, each wait times a factor 0.8-1.2."""


@dataclass(frozen=True)
class EventAnswer:
    """What the VEN answered (or would answer) to one event."""

    event_id: str
    modification_number: int | None
    opt_type: str
    response_code: int
    response_description: str




def describe(error: ProfileError) -> str:
    """The responseDescription for a rejected event: the field and the reason, shortened to fit."""
    text = f"{error.field}: {error.reason}"
    return text if len(text) <= MAX_DESCRIPTION_CHARS else text[:MAX_DESCRIPTION_CHARS - 3] + "..."


def transport_problem(vtn_url: str, *, tls: VenTls | None, insecure: bool) -> str | None:
    """Why the VEN must not talk to ``vtn_url`` this way, or None. Secure by default: https with the VEN's
    certificate and the CA the VTN's certificate must chain to; plain http only when asked for, to loopback."""
    url = urlsplit(vtn_url)
    if url.scheme == "https":
        if tls is None:
            return (f"vtn_url {vtn_url} is https: the VEN needs its certificate, its key and the CA file that the "
                    "VTN's certificate must chain to")
        return None
    if url.scheme != "http":
        return f"vtn_url {vtn_url!r} must start with https:// (or http:// on loopback with insecure)"
    if tls is not None:
        return f"vtn_url {vtn_url} is plain http but TLS certificates are given: use https://"
    if not insecure:
        return (f"vtn_url {vtn_url} is plain http: refused unless insecure is set (for a VTN on loopback); use "
                "https:// with certificates")
    host = url.hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback:
        return f"insecure (plain http) is refused for {host!r}: only for a VTN on a loopback address"
    return None


def judge_event(event: Mapping[str, Any], *, ven_id: str | None = None
                ) -> tuple[DecodedEvent | Cancellation | None, EventAnswer]:
    """Read one oadrEvent dict by PROFILE.md §5.5 and decide the answer: optIn/200 for a valid event or a readable
    cancellation, optOut with the ProfileError's code and path otherwise. ``ven_id``: this VEN's, for the
    eiTarget. Pure."""
    descriptor = event.get("event_descriptor") if isinstance(event, Mapping) else None
    descriptor = descriptor if isinstance(descriptor, Mapping) else {}
    event_id = str(descriptor.get("event_id", ""))
    modification = descriptor.get("modification_number")
    modification = modification if isinstance(modification, int) else None
    try:
        read = read_event(event, ven_id=ven_id)
    except ProfileError as error:
        return None, EventAnswer(event_id, modification, "optOut", error.response_code, describe(error))
    except (TypeError, AttributeError, KeyError, ValueError) as error:  # a shape the codec did not foresee
        reason = ProfileError("event", f"cannot be read: {type(error).__name__}: {error}")
        return None, EventAnswer(event_id, modification, "optOut", OADR_INVALID_DATA, describe(reason))
    return read, EventAnswer(event_id, modification, "optIn", 200, "OK")


def reregistration_wait(refusals: int, rng: random.Random) -> timedelta:
    """How long to wait after the ``refusals``-th refused registration in a row (PROFILE.md §2.11)."""
    wait = min(REREGISTER_FIRST_WAIT * 2 ** max(refusals - 1, 0), REREGISTER_MAX_WAIT)
    return wait * rng.uniform(1 - REREGISTER_JITTER, 1 + REREGISTER_JITTER)


class HemsVen(OpenleadrVen):
    def __init__(
        self,
        *,
        contract: HouseholdContract,
        vtn_url: str,
        clock: Clock,
        signal_book: SignalBook | None = None,
        on_signals_changed: Callable[[], None] | None = None,
        poll_interval_s: float | None = None,
        max_poll_interval_s: float | None = None,
        tls: VenTls | None = None,
        insecure: bool = False,
        sign_messages: bool = False,
        vtn_fingerprint: str | None = None,
        ven_id: str | None = None,
        sent_log: SentLog | None = None,
    ) -> None:
        problem = transport_problem(vtn_url, tls=tls, insecure=insecure)
        if problem is not None:
            raise ValueError(problem)
        if insecure:
            logger.warning("VEN %s: PLAIN HTTP to %s: the VTN is not authenticated and the link not encrypted; for a "
                           "demo or tests on loopback only", contract.connection_point_id, vtn_url)
        super().__init__(ven_name=contract.connection_point_id, vtn_url=vtn_url, tls=tls, ven_id=ven_id,
                         sign=sign_messages, vtn_fingerprint=vtn_fingerprint)
        self.contract = contract
        self.offered = offered_specifiers(contract)
        """The reports this VEN offers (PROFILE §9.1): by its contract, raw readings only under consent."""
        self.sent_log = sent_log
        self.clock = clock
        self.signal_book = signal_book if signal_book is not None else SignalBook()
        self.on_signals_changed = on_signals_changed
        self.poll_interval_s = poll_interval_s
        self.max_poll_interval_s = max_poll_interval_s
        """Cap (wall seconds) on the VTN's requested poll frequency, so that a slow poll on an accelerated
        clock does not look like a lost link to the failsafe."""
        self.last_contact_at: datetime | None = None
        """Clock time of the last contact with the VTN (PROFILE.md §10.1; link health, for the failsafe)."""
        self.last_attempt_at: datetime | None = None
        """Clock time of the last request that ended, answered or failed."""
        self.report_request_ids: dict[str, str] = {}
        """reportSpecifierID -> the reportRequestID the VTN asked for it under."""
        self.answers: dict[str, EventAnswer] = {}
        """The latest answer per event id."""
        self.transport_errors = 0
        self.link_lost_since: datetime | None = None
        """Clock time of the first failed exchange since the last answer (None while the link is up)."""
        self.last_answer: tuple[str | None, dict[str, Any]] = (None, {})
        """The last request's answer (type, payload); (None, {}) when there was none."""
        self.cancelled_by_vtn = False
        """The VTN cancelled the registration (§2.12): no more polls, no registering again of its own accord."""
        self.refusals = 0
        """Registrations refused in a row (§2.11)."""
        self.register_not_before: datetime | None = None
        self._rng = random.Random(contract.connection_point_id)  # spreads a region, reproducible per household
        self._poll_task: asyncio.Task[None] | None = None

    # --------------------------------------------------------------------------------------- lifecycle

    @property
    def registered(self) -> bool:
        return self.registration_id is not None

    async def run(self) -> None:
        """Register, offer reports, request events, then poll in the background. Returns after the first
        attempt; if the VTN cannot be reached, the polling task keeps trying to register."""
        self.loop = asyncio.get_running_loop()
        await self.connect()
        if self._poll_task is None or self._poll_task.done():
            self._poll_task = self.loop.create_task(self._poll_forever())

    async def connect(self) -> bool:
        """Registration -> report registration -> oadrRequestEvent. True when registered. After a refusal the next
        attempt waits (§2.11); after the VTN's cancellation there is none (§2.12)."""
        if self.cancelled_by_vtn:
            return False
        now = self.clock.now()
        if self.register_not_before is not None and now < self.register_not_before:
            return False
        _, payload = await self.query_registration()
        request_id = (payload.get("response") or {}).get("request_id") if payload else None
        self.registration_id = None  # a re-registration carries the venID and no registrationID (§2.2)
        await self.create_party_registration(ven_id=self.ven_id, request_id=request_id)
        response_type, answer = self.last_answer
        if not self.registered:
            if response_type == "oadrCreatedPartyRegistration":  # answered, but refused
                self.refusals += 1
                wait = reregistration_wait(self.refusals, self._rng)
                self.register_not_before = self.clock.now() + wait
                logger.warning("VEN %s: registration refused (%s %s); next attempt in %.0f s", self.ven_name,
                               (answer.get("response") or {}).get("response_code"),
                               (answer.get("response") or {}).get("response_description"), wait.total_seconds())
            return False
        self.refusals, self.register_not_before = 0, None
        self.report_request_ids.clear()
        await self.register_hems_reports()
        await self.sync_events()
        return True

    async def stop(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        await self.close()

    def poll_interval(self) -> float:
        """Wall seconds between polls."""
        if self.poll_interval_s is not None:
            return self.poll_interval_s
        interval = DEFAULT_POLL_INTERVAL_S
        if self.poll_frequency is not None:
            interval = max(self.poll_frequency.total_seconds(), 0.1)
        return interval if self.max_poll_interval_s is None else min(interval, self.max_poll_interval_s)

    async def _poll_forever(self) -> None:
        while not self.cancelled_by_vtn:
            try:
                if self.registered:
                    await self._poll()
                else:
                    await self.connect()
            except asyncio.CancelledError:
                raise
            except Exception:  # the transport must outlive a malformed message or a VTN bug
                self.transport_errors += 1
                logger.exception("VEN %s: polling failed", self.ven_name)
            await asyncio.sleep(self.poll_interval())

    # --------------------------------------------------------------------------------------- transport

    async def _perform_request(self, service: str, message: str) -> tuple[str | None, dict[str, Any]]:
        """One exchange (``OpenleadrVen._exchange``): (type, payload) on an answer, (None, {}) on an empty 200
        answer or on any failure. ``last_contact_at`` moves only on contact (``is_contact``, PROFILE.md §10.1); an
        empty 200 (the VTN's answer to our own oadrResponse) or another 200 answer that is no contact (the answer to
        oadrQueryRegistration) is neither contact nor a loss of it. The exchange is stamped with when it began
        (``exchange_ended``) and the message as sent goes into ``sent_log``."""
        self._last_answered = False
        token = _EXCHANGE_STARTED.set(self.clock.now())
        try:
            message_type, payload = await self._judged_exchange(service, message)
        finally:
            _EXCHANGE_STARTED.reset(token)
        self._log_sent(self.clock.now(), service, message, self._last_answered)
        return message_type, payload

    async def _judged_exchange(self, service: str, message: str) -> tuple[str | None, dict[str, Any]]:
        message_type, payload, reason = await self._exchange(service, message)
        self.last_answer = (message_type, payload)
        if reason is not None:
            self.exchange_ended(answered=False, reason=reason)
        elif is_contact(message_type, payload):
            self.exchange_ended(answered=True)
        else:
            response = payload.get("response") or {}
            code = _int(response.get("response_code"))
            if message_type is None or code in (200, None):  # the VTN is there, but this is not contact either
                self.last_attempt_at = self.clock.now()
                self._last_answered = True
            else:  # refused: logged like a lost link
                self.exchange_ended(answered=False, reason=f"{message_type} {code} "
                                                           f"{response.get('response_description') or ''}".strip())
        return message_type, payload

    def exchange_ended(self, *, answered: bool, reason: str | None = None) -> None:
        """``last_attempt_at`` moves after every exchange, ``last_contact_at`` only when the VTN answered; a lost
        or restored link is logged once (``_note_link``). An answer to a request sent before the link was judged
        lost (a VTN shutting down answers what it had in hand, while new connections are refused) restores
        nothing: it says the VTN was there when the request left, not that it is back."""
        now = self.clock.now()
        self.last_attempt_at = now
        self._last_answered = answered
        started = _EXCHANGE_STARTED.get()
        if answered and started is not None and self.link_lost_since is not None and started < self.link_lost_since:
            return
        if answered:
            self.last_contact_at = now
        self._note_link(now, answered=answered, reasons=[reason] if reason else [])

    def _log_sent(self, now: datetime, service: str, message: str, answered: bool) -> None:
        """Hand every message but polls (which carry only the venID) to ``sent_log``: what the household may
        ask to see (``hems-client data export``)."""
        if self.sent_log is None:
            return
        found = _MESSAGE_TYPE.search(message)
        message_type = found.group(1) if found else "unknown"
        if message_type == "oadrPoll":
            return
        try:
            self.sent_log(now, service, message_type, answered, message)
        except Exception:  # the log must never cost the household its link
            logger.exception("VEN %s: logging a sent %s failed", self.ven_name, message_type)

    def _note_link(self, now: datetime, *, answered: bool, reasons: list[str]) -> None:
        """One warning when contact is lost, one line when it returns; silence in between."""
        if answered:
            if self.link_lost_since is not None:
                lost_s = (now - self.link_lost_since).total_seconds()
                logger.warning("VEN %s: contact with the VTN at %s restored (no answer for %.0f s of clock time)",
                               self.ven_name, self.vtn_url, lost_s)
                self.link_lost_since = None
        elif self.link_lost_since is None:
            self.link_lost_since = now
            reason = "; ".join(line.strip().rstrip(":") for line in reasons) or "no valid answer"
            logger.warning("VEN %s: contact with the VTN at %s lost (%s); retrying every %g s, quiet until it "
                           "returns", self.ven_name, self.vtn_url, reason, self.poll_interval())

    async def _poll(self) -> None:
        for _ in range(MAX_MESSAGES_PER_POLL):
            response_type, payload = await self.poll()
            if response_type is None or response_type == "oadrResponse":
                return
            await self._handle(response_type, payload)
            if not self.registered:  # asked to re-register and refused, or cancelled: no more polls for now
                return

    async def _handle(self, message_type: str, payload: dict[str, Any]) -> None:
        if message_type == "oadrDistributeEvent":
            await self._on_event(payload)
        elif message_type == "oadrRequestReregistration":
            await self.send_response(service="EiRegisterParty")
            self.registration_id = None
            await self.connect()  # at once, unless a refusal's wait is still running (§2.11)
        elif message_type == "oadrCreateReport":
            await self._accept_report_requests(payload)
        elif message_type == "oadrCancelReport":
            await self._cancel_report(payload)
        elif message_type == "oadrRegisterReport":
            # The VTN offers reports; this VEN asks for none.
            await self._answer("EiReport", "oadrRegisteredReport", payload, report_requests=[])
        elif message_type == "oadrUpdateReport":
            await self._answer("EiReport", "oadrUpdatedReport", payload)
        elif message_type == "oadrCancelPartyRegistration":
            ours = payload.get("registration_id") in (None, self.registration_id)
            await self._answer("EiRegisterParty", "oadrCanceledPartyRegistration", payload,
                               registration_id=self.registration_id, code=200 if ours else OADR_INVALID_ID)
            if ours:
                logger.warning("VEN %s: the VTN cancelled its registration; it stops polling and stays "
                               "unregistered until restarted (PROFILE §2.12)", self.ven_name)
                self.registration_id = None
                self.report_request_ids.clear()
                self.cancelled_by_vtn = True
        else:
            logger.warning("VEN %s: ignoring unexpected %s", self.ven_name, message_type)

    async def _answer(self, service: str, message_type: str, payload: Mapping[str, Any], *, code: int = 200,
                      **fields: Any) -> None:
        await self.request(service, message_type, ven_id=self.ven_id, response={
            "response_code": code, "response_description": "OK" if code == 200 else "ERROR",
            "request_id": _request_id(payload)}, **fields)

    # ------------------------------------------------------------------------------------------ events

    async def sync_events(self) -> None:
        """oadrRequestEvent: the VTN answers with all of this VEN's events (or oadrResponse for none)."""
        response_type, payload = await self.request_event()
        if response_type == "oadrDistributeEvent":
            await self._on_event(payload)
        elif response_type == "oadrResponse" and self.signal_book.apply_distribution(
                [], present_ids=(), now=self.clock.now()):
            self._notify()

    async def _on_event(self, message: dict[str, Any]) -> None:
        events = message.get("events") or []
        decoded: list[DecodedEvent] = []
        present: set[str] = set()
        cancels: list[tuple[str, int]] = []
        responses = []
        for event in events:
            read, answer = judge_event(event, ven_id=self.ven_id)
            present.add(answer.event_id)
            self.answers[answer.event_id] = answer
            if isinstance(read, Cancellation):  # honoured and answered optIn whatever else it holds (§7.3.2)
                cancels.append((read.event_id, read.modification_number))
            elif read is not None:
                decoded.append(read)
            if isinstance(event, Mapping) and event.get("response_required") == "always":
                responses.append({
                    "response_code": answer.response_code,
                    "response_description": answer.response_description,
                    "opt_type": answer.opt_type,
                    "request_id": message.get("request_id"),
                    "modification_number": answer.modification_number,
                    "event_id": answer.event_id,
                })
        now = self.clock.now()
        changed = self.signal_book.apply_distribution(decoded, present_ids=present, now=now)
        for event_id, modification in cancels:  # a cancellation whose body does not decode still cancels
            changed |= self.signal_book.cancel(event_id, modification, now=now)
        if changed:
            self._notify()
        if responses:
            await self.request("EiEvent", "oadrCreatedEvent", ven_id=self.ven_id, event_responses=responses,
                               response={"response_code": 200, "response_description": "OK",
                                         "request_id": message.get("request_id")})

    def _notify(self) -> None:
        if self.on_signals_changed is not None:
            self.on_signals_changed()

    # ----------------------------------------------------------------------------------------- reports

    async def register_hems_reports(self) -> bool:
        """oadrRegisterReport with the profile's reports; remembers what the VTN requests. True if answered."""
        reports = hems_report_metadata(resource_id=self.contract.connection_point_id, created_at=self.clock.now(),
                                       specifiers=self.offered, raw_data_consent=self.contract.raw_data_consent)
        response_type, payload = await self.request("EiReport", "oadrRegisterReport", request_id=new_request_id(),
                                                    ven_id=self.ven_id, reports=reports, report_request_id=0)
        if response_type != "oadrRegisteredReport":
            return False
        await self._accept_report_requests(payload)
        return True

    async def _accept_report_requests(self, payload: Mapping[str, Any]) -> None:
        requests = payload.get("report_requests") or []
        accepted = []
        for request in requests:
            specifier = (request.get("report_specifier") or {}).get("report_specifier_id")
            request_id = request.get("report_request_id")
            if specifier in self.offered and request_id is not None:
                self.report_request_ids[specifier] = str(request_id)
                accepted.append(str(request_id))
        if not requests:
            return
        await self._answer("EiReport", "oadrCreatedReport", payload,
                           pending_reports=[{"report_request_id": request_id} for request_id in accepted])

    async def _cancel_report(self, payload: Mapping[str, Any]) -> None:
        cancelled = str(payload.get("report_request_id"))
        for specifier in [s for s, r in self.report_request_ids.items() if r == cancelled]:
            del self.report_request_ids[specifier]
        await self._answer("EiReport", "oadrCanceledReport", payload, pending_reports=[])

    async def send_telemetry(self, telemetry: Telemetry) -> bool:
        request_id = self.report_request_ids.get(names.SPECIFIER_TELEMETRY)
        if request_id is None or not self.registered:
            return False
        report = encode_telemetry_report(telemetry, report_request_id=request_id, created_at=self.clock.now())
        return await self._update_report(report)

    async def send_plan(self, plan: Plan) -> bool:
        request_id = self.report_request_ids.get(names.SPECIFIER_PLAN)
        if request_id is None or not self.registered:
            return False
        return await self._update_report(encode_plan_report(plan, report_request_id=request_id))

    async def send_comfort(self, status: ComfortStatus) -> bool:
        request_id = self.report_request_ids.get(names.SPECIFIER_COMFORT)
        if request_id is None or not self.registered or not self.contract.raw_data_consent:
            return False
        return await self._update_report(encode_comfort_report(status, report_request_id=request_id))

    async def send_need(self, need: CapacityNeed) -> bool:
        request_id = self.report_request_ids.get(names.SPECIFIER_NEED)
        if request_id is None or not self.registered:
            return False
        return await self._update_report(encode_need_report(need, report_request_id=request_id))

    async def send_performance(self, report: PerformanceReport) -> bool:
        request_id = self.report_request_ids.get(names.SPECIFIER_PERFORMANCE)
        if request_id is None or not self.registered:
            return False
        if report.ev is not None and report.ev.range_km is not None and not self.contract.raw_data_consent:
            report = report.model_copy(update={"ev": report.ev.model_copy(update={"range_km": None})})
        return await self._update_report(encode_performance_report(report, report_request_id=request_id))

    async def _update_report(self, report: dict[str, Any]) -> bool:
        """True when the report was delivered (PROFILE.md §9.3.3): answered 200, or 454 - read and refused for good,
        so that sending it again would only be refused again."""
        response_type, payload = await self.request("EiReport", "oadrUpdateReport", ven_id=self.ven_id,
                                                    request_id=new_request_id(), reports=[report])
        if payload.get("cancel_report"):
            await self._cancel_report(payload["cancel_report"])
        response = payload.get("response") or {}
        code = _int(response.get("response_code"))
        if response_type == "oadrUpdatedReport" and code == OADR_INVALID_DATA:
            logger.warning("VEN %s: the VTN refused a %s report: %s", self.ven_name, report.get("report_name"),
                           response.get("response_description"))
            return True
        return response_type == "oadrUpdatedReport" and code in (200, None)


def is_contact(response_type: str | None, payload: Mapping[str, Any] | None) -> bool:
    """PROFILE.md §10.1: an answer is contact when it is an OpenADR message with responseCode 200 that shows the VTN
    serves this VEN - not a refusal or another error code, not oadrRequestReregistration, and of the registration
    answers only one that gives a registrationID (an answer to oadrQueryRegistration or a refusal does not)."""
    if response_type is None or response_type == "oadrRequestReregistration":
        return False
    payload = payload or {}
    response = payload.get("response")
    if isinstance(response, Mapping) and _int(response.get("response_code")) not in (200, None):
        return False
    return response_type != "oadrCreatedPartyRegistration" or bool(payload.get("registration_id"))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _request_id(payload: Mapping[str, Any]) -> str | None:
    if payload.get("request_id") is not None:
        return payload["request_id"]
    return (payload.get("response") or {}).get("request_id")
