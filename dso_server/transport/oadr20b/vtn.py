"""The DSO's OpenADR 2.0b VTN: openleadr's ``OpenADRServer`` with the store as its only memory.

openleadr keeps events in a per-process queue and has no way to modify an event; here nothing lives in
openleadr's memory. Each oadrPoll and oadrRequestEvent rebuilds the VEN's events from the store with
``protocol.oadr20b.encode_event`` (see ``dso_server.lifecycle`` for which events and when), so a restart
loses nothing and a modification follows the 2.0b rules.

Which openleadr hooks are used, and why:
- ``on_poll`` through ``add_handler`` (this switches openleadr to 'external' polling, its queue stays unused);
- ``on_create_party_registration`` and ``on_cancel_party_registration`` through ``add_handler``;
- the service handlers for oadrRequestEvent, oadrCreatedEvent, oadrRegisterReport, oadrUpdateReport and
  oadrCreatedReport are replaced outright: openleadr's external ``on_created_event(ven_id, event_id,
  opt_type)`` drops responseCode, responseDescription and modificationNumber; its oadrRequestEvent path runs
  ``utils.order_events``, which rewrites eventStatus and createdDateTime from the wall clock (our clock is
  injected); its report service only knows TELEMETRY_USAGE/STATUS and keeps requests in memory.
- ``ven_lookup`` answers from the store, so after a restart known VENs are served and unknown ones are asked
  to re-register (openleadr answers oadrRequestReregistration when the lookup returns nothing).

Process-global state in openleadr: ``OpenADRServer.__init__`` assigns ``VTNService._create_message``,
``VTNService.verify_message_signatures`` and (when given) ``VTNService.ven_lookup`` as *class* attributes, so a
second server in the same process (a test, the conformance suite) would silently take over the first one's
signing key and VEN lookup. This module therefore never passes ``ven_lookup`` to the constructor and pins all
three on each of its own service instances.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from openleadr import OpenADRServer
from openleadr.enums import STATUS_CODES
from openleadr.service import VTNService
from openleadr.utils import certificate_fingerprint

from dso_server.errors import ConfigurationError, UnknownHousehold
from dso_server.lifecycle import DeliveryKey, delivery_due, delivery_keys, relevant_signals
from dso_server.records import EventResponse
from dso_server.settings import DEFAULT_PATH_PREFIX, DEFAULT_POLL_INTERVAL_S
from dso_server.store.sqlite import DsoStore, new_id
from protocol import CapacityNeed, ComfortStatus, HouseholdContract, PerformanceReport, ProfileError
from protocol.clock import Clock
from protocol.oadr20b import decode_report, encode_event, offered_specifiers, report_requests_for

logger = logging.getLogger(__name__)


Handler = Callable[[dict[str, Any]], Awaitable[tuple[str, dict[str, Any]]]]


class Rejection(Exception):
    """Raised by a handler to answer with ``response_type`` carrying an error eiResponse.

    openleadr's ``handle_message`` always writes responseCode 200 into a handler's answer; the wrapper
    installed by ``_answer_rejections`` turns this exception into the answer with the given code instead.
    """

    def __init__(self, response_type: str, response_code: int, description: str,
                 payload: Mapping[str, Any] | None = None) -> None:
        self.response_type = response_type
        self.response_code = response_code
        self.description = description
        self.payload = dict(payload or {})
        super().__init__(f"{response_code} {description}")


def _answer_rejections(service: VTNService) -> None:
    original = service.handle_message

    async def handle_message(message_type: str, message_payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            return await original(message_type, message_payload)
        except Rejection as rejection:
            return rejection.response_type, {
                **rejection.payload,
                "response": {"response_code": rejection.response_code,
                             "response_description": rejection.description,
                             "request_id": message_payload.get("request_id")},
            }

    service.handle_message = handle_message  # type: ignore[method-assign]


@contextlib.contextmanager
def _openleadr_quiet() -> Iterator[None]:
    """Silence what ``OpenADRServer.__init__`` says that does not apply here: that no ven_lookup was passed
    (ours is pinned per service instead) and aiohttp's NotAppKeyWarning for its ``app['server']``."""
    openleadr_logger = logging.getLogger("openleadr")
    level = openleadr_logger.level
    openleadr_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            yield
    finally:
        openleadr_logger.setLevel(level)


def _minimised(report: Any, contract: HouseholdContract, ven_id: str) -> Any:
    """What of a decoded report the DSO may keep (PROFILE §14): raw comfort readings only under the household's
    consent, needs and verdicts only under a performance contract. The rest is dropped, never stored."""
    if isinstance(report, ComfortStatus) and not contract.raw_data_consent:
        logger.warning("VEN %s sent raw comfort readings without the household's consent; discarded, not stored",
                       ven_id)
        return None
    if isinstance(report, CapacityNeed | PerformanceReport) and contract.performance is None:
        logger.info("VEN %s sent a %s without a performance contract; not stored", ven_id, type(report).__name__)
        return None
    if (isinstance(report, PerformanceReport) and report.ev is not None and report.ev.range_km is not None
            and not contract.raw_data_consent):
        logger.warning("VEN %s sent the EV's range without the household's consent; the range is not stored", ven_id)
        return report.model_copy(update={"ev": report.ev.model_copy(update={"range_km": None})})
    return report


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class DsoVtn:
    """The VTN. ``app`` is the aiohttp application to serve (``DsoServer`` runs it on its own runner)."""

    def __init__(
        self,
        *,
        store: DsoStore,
        clock: Clock,
        vtn_id: str = "DSO-VTN",
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        http_path_prefix: str = DEFAULT_PATH_PREFIX,
        cert: Path | None = None,
        key: Path | None = None,
        passphrase: str | None = None,
    ) -> None:
        if poll_interval_s < 1 or poll_interval_s != int(poll_interval_s):
            raise ValueError(f"poll_interval_s {poll_interval_s} must be a whole number of seconds >= 1")
        self.store = store
        self.clock = clock
        self.vtn_id = vtn_id
        self.poll_interval_s = poll_interval_s
        # Incoming signatures are only checked on TLS requests (openleadr), which this VTN does not serve yet.
        verify = cert is not None
        with _openleadr_quiet():
            self.server = OpenADRServer(
                vtn_id=vtn_id, cert=str(cert) if cert else None, key=str(key) if key else None,
                passphrase=passphrase, show_fingerprint=False, http_path_prefix=http_path_prefix,
                requested_poll_freq=timedelta(seconds=poll_interval_s), verify_message_signatures=verify,
            )
        self.http_path_prefix = self.server.http_path_prefix
        self.fingerprint: str | None = None
        """What VENs configure as the VTN's certificate fingerprint when messages are signed; None unsigned."""
        # Pin what the constructor just put on the VTNService class onto our own instances (module docstring).
        create_message = VTNService._create_message
        if cert is not None:
            try:  # fail at start, not at the first message, when the key cannot sign
                self.fingerprint = certificate_fingerprint(cert.read_bytes())
                create_message("oadrResponse", response={"response_code": 200, "response_description": "OK",
                                                         "request_id": None}, ven_id="check")
            except Exception as error:
                raise ConfigurationError(f"Cannot sign OpenADR messages with certificate {cert} and key {key}: "
                                         f"{type(error).__name__}: {error}", field="key") from None
        for service in self.server.services.values():
            service._create_message = create_message
            service.verify_message_signatures = verify
            service.ven_lookup = self.ven_lookup
            _answer_rejections(service)

        self.server.add_handler("on_create_party_registration", self.on_create_party_registration)
        self.server.add_handler("on_cancel_party_registration", self.on_cancel_party_registration)
        self.server.add_handler("on_poll", self.on_poll)
        event_handlers: dict[str, Handler] = self.server.services["event_service"].handlers
        event_handlers["oadrRequestEvent"] = self.handle_request_event
        event_handlers["oadrCreatedEvent"] = self.handle_created_event
        report_handlers: dict[str, Handler] = self.server.services["report_service"].handlers
        report_handlers["oadrRegisterReport"] = self.handle_register_report
        report_handlers["oadrUpdateReport"] = self.handle_update_report
        report_handlers["oadrCreatedReport"] = self.handle_created_report

    @property
    def app(self) -> web.Application:
        return self.server.app

    # -------------------------------------------------------------------------------------- registration

    def ven_lookup(self, ven_id: str) -> dict[str, Any] | None:
        ven = self.store.ven(ven_id)
        if ven is None or ven.registration_id is None:
            return None
        return {"ven_id": ven.ven_id, "ven_name": ven.ven_name, "fingerprint": ven.fingerprint,
                "registration_id": ven.registration_id}

    async def on_create_party_registration(self, payload: dict[str, Any]) -> tuple[str, str]:
        ven_name = str(payload.get("ven_name"))
        try:
            ven = self.store.register_ven(ven_name, now=self.clock.now(), fingerprint=payload.get("fingerprint"))
        except UnknownHousehold:
            reason = (f"venName {ven_name!r} is not the connection point id (18-digit EAN) of a household this DSO "
                      "serves")
            logger.warning("Refused the registration of a VEN: %s", reason)
            raise Rejection("oadrCreatedPartyRegistration", STATUS_CODES.NOT_REGISTERED_OR_AUTHORIZED, reason, {
                "profiles": [{"profile_name": payload.get("profile_name", "2.0b"),
                              "transports": [{"transport_name": payload.get("transport_name", "simpleHttp")}]}],
                "requested_oadr_poll_freq": timedelta(seconds=self.poll_interval_s),
            }) from None
        if payload.get("ven_id") and payload["ven_id"] != ven.ven_id:
            logger.info("VEN %s registered with venID %s; it is known as %s", ven_name, payload["ven_id"],
                        ven.ven_id)
        logger.info("Registered VEN %s (venID %s, registrationID %s)", ven_name, ven.ven_id, ven.registration_id)
        assert ven.registration_id is not None
        return ven.ven_id, ven.registration_id

    async def on_cancel_party_registration(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ven = self.store.cancel_registration(payload["ven_id"])
        logger.info("VEN %s (venID %s) cancelled its registration", ven.ven_name, ven.ven_id)
        return "oadrCanceledPartyRegistration", {"registration_id": payload.get("registration_id"),
                                                 "ven_id": ven.ven_id}

    # -------------------------------------------------------------------------------------------- events

    def events_for(self, ven_id: str) -> tuple[list[dict[str, Any]], frozenset[DeliveryKey]]:
        """All relevant oadrEvents of this VEN, encoded now, and their delivery keys."""
        now = self.clock.now()
        ven = self.store.ven(ven_id)
        if ven is None:
            return [], frozenset()
        signals = self.store.signals(connection_point_id=ven.connection_point_id, ending_after=now)
        relevant = relevant_signals(signals, acknowledged=self.store.acknowledged(ven_id), now=now)
        events = [
            encode_event(signal.payload, event_id=signal.event_id, modification_number=signal.modification_number,
                         ven_id=ven_id, created_at=signal.created_at, modified_at=signal.modified_at, now=now,
                         cancelled=signal.cancelled)
            for signal in relevant
        ]
        return events, delivery_keys(relevant, now)

    async def on_poll(self, ven_id: str) -> tuple[str, dict[str, Any]] | None:
        """oadrPoll: an oadrDistributeEvent with all relevant events when any of them is news, else nothing."""
        now = self.clock.now()
        self.store.touch_ven(ven_id, now=now)
        events, keys = self.events_for(ven_id)
        previous = self.store.delivered(ven_id)
        if delivery_due(previous, keys):
            self.store.record_delivery(ven_id, keys, now=now)
            logger.debug("Delivering %d event(s) to VEN %s on poll", len(events), ven_id)
            return "oadrDistributeEvent", {"events": events}
        if previous is not None and previous != keys:
            self.store.record_delivery(ven_id, keys, now=now)
        return None

    async def handle_request_event(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """oadrRequestEvent: always an oadrDistributeEvent with all relevant events (possibly none)."""
        ven_id = payload["ven_id"]
        now = self.clock.now()
        self.store.touch_ven(ven_id, now=now)
        events, _ = self.events_for(ven_id)
        limit = _int_or_none(payload.get("reply_limit"))
        if limit is not None and limit > 0:
            events = events[:limit]
        sent = {(event["event_descriptor"]["event_id"], event["event_descriptor"]["modification_number"],
                 event["event_descriptor"]["event_status"]) for event in events}
        self.store.record_delivery(ven_id, frozenset(sent), now=now)
        return "oadrDistributeEvent", {"events": events}

    async def handle_created_event(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """oadrCreatedEvent: store every eventResponse as received."""
        ven_id = payload["ven_id"]
        now = self.clock.now()
        self.store.touch_ven(ven_id, now=now)
        outer = payload.get("response") or {}
        if _int_or_none(outer.get("response_code")) not in (200, None):
            logger.warning("VEN %s answered events with eiResponse %s %s", ven_id, outer.get("response_code"),
                           outer.get("response_description"))
        responses = [
            EventResponse(
                event_id=str(item.get("event_id")),
                modification_number=_int_or_none(item.get("modification_number")),
                opt_type=str(item.get("opt_type")),
                response_code=_int_or_none(item.get("response_code")),
                response_description=item.get("response_description"),
            )
            for item in payload.get("event_responses") or []
        ]
        ignored = self.store.record_responses(ven_id, responses, now=now)
        for response in responses:
            level = logging.INFO if response.opt_type == "optIn" and response.response_code == 200 else logging.WARNING
            if response.event_id not in ignored:
                logger.log(level, "VEN %s answered event %s#%s: %s %s %s", ven_id, response.event_id,
                           response.modification_number, response.opt_type, response.response_code,
                           response.response_description)
        if ignored:
            logger.warning("VEN %s answered unknown event(s) %s; not stored", ven_id, ", ".join(ignored))
        return "oadrResponse", {}

    # ------------------------------------------------------------------------------------------- reports

    async def handle_register_report(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """oadrRegisterReport: request every profile report offered that the household's contract calls for
        (``offered_specifiers``: the need and the verdict of a performance contract, raw comfort readings only
        under consent), every 15 minutes; remember the ids."""
        ven_id = payload["ven_id"]
        now = self.clock.now()
        reports = payload.get("reports") or []
        ven = self.store.ven(ven_id)
        if ven is not None:
            wanted = offered_specifiers(self.store.household(ven.connection_point_id).contract)
            reports = [r for r in reports if r.get("report_specifier_id") in wanted]
        offered = [
            (str(report.get("report_specifier_id")), str(report.get("report_name")),
             [str(d.get("r_id")) for d in report.get("report_descriptions") or []])
            for report in reports
        ]
        ids = (new_id("rr") for _ in itertools.count())
        requests = report_requests_for(reports, request_ids=ids)
        pairs = [(r["report_request_id"], r["report_specifier"]["report_specifier_id"]) for r in requests]
        self.store.record_report_registration(ven_id, offered=offered, requests=pairs, now=now)
        self.store.touch_ven(ven_id, now=now)
        logger.info("VEN %s offered %s; requested %s", ven_id, [o[0] for o in offered], [p[1] for p in pairs])
        return "oadrRegisteredReport", {"report_requests": requests}

    async def handle_update_report(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """oadrUpdateReport: decode each report and store it; a report that breaks the profile is logged and
        dropped, the others are kept, and the answer is an oadrUpdatedReport either way."""
        ven_id = payload["ven_id"]
        now = self.clock.now()
        ven = self.store.ven(ven_id)
        if ven is None:  # ven_lookup let it through, so this is a race with a cancellation
            return "oadrUpdatedReport", {}
        known_requests = {r.report_request_id for r in self.store.report_requests(ven_id)}
        decoded = []
        for index, report in enumerate(payload.get("reports") or []):
            request_id = str(report.get("report_request_id"))
            try:
                decoded.append(decode_report(report))
            except ProfileError as error:
                logger.warning("VEN %s: report %d (%s, reportRequestID %s) breaks the profile and was not stored: "
                               "%s (response code %s)", ven_id, index, report.get("report_name"), request_id, error,
                               error.response_code)
                continue
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                logger.warning("VEN %s: report %d (%s) cannot be read and was not stored: %s: %s", ven_id, index,
                               report.get("report_name"), type(error).__name__, error)
                continue
            if request_id not in known_requests:
                logger.info("VEN %s sent report %s under reportRequestID %s, which this VTN did not issue",
                            ven_id, report.get("report_name"), request_id)
        contract = self.store.household(ven.connection_point_id).contract
        kept = [report for report in (_minimised(item, contract, ven_id) for item in decoded) if report is not None]
        self.store.store_reports(ven.connection_point_id, kept, now=now)
        self.store.touch_ven(ven_id, now=now)
        return "oadrUpdatedReport", {}

    async def handle_created_report(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        pending = [str(p.get("report_request_id")) for p in payload.get("pending_reports") or []]
        logger.info("VEN %s created reports %s", payload.get("ven_id"), pending)
        self.store.touch_ven(payload["ven_id"], now=self.clock.now())
        return "oadrResponse", {}
