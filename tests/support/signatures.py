"""Signed 2.0b messages and a corpus of tampered ones, for the XML-signature profile (PROFILE §12.5).

Honest messages come from three signers: ours (``protocol.oadr20b.xmldsig``), openleadr's ``create_message`` and
signxml configured the way openleadr uses it (with the algorithms changeable, so a *valid* signature with another
algorithm can be made). ``tampered_corpus`` derives from one honest message every attack the verifier must
refuse, each with words its refusal must contain. Used by ``tests/test_protocol_xmldsig.py`` (the verifier alone)
and ``tests/test_dso_vtn_signatures.py`` (a real VTN over mutual TLS).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from lxml import etree
from openleadr import messaging, preflight, utils
from signxml import XMLSigner, methods

from protocol.oadr20b import xmldsig
from protocol.oadr20b.xmldsig import C14N_1_0, DSIG_NAMESPACE, OADR_NAMESPACE, REPLAY_NAMESPACE

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
"""Inside every test certificate's validity unless a test says otherwise."""
NONCE = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Keys:
    key: Any
    certificate: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def der_base64(self) -> str:
        return base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()


def make_keys(kind: str = "ec", *, name: str = "ven", not_before: datetime = NOW - timedelta(days=365),
              not_after: datetime = NOW + timedelta(days=365)) -> Keys:
    """A self-signed certificate: ``kind`` is ec (P-256), ec384, rsa (2048) or rsa1024."""
    key: Any = {"ec": lambda: ec.generate_private_key(ec.SECP256R1()),
                "ec384": lambda: ec.generate_private_key(ec.SECP384R1()),
                "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
                "rsa1024": lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024)}[kind]()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(not_before)
                   .not_valid_after(not_after).sign(key, hashes.SHA256()))
    return Keys(key, certificate)


def keys_from_files(cert_path: Any, key_path: Any) -> Keys:
    return Keys(serialization.load_pem_private_key(key_path.read_bytes(), None),
                x509.load_pem_x509_certificate(cert_path.read_bytes()))


def signed_object(message_type: str, **payload: Any) -> str:
    """The oadrSignedObject of a message, as openleadr's templates render it."""
    checked = preflight.preflight_message(message_type, payload)
    return str(utils.flatten_xml(messaging.TEMPLATES.get_template(f"{message_type}.xml").render(**checked)))


def ours(body: str, keys: Keys, *, now: datetime = NOW, nonce: str | None = NONCE,
         chain: Sequence[x509.Certificate] = ()) -> str:
    return xmldsig.MessageSigner(certificate=keys.certificate, private_key=keys.key, chain=chain).sign(
        body, now=now, nonce=nonce)


def envelope(signature: str | None, body: str) -> str:
    return str(messaging.TEMPLATES.get_template("oadrPayload.xml").render(signature=signature, signed_object=body))


def replay_protect(timestamp: str, nonce: str) -> Any:
    element = etree.Element(f"{{{REPLAY_NAMESPACE}}}ReplayProtect", nsmap={"dsp": REPLAY_NAMESPACE},
                            attrib={"Id": "myid", "Target": "#mytarget"})
    etree.SubElement(element, f"{{{REPLAY_NAMESPACE}}}timestamp").text = timestamp
    etree.SubElement(element, f"{{{REPLAY_NAMESPACE}}}nonce").text = nonce
    return element


def signxml_message(body: str, keys: Keys | None, *, c14n: str = C14N_1_0, method: str | None = None,
                    digest: str = "sha256", chain: Sequence[x509.Certificate] = (), hmac_key: bytes | None = None,
                    properties: bool = True, now: datetime = NOW, nonce: str = NONCE) -> str:
    """What openleadr's ``create_message`` writes (signxml, detached, ReplayProtect), algorithms changeable."""
    if method is None:
        method = "ecdsa-sha256" if keys is not None and isinstance(keys.key, ec.EllipticCurvePrivateKey) \
            else "rsa-sha256"
    signer = XMLSigner(method=methods.detached, c14n_algorithm=c14n, signature_algorithm=method,
                       digest_algorithm=digest)
    signer.namespaces["oadr"] = OADR_NAMESPACE
    timestamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if hmac_key is not None:
        signature = signer.sign(etree.fromstring(body), key=hmac_key, reference_uri="#oadrSignedObject",
                                signature_properties=replay_protect(timestamp, nonce))
    else:
        assert keys is not None
        signature = signer.sign(etree.fromstring(body), key=keys.key, cert=[keys.certificate, *chain],
                                reference_uri="#oadrSignedObject",
                                signature_properties=replay_protect(timestamp, nonce) if properties else None)
    return envelope(etree.tostring(signature).decode(), body)


@dataclass(frozen=True)
class Tampered:
    name: str
    message: str
    words: str
    """Words the verifier's refusal contains."""


def _between(message: str, start: str, end: str) -> tuple[int, int]:
    first = message.index(start)
    return first, message.index(end, first) + len(end)


def _replace_element(message: str, start: str, end: str, new: str) -> str:
    first, last = _between(message, start, end)
    return message[:first] + new + message[last:]


def _one(message: str, old: str, new: str) -> str:
    assert message.count(old) >= 1, old
    return message.replace(old, new, 1)


def tampered_corpus(keys: Keys, *, ven_id: str = "ven-1", now: datetime = NOW) -> list[Tampered]:
    """Every way of breaking the profile this suite knows, derived from an honest poll signed by ``keys`` for
    ``ven_id`` at ``now``. Each must be refused; ``words`` is part of the verifier's reason."""
    body = signed_object("oadrPoll", ven_id=ven_id)
    honest = ours(body, keys, now=now, nonce=NONCE)
    other = make_keys("ec", name="other", not_before=now - timedelta(days=1), not_after=now + timedelta(days=1))
    forged_body = body.replace(f"<ei:venID>{ven_id}</ei:venID>", "<ei:venID>ven-forged</ei:venID>")
    signature = honest[slice(*_between(honest, "<ds:Signature", "</ds:Signature>"))]
    signed_info = signature[slice(*_between(signature, "<ds:SignedInfo>", "</ds:SignedInfo>"))]
    first_reference = signed_info[slice(*_between(signed_info, "<ds:Reference", "</ds:Reference>"))]
    timestamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    transform = f'<ds:Transform Algorithm="{C14N_1_0}"></ds:Transform>'
    digest_value = re.search(r"<ds:DigestValue>([^<]*)</ds:DigestValue>", honest)
    assert digest_value is not None
    signature_value = re.search(r"<ds:SignatureValue>([^<]*)</ds:SignatureValue>", honest)
    assert signature_value is not None
    raw = base64.b64decode(signature_value[1])
    flipped = base64.b64encode(raw[:10] + bytes([raw[10] ^ 1]) + raw[11:]).decode()
    der_signature = base64.b64encode(encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                                                  int.from_bytes(raw[32:], "big"))).decode()
    forged_digest = base64.b64encode(hashlib.sha256(etree.tostring(
        etree.fromstring(f'<oadr:oadrPayload xmlns:oadr="{OADR_NAMESPACE}">{forged_body}</oadr:oadrPayload>')[0],
        method="c14n", with_comments=False)).digest()).decode()
    ec384 = make_keys("ec384", not_before=now - timedelta(days=1), not_after=now + timedelta(days=1))
    rsa1024 = make_keys("rsa1024", not_before=now - timedelta(days=1), not_after=now + timedelta(days=1))
    expired = make_keys("ec", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    unsigned = envelope(None, body)
    in_object = "</dsp:ReplayProtect></ds:SignatureProperty>"

    cases = [
        # What is signed, changed
        Tampered("changed payload", honest.replace(f">{ven_id}<", ">ven-forged<"), "digest of the message's"),
        Tampered("changed nonce", honest.replace(NONCE, NONCE[::-1]), "digest of the signature's ds:Object"),
        Tampered("changed timestamp", honest.replace(timestamp, (now + timedelta(seconds=1)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")), "digest of the signature's ds:Object"),
        Tampered("payload changed and its digest recomputed",
                 _one(honest.replace(f">{ven_id}<", ">ven-forged<"), digest_value[1], forged_digest),
                 "SignatureValue does not verify"),
        Tampered("signature value changed", honest.replace(signature_value[1], flipped),
                 "SignatureValue does not verify"),
        Tampered("signature transplanted onto another message", envelope(signature, forged_body),
                 "digest of the message's"),
        Tampered("stripped signature", unsigned, "not signed"),
        Tampered("another certificate in KeyInfo", honest.replace(keys.der_base64, other.der_base64),
                 "SignatureValue does not verify"),
        Tampered("not a certificate in KeyInfo", honest.replace(keys.der_base64, base64.b64encode(b"x" * 40).decode()),
                 "not a certificate"),
        Tampered("oversized certificate", honest.replace(keys.der_base64, keys.der_base64 + "A" * 20_000),
                 "at most 16384"),
        Tampered("certificate with an unknown curve", honest.replace(keys.der_base64, _unknown_curve(keys)),
                 "not a certificate"),
        Tampered("certificate with an invalid X.509 version", honest.replace(keys.der_base64, _bad_version(keys)),
                 "not a certificate"),
        Tampered("expired signing certificate", ours(body, expired, now=now), "signing certificate is valid"),
        # Other algorithms (valid signatures made with them, so only the algorithm check stops them)
        Tampered("ecdsa-sha384", signxml_message(body, keys, method="ecdsa-sha384", now=now),
                 "SignatureMethod Algorithm"),
        Tampered("ecdsa-sha1 declared", honest.replace("xmldsig-more#ecdsa-sha256", "xmldsig-more#ecdsa-sha1"),
                 "SignatureMethod Algorithm"),
        Tampered("rsa-sha1 declared", honest.replace("http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
                                                     "http://www.w3.org/2000/09/xmldsig#rsa-sha1"),
                 "SignatureMethod Algorithm"),
        Tampered("hmac-sha256 keyed with the public certificate", _one(signxml_message(
            body, None, method="hmac-sha256", hmac_key=keys.cert_pem, now=now), "<ds:Object", "<ds:KeyInfo>"
            f"<ds:X509Data><ds:X509Certificate>{keys.der_base64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"
            "<ds:Object"), "SignatureMethod Algorithm"),
        Tampered("canonical XML 1.1", signxml_message(body, keys, c14n="http://www.w3.org/2006/12/xml-c14n11",
                                                      now=now), "CanonicalizationMethod Algorithm"),
        Tampered("C14N with comments", signxml_message(body, keys, c14n=C14N_1_0 + "#WithComments", now=now),
                 "CanonicalizationMethod Algorithm"),
        Tampered("sha512 digests", signxml_message(body, keys, digest="sha512", now=now), "DigestMethod Algorithm"),
        Tampered("sha1 digest declared", honest.replace("http://www.w3.org/2001/04/xmlenc#sha256",
                                                        "http://www.w3.org/2000/09/xmldsig#sha1"),
                 "DigestMethod Algorithm"),
        Tampered("P-384 key", signxml_message(body, ec384, now=now), "must be EC P-256"),
        Tampered("RSA 1024 key", signxml_message(body, rsa1024, now=now), "at least 2048"),
        Tampered("ecdsa-sha256 declared for an RSA certificate", honest.replace(keys.der_base64, _rsa_der(now)),
                 "must be EC P-256"),
        Tampered("DER-encoded ECDSA signature value", honest.replace(signature_value[1], der_signature),
                 "SignatureValue has"),
        # References and transforms
        Tampered("no ReplayProtect reference", signxml_message(body, keys, properties=False, now=now),
                 "the ds:Signature is not the profile's"),
        Tampered("a third reference", _one(honest, "</ds:SignedInfo>", first_reference + "</ds:SignedInfo>"),
                 "the ds:Signature is not the profile's"),
        Tampered("enveloped-signature transform added", _one(
            honest, transform, '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature">'
            "</ds:Transform>" + transform), "the ds:Signature is not the profile's"),
        Tampered("XPath transform", _one(
            honest, transform, '<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><ds:XPath>'
            "not(ancestor-or-self::ds:Signature)</ds:XPath></ds:Transform>"), "the ds:Signature is not the profile's"),
        Tampered("XSLT transform", _one(honest, transform, '<ds:Transform Algorithm="http://www.w3.org/TR/1999/'
                                                           'REC-xslt-19991116"></ds:Transform>'),
                 "Transform Algorithm"),
        Tampered("exclusive C14N with InclusiveNamespaces", _one(
            honest, transform, '<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"><ec:Inclusive'
            'Namespaces xmlns:ec="http://www.w3.org/2001/10/xml-exc-c14n#" PrefixList="oadr"/></ds:Transform>'),
                 "the ds:Signature is not the profile's"),
        Tampered("whole-document reference", _one(honest, 'URI="#oadrSignedObject"', 'URI=""'), "URI ''"),
        Tampered("XPointer reference", _one(honest, 'URI="#oadrSignedObject"', 'URI="#xpointer(/)"'), "URI"),
        Tampered("external reference", _one(honest, 'URI="#oadrSignedObject"', 'URI="http://example.com/x"'),
                 "URI"),
        Tampered("reference to a missing Id", _one(honest, 'URI="#prop"', 'URI="#nothing"'), "matches 0 elements"),
        Tampered("references swapped", honest.replace('URI="#oadrSignedObject"', 'URI="#swap"').replace(
            'URI="#prop"', 'URI="#oadrSignedObject"').replace('URI="#swap"', 'URI="#prop"'), "points at"),
        # Signature wrapping: the signed element moved, duplicated or its Id reused
        Tampered("signed object moved under a forged one", envelope(signature, forged_body.replace(
            ' oadr:Id="oadrSignedObject"', "", 1).replace("</oadr:oadrPoll>", body + "</oadr:oadrPoll>")),
                 "points at oadr:oadrSignedObject, not at the message's"),
        Tampered("signed object moved into the signature", envelope(
            signature.replace(in_object, "</dsp:ReplayProtect>" + body + "</ds:SignatureProperty>"),
            forged_body.replace(' oadr:Id="oadrSignedObject"', "", 1)), "the ds:Signature is not the profile's"),
        Tampered("Id of the signed object reused inside a forged one", envelope(signature, forged_body.replace(
            "</oadr:oadrPoll>", body + "</oadr:oadrPoll>")), "matches 2 elements"),
        Tampered("Id of the ReplayProtect object reused in the payload", honest.replace(
            f"<ei:venID>{ven_id}</ei:venID>", f'<ei:venID Id="prop">{ven_id}</ei:venID>'), "matches 2 elements"),
        Tampered("two signed objects", envelope(signature, body + forged_body), "the oadrPayload holds"),
        Tampered("signature after the signed object", envelope(None, body + signature), "the oadrPayload holds"),
        Tampered("a second signature inside the payload", envelope(signature, body.replace(
            "</oadr:oadrPoll>", signature + "</oadr:oadrPoll>")), "2 ds:Signature"),
        Tampered("the signed object alone", body, "root element"),
        # KeyInfo other than the certificate
        Tampered("KeyValue instead of X509Data", _replace_element(
            honest, "<ds:X509Data>", "</ds:X509Data>", "<ds:KeyValue><ds:RSAKeyValue><ds:Modulus>AA==</ds:Modulus>"
            "<ds:Exponent>AQAB</ds:Exponent></ds:RSAKeyValue></ds:KeyValue>"), "the ds:Signature is not the profile's"),
        Tampered("KeyName beside X509Data", _one(honest, "<ds:KeyInfo>", "<ds:KeyInfo><ds:KeyName>vtn</ds:KeyName>"),
                 "the ds:Signature is not the profile's"),
        Tampered("X509IssuerSerial in X509Data", _one(
            honest, "</ds:X509Data>", "<ds:X509IssuerSerial><ds:X509IssuerName>CN=x</ds:X509IssuerName>"
            "<ds:X509SerialNumber>1</ds:X509SerialNumber></ds:X509IssuerSerial></ds:X509Data>"),
                 "the ds:Signature is not the profile's"),
        Tampered("five certificates", _one(honest, "</ds:X509Data>", "".join(
            f"<ds:X509Certificate>{keys.der_base64}</ds:X509Certificate>" for _ in range(4)) + "</ds:X509Data>"),
                 "the ds:Signature is not the profile's"),
        # ReplayProtect outside the profile
        Tampered("no nonce", re.sub(r"<dsp:nonce>[^<]*</dsp:nonce>", "", honest), "the ds:Signature is not"),
        Tampered("an extra property", _one(honest, in_object, in_object.replace(
            "</ds:SignatureProperty>", "") + "<x:y xmlns:x=\"urn:x\"/></ds:SignatureProperty>"),
                 "the ds:Signature is not"),
        Tampered("timestamp without UTC offset", honest.replace(timestamp, timestamp.rstrip("Z")), "timestamp"),
        Tampered("timestamp not a date", honest.replace(timestamp, "yesterday"), "timestamp"),
        Tampered("empty nonce", honest.replace(NONCE, ""), "nonce has 0 characters"),
        Tampered("huge nonce", honest.replace(NONCE, "n" * 300), "nonce has 300 characters"),
        # What a reader sees but the signature does not cover
        Tampered("comment inside the venID", honest.replace(f">{ven_id}<", f">{ven_id[:2]}<!-- -->{ven_id[2:]}<"),
                 "comment"),
        Tampered("comment inside the nonce", honest.replace(NONCE, NONCE[:4] + "<!---->" + NONCE[4:]), "comment"),
        Tampered("processing instruction in the payload", honest.replace("</oadr:oadrPoll>",
                                                                         "<?evil x?></oadr:oadrPoll>"),
                 "processing instruction"),
        Tampered("relative namespace URI in the payload", honest.replace(
            "<oadr:oadrPoll ", '<oadr:oadrPoll xmlns:x="relative" '), "cannot be canonicalised"),
        Tampered("text in SignedInfo", _one(honest, "<ds:SignedInfo>", "<ds:SignedInfo>x"), "text"),
        Tampered("Type attribute on a Reference", _one(honest, 'URI="#prop"', 'URI="#prop" Type="urn:x"'),
                 "attribute"),
        Tampered("MimeType on the Object", _one(honest, '<ds:Object Id="prop"', '<ds:Object Id="prop" '
                                                                                 'MimeType="text/xml"'), "attribute"),
        Tampered("not base64 DigestValue", _one(honest, digest_value[1], "!!!!"), "base64"),
    ]
    names = [case.name for case in cases]
    assert len(names) == len(set(names))
    return cases


def _unknown_curve(keys: Keys) -> str:
    """The certificate with its curve OID (prime256v1, 1.2.840.10045.3.1.7) turned into an unknown one."""
    der = keys.certificate.public_bytes(serialization.Encoding.DER)
    prime256v1 = bytes.fromhex("06082a8648ce3d030107")
    assert prime256v1 in der
    return base64.b64encode(der.replace(prime256v1, prime256v1[:-1] + b"\x6b")).decode()


def _bad_version(keys: Keys) -> str:
    """The certificate with version 63 (cryptography raises InvalidVersion, not ValueError: found by fuzzing)."""
    der = keys.certificate.public_bytes(serialization.Encoding.DER)
    v3 = bytes.fromhex("a003020102")
    assert der.find(v3) < 12
    return base64.b64encode(der.replace(v3, bytes.fromhex("a00302013e"), 1)).decode()


def _rsa_der(now: datetime) -> str:
    return make_keys("rsa", not_before=now - timedelta(days=1), not_after=now + timedelta(days=1)).der_base64


__all__ = ["DSIG_NAMESPACE", "NONCE", "NOW", "Keys", "Tampered", "make_keys", "ours", "signed_object",
           "signxml_message", "tampered_corpus"]
