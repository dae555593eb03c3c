"""The DSO's OpenADR 2.0b VTN: an aiohttp application with the store as its source of truth.

openleadr keeps events in a per-process queue and has no way to modify an event; here nothing lives in
openleadr's memory. The VTN keeps what it needs of each VEN in memory (``dso_server.transport.ven_cache``:
registration, its household's events, its acknowledgements, what was last delivered), and before it answers a
request it reads the store's change log, which names every household anything was changed for, by any writer
(the operator API, the planner, another VTN worker): so every poll answers from the store's truth, a restart loses
nothing, and a modification follows the 2.0b rules. Events are encoded with ``protocol.oadr20b.encode_event``
(see ``dso_server.lifecycle`` for which events and when).

The VTN serves the four 2.0b endpoints (EiRegisterParty, EiEvent, EiReport, OadrPoll) itself and uses openleadr
only as the codec, through ``openleadr_adapter`` (its private parts in one place). Each request passes, in
this order, and is refused at the first step it fails:

1. HTTP: POST with ``Content-Type: application/xml`` (else 415), at most ``max_message_bytes`` (else 413);
2. ``protocol.oadr20b.xml_guard``: no DOCTYPE/ENTITY, processing instruction, XInclude, non-UTF-8 (else 400);
3. the 2.0b XSD and the oadrPayload envelope (else 400);
4. OpenADR: a message type this endpoint serves (else 459);
5. identity (``authorize``): over mutual TLS the client certificate must be enrolled for a household, not
   revoked, and the venName/venID it names must be that household's (else 463, logged); with
   ``require_signatures`` the XML signature must verify, be made with that same certificate (on plain HTTP the
   signing certificate is the identity) and pass this VTN's own ``ReplayGuard`` (else 463);
6. the right vtnID (else 452), a venID on every message but the two registration requests (else 452), a
   registered venID (else oadrRequestReregistration);
7. the handler. Each stores what it received in one write, after everything it checks, through the VTN's group
   commit (``WriteBatcher``: the writes of concurrent requests share a transaction on a connection of their own,
   and each request is answered only after that commit). A payload it cannot read is answered 454 and logged.

Every refusal happens before the store is written. HTTP-level refusals answer text/plain naming the problem;
OpenADR-level ones answer the 2.0b message with the responseCode and a responseDescription.

The hot path: an oadrPoll, after steps 1 and 2 (and, with ``require_signatures``, step 3's signature check,
made once), is answered by ``quiet_poll`` when nothing is due for its VEN: its venID read from the
schema-validated tree (``fast_poll``), its certificate checked against the cached enrolment, and the VEN's
oadrResponse rendered once and kept (a signing VTN keeps it digested and signs it afresh for every poll). No
store read but the shared change-log read, no write (liveness goes to the store in batches). Anything else
takes the general path above.

openleadr's own ``OpenADRServer`` was replaced (it answered a request without Content-Type with HTTP 500 because
its ``HTTPError`` raises TypeError, turned a body over 1 MiB into a 500, validated with a parser that libxml2
2.13+ crashes on, assigned process-global class attributes for the signing key and VEN lookup, and checked
signatures and certificates only on TLS requests).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from dso_server import metrics
from dso_server.errors import ConfigurationError, UnknownHousehold
from dso_server.lifecycle import DeliveryKey
from dso_server.records import EventResponse, Signal, SignalHead, Ven
from dso_server.security.slow_clients import RequestTimedOut, read_body
from dso_server.security.tls import Peer, peer_of
from dso_server.settings import DEFAULT_PATH_PREFIX, DEFAULT_POLL_INTERVAL_S
from dso_server.store.certificates import CertificateStore
from dso_server.store.sqlite import DsoStore, new_id
from dso_server.transport.oadr20b import openleadr_adapter as oadr
from dso_server.transport.oadr20b.fast_poll import parse_poll
from dso_server.transport.oadr20b.openleadr_adapter import STATUS_CODES
from dso_server.transport.ven_cache import Liveness, VenCache, VenState, WriteBatcher
from protocol import CapacityNeed, ComfortStatus, HouseholdContract, PerformanceReport, ProfileError
from protocol.clock import Clock, WallClock
from protocol.errors import OADR_INVALID_DATA
from protocol.oadr20b import decode_report, encode_event, offered_specifiers, report_requests_for
from protocol.oadr20b.replay import Replayed, ReplayGuard
from protocol.oadr20b.xml_guard import MAX_MESSAGE_BYTES, DocumentTooLarge, HostileXml, check_document

logger = logging.getLogger(__name__)

MAX_DESCRIPTION_CHARS = 240

LIVENESS_FLUSH_S = 5.0
"""How often what the VENs were last heard from is written to the store (at most every poll interval)."""

Handler = Callable[[dict[str, Any]], Awaitable[tuple[str, dict[str, Any]]]]

SERVICES: dict[str, frozenset[str]] = {
    "EiRegisterParty": frozenset({"oadrQueryRegistration", "oadrCreatePartyRegistration",
                                  "oadrCancelPartyRegistration"}),
    "EiEvent": frozenset({"oadrRequestEvent", "oadrCreatedEvent"}),
    "EiReport": frozenset({"oadrRegisterReport", "oadrUpdateReport", "oadrCreatedReport"}),
    "OadrPoll": frozenset({"oadrPoll"}),
}
"""Endpoint -> the message types it serves (an oadrResponse is accepted on every endpoint and answered empty)."""
REGISTRATION_REQUESTS = frozenset({"oadrQueryRegistration", "oadrCreatePartyRegistration"})
"""The messages a VEN may send without a venID the VTN knows."""
ERROR_ANSWER_TYPE = {"oadrCreatePartyRegistration": "oadrCreatedPartyRegistration",
                     "oadrQueryRegistration": "oadrCreatedPartyRegistration",
                     "oadrRequestEvent": "oadrDistributeEvent"}
"""The message an error is answered with, where it is not oadrResponse."""
XML = "application/xml"


class Rejection(Exception):
    """Raised by a handler (or a check before it) to answer with ``response_type`` carrying an error eiResponse.

    Whatever the handler wrote to the store before raising is rolled back.
    """

    def __init__(self, response_type: str, response_code: int, description: str,
                 payload: Mapping[str, Any] | None = None) -> None:
        self.response_type = response_type
        self.response_code = response_code
        self.description = description
        self.payload = dict(payload or {})
        super().__init__(f"{response_code} {description}")

    @classmethod
    def to(cls, message_type: str, response_code: int, description: str) -> Rejection:
        """The rejection of a message of ``message_type``, answered in the type 2.0b pairs with it."""
        return cls(ERROR_ANSWER_TYPE.get(message_type, "oadrResponse"), response_code, description)


def _refuse(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n", content_type="text/plain")


def content_type_problem(header: str | None) -> str | None:
    """Why a Content-Type header is not acceptable for a 2.0b message, or None."""
    if not header:
        return "the request has no Content-Type header; OpenADR 2.0b messages are sent as application/xml"
    media_type, _, parameters = header.partition(";")
    if media_type.strip().lower() != XML:
        return f"Content-Type {header[:100]!r} is not accepted; OpenADR 2.0b messages are sent as application/xml"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return f"Content-Type {header[:100]!r}: the charset must be UTF-8"
    return None


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
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        client_certificates: bool = False,
        require_signatures: bool = False,
        wall_clock: Clock | None = None,
    ) -> None:
        if poll_interval_s < 1 or poll_interval_s != int(poll_interval_s):
            raise ValueError(f"poll_interval_s {poll_interval_s} must be a whole number of seconds >= 1")
        self.store = store
        self.clock = clock
        self.vtn_id = vtn_id
        self.poll_interval_s = poll_interval_s
        self.max_message_bytes = max_message_bytes
        self.client_certificates = client_certificates
        """Served over mutual TLS: every message must come with an enrolled certificate of its household."""
        self.require_signatures = require_signatures
        """Every message must carry a valid XML signature by its own certificate, fresh and not replayed."""
        self.wall_clock: Clock = wall_clock if wall_clock is not None else WallClock()
        """Replay protection judges the senders' signing times on real time, not the (maybe simulated) clock."""
        self.replay_guard = ReplayGuard()
        self.certificates = CertificateStore(store)
        # The hot path (dso_server.transport.ven_cache): per-VEN state in memory, refreshed from the store's change
        # log before each request is answered; writes in group commits, liveness in batches.
        self.cache = VenCache(store, clock.now)
        self.writer_store = store.reopen()
        self.batcher = WriteBatcher(self.writer_store)
        self.liveness = Liveness(self.batcher, flush_interval_s=min(LIVENESS_FLUSH_S, poll_interval_s))
        self.http_path_prefix = http_path_prefix.rstrip("/")
        oadr.harden_xml_parser()
        self.writer = _writer(cert, key, passphrase)
        self.fingerprint: str | None = self.writer.fingerprint
        """What VENs configure as the VTN's certificate fingerprint when messages are signed; None unsigned."""
        self.handlers: dict[str, Handler] = {
            "oadrQueryRegistration": self.handle_query_registration,
            "oadrCreatePartyRegistration": self.handle_create_party_registration,
            "oadrCancelPartyRegistration": self.on_cancel_party_registration,
            "oadrPoll": self.handle_poll,
            "oadrRequestEvent": self.handle_request_event,
            "oadrCreatedEvent": self.handle_created_event,
            "oadrRegisterReport": self.handle_register_report,
            "oadrUpdateReport": self.handle_update_report,
            "oadrCreatedReport": self.handle_created_report,
        }
        # A body over the limit is refused by aiohttp while reading; the guard refuses it again with our text.
        self._app = web.Application(client_max_size=max_message_bytes)
        self._app.add_routes([web.post(f"{self.http_path_prefix}/{service}", partial(self._serve, service))
                              for service in SERVICES])

    @property
    def app(self) -> web.Application:
        return self._app

    # ------------------------------------------------------------------------------------------ requests

    async def _serve(self, service: str, request: web.Request) -> web.Response:
        problem = content_type_problem(request.headers.get("Content-Type"))
        if problem is not None:
            return _refuse(415, problem)
        if request.content_length is not None and request.content_length > self.max_message_bytes:
            return _refuse(413, f"the message has {request.content_length} bytes; at most "
                                f"{self.max_message_bytes} are accepted")
        try:
            body = await read_body(request)
        except web.HTTPRequestEntityTooLarge:
            return _refuse(413, f"the message has more than {self.max_message_bytes} bytes; that many are not "
                                "accepted")
        except RequestTimedOut as error:
            logger.warning("Refused a message to %s from %s: %s", service, request.remote, error)
            return _refuse(408, str(error))
        try:
            check_document(body, max_bytes=self.max_message_bytes)
        except DocumentTooLarge as error:
            return _refuse(413, error.reason)
        except HostileXml as error:
            logger.warning("Refused a message to %s from %s: %s", service, request.remote, error.reason)
            return _refuse(400, f"refused: {error.reason}")
        poll = parse_poll(body) if service == "OadrPoll" else None
        peer = peer_of(request.transport)
        checked: Peer | Rejection | None = None
        if poll is not None and poll.signed == self.require_signatures:
            if poll.signed:  # checked once here: the replay guard takes each nonce only once
                try:
                    checked = self.check_signature(poll.tree, peer, "oadrPoll", remote=request.remote)
                except Rejection as rejection:
                    checked = rejection
            if not isinstance(checked, Rejection):
                quiet = await self.quiet_poll(poll.ven_id, checked or peer)
                if quiet is not None:
                    return web.Response(status=200, body=self.writer.finish(quiet), content_type=XML)
        if poll is not None:  # all an oadrPoll's payload holds is its venID: no need for openleadr's dict parser
            message_type, payload, tree = "oadrPoll", {"ven_id": poll.ven_id}, poll.tree
        else:
            try:
                message = oadr.parse(body)
            except oadr.NotOpenAdr as error:
                logger.info("Refused a message to %s from %s: %s", service, request.remote, error)
                return _refuse(400, f"refused: {error}")
            message_type, payload, tree = message.message_type, message.payload, message.tree
        answer = await self.answer(service, message_type, payload, peer=peer, remote=request.remote, tree=tree,
                                   checked=checked)
        if answer is None:
            return web.Response(status=200, content_type=XML)
        return web.Response(status=200, text=self.writer.render(*answer), content_type=XML)

    async def answer(self, service: str, message_type: str, payload: dict[str, Any], *, peer: Peer | None = None,
                     remote: str | None = None, tree: Any = None,
                     checked: Peer | Rejection | None = None) -> tuple[str, dict[str, Any]] | None:
        """The answer (type, payload) to a parsed message, or None for an empty HTTP 200 (to an oadrResponse).
        ``peer`` is the TLS client certificate the message came with, ``tree`` the parsed XML (signatures),
        ``checked`` the outcome of ``check_signature`` when the caller already made it."""
        if message_type == "oadrResponse":
            return None
        ven_id = payload.get("ven_id") or None
        try:
            if message_type not in SERVICES[service]:
                raise Rejection.to(message_type, STATUS_CODES.COMPLIANCE_ERROR,
                                   f"{message_type} is not served at {service}")
            if self.require_signatures:
                if isinstance(checked, Rejection):
                    raise checked
                peer = checked if checked is not None else self.check_signature(tree, peer, message_type,
                                                                                  remote=remote)
            await self.cache.fresh(for_next=True)  # every change committed before this request is seen
            state = self.cache.get(str(ven_id), self.clock.now()) if ven_id is not None else None
            ven = state.ven if state is not None else None
            if self.client_certificates or self.require_signatures:
                self.authorize(peer, message_type, payload, remote=remote, ven=ven)
            if message_type == "oadrCreatePartyRegistration":  # the registration records which certificate it used
                payload["fingerprint"] = peer.fingerprint_sha256 if peer is not None else None
            vtn_id = payload.get("vtn_id")
            if vtn_id is not None and vtn_id != self.vtn_id:
                raise Rejection.to(message_type, STATUS_CODES.INVALID_ID,
                                   f"vtnID {str(vtn_id)[:64]!r} is not this VTN's ({self.vtn_id!r})")
            if message_type not in REGISTRATION_REQUESTS:
                if ven_id is None:
                    raise Rejection.to(message_type, STATUS_CODES.INVALID_ID, f"{message_type} carries no venID")
                if ven is None or ven.registration_id is None:
                    return "oadrRequestReregistration", {"ven_id": ven_id, "vtn_id": self.vtn_id}
            try:
                response_type, response = await self.handlers[message_type](payload)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                logger.warning("Refused %s from venID %s: cannot read it: %s: %s", message_type, ven_id,
                               type(error).__name__, error)
                raise Rejection.to(message_type, STATUS_CODES.INVALID_DATA,
                                   f"{message_type} cannot be read: {type(error).__name__}: {error}"[:240]) from None
        except Rejection as rejection:
            response_type, response = rejection.response_type, {
                **rejection.payload,
                "response": {"response_code": rejection.response_code,
                             "response_description": rejection.description,
                             "request_id": payload.get("request_id")},
            }
        response = dict(response)
        if response_type == "oadrCreatedPartyRegistration":
            response = {**self.registration_terms(), **response}
        elif response_type == "oadrDistributeEvent":
            response.setdefault("events", [])
        response.setdefault("response", {"response_code": 200, "response_description": "OK",
                                         "request_id": payload.get("request_id")})
        response["vtn_id"] = self.vtn_id
        refused_registration = (response_type == "oadrCreatedPartyRegistration"
                                and response["response"].get("response_code") != 200)
        if not response.get("ven_id") and not refused_registration:  # a refusal names no venID (§2.3)
            response["ven_id"] = ven_id
        response.setdefault("request_id", oadr.new_request_id())
        metrics.MESSAGES.labels(message_type).inc()
        return response_type, response

    # ------------------------------------------------------------------------------------------ hot path

    async def quiet_poll(self, ven_id: str, peer: Peer | None) -> oadr.Prepared | None:
        """The answer to a poll of ``ven_id`` when nothing is due and nothing must be written, as rendered once for
        this VEN (``writer.finish`` signs it afresh when the VTN signs); None otherwise (the general path answers:
        a delivery, a change of what was delivered, an unknown or unregistered VEN, a certificate that may not
        speak for it). ``peer``: the certificate of the TLS connection, or of the verified signature."""
        await self.cache.fresh()
        now = self.clock.now()
        state = self.cache.get(ven_id, now)
        if state is None or state.ven.registration_id is None:
            return None
        if self.client_certificates or self.require_signatures:
            enrolment = self.cache.enrolment(peer.fingerprint_sha256) if peer is not None else None
            if enrolment is None or enrolment.revoked_at is not None \
                    or enrolment.connection_point_id != state.ven.connection_point_id:
                return None  # the general path refuses it, with the reason logged
        plan = state.plan(now)
        if plan.due or plan.shrank:
            return None
        metrics.POLLS.inc()
        metrics.MESSAGES.labels("oadrPoll").inc()
        self.liveness.seen(ven_id, now)
        answer = state.derived.get("oadr_response")
        if answer is None:
            answer = state.derived["oadr_response"] = self.writer.prepare("oadrResponse", {
                "response": {"response_code": 200, "response_description": "OK", "request_id": None},
                "ven_id": ven_id, "vtn_id": self.vtn_id})
        return answer  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------------------ identity

    def authorize(self, peer: Peer | None, message_type: str, payload: Mapping[str, Any], *,
                  remote: str | None = None, ven: Ven | None = None) -> str:
        """The household a message may speak for, or ``Rejection`` 463 (logged; nothing is stored).

        The certificate must be enrolled and not revoked; a registration must name that household as venName,
        any other message must carry a venID that is this household's VEN or unknown (an unknown one is then
        asked to re-register). One indexed lookup besides the VEN's (``ven``, when the caller has it);
        revocation takes effect at the next message.
        """
        def refuse(reason: str) -> Rejection:
            return self._unauthorized(message_type, peer, remote, reason)

        if peer is None:
            raise refuse("the request came without a client certificate")
        enrolment = self.cache.enrolment(peer.fingerprint_sha256)
        if enrolment is None:
            raise refuse(f"certificate {peer.short} is not enrolled for any household of this DSO")
        if enrolment.revoked_at is not None:
            raise refuse(f"certificate {peer.short} was revoked at {enrolment.revoked_at.isoformat()}")
        household = enrolment.connection_point_id
        if message_type == "oadrCreatePartyRegistration" and str(payload.get("ven_name")) != household:
            raise refuse(f"certificate {peer.short} speaks for household {household}, not for venName "
                         f"{str(payload.get('ven_name'))[:40]!r}")
        ven_id = payload.get("ven_id")
        if ven_id:
            if ven is None or ven.ven_id != str(ven_id):
                state = self.cache.get(str(ven_id), self.clock.now())
                ven = state.ven if state is not None else None
            if ven is not None and ven.connection_point_id != household:
                raise refuse(f"venID {str(ven_id)[:40]!r} is the VEN of another household; certificate {peer.short} "
                             f"speaks for household {household}")
        return household

    def check_signature(self, tree: Any, peer: Peer | None, message_type: str, *, remote: str | None = None) -> Peer:
        """With ``require_signatures``: the message's XML signature must verify, be made with the certificate of
        its TLS connection (on plain HTTP the signing certificate is the identity), and be fresh and unused
        (``ReplayGuard`` on wall time). Returns the identity to authorize; ``Rejection`` 463 otherwise."""
        try:
            signature = oadr.verify_signature(tree)
        except oadr.BadSignature as error:
            raise self._unauthorized(message_type, peer, remote, str(error)) from None
        signer = Peer(signature.fingerprint_sha256)
        if peer is not None and signer != peer:
            raise self._unauthorized(message_type, peer, remote, f"the message is signed with certificate "
                                     f"{signer.short}, not with the certificate of its TLS connection")
        try:
            self.replay_guard.check(signer=signer.fingerprint_sha256, timestamp=signature.timestamp,
                                    nonce=signature.nonce, now=self.wall_clock.now())
        except Replayed as error:
            raise self._unauthorized(message_type, signer, remote, f"replay protection: {error.reason}") from None
        return signer

    def _unauthorized(self, message_type: str, peer: Peer | None, remote: str | None, reason: str) -> Rejection:
        logger.warning("Refused %s (463) from %s with certificate %s: %s", message_type, remote,
                       peer.short if peer else None, reason)
        return Rejection.to(message_type, STATUS_CODES.NOT_REGISTERED_OR_AUTHORIZED, reason)

    # -------------------------------------------------------------------------------------- registration

    def registration_terms(self) -> dict[str, Any]:
        """What every oadrCreatedPartyRegistration carries: the one profile and transport served, the poll rate."""
        return {"profiles": [{"profile_name": "2.0b", "transports": [{"transport_name": "simpleHttp"}]}],
                "requested_oadr_poll_freq": timedelta(seconds=self.poll_interval_s)}

    async def handle_query_registration(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "oadrCreatedPartyRegistration", self.registration_terms()

    async def handle_create_party_registration(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ven_id, registration_id = await self.on_create_party_registration(payload)
        return "oadrCreatedPartyRegistration", {"ven_id": ven_id, "registration_id": registration_id,
                                                **self.registration_terms()}

    async def on_create_party_registration(self, payload: dict[str, Any]) -> tuple[str, str]:
        ven_name = str(payload.get("ven_name"))
        now = self.clock.now()
        try:
            ven = await self.batcher.write(lambda store: store.register_ven(
                ven_name, now=now, fingerprint=payload.get("fingerprint")))
        except UnknownHousehold:
            reason = (f"venName {ven_name!r} is not the connection point id (18-digit EAN) of a household this DSO "
                      "serves")
            logger.warning("Refused the registration of a VEN: %s", reason)
            raise Rejection("oadrCreatedPartyRegistration", STATUS_CODES.NOT_REGISTERED_OR_AUTHORIZED, reason) from None
        if payload.get("ven_id") and payload["ven_id"] != ven.ven_id:
            logger.info("VEN %s registered with venID %s; it is known as %s", ven_name, payload["ven_id"],
                        ven.ven_id)
        logger.info("Registered VEN %s (venID %s, registrationID %s)", ven_name, ven.ven_id, ven.registration_id)
        assert ven.registration_id is not None
        return ven.ven_id, ven.registration_id

    async def on_cancel_party_registration(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ven = await self.batcher.write(lambda store: store.cancel_registration(payload["ven_id"]))
        logger.info("VEN %s (venID %s) cancelled its registration", ven.ven_name, ven.ven_id)
        return "oadrCanceledPartyRegistration", {"registration_id": payload.get("registration_id"),
                                                 "ven_id": ven.ven_id}

    # -------------------------------------------------------------------------------------------- events

    async def _encode(self, heads: list[SignalHead], ven_id: str, now: datetime) -> list[dict[str, Any]]:
        """The events as oadrEvents, their payloads read from the store (the cache keeps none)."""
        full = await self.cache.signals([head.event_id for head in heads]) if heads else {}
        signals: list[Signal] = [full[head.event_id] for head in heads if head.event_id in full]
        return [
            encode_event(signal.payload, event_id=signal.event_id, modification_number=signal.modification_number,
                         ven_id=ven_id, created_at=signal.created_at, modified_at=signal.modified_at, now=now,
                         cancelled=signal.cancelled)
            for signal in signals
        ]

    async def handle_poll(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return await self.on_poll(str(payload["ven_id"])) or ("oadrResponse", {})

    async def on_poll(self, ven_id: str) -> tuple[str, dict[str, Any]] | None:
        """oadrPoll: an oadrDistributeEvent with all relevant events when any of them is news, else nothing.
        Served from the cache (fresh for this request); the store is written only when something changed."""
        metrics.POLLS.inc()
        await self.cache.fresh()
        now = self.clock.now()
        state = self.cache.get(ven_id, now)
        if state is None:
            return None
        self.liveness.seen(ven_id, now)
        plan = state.plan(now)
        if plan.due:
            events = await self._encode(plan.signals, ven_id, now)
            await self._record_delivery(state, plan.keys, now)
            metrics.DISTRIBUTIONS.inc()
            logger.debug("Delivering %d event(s) to VEN %s on poll", len(events), ven_id)
            return "oadrDistributeEvent", {"events": events}
        if plan.shrank:
            await self._record_delivery(state, plan.keys, now)
        return None

    async def _record_delivery(self, state: VenState, keys: frozenset[DeliveryKey], now: datetime) -> None:
        await self.cache.record_delivery(state, keys, now, self.batcher)

    async def handle_request_event(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """oadrRequestEvent: always an oadrDistributeEvent with all relevant events (possibly none). replyLimit is
        ignored (PROFILE §2.5): a shorter list would tell the VEN that the events left out were cancelled."""
        ven_id = payload["ven_id"]
        await self.cache.fresh()
        now = self.clock.now()
        self.liveness.seen(ven_id, now)
        state = self.cache.get(ven_id, now)
        if state is None:
            return "oadrDistributeEvent", {"events": []}
        events = await self._encode(state.plan(now).signals, ven_id, now)
        sent = {(event["event_descriptor"]["event_id"], event["event_descriptor"]["modification_number"],
                 event["event_descriptor"]["event_status"]) for event in events}
        await self._record_delivery(state, frozenset(sent), now)
        return "oadrDistributeEvent", {"events": events}

    async def handle_created_event(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """oadrCreatedEvent: store every eventResponse as received."""
        ven_id = payload["ven_id"]
        await self.cache.fresh()
        now = self.clock.now()
        self.liveness.seen(ven_id, now)
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
        for response in responses:
            metrics.EVENT_RESPONSES.labels(str(response.response_code), response.opt_type).inc()
        state = self.cache.get(ven_id, now)
        if state is not None:
            ignored = await self.cache.record_responses(state, responses, now, self.batcher)
        else:
            ignored = await self.batcher.write(lambda store: store.record_responses(ven_id, responses, now=now))
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
        await self.batcher.write(lambda store: store.record_report_registration(
            ven_id, offered=offered, requests=pairs, now=now))
        self.liveness.seen(ven_id, now)
        logger.info("VEN %s offered %s; requested %s", ven_id, [o[0] for o in offered], [p[1] for p in pairs])
        return "oadrRegisteredReport", {"report_requests": requests}

    async def handle_update_report(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """oadrUpdateReport: decode each report and store it. A report that breaks the profile is refused whole
        (PROFILE §9.2: per report) and logged, the others are kept; the answer is oadrUpdatedReport 200 when all
        were kept, else 454 naming the first refused report and its field."""
        ven_id = payload["ven_id"]
        now = self.clock.now()
        ven = self.store.ven(ven_id)
        if ven is None:  # the VEN was checked before the handler; gone since only through a race
            return "oadrUpdatedReport", {}
        known_requests = {r.report_request_id for r in self.store.report_requests(ven_id)}
        decoded = []
        refused: list[str] = []
        for index, report in enumerate(payload.get("reports") or []):
            request_id = str(report.get("report_request_id"))
            try:
                decoded.append(decode_report(report))
            except ProfileError as error:
                logger.warning("VEN %s: report %d (%s, reportRequestID %s) breaks the profile and was not stored: "
                               "%s (response code %s)", ven_id, index, report.get("report_name"), request_id, error,
                               error.response_code)
                refused.append(f"report[{index}] {report.get('report_name')}: {error.field}: {error.reason}")
                continue
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                logger.warning("VEN %s: report %d (%s) cannot be read and was not stored: %s: %s", ven_id, index,
                               report.get("report_name"), type(error).__name__, error)
                refused.append(f"report[{index}] {report.get('report_name')}: report: cannot be read: "
                               f"{type(error).__name__}: {error}")
                continue
            if request_id not in known_requests:
                logger.info("VEN %s sent report %s under reportRequestID %s, which this VTN did not issue",
                            ven_id, report.get("report_name"), request_id)
        contract = self.store.household(ven.connection_point_id).contract
        kept = [report for report in (_minimised(item, contract, ven_id) for item in decoded) if report is not None]
        await self.batcher.write(lambda store: store.store_reports(ven.connection_point_id, kept, now=now))
        self.liveness.seen(ven_id, now)
        if refused:  # answered, not raised: a Rejection would roll back the reports that were kept
            more = f" (and {len(refused) - 1} more refused)" if len(refused) > 1 else ""
            return "oadrUpdatedReport", {"response": {
                "response_code": OADR_INVALID_DATA, "response_description": (refused[0] + more)[:MAX_DESCRIPTION_CHARS],
                "request_id": payload.get("request_id")}}
        return "oadrUpdatedReport", {}

    async def handle_created_report(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        pending = [str(p.get("report_request_id")) for p in payload.get("pending_reports") or []]
        logger.info("VEN %s created reports %s", payload.get("ven_id"), pending)
        self.liveness.seen(payload["ven_id"], self.clock.now())
        return "oadrResponse", {}


def _writer(cert: Path | None, key: Path | None, passphrase: str | None) -> oadr.MessageWriter:
    """The message writer; it signs with ``cert``/``key`` when given. Fails at start, not at the first message,
    when the key cannot be read or cannot sign."""
    if cert is None or key is None:
        return oadr.MessageWriter()
    try:
        private_key = load_pem_private_key(key.read_bytes(), passphrase.encode() if passphrase else None)
        writer = oadr.MessageWriter(cert_pem=cert.read_bytes(), private_key=private_key)
        writer.render("oadrResponse", {"response": {"response_code": 200, "response_description": "OK",
                                                    "request_id": None}, "ven_id": "check"})
    except Exception as error:
        raise ConfigurationError(f"Cannot sign OpenADR messages with certificate {cert} and key {key}: "
                                 f"{type(error).__name__}: {error}", field="key") from None
    return writer
