"""XML signatures of OpenADR 2.0b messages, for exactly one profile (PROFILE §12.5).

A signed 2.0b message is an ``oadr:oadrPayload`` whose children are one ``ds:Signature`` and the
``oadr:oadrSignedObject``. The signature is *detached*: it signs two elements of the same document by Id,

1. the ``oadrSignedObject`` (``Reference URI="#<its oadr:Id>"``), and
2. a ``ds:Object`` inside the signature holding ``SignatureProperties/SignatureProperty/dsp:ReplayProtect``
   with the signing time and a nonce (``Reference URI="#<the Object's Id>"``),

each canonicalised (C14N 1.0, or exclusive C14N 1.0, without comments) and digested with SHA-256; ``SignedInfo``
is canonicalised the same way and signed with ECDSA P-256 / SHA-256 or RSA (2048 bit or more) / SHA-256, and
``KeyInfo`` carries the signer's X.509 certificate. That is what openleadr 0.5.36 (through signxml) writes and
reads. This module signs and verifies that profile and nothing else; anything outside it is refused with a
reason naming what was found (``SignatureRefused``): other algorithms, other or extra references, transforms,
XPath/XPointer URIs, KeyInfo other than X.509 certificates, an Id that occurs twice or a reference resolving to
another element than the two above (signature wrapping), comments or processing instructions anywhere (C14N drops
comments from what is signed, so an inserted comment could change what a naive reader sees).

A general XMLDSig library (signxml) re-parses the document for every reference and transform, about nine times
per verification; here the tree the receiver already parsed is read once, each referenced element canonicalised
once, and the signing certificate parsed once per certificate (``SignatureVerifier`` keeps a bounded cache).
Whether the signer may speak for the message (the certificate of the TLS connection, the enrolment) and whether
the ReplayProtect is fresh and unused (``protocol.oadr20b.replay.ReplayGuard``) are the caller's checks, made on
what ``verify`` returns.

Pure: no I/O; the caller passes the time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

OADR_NAMESPACE = "http://openadr.org/oadr-2.0b/2012/07"
DSIG_NAMESPACE = "http://www.w3.org/2000/09/xmldsig#"
REPLAY_NAMESPACE = "http://openadr.org/oadr-2.0b/2012/07/xmldsig-properties"

C14N_1_0 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
EXCLUSIVE_C14N_1_0 = "http://www.w3.org/2001/10/xml-exc-c14n#"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"

CANONICALISATIONS = (C14N_1_0, EXCLUSIVE_C14N_1_0)
SIGNATURE_METHODS = (ECDSA_SHA256, RSA_SHA256)
MIN_RSA_BITS = 2048
MAX_CERTIFICATES = 4
"""X509Data may carry the signer's certificate followed by its chain; only the first is used."""
MAX_NONCE_CHARS = 256
MAX_CERTIFICATE_CHARS = 16 * 1024
"""Base64 text of the signing certificate (real ones are 0.6 to 3 KiB); bounds what the cache holds."""

SIGNED_OBJECT_ID = "oadrSignedObject"
"""The Id the reference signer gives the oadrSignedObject (openleadr's templates carry it)."""
PROPERTIES_ID = "prop"
SIGNATURE_ID = "oadrSignature"


def _tag(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


PAYLOAD = _tag(OADR_NAMESPACE, "oadrPayload")
SIGNED_OBJECT = _tag(OADR_NAMESPACE, "oadrSignedObject")
SIGNED_OBJECT_ID_ATTRIBUTE = _tag(OADR_NAMESPACE, "Id")
_DS = {name: _tag(DSIG_NAMESPACE, name) for name in (
    "Signature", "SignedInfo", "CanonicalizationMethod", "SignatureMethod", "Reference", "Transforms", "Transform",
    "DigestMethod", "DigestValue", "SignatureValue", "KeyInfo", "X509Data", "X509Certificate", "Object",
    "SignatureProperties", "SignatureProperty")}
_REPLAY_PROTECT = _tag(REPLAY_NAMESPACE, "ReplayProtect")
_TIMESTAMP = _tag(REPLAY_NAMESPACE, "timestamp")
_NONCE = _tag(REPLAY_NAMESPACE, "nonce")

_ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    _DS["Signature"]: frozenset({"Id"}),
    _DS["SignedInfo"]: frozenset({"Id"}),
    _DS["CanonicalizationMethod"]: frozenset({"Algorithm"}),
    _DS["SignatureMethod"]: frozenset({"Algorithm"}),
    _DS["Reference"]: frozenset({"URI", "Id"}),
    _DS["Transforms"]: frozenset(),
    _DS["Transform"]: frozenset({"Algorithm"}),
    _DS["DigestMethod"]: frozenset({"Algorithm"}),
    _DS["DigestValue"]: frozenset(),
    _DS["SignatureValue"]: frozenset({"Id"}),
    _DS["KeyInfo"]: frozenset({"Id"}),
    _DS["X509Data"]: frozenset(),
    _DS["X509Certificate"]: frozenset(),
    _DS["Object"]: frozenset({"Id"}),
    _DS["SignatureProperties"]: frozenset({"Id"}),
    _DS["SignatureProperty"]: frozenset({"Id", "Target"}),
    _REPLAY_PROTECT: frozenset(),
    _TIMESTAMP: frozenset(),
    _NONCE: frozenset({"EncodingType"}),
}
_ID_ATTRIBUTES = etree.XPath("//@*[(local-name()='Id' or local-name()='ID' or local-name()='id') and "
                             "(. = $first or . = $second)]")
"""The attributes a general verifier (signxml: any name Id/ID/id, any namespace) would resolve either
``#fragment`` against: the filter runs in libxml2, so a message full of Ids costs one linear pass."""
_FRAGMENT = re.compile(r"#([A-Za-z_][A-Za-z0-9_.\-]{0,127})")
_DATETIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")


class SignatureRefused(ValueError):
    """The message's signature is missing, outside the profile or does not verify; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NotSigned(SignatureRefused):
    """The message carries no signature at all."""


@dataclass(frozen=True)
class VerifiedSignature:
    """What a verified signature says. Everything here was covered by the signature."""

    certificate: x509.Certificate
    fingerprint_sha256: str
    """SHA-256 of the signing certificate's DER, lowercase hex (what enrolment binds)."""
    timestamp: datetime
    """The ReplayProtect signing time, timezone-aware."""
    nonce: str
    signature_method: str


# ---------------------------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class _Signer:
    certificate: x509.Certificate
    fingerprint_sha256: str
    public_key: Any
    not_before: datetime
    not_after: datetime


class SignatureVerifier:
    """Verifies signed messages of the profile. One per receiver (it caches parsed certificates, at most
    ``max_cached_certificates``); ``verify`` is the whole check short of identity and replay."""

    def __init__(self, *, max_cached_certificates: int = 4096) -> None:
        if max_cached_certificates < 1:
            raise ValueError(f"max_cached_certificates {max_cached_certificates} must be >= 1")
        self._max_cached = max_cached_certificates
        self._certificates: OrderedDict[str, _Signer] = OrderedDict()  # by the X509Certificate text

    def verify(self, root: Any, *, now: datetime) -> VerifiedSignature:
        """Verify the signature of a parsed message (``root``: the lxml ``oadrPayload`` element). ``now`` (aware)
        dates the signing certificate's validity. Raises ``SignatureRefused``."""
        if now.tzinfo is None:
            raise ValueError(f"now {now.isoformat()} has no UTC offset")
        if getattr(root, "tag", None) != PAYLOAD:
            raise SignatureRefused(f"the root element is {getattr(root, 'tag', root)!r}; a signed message is an "
                                   "oadr:oadrPayload")
        signature, signed_object = _payload_children(root)
        for node in root.iter(etree.Comment, etree.ProcessingInstruction, etree.Entity):
            kind = ("a comment" if isinstance(node, etree._Comment) else "an entity reference"
                    if isinstance(node, etree._Entity) else "a processing instruction")
            raise SignatureRefused(f"a signed message must not contain {kind} (line {node.sourceline}): what a "
                                   "reader sees there is not what the signature covers")
        signatures = sum(1 for _ in root.iter(_DS["Signature"]))
        if signatures != 1:
            raise SignatureRefused(f"the message holds {signatures} ds:Signature elements; exactly one, before "
                                   "the oadrSignedObject, is accepted")
        elements = _signature_elements(signature)
        signed_info, signature_value, properties_object = elements[1], elements[14], elements[-6]
        canonicalisation = _algorithm(elements[2], CANONICALISATIONS, "CanonicalizationMethod")
        method = _algorithm(elements[3], SIGNATURE_METHODS, "SignatureMethod")
        if elements[-4].get("Target") is None:
            raise SignatureRefused("ds:SignatureProperty has no Target attribute")
        timestamp = parse_timestamp(elements[-2].text or "")
        nonce = (elements[-1].text or "").strip()
        if not nonce or len(nonce) > MAX_NONCE_CHARS:
            raise SignatureRefused(f"the ReplayProtect nonce has {len(nonce)} characters; 1 to {MAX_NONCE_CHARS} are "
                                   "accepted")
        signer = self._signer(elements[16], method, now)

        fragments = []
        for number, first, name in ((1, 4, "the message's oadrSignedObject"),
                                    (2, 9, "the signature's ds:Object with the ReplayProtect")):
            uri = elements[first].get("URI")
            match = _FRAGMENT.fullmatch(uri or "")
            if match is None:
                raise SignatureRefused(f"Reference {number} has URI {str(uri)[:100]!r}; the profile accepts only a "
                                       f"same-document '#Id' (for {name})")
            fragments.append(match[1])
        ids = _ids(root, *fragments)
        references = []
        for number, first, target, name in (
                (1, 4, signed_object, "the message's oadrSignedObject"),
                (2, 9, properties_object, "the signature's ds:Object with the ReplayProtect")):
            transform, digest_method, digest_value = (elements[i] for i in (first + 2, first + 3, first + 4))
            uri = elements[first].get("URI")
            resolved = ids[fragments[number - 1]]
            if len(resolved) != 1:
                raise SignatureRefused(f"Reference {number} URI {uri!r} matches {len(resolved)} elements; an Id must "
                                       "occur exactly once (a duplicated Id is how signature wrapping works)")
            (element,) = resolved
            if element is not target:
                raise SignatureRefused(f"Reference {number} URI {uri!r} points at {_name(element.tag)}, not at "
                                       f"{name}")
            algorithm = _algorithm(transform, CANONICALISATIONS, f"Reference {number} Transform")
            _algorithm(digest_method, (SHA256,), f"Reference {number} DigestMethod")
            expected = _base64(digest_value.text or "", f"Reference {number} DigestValue")
            references.append((number, target, name, algorithm, expected))
        for number, target, name, algorithm, expected in references:
            if not hmac.compare_digest(expected, hashlib.sha256(_canonical(target, algorithm)).digest()):
                raise SignatureRefused(f"the digest of {name} (Reference {number}) does not match: it was changed "
                                       "after signing")

        signed_info_c14n = _canonical(signed_info, canonicalisation)
        raw_signature = _base64(signature_value.text or "", "SignatureValue")
        try:
            if method == ECDSA_SHA256:
                size = (signer.public_key.curve.key_size + 7) // 8
                if len(raw_signature) != 2 * size:
                    raise SignatureRefused(f"the ECDSA SignatureValue has {len(raw_signature)} bytes; P-256 gives "
                                           f"{2 * size} (r and s)")
                der = encode_dss_signature(int.from_bytes(raw_signature[:size], "big"),
                                           int.from_bytes(raw_signature[size:], "big"))
                signer.public_key.verify(der, signed_info_c14n, ec.ECDSA(hashes.SHA256()))
            else:
                signer.public_key.verify(raw_signature, signed_info_c14n, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignatureRefused("the SignatureValue does not verify with the certificate in KeyInfo (the "
                                   "SignedInfo was changed or signed with another key)") from None
        return VerifiedSignature(signer.certificate, signer.fingerprint_sha256, timestamp, nonce, method)

    def _signer(self, x509_data: Any, method: str, now: datetime) -> _Signer:
        text = x509_data[0].text or ""
        if len(text) > MAX_CERTIFICATE_CHARS:
            raise SignatureRefused(f"the X509Certificate has {len(text)} characters; at most "
                                   f"{MAX_CERTIFICATE_CHARS} are accepted")
        signer = self._certificates.get(text)
        if signer is None:
            der = _base64(text, "X509Certificate")
            try:
                certificate = x509.load_der_x509_certificate(der)
                public_key = certificate.public_key()
            except Exception as error:  # ValueError, UnsupportedAlgorithm, InvalidVersion ...: all mean refusal
                raise SignatureRefused(f"the X509Certificate is not a certificate this profile reads: "
                                       f"{str(error)[:200]}") from None
            signer = _Signer(certificate, hashlib.sha256(der).hexdigest(), public_key,
                             certificate.not_valid_before_utc, certificate.not_valid_after_utc)
            self._certificates[text] = signer
            if len(self._certificates) > self._max_cached:
                self._certificates.popitem(last=False)
        else:
            self._certificates.move_to_end(text)
        key = signer.public_key
        if method == ECDSA_SHA256 and not (isinstance(key, ec.EllipticCurvePublicKey)
                                           and isinstance(key.curve, ec.SECP256R1)):
            raise SignatureRefused(f"SignatureMethod is ecdsa-sha256 but the certificate's key is "
                                   f"{_key_name(key)}; it must be EC P-256")
        if method == RSA_SHA256 and not (isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS):
            raise SignatureRefused(f"SignatureMethod is rsa-sha256 but the certificate's key is {_key_name(key)}; "
                                   f"it must be RSA of at least {MIN_RSA_BITS} bits")
        if not signer.not_before <= now <= signer.not_after:
            raise SignatureRefused(f"the signing certificate is valid from {_utc(signer.not_before)} to "
                                   f"{_utc(signer.not_after)}, not at {_utc(now)}")
        return signer


def _payload_children(root: Any) -> tuple[Any, Any]:
    if (root.text or "").strip():
        raise SignatureRefused("the oadrPayload carries text outside its elements")
    children = list(root.iterchildren(etree.Element))  # comments and the like are refused next
    tags = [child.tag for child in children]
    if tags == [SIGNED_OBJECT]:
        raise NotSigned("the message is not signed (no ds:Signature before the oadrSignedObject)")
    if tags != [_DS["Signature"], SIGNED_OBJECT]:
        raise SignatureRefused(f"the oadrPayload holds {_names(tags)}; a signed message holds ds:Signature then "
                               "oadrSignedObject")
    for child in children:
        if (child.tail or "").strip():
            raise SignatureRefused("the oadrPayload carries text outside its elements")
    return children[0], children[1]


def _shape(certificates: int) -> list[tuple[str, int]]:
    """The signature's elements in document order, each with its number of child elements: this fixes the
    whole tree (what each element holds and where)."""
    reference = [(_DS["Reference"], 3), (_DS["Transforms"], 1), (_DS["Transform"], 0), (_DS["DigestMethod"], 0),
                 (_DS["DigestValue"], 0)]
    return [(_DS["Signature"], 4), (_DS["SignedInfo"], 4), (_DS["CanonicalizationMethod"], 0),
            (_DS["SignatureMethod"], 0), *reference, *reference, (_DS["SignatureValue"], 0), (_DS["KeyInfo"], 1),
            (_DS["X509Data"], certificates), *[(_DS["X509Certificate"], 0)] * certificates, (_DS["Object"], 1),
            (_DS["SignatureProperties"], 1), (_DS["SignatureProperty"], 1), (_REPLAY_PROTECT, 2), (_TIMESTAMP, 0),
            (_NONCE, 0)]


_SHAPES = {count: _shape(count) for count in range(1, MAX_CERTIFICATES + 1)}
_LEAVES = frozenset(tag for tag, children in _shape(1) if children == 0)


def _signature_elements(signature: Any) -> list[Any]:
    """The ds:Signature's elements in document order, after checking that they are exactly the profile's: the
    same elements nested the same way, no attribute beyond the table, no text outside the leaves."""
    elements = list(signature.iter())
    tags = [element.tag for element in elements]
    found = [(tag, len(element)) for tag, element in zip(tags, elements, strict=True)]
    x509_data = elements[tags.index(_DS["X509Data"])] if _DS["X509Data"] in tags else None
    expected = _SHAPES.get(len(x509_data) if x509_data is not None else 1) or _SHAPES[1]
    if found != expected:
        index = next((i for i, (a, b) in enumerate(zip(found, expected, strict=False)) if a != b),
                     min(len(found), len(expected)))
        has = (f"{_name(found[index][0])} holding {found[index][1]} elements inside "
               f"{_name(elements[index].getparent().tag)}" if index < len(found) else "nothing")
        wants = f"{_name(expected[index][0])} holding {expected[index][1]}" if index < len(expected) else "nothing"
        raise SignatureRefused(f"the ds:Signature is not the profile's: where the profile has {wants}, the message "
                               f"has {has} (the profile allows 1 to {MAX_CERTIFICATES} X509Certificate)")
    for element, tag in zip(elements, tags, strict=True):
        names = element.keys()
        if names:
            allowed = _ALLOWED_ATTRIBUTES[tag]
            for name in names:
                if name not in allowed:
                    raise SignatureRefused(f"{_name(tag)} carries attribute {_name(name)}, which the profile does "
                                           "not accept")
        if tag not in _LEAVES and _is_text(element.text):
            raise SignatureRefused(f"{_name(tag)} carries text between its elements")
        if _is_text(element.tail) and element is not signature:
            raise SignatureRefused(f"{_name(element.getparent().tag)} carries text between its elements")
    return elements


def _is_text(text: str | None) -> bool:
    """Whether ``text`` holds more than whitespace."""
    return bool(text) and not text.isspace()  # type: ignore[union-attr]


def _algorithm(element: Any, accepted: Sequence[str], what: str) -> str:
    if (element.text or "").strip():
        raise SignatureRefused(f"{what} carries text")
    algorithm = element.get("Algorithm")
    if algorithm not in accepted:
        raise SignatureRefused(f"{what} Algorithm {str(algorithm)[:100]!r} is not accepted; the profile accepts "
                               f"{', '.join(accepted)}")
    return str(algorithm)


def _ids(root: Any, *values: str) -> dict[str, set[Any]]:
    """For each of ``values``: the distinct elements carrying it as an Id (see ``_ID_ATTRIBUTES``)."""
    found: dict[str, set[Any]] = {value: set() for value in values}
    for attribute in _ID_ATTRIBUTES(root, first=values[0], second=values[-1]):
        found[str(attribute)].add(attribute.getparent())
    return found


def parse_timestamp(text: str) -> datetime:
    """An xs:dateTime with a UTC offset ('Z' or ±hh:mm), as the ReplayProtect timestamp must be."""
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise SignatureRefused(f"the ReplayProtect timestamp {text.strip()[:40]!r} is not a date-time with a UTC "
                               "offset (e.g. 2030-01-01T17:00:00.000Z)")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    microsecond = int((match[7] or "0")[:6].ljust(6, "0"))
    offset = match[8]
    try:
        zone = UTC if offset == "Z" else timezone((-1 if offset[0] == "-" else 1) * timedelta(
            hours=int(offset[1:3]), minutes=int(offset[4:6])))
        return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=zone)
    except ValueError as error:
        raise SignatureRefused(f"the ReplayProtect timestamp {text.strip()[:40]!r} is not a valid date-time: "
                               f"{error}") from None


def _canonical(element: Any, algorithm: str) -> bytes:
    try:
        return bytes(etree.tostring(element, method="c14n", exclusive=algorithm == EXCLUSIVE_C14N_1_0,
                                    with_comments=False))
    except etree.C14NError as error:  # e.g. a relative namespace URI, which C14N 1.0 does not define
        raise SignatureRefused(f"{_name(element.tag)} cannot be canonicalised: {error}") from None


def _base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureRefused(f"{what} is not base64") from None


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _key_name(key: Any) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size} bit"
    return type(key).__name__


def _name(tag: str) -> str:
    namespace, _, local = tag.rpartition("}")
    prefix = {"{" + DSIG_NAMESPACE: "ds:", "{" + OADR_NAMESPACE: "oadr:", "{" + REPLAY_NAMESPACE: "dsp:"}.get(
        namespace, f"{namespace}}}" if namespace else "")
    return f"{prefix}{local}"


def _names(tags: Sequence[str]) -> str:
    return "(" + ", ".join(_name(str(tag)) for tag in tags) + ")" if tags else "nothing"


_ENVELOPE_START = f'<oadr:oadrPayload xmlns:oadr="{OADR_NAMESPACE}">'
_ENVELOPE_END = "</oadr:oadrPayload>"
_PARSER = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False)


def signed_object_document(root: Any) -> bytes:
    """The message's oadrSignedObject alone in an oadrPayload envelope, as bytes for a payload reader (openleadr's
    xmltodict). Reading the payload from this, rather than from the whole body again, means it comes from the
    very element the signature check verified, as lxml holds it (no second parser to disagree), and a
    signature's few kilobytes are not walked in Python. Raises ``ValueError`` without an oadrSignedObject."""
    signed_object = root.find(SIGNED_OBJECT)
    if signed_object is None:
        raise ValueError("the oadrPayload holds no oadrSignedObject")
    return _ENVELOPE_START.encode() + etree.tostring(signed_object) + _ENVELOPE_END.encode()


# ------------------------------------------------------------------------------------------------------ sign


@dataclass(frozen=True)
class PreparedObject:
    """An oadrSignedObject checked and digested once (``prepare_signed_object``), for a message sent many times
    that must still be signed afresh each time (a new ReplayProtect): the signer then only digests the
    ReplayProtect and signs the SignedInfo."""

    text: str
    digest: str
    """Base64 SHA-256 of its C14N 1.0 form inside the oadrPayload envelope."""


def prepare_signed_object(signed_object: str) -> PreparedObject:
    """Check ``signed_object`` (one ``oadr:oadrSignedObject`` with ``oadr:Id="oadrSignedObject"``, as text) and take
    its digest in the document the receiver gets: the envelope's namespace is in scope (C14N 1.0)."""
    try:
        document = etree.fromstring(f"{_ENVELOPE_START}{signed_object}{_ENVELOPE_END}", _PARSER)
    except etree.XMLSyntaxError as error:
        raise ValueError(f"the signed object is not well-formed XML: {error}") from None
    if len(document) != 1 or document[0].tag != SIGNED_OBJECT or \
            document[0].get(SIGNED_OBJECT_ID_ATTRIBUTE) != SIGNED_OBJECT_ID:
        raise ValueError(f'the signed object must be one oadr:oadrSignedObject with oadr:Id="{SIGNED_OBJECT_ID}"')
    return PreparedObject(signed_object, _digest(_canonical(document[0], C14N_1_0)))


class MessageSigner:
    """Signs messages of the profile: C14N 1.0, SHA-256, ECDSA P-256 or RSA 2048+ with SHA-256, the certificate
    (and ``chain``) in KeyInfo. The key is given parsed, once. ``sign`` returns the whole oadrPayload document:
    the signer writes the envelope itself, so the canonical forms it signs are those the receiver computes."""

    def __init__(self, *, certificate: x509.Certificate, private_key: Any,
                 chain: Sequence[x509.Certificate] = ()) -> None:
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            if not isinstance(private_key.curve, ec.SECP256R1):
                raise ValueError(f"cannot sign with an EC {private_key.curve.name} key; the profile uses P-256")
            self.signature_method = ECDSA_SHA256
        elif isinstance(private_key, rsa.RSAPrivateKey):
            if private_key.key_size < MIN_RSA_BITS:
                raise ValueError(f"cannot sign with a {private_key.key_size}-bit RSA key; at least {MIN_RSA_BITS}")
            self.signature_method = RSA_SHA256
        else:
            raise ValueError(f"cannot sign XML with a {type(private_key).__name__}; use an EC P-256 or RSA key")
        if certificate.public_key().public_numbers() != private_key.public_key().public_numbers():
            raise ValueError("the certificate does not belong to the private key")
        if len(chain) + 1 > MAX_CERTIFICATES:
            raise ValueError(f"at most {MAX_CERTIFICATES - 1} chain certificates go with the signature")
        self.certificate = certificate
        self.fingerprint_sha256 = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
        self._key = private_key
        self._key_info = "<ds:KeyInfo><ds:X509Data>" + "".join(
            "<ds:X509Certificate>" + base64.b64encode(c.public_bytes(Encoding.DER)).decode("ascii")
            + "</ds:X509Certificate>" for c in (certificate, *chain)) + "</ds:X509Data></ds:KeyInfo>"

    def sign(self, signed_object: str | PreparedObject, *, now: datetime, nonce: str | None = None) -> str:
        """The signed oadrPayload around ``signed_object`` (an ``oadr:oadrSignedObject`` element as text, carrying
        ``oadr:Id="oadrSignedObject"``, or that text prepared once by ``prepare_signed_object``), with ReplayProtect
        timestamp ``now`` (aware) and ``nonce`` (random when None)."""
        if now.tzinfo is None:
            raise ValueError(f"now {now.isoformat()} has no UTC offset")
        nonce = secrets.token_hex(16) if nonce is None else nonce
        if not re.fullmatch(r"[A-Za-z0-9+/=_.\-]{1,256}", nonce):
            raise ValueError(f"nonce {nonce[:40]!r} must be 1 to 256 letters, digits or +/=_.-")
        prepared = signed_object if isinstance(signed_object, PreparedObject) else prepare_signed_object(signed_object)
        signed_object, body_digest = prepared.text, prepared.digest
        timestamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # Written in canonical form, so the canonical bytes are known without a parse. In the document the
        # Object and SignedInfo inherit xmlns:ds (the Signature) and xmlns:oadr (the envelope); C14N 1.0 puts
        # both on each as the apex of its canonical form.
        properties = (f'<ds:Object Id="{PROPERTIES_ID}"><ds:SignatureProperties><ds:SignatureProperty '
                      f'Target="#{SIGNATURE_ID}"><dsp:ReplayProtect xmlns:dsp="{REPLAY_NAMESPACE}"><dsp:timestamp>'
                      f'{timestamp}</dsp:timestamp><dsp:nonce>{nonce}</dsp:nonce></dsp:ReplayProtect>'
                      "</ds:SignatureProperty></ds:SignatureProperties></ds:Object>")
        in_scope = f'xmlns:ds="{DSIG_NAMESPACE}" xmlns:oadr="{OADR_NAMESPACE}"'
        properties_digest = _digest(properties.replace("<ds:Object ", f"<ds:Object {in_scope} ", 1).encode())
        references = "".join(
            f'<ds:Reference URI="#{uri}"><ds:Transforms><ds:Transform Algorithm="{C14N_1_0}"></ds:Transform>'
            f'</ds:Transforms><ds:DigestMethod Algorithm="{SHA256}"></ds:DigestMethod><ds:DigestValue>{digest}'
            "</ds:DigestValue></ds:Reference>"
            for uri, digest in ((SIGNED_OBJECT_ID, body_digest), (PROPERTIES_ID, properties_digest)))
        signed_info_body = (f'<ds:CanonicalizationMethod Algorithm="{C14N_1_0}"></ds:CanonicalizationMethod>'
                            f'<ds:SignatureMethod Algorithm="{self.signature_method}"></ds:SignatureMethod>'
                            f"{references}</ds:SignedInfo>")
        signature_value = base64.b64encode(self._sign(f"<ds:SignedInfo {in_scope}>{signed_info_body}".encode()))
        return (f'<?xml version="1.0" encoding="utf-8"?>\n{_ENVELOPE_START}'
                f'<ds:Signature xmlns:ds="{DSIG_NAMESPACE}" Id="{SIGNATURE_ID}"><ds:SignedInfo>{signed_info_body}'
                f"<ds:SignatureValue>{signature_value.decode('ascii')}</ds:SignatureValue>{self._key_info}"
                f"{properties}</ds:Signature>{signed_object}{_ENVELOPE_END}")

    def _sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return bytes(self._key.sign(data, padding.PKCS1v15(), hashes.SHA256()))


def _digest(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
