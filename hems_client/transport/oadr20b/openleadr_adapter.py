"""Everything the HEMS's VEN takes from openleadr beyond its documented API, in one place (issue 12 item 7).

``OpenleadrVen`` is openleadr 0.5.36's ``OpenADRClient`` with its request path replaced; ``HemsVen`` builds on it
and uses only the client's public coroutines (``query_registration``, ``create_party_registration``, ``poll``,
``request_event``, ``send_response``) plus ``request``/``render``. What this module relies on, each pinned by a test in
``tests/test_openleadr_adapter_ven.py`` so that an upgrade shows exactly what broke:

- ``OpenADRClient._perform_request`` (overridden): openleadr's version schema-validates the VTN's answer with a
  parser that lxml 5.4-6.2 crash on (a DOCTYPE with a used internal entity), accepts any size, logs two ERROR
  lines per failed poll and checks signatures with a process-global nonce set that accepts future timestamps.
  Here an answer passes ``protocol.oadr20b.xml_guard`` first (a refusal is logged and counts as a failed
  exchange), is validated with a hardened parser, and its signature is checked with this VEN's own
  ``ReplayGuard``. The return contract stays openleadr's: ``(type, payload)``, ``(None, {})`` on failure,
  ``None`` on an empty HTTP 200.
- ``OpenADRClient._ensure_client_session`` and ``client_session`` (overridden/set): one aiohttp session whose
  TLS context (``VenTls``) is built once: TLS 1.2+, the VTN's certificate verified against the configured CA
  and host name, this VEN's client certificate. Its answers are ``PeerCertificateResponse``s (aiohttp's
  ``ClientResponse.start(connection)`` extended), which keep the VTN's TLS certificate for a signing VEN's
  signature check.
- ``OpenADRClient._create_message`` (replaced): openleadr's re-reads the signing key for every message and signs
  through signxml; here messages are signed by ``protocol.oadr20b.xmldsig`` with the key parsed once (``render``),
  and answers are verified by it too (PROFILE §12.5).
- ``messaging.XML_PARSER`` (replaced process-wide), ``messaging.validate_xml_schema``, ``parse_message``,
  ``TEMPLATES``, ``preflight.preflight_message``, ``utils.flatten_xml``, ``utils.certificate_fingerprint_from_der``:
  as in ``dso_server.transport.oadr20b.openleadr_adapter`` (the two packages import only ``protocol``, so the
  VTN's glue is mirrored here rather than shared).
- ``OpenADRClient.scheduler`` (APScheduler, created by its constructor and never started here) and the public
  attributes ``ven_id``, ``ven_name``, ``registration_id``, ``poll_frequency``, ``vtn_url``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from lxml import etree
from openleadr import OpenADRClient, messaging, preflight, utils

from protocol.oadr20b import xmldsig
from protocol.oadr20b.replay import Replayed, ReplayGuard
from protocol.oadr20b.xml_guard import MAX_ANSWER_BYTES, HostileXml, check_document

logger = logging.getLogger(__name__)

OADR_NAMESPACE = "http://openadr.org/oadr-2.0b/2012/07"
PAYLOAD_TAG = f"{{{OADR_NAMESPACE}}}oadrPayload"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0

_HARDENED_PARSER = etree.XMLParser(schema=messaging.XML_SCHEMA, resolve_entities=False, load_dtd=False,
                                   no_network=True, huge_tree=False)


def harden_xml_parser() -> None:
    """Make openleadr validate with a parser that expands nothing (idempotent, process-wide)."""
    messaging.XML_PARSER = _HARDENED_PARSER


def xml_parser_is_hardened() -> bool:
    return messaging.XML_PARSER is _HARDENED_PARSER


class RefusedAnswer(ValueError):
    """The VTN's answer was not accepted; ``reason`` says why."""



def parse_answer(body: bytes, *, max_bytes: int = MAX_ANSWER_BYTES) -> tuple[Any, str, dict[str, Any]]:
    """Guard, schema-validate and parse a VTN answer: (lxml tree, message type, payload). Raises RefusedAnswer."""
    try:
        check_document(body, max_bytes=max_bytes)
    except HostileXml as error:
        raise RefusedAnswer(error.reason) from None
    try:
        tree = messaging.validate_xml_schema(body)
    except etree.XMLSyntaxError as error:
        raise RefusedAnswer(f"not valid OpenADR 2.0b XML: {error}") from None
    if tree.tag != PAYLOAD_TAG:
        raise RefusedAnswer(f"the root element is {tree.tag}; a 2.0b message is an oadr:oadrPayload")
    try:
        message_type, payload = messaging.parse_message(xmldsig.signed_object_document(tree))
    except Exception as error:
        raise RefusedAnswer(f"cannot read the answer: {type(error).__name__}: {error}") from None
    return tree, message_type, payload if isinstance(payload, dict) else {}


# ------------------------------------------------------------------------------------------------ TLS


@dataclass(frozen=True)
class VenTls:
    """The VEN's side of mutual TLS: its certificate and key, and the CA the VTN's certificate must chain to."""

    cert: Path
    key: Path
    ca_file: Path
    passphrase: str | None = None
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        """A client context: TLS 1.2+, the VTN verified against ``ca_file`` (and its host name), our certificate."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = self.check_hostname
        context.verify_mode = ssl.CERT_REQUIRED
        # 2.0b's mandated TLS 1.2 suite for ECDSA certificates, after the default (TLS 1.3 and AEAD) suites.
        context.set_ciphers("@SECLEVEL=2:ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE-ECDSA-AES128-SHA256")
        context.load_cert_chain(str(self.cert), str(self.key), self.passphrase)
        return context


# ------------------------------------------------------------------------------------------ signatures


class MessageSigner:
    """Signs rendered messages (PROFILE §12.5: detached XML-DSig, C14N 1.0, ReplayProtect) with a key parsed once."""

    def __init__(self, cert_pem: bytes, private_key: Any, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
                 ) -> None:
        self._signer = xmldsig.MessageSigner(certificate=x509.load_pem_x509_certificate(cert_pem),
                                             private_key=private_key)
        self._now = now

    def message(self, signed_object: str | xmldsig.PreparedObject) -> str:
        """The signed oadrPayload around ``signed_object`` (or that object prepared once, to be signed often)."""
        return self._signer.sign(signed_object, now=self._now())


def new_request_id() -> str:
    return str(utils.generate_id())


def signed_object(message_type: str, payload: Mapping[str, Any]) -> str:
    """The message's ``oadr:oadrSignedObject`` as text, from openleadr's templates (what ``render`` wraps)."""
    checked = preflight.preflight_message(message_type, dict(payload))
    return str(utils.flatten_xml(messaging.TEMPLATES.get_template(f"{message_type}.xml").render(**checked)))


def render(message_type: str, payload: Mapping[str, Any], signer: MessageSigner | None = None) -> str:
    """A 2.0b message from openleadr's templates, signed when a signer is given."""
    signed_object_text = signed_object(message_type, payload)
    if signer is not None:
        return signer.message(signed_object_text)
    return str(messaging.TEMPLATES.get_template("oadrPayload.xml").render(
        template=message_type, signature=None, signed_object=signed_object_text))


_VERIFIER = xmldsig.SignatureVerifier()


def signer_fingerprint(tree: Any, *, now: datetime | None = None) -> tuple[str, datetime, str]:
    """Verify the answer's signature over its oadrSignedObject and ReplayProtect (PROFILE §12.5); (OpenADR
    fingerprint of the signing certificate, timestamp, nonce). ``now`` (wall time by default) dates the signing
    certificate. Raises RefusedAnswer."""
    try:
        verified = _VERIFIER.verify(tree, now=now if now is not None else datetime.now(UTC))
    except xmldsig.NotSigned:
        raise RefusedAnswer("the answer is not signed") from None
    except xmldsig.SignatureRefused as refused:
        raise RefusedAnswer(f"the XML signature does not verify: {refused.reason}") from None
    except Exception as error:  # fail closed: a hostile answer the verifier did not foresee is still refused
        raise RefusedAnswer(f"the XML signature cannot be checked: {type(error).__name__}: {error}"[:300]) from None
    der = verified.certificate.public_bytes(Encoding.DER)
    return str(utils.certificate_fingerprint_from_der(der)), verified.timestamp, verified.nonce


# ------------------------------------------------------------------------------------------------ client


class PeerCertificateResponse(aiohttp.ClientResponse):
    """An answer that remembers the TLS certificate (DER) of the connection it came over. aiohttp hands the
    connection back to its pool as soon as a small answer is complete, before the caller sees the response, so
    ``response.connection`` is None by then; ``start(connection)`` is where the connection is still at hand."""

    peer_certificate_der: bytes | None = None

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        transport = connection.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        self.peer_certificate_der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return await super().start(connection)


class OpenleadrVen(OpenADRClient):
    """openleadr's client with a guarded, TLS-verified, signature-checked request path (module docstring).

    ``tls`` None means plain HTTP: allowed only when the caller said so (``HemsVen`` checks ``insecure``).
    ``sign`` signs outgoing messages with the TLS certificate and makes every answer's signature mandatory: by the
    certificate ``vtn_fingerprint`` (OpenADR form) names or, without one, by the certificate the VTN presented on
    the TLS connection the answer came over; checked with replay protection on wall time. ``vtn_fingerprint``
    alone makes the signature mandatory for a VEN that does not sign.
    """

    def __init__(self, *, ven_name: str, vtn_url: str, tls: VenTls | None = None, sign: bool = False,
                 vtn_fingerprint: str | None = None, ven_id: str | None = None,
                 max_answer_bytes: int = MAX_ANSWER_BYTES, wall_now: Callable[[], datetime] = lambda: datetime.now(UTC)
                 ) -> None:
        super().__init__(ven_name=ven_name, vtn_url=vtn_url, vtn_fingerprint=vtn_fingerprint, show_fingerprint=False,
                         ven_id=ven_id)
        harden_xml_parser()
        if sign and tls is None:
            raise ValueError("signing messages needs the VEN's certificate and key (tls)")
        self.tls = tls
        self.max_answer_bytes = max_answer_bytes
        self._wall_now = wall_now
        self._ssl_context = tls.context() if tls is not None else None
        self._signer: MessageSigner | None = None
        if sign and tls is not None:
            passphrase = tls.passphrase.encode() if tls.passphrase else None
            self._signer = MessageSigner(tls.cert.read_bytes(), load_pem_private_key(tls.key.read_bytes(), passphrase),
                                         now=wall_now)
        self._create_message = self.render  # type: ignore[method-assign]
        self.replay_guard = ReplayGuard()
        self.refused_answers = 0
        """Answers refused by the guard, the schema or the signature check (each a failed exchange)."""

    def render(self, message_type: str, **payload: Any) -> str:
        return render(message_type, payload, self._signer)

    async def _ensure_client_session(self) -> None:
        if self.client_session is None:
            timeout = aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S)
            connector = aiohttp.TCPConnector(ssl=self._ssl_context) if self._ssl_context is not None else None
            self.client_session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                                        headers={"Content-Type": "application/xml"},
                                                        response_class=PeerCertificateResponse)

    async def request(self, service: str, message_type: str, **payload: Any) -> tuple[str | None, dict[str, Any]]:
        """Send one message and return the answer: (type, payload), or (None, {}) for none (see ``exchange_ended``
        for whether the VTN answered at all)."""
        return await self._perform_request(service, self.render(message_type, **payload))

    def exchange_ended(self, *, answered: bool, reason: str | None = None) -> None:
        """Called after every exchange: ``answered`` when the VTN answered HTTP 200 with nothing or with an
        answer that passed every check, else ``reason`` says what went wrong. Subclasses track (and log) link
        health here; this class logs only refused answers, at WARNING, each time."""

    async def close(self) -> None:
        """Close the HTTP session (and openleadr's scheduler, which this class never starts)."""
        if self.scheduler.running:
            self.scheduler.shutdown()
        if self.client_session is not None:
            await self.client_session.close()
            self.client_session = None

    async def _perform_request(self, service: str, message: str) -> tuple[str | None, dict[str, Any]]:
        message_type, payload, reason = await self._exchange(service, message)
        self.exchange_ended(answered=reason is None, reason=reason)
        return message_type, payload

    async def _exchange(self, service: str, message: str) -> tuple[str | None, dict[str, Any], str | None]:
        """(type, payload, None) when the VTN answered; (None, {}, why not) otherwise."""
        await self._ensure_client_session()
        assert self.client_session is not None
        url = f"{self.vtn_url}/{service}"
        try:
            async with self.client_session.post(url, data=message.encode("utf-8")) as response:
                status = response.status
                signer = self._expected_signer(response)
                content = await _read_at_most(response, self.max_answer_bytes)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as error:
            logger.debug("VEN %s: no answer from %s: %s: %s", self.ven_name, url, type(error).__name__, error)
            return None, {}, f"{type(error).__name__}: {error}"
        if content is None:
            return self._refused(service, f"the answer has more than {self.max_answer_bytes} bytes")
        if status != HTTPStatus.OK:
            text = content[:300].decode("utf-8", "replace").strip()
            logger.warning("VEN %s: the VTN answered a request to %s with HTTP %d: %s", self.ven_name, service,
                           status, text)
            return None, {}, f"HTTP {status} {text[:100]}"
        if not content:  # an empty HTTP 200: the VTN is there and has nothing to say
            return None, {}, None
        try:
            tree, message_type, payload = parse_answer(content, max_bytes=self.max_answer_bytes)
            if signer is not None:
                self._check_signature(tree, signer)
        except RefusedAnswer as error:
            return self._refused(service, str(error))
        response = payload.get("response")
        code = response.get("response_code") if isinstance(response, dict) else None
        if code is not None and str(code) != "200":
            logger.warning("VEN %s: the VTN answered %s with %s %s", self.ven_name, message_type, code,
                           response.get("response_description") if isinstance(response, dict) else None)
        return message_type, payload, None

    def _expected_signer(self, response: aiohttp.ClientResponse) -> str | None:
        """The OpenADR fingerprint the answer's signature must carry (class docstring), or None for none."""
        if self.vtn_fingerprint:
            return str(self.vtn_fingerprint)
        if self._signer is None:
            return None
        der = response.peer_certificate_der if isinstance(response, PeerCertificateResponse) else None
        if not der:  # fail closed: no certificate to hold the signature against (plain HTTP)
            return "(none: the VTN presented no TLS certificate)"
        return str(utils.certificate_fingerprint_from_der(der))

    def _check_signature(self, tree: Any, expected: str) -> None:
        fingerprint, timestamp, nonce = signer_fingerprint(tree, now=self._wall_now())
        if fingerprint != expected:
            raise RefusedAnswer(f"the answer is signed by certificate {fingerprint}, not by the VTN's {expected}")
        try:
            self.replay_guard.check(signer=fingerprint, timestamp=timestamp, nonce=nonce, now=self._wall_now())
        except Replayed as error:
            raise RefusedAnswer(f"replay protection: {error.reason}") from None

    def _refused(self, service: str, reason: str) -> tuple[None, dict[str, Any], str]:
        self.refused_answers += 1
        logger.warning("VEN %s: refused the VTN's answer from %s: %s", self.ven_name, service, reason)
        return None, {}, f"answer refused: {reason}"


async def _read_at_most(response: aiohttp.ClientResponse, max_bytes: int) -> bytes | None:
    """The body, or None when it is longer than ``max_bytes`` (stops reading there)."""
    if response.content_length is not None and response.content_length > max_bytes:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
