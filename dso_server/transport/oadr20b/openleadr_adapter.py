"""Everything the VTN takes from openleadr beyond its documented API, in one place (issue 12 item 7).

The VTN serves HTTP itself (``dso_server.transport.oadr20b.vtn``) and uses openleadr 0.5.36 only as the 2.0b
codec. What it relies on, each pinned by a test in ``tests/test_openleadr_adapter_vtn.py`` so an upgrade shows
exactly what broke:

- ``messaging.XML_PARSER`` is *replaced* (``harden_xml_parser``) by a schema-validating parser that resolves no
  entity, loads no DTD and uses no network. openleadr's ``validate_xml_schema`` reads that module attribute at
  each call. Defence in depth behind ``protocol.oadr20b.xml_guard``: with openleadr's own parser, lxml 5.4-6.2
  segfault on a used internal entity.
- ``messaging.validate_xml_schema`` and ``messaging.parse_message``: the 2.0b XSD check, then the message type
  and openleadr's normalised payload dict (``parse``).
- ``messaging.TEMPLATES``, ``preflight.preflight_message`` and ``utils.flatten_xml``: rendering a message
  (``MessageWriter``). openleadr's ``create_message`` re-reads the signing key for every message (about 100 ms
  with RSA 2048, 1 ms with EC P-256); the writer parses it once.
- ``messaging.VERIFIER`` and ``utils.extract_pem_cert``: checking an XML signature (``verify_signature``).
  openleadr's own ReplayProtect check keeps a process-global nonce set and accepts timestamps from the future,
  so the replay check is ``protocol.oadr20b.replay.ReplayGuard`` on the caller's side instead.
- ``utils.certificate_fingerprint_from_der``: the OpenADR fingerprint (last 10 bytes of the SHA-256 of the DER
  certificate), shown to operators beside the full SHA-256 this project binds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from openleadr import enums, messaging, preflight, utils
from signxml import XMLSigner, methods
from signxml.algorithms import SignatureMethod

OADR_NAMESPACE = "http://openadr.org/oadr-2.0b/2012/07"
REPLAY_NAMESPACE = "http://openadr.org/oadr-2.0b/2012/07/xmldsig-properties"
DSIG_NAMESPACE = "http://www.w3.org/2000/09/xmldsig#"
C14N_1_0 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
PAYLOAD_TAG = f"{{{OADR_NAMESPACE}}}oadrPayload"

XMLSyntaxError = etree.XMLSyntaxError
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
        message_type, payload = messaging.parse_message(body)
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
        self._signer: XMLSigner | None = None
        self._certificates: list[x509.Certificate] = []
        self._key = private_key
        self.fingerprint: str | None = None
        """OpenADR fingerprint of the signing certificate (what VENs configure as the VTN's), or None."""
        if cert_pem is not None:
            certificate = x509.load_pem_x509_certificate(cert_pem)
            self._certificates = [certificate]
            if isinstance(private_key, ec.EllipticCurvePrivateKey):
                algorithm = "ecdsa-sha256"
            elif isinstance(private_key, rsa.RSAPrivateKey):
                algorithm = "rsa-sha256"
            else:
                raise ValueError(f"cannot sign XML with a {type(private_key).__name__}; use an EC or RSA key")
            signer = XMLSigner(method=methods.detached, c14n_algorithm=C14N_1_0)
            signer.namespaces["oadr"] = OADR_NAMESPACE
            signer.sign_alg = SignatureMethod.from_fragment(algorithm)
            self._signer = signer
            self.fingerprint = openadr_fingerprint(certificate.public_bytes(Encoding.DER))

    @property
    def signs(self) -> bool:
        return self._signer is not None

    def render(self, message_type: str, payload: Mapping[str, Any]) -> str:
        checked = preflight.preflight_message(message_type, dict(payload))
        template = messaging.TEMPLATES.get_template(f"{message_type}.xml")
        signed_object = utils.flatten_xml(template.render(**checked))
        signature = None
        if self._signer is not None:
            tree = etree.fromstring(signed_object)
            signature_tree = self._signer.sign(tree, key=self._key, cert=self._certificates,
                                               reference_uri="#oadrSignedObject",
                                               signature_properties=self._replay_protect())
            signature = etree.tostring(signature_tree).decode("utf-8")
        envelope = messaging.TEMPLATES.get_template("oadrPayload.xml")
        return str(envelope.render(template=message_type, signature=signature, signed_object=signed_object))

    def _replay_protect(self) -> Any:
        timestamp = etree.Element(f"{{{REPLAY_NAMESPACE}}}timestamp")
        timestamp.text = utils.datetimeformat(self._now())
        nonce = etree.Element(f"{{{REPLAY_NAMESPACE}}}nonce")
        nonce.text = uuid4().hex
        element = etree.Element(f"{{{REPLAY_NAMESPACE}}}ReplayProtect", nsmap={"dsp": REPLAY_NAMESPACE},
                                attrib={"Id": "myid", "Target": "#mytarget"})
        element.append(timestamp)
        element.append(nonce)
        return element


@dataclass(frozen=True)
class Signature:
    """What a verified XML signature says: who signed (certificate fingerprint) and its ReplayProtect."""

    fingerprint_sha256: str
    timestamp: datetime
    nonce: str


class BadSignature(ValueError):
    pass


def verify_signature(tree: Any) -> Signature:
    """Verify a message's detached signature: one reference must be the message's own oadrSignedObject, the
    other its ReplayProtect, whose timestamp and nonce are read from the signed bytes. Raises ``BadSignature``
    naming what is wrong; whether the signer is acceptable is the caller's decision."""
    if tree.find(f".//{{{DSIG_NAMESPACE}}}X509Certificate") is None:
        raise BadSignature("the message is not signed (no ds:Signature with an X509Certificate)")
    try:
        pem = utils.extract_pem_cert(tree)
        results = messaging.VERIFIER.verify(tree, x509_cert=pem, expect_references=2)
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except Exception as error:  # signxml raises InvalidSignature, InvalidInput, ValueError ...
        raise BadSignature(f"the XML signature does not verify: {type(error).__name__}: {error}") from None
    signed = {result.signed_xml.tag: result for result in results if result.signed_xml is not None}
    body = tree.find(f"{{{OADR_NAMESPACE}}}oadrSignedObject")
    signed_body = signed.get(f"{{{OADR_NAMESPACE}}}oadrSignedObject")
    if body is None or signed_body is None or signed_body.signed_data != etree.tostring(body, method="c14n"):
        raise BadSignature("the signature does not cover the message's oadrSignedObject")
    properties = signed.get(f"{{{DSIG_NAMESPACE}}}Object")  # ds:Object > SignatureProperties > ReplayProtect
    replay = None if properties is None else properties.signed_xml.find(f".//{{{REPLAY_NAMESPACE}}}ReplayProtect")
    if replay is None:
        raise BadSignature("the signature does not cover a ReplayProtect element")
    timestamp_text = replay.findtext(f"{{{REPLAY_NAMESPACE}}}timestamp")
    nonce = replay.findtext(f"{{{REPLAY_NAMESPACE}}}nonce")
    if not timestamp_text or not nonce:
        raise BadSignature("the signed ReplayProtect carries no timestamp and nonce")
    try:
        timestamp = utils.parse_datetime(timestamp_text.strip())
    except Exception:
        raise BadSignature(f"the ReplayProtect timestamp {timestamp_text[:40]!r} is not a date-time") from None
    if not isinstance(timestamp, datetime) or timestamp.tzinfo is None:
        raise BadSignature(f"the ReplayProtect timestamp {timestamp_text[:40]!r} has no UTC offset")
    return Signature(fingerprint_sha256(certificate.public_bytes(Encoding.DER)), timestamp, nonce.strip())


def new_request_id() -> str:
    return str(utils.generate_id())
