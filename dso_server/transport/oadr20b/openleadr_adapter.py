"""Everything the VTN takes from openleadr beyond its documented API, in one place (issue 12 item 7).

The VTN serves HTTP itself (``dso_server.transport.oadr20b.vtn``) and uses openleadr 0.5.36 only as the 2.0b
codec. What it relies on, each pinned by a test in ``tests/test_openleadr_adapter_vtn.py`` so an upgrade shows
exactly what broke:

- ``messaging.XML_PARSER`` is *replaced* (``harden_xml_parser``) by a schema-validating parser that resolves no
  entity, loads no DTD and uses no network. openleadr's ``validate_xml_schema`` reads that module attribute at
  each call. Defence in depth behind ``protocol.oadr20b.xml_guard``: with openleadr's own parser, lxml 5.4-6.2
  segfault on a used internal entity.
- ``messaging.XML_SCHEMA``: the 2.0b XSD openleadr ships, also for the VTN's oadrPoll fast path (``fast_poll``,
  which reads the venID from the validated tree and needs nothing else of openleadr: ``parse_poll``).
- ``messaging.validate_xml_schema`` and ``messaging.parse_message``: the 2.0b XSD check, then the message type
  and openleadr's normalised payload dict (``parse``), read from the validated tree's oadrSignedObject.
- ``messaging.TEMPLATES``, ``preflight.preflight_message`` and ``utils.flatten_xml``: rendering a message
  (``MessageWriter``). One template is corrected (``_template``): openleadr renders
  ``oadrCreatedPartyRegistration`` with empty ``<ei:registrationID />`` and ``<ei:venID />`` when there is no id
  to give, and PROFILE.md §2.3 wants a refusal (463) without either element (the 2.0b schema makes both
  optional); the writer uses a copy of openleadr's template without the empty elements, for the VTN only
  (openleadr's global template environment is left as it is).
- ``utils.certificate_fingerprint_from_der``: the OpenADR fingerprint (last 10 bytes of the SHA-256 of the DER
  certificate), shown to operators beside the full SHA-256 this project binds.

XML signatures are not openleadr's here: signing and verifying use ``protocol.oadr20b.xmldsig``, written for the
one 2.0b signature profile (PROFILE §12.5). openleadr signs through signxml and re-reads the key for every
message (about 100 ms with RSA 2048, 1 ms with EC P-256); signxml re-parses the document about nine times per
verification, keeps a process-global nonce set and accepts ReplayProtect timestamps from the future. openleadr
and signxml remain the cross-check in the tests (messages signed here verify there and the other way round).
The replay check is ``protocol.oadr20b.replay.ReplayGuard`` on the caller's side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from openleadr import enums, messaging, preflight, utils

from protocol.oadr20b import xmldsig

OADR_NAMESPACE = "http://openadr.org/oadr-2.0b/2012/07"
PAYLOAD_TAG = f"{{{OADR_NAMESPACE}}}oadrPayload"

XMLSyntaxError = etree.XMLSyntaxError
XML_SCHEMA = messaging.XML_SCHEMA
STATUS_CODES = enums.STATUS_CODES
"""The 2.0b eiResponse codes (openleadr's public enum), here so the VTN imports openleadr nowhere else."""


_HARDENED_PARSER = etree.XMLParser(schema=messaging.XML_SCHEMA, resolve_entities=False, load_dtd=False,
                                   no_network=True, huge_tree=False)


def harden_xml_parser() -> None:
    """Make openleadr validate with a parser that expands nothing (idempotent, process-wide)."""
    messaging.XML_PARSER = _HARDENED_PARSER


def xml_parser_is_hardened() -> bool:
    return messaging.XML_PARSER is _HARDENED_PARSER


@dataclass(frozen=True)
class ParsedMessage:
    message_type: str
    payload: dict[str, Any]
    tree: Any
    """The lxml tree (for the signature check)."""


class NotOpenAdr(ValueError):
    """The body is XML but not a 2.0b message this codec reads (schema, root element)."""



def parse(body: bytes) -> ParsedMessage:
    """Schema-validate and parse a message that passed ``protocol.oadr20b.xml_guard``. Raises ``NotOpenAdr``."""
    try:
        tree = messaging.validate_xml_schema(body)
    except XMLSyntaxError as error:
        raise NotOpenAdr(f"not valid OpenADR 2.0b XML: {error}") from None
    if tree.tag != PAYLOAD_TAG:  # the XSD also declares every message type as a possible root
        raise NotOpenAdr(f"the root element is {tree.tag}; a 2.0b message is an oadr:oadrPayload")
    try:
        message_type, payload = messaging.parse_message(xmldsig.signed_object_document(tree))
    except Exception as error:  # xmltodict/expat or openleadr's normalisation on an odd but schema-valid shape
        raise NotOpenAdr(f"cannot read the message: {type(error).__name__}: {error}") from None
    if not isinstance(payload, dict):
        payload = {}
    return ParsedMessage(message_type, payload, tree)


def fingerprint_sha256(der: bytes) -> str:
    """The full SHA-256 of a DER certificate, lowercase hex: what this project binds to a household."""
    return hashlib.sha256(der).hexdigest()


def openadr_fingerprint(der: bytes) -> str:
    """openleadr's short fingerprint (last 10 bytes of the SHA-256, colon-separated) for display."""
    return str(utils.certificate_fingerprint_from_der(der))


_CORRECTED = "oadrCreatedPartyRegistration"
_EMPTY_IDS = (
    ("{% else %}\n    <ei:registrationID />\n    {% endif %}", "{% endif %}"),
    ("{% else %}\n    <ei:venID />\n    {% endif %}", "{% endif %}"),
)
_corrected_template: Any = None


def _template(message_type: str) -> Any:
    """openleadr's template for ``message_type``; for oadrCreatedPartyRegistration a copy that leaves out the
    empty registrationID and venID elements (module docstring). An accepted registration renders as before."""
    global _corrected_template
    if message_type != _CORRECTED:
        return messaging.TEMPLATES.get_template(f"{message_type}.xml")
    if _corrected_template is None:
        loader = messaging.TEMPLATES.loader
        assert loader is not None
        source, _, _ = loader.get_source(messaging.TEMPLATES, f"{_CORRECTED}.xml")
        for empty, kept in _EMPTY_IDS:
            if empty not in source:
                raise RuntimeError(f"openleadr's {_CORRECTED}.xml changed; review _template in {__name__}")
            source = source.replace(empty, kept)
        _corrected_template = messaging.TEMPLATES.from_string(source)
    return _corrected_template


@dataclass(frozen=True)
class Prepared:
    """A message rendered once (``MessageWriter.prepare``), to be sent many times (``MessageWriter.finish``): the
    VTN keeps each VEN's "nothing new" answer so, which a signing VTN still signs afresh for every poll."""

    document: bytes | None = None
    """The whole message, when the writer does not sign."""
    signed_object: xmldsig.PreparedObject | None = None
    """The checked and digested oadrSignedObject, when it signs."""


class MessageWriter:
    """Renders 2.0b messages with openleadr's templates; signs them when given a certificate and key.

    The key and certificate are parsed once; ``now`` dates each signature's ReplayProtect (wall time: the
    receiver judges it against its own real clock).
    """

    def __init__(self, *, cert_pem: bytes | None = None, private_key: Any = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if (cert_pem is None) != (private_key is None):
            raise ValueError("a signing certificate and its private key go together")
        self._now = now
        self._signer: xmldsig.MessageSigner | None = None
        self.fingerprint: str | None = None
        """OpenADR fingerprint of the signing certificate (what VENs configure as the VTN's), or None."""
        if cert_pem is not None:
            certificate = x509.load_pem_x509_certificate(cert_pem)
            self._signer = xmldsig.MessageSigner(certificate=certificate, private_key=private_key)
            self.fingerprint = openadr_fingerprint(certificate.public_bytes(Encoding.DER))

    def render(self, message_type: str, payload: Mapping[str, Any]) -> str:
        return self.finish(self.prepare(message_type, payload)).decode()

    def prepare(self, message_type: str, payload: Mapping[str, Any]) -> Prepared:
        """``message_type`` with ``payload`` rendered once, to be sent by ``finish`` as often as needed."""
        checked = preflight.preflight_message(message_type, dict(payload))
        template = _template(message_type)
        signed_object = utils.flatten_xml(template.render(**checked))
        if self._signer is not None:
            return Prepared(signed_object=xmldsig.prepare_signed_object(signed_object))
        envelope = messaging.TEMPLATES.get_template("oadrPayload.xml")
        return Prepared(document=str(envelope.render(template=message_type, signature=None,
                                                     signed_object=signed_object)).encode())

    def finish(self, prepared: Prepared) -> bytes:
        """The message to send: an unsigned one as rendered, a signed one signed now (a fresh ReplayProtect)."""
        if prepared.signed_object is not None:
            if self._signer is None:
                raise ValueError("a message prepared for signing was given to a writer that does not sign")
            return self._signer.sign(prepared.signed_object, now=self._now()).encode()
        if prepared.document is None or self._signer is not None:
            raise ValueError("a signing writer sends only messages it prepared for signing")
        return prepared.document


@dataclass(frozen=True)
class Signature:
    """What a verified XML signature says: who signed (certificate fingerprint) and its ReplayProtect."""

    fingerprint_sha256: str
    timestamp: datetime
    nonce: str


class BadSignature(ValueError):
    pass


_VERIFIER = xmldsig.SignatureVerifier()


def verify_signature(tree: Any, *, now: datetime | None = None) -> Signature:
    """Verify a message's signature (PROFILE §12.5): one reference must be the message's own oadrSignedObject,
    the other the signature's ReplayProtect, whose timestamp and nonce are returned. ``now`` (wall time by
    default) dates the signing certificate. Raises ``BadSignature`` naming what is wrong; whether the signer is
    acceptable and the ReplayProtect fresh are the caller's decisions."""
    try:
        verified = _VERIFIER.verify(tree, now=now if now is not None else datetime.now(UTC))
    except xmldsig.NotSigned as refused:
        raise BadSignature(refused.reason) from None
    except xmldsig.SignatureRefused as refused:
        raise BadSignature(f"the XML signature does not verify: {refused.reason}") from None
    except Exception as error:  # fail closed: a hostile message the verifier did not foresee is still refused
        raise BadSignature(f"the XML signature cannot be checked: {type(error).__name__}: {error}"[:300]) from None
    return Signature(verified.fingerprint_sha256, verified.timestamp, verified.nonce)


def new_request_id() -> str:
    return str(utils.generate_id())
