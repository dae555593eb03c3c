"""``protocol.oadr20b.xmldsig``: the 2.0b XML-signature profile (PROFILE §12.5), signed and verified without signxml.

Interop both ways with signxml and openleadr, a corpus of tampered messages (``tests/support/signatures.py``) of
which every one is refused with a reason naming the problem, and hypothesis mutations: whatever the verifier
accepts is exactly what was signed, and any change of a signed value is refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree
from openleadr import messaging, utils
from openleadr.messaging import create_message
from signxml import XMLVerifier
from support.signatures import (
    NONCE,
    NOW,
    Keys,
    make_keys,
    ours,
    signed_object,
    signxml_message,
    tampered_corpus,
)

from protocol import BandwidthInterval, CapacityBandwidth, Firmness
from protocol.oadr20b import encode_event
from protocol.oadr20b.xmldsig import (
    EXCLUSIVE_C14N_1_0,
    MessageSigner,
    NotSigned,
    SignatureRefused,
    SignatureVerifier,
    VerifiedSignature,
    parse_timestamp,
    prepare_signed_object,
)

PARSER = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)
EC = make_keys("ec")
RSA = make_keys("rsa")
OK = {"response_code": 200, "response_description": "OK", "request_id": "r"}


def parse(message: str) -> Any:
    return etree.fromstring(message.encode(), PARSER)


def verify(message: str, *, now: datetime = NOW, verifier: SignatureVerifier | None = None) -> VerifiedSignature:
    return (verifier or SignatureVerifier()).verify(parse(message), now=now)


def _bodies() -> dict[str, str]:
    bandwidth = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=NOW + timedelta(minutes=15 * i), import_limit_kw=3 + i, export_limit_kw=3)
        for i in range(8)))
    event = encode_event(bandwidth, event_id="ev-1", modification_number=0, ven_id="ven-1", created_at=NOW,
                         modified_at=NOW, now=NOW - timedelta(hours=1), cancelled=False)
    return {
        "oadrPoll": signed_object("oadrPoll", ven_id="ven-1"),
        "oadrResponse": signed_object("oadrResponse", response=OK, ven_id="ven-1"),
        "oadrCreatePartyRegistration": signed_object(
            "oadrCreatePartyRegistration", request_id="r", ven_name="871687120000000011", http_pull_model=True,
            xml_signature=True, report_only=False, profile_name="2.0b", transport_name="simpleHttp",
            transport_address=None),
        "oadrDistributeEvent": signed_object("oadrDistributeEvent", response=OK, request_id="d", vtn_id="DSO-VTN",
                                             events=[event]),
    }


BODIES = _bodies()


def signxml_verifies(message: str, keys: Keys) -> None:
    """signxml's own verification (what openleadr calls), both references."""
    results = XMLVerifier().verify(parse(message), x509_cert=keys.certificate, expect_references=2)
    assert len(results) == 2


# ------------------------------------------------------------------------------------------------ honest


@pytest.mark.parametrize("keys", [EC, RSA], ids=["ec-p256", "rsa-2048"])
@pytest.mark.parametrize("message_type", list(BODIES))
def test_our_signatures_verify_with_ours_signxml_and_openleadr(keys: Keys, message_type: str) -> None:
    message = ours(BODIES[message_type], keys, nonce=None)
    verified = verify(message)
    assert verified.fingerprint_sha256 == keys.certificate.fingerprint(hashes.SHA256()).hex()
    assert verified.timestamp == NOW and len(verified.nonce) == 32
    signxml_verifies(message, keys)
    tree = messaging.validate_xml_schema(message)  # the 2.0b schema holds too
    messaging.validate_xml_signature(tree, cert_fingerprint=utils.certificate_fingerprint(keys.cert_pem))
    assert messaging.parse_message(message)[0] == message_type


@pytest.mark.parametrize("keys", [EC, RSA], ids=["ec-p256", "rsa-2048"])
def test_messages_signed_by_openleadr_verify_with_ours(keys: Keys) -> None:
    for message_type, payload in (("oadrPoll", {"ven_id": "ven-1"}), ("oadrResponse", {"response": OK,
                                                                                        "ven_id": "ven-1"})):
        message = create_message(message_type, cert=keys.cert_pem, key=keys.key_pem, **payload)
        verified = verify(message)
        assert verified.fingerprint_sha256 == keys.certificate.fingerprint(hashes.SHA256()).hex()
        assert abs(verified.timestamp - datetime.now(UTC)) < timedelta(minutes=5)


def test_exclusive_canonicalisation_and_a_certificate_chain_are_accepted() -> None:
    ca = make_keys("ec", name="ca")
    message = signxml_message(BODIES["oadrDistributeEvent"], EC, c14n=EXCLUSIVE_C14N_1_0, chain=[ca.certificate])
    verified = verify(message)
    assert verified.fingerprint_sha256 == EC.certificate.fingerprint(hashes.SHA256()).hex()  # the first one signs
    assert verified.nonce == NONCE
    chained = ours(BODIES["oadrPoll"], EC, chain=[ca.certificate])
    signxml_verifies(chained, EC)
    assert verify(chained).certificate == EC.certificate


def test_a_round_trip_through_a_parser_keeps_the_signature_valid() -> None:
    """Serialisation details that canonicalisation removes (quotes, empty elements, line breaks between the
    payload's children as openleadr's envelope writes them) do not matter."""
    message = ours(BODIES["oadrDistributeEvent"], EC)
    rewritten = etree.tostring(parse(message)).decode()
    assert rewritten != message
    assert verify(rewritten).nonce == NONCE
    spaced = message.replace("<ds:Signature ", "\n<ds:Signature ").replace("<oadr:oadrSignedObject",
                                                                           "\n  <oadr:oadrSignedObject")
    assert verify(spaced).nonce == NONCE


def test_a_valid_signature_by_another_key_names_that_key() -> None:
    """The verifier says who signed; that this signer may speak for the message is the receiver's check (the
    certificate of the TLS connection, the enrolment: tests/test_dso_vtn_signatures.py)."""
    other = make_keys("ec", name="other")
    verified = verify(ours(BODIES["oadrPoll"], other))
    assert verified.fingerprint_sha256 == other.certificate.fingerprint(hashes.SHA256()).hex()
    assert verified.fingerprint_sha256 != EC.certificate.fingerprint(hashes.SHA256()).hex()


def test_replay_protect_timestamps_may_carry_any_utc_offset() -> None:
    assert parse_timestamp("2030-06-01T14:00:00+02:00") == NOW
    assert parse_timestamp(" 2030-06-01T12:00:00.123456789Z ") == NOW + timedelta(microseconds=123456)
    assert parse_timestamp("2030-06-01T07:30:00-04:30").tzinfo == timezone(-timedelta(hours=4, minutes=30))
    for bad in ("2030-06-01T12:00:00", "2030-06-01 12:00:00Z", "2030-02-30T12:00:00Z", "2030-06-01T25:00:00Z", ""):
        with pytest.raises(SignatureRefused, match="timestamp"):
            parse_timestamp(bad)


# ------------------------------------------------------------------------------------------------ tampered


CORPUS = {case.name: case for case in tampered_corpus(EC)}


def test_the_corpus_is_built_from_an_honest_message() -> None:
    verify(ours(BODIES["oadrPoll"], EC))
    assert len(CORPUS) >= 50


@pytest.mark.parametrize("name", list(CORPUS))
def test_every_tampered_message_is_refused_with_its_reason(name: str) -> None:
    case = CORPUS[name]
    with pytest.raises(SignatureRefused) as refused:
        verify(case.message)
    assert case.words in refused.value.reason, refused.value.reason


def test_a_message_full_of_duplicate_ids_is_refused_in_one_pass() -> None:
    """Tens of thousands of elements reusing a referenced Id (a 1 MiB message holds that many): refused, and
    resolved in libxml2 in one linear pass (a pairwise comparison would take minutes here)."""
    honest = ours(BODIES["oadrPoll"], EC)
    many = honest.replace("</oadr:oadrPoll>", '<x:d xmlns:x="urn:x" Id="prop"/>' * 40_000 + "</oadr:oadrPoll>")
    assert len(many) < 1024 * 1024 * 2
    with pytest.raises(SignatureRefused, match="matches 40001 elements"):
        verify(many)


def test_an_unsigned_message_is_told_apart() -> None:
    with pytest.raises(NotSigned, match="not signed"):
        verify(CORPUS["stripped signature"].message)


def test_the_signing_certificate_must_be_valid_at_the_given_time() -> None:
    message = ours(BODIES["oadrPoll"], EC)
    for now in (EC.certificate.not_valid_before_utc - timedelta(seconds=1),
                EC.certificate.not_valid_after_utc + timedelta(seconds=1)):
        with pytest.raises(SignatureRefused, match="signing certificate is valid from"):
            verify(message, now=now)
    with pytest.raises(ValueError, match="UTC offset"):
        verify(message, now=NOW.replace(tzinfo=None))


def test_the_verifier_changes_nothing_in_the_tree_and_caches_a_bounded_number_of_certificates() -> None:
    verifier = SignatureVerifier(max_cached_certificates=2)
    signers = [EC, make_keys("ec", name="b"), make_keys("ec", name="c")]
    for keys in signers * 2:
        tree = parse(ours(BODIES["oadrPoll"], keys))
        before = etree.tostring(tree)
        assert verifier.verify(tree, now=NOW).certificate == keys.certificate
        assert etree.tostring(tree) == before
        assert len(verifier._certificates) <= 2


def test_the_signer_refuses_keys_and_objects_outside_the_profile() -> None:
    with pytest.raises(ValueError, match="P-256"):
        MessageSigner(certificate=make_keys("ec384").certificate, private_key=ec.generate_private_key(ec.SECP384R1()))
    small = make_keys("rsa1024")
    with pytest.raises(ValueError, match="at least 2048"):
        MessageSigner(certificate=small.certificate, private_key=small.key)
    with pytest.raises(ValueError, match="does not belong"):
        MessageSigner(certificate=RSA.certificate, private_key=EC.key)
    signer = MessageSigner(certificate=EC.certificate, private_key=EC.key)
    with pytest.raises(ValueError, match='oadr:Id="oadrSignedObject"'):
        signer.sign(BODIES["oadrPoll"].replace(' oadr:Id="oadrSignedObject"', ""), now=NOW)
    with pytest.raises(ValueError, match="well-formed"):
        signer.sign("<oadr:oadrSignedObject", now=NOW)
    with pytest.raises(ValueError, match="UTC offset"):
        signer.sign(BODIES["oadrPoll"], now=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="nonce"):
        signer.sign(BODIES["oadrPoll"], now=NOW, nonce="<x/>")


def test_an_object_prepared_once_is_signed_as_the_text_would_be_and_afresh_each_time() -> None:
    signer = MessageSigner(certificate=EC.certificate, private_key=EC.key)
    prepared = prepare_signed_object(BODIES["oadrResponse"])
    from_text = signer.sign(BODIES["oadrResponse"], now=NOW, nonce="n-1")
    from_prepared = signer.sign(prepared, now=NOW, nonce="n-1")
    # ECDSA signatures are randomised: everything but the SignatureValue is the same, and both verify.
    value = "<ds:SignatureValue>"
    assert from_text.split(value)[0] == from_prepared.split(value)[0]
    assert from_text.split("</ds:SignatureValue>")[1] == from_prepared.split("</ds:SignatureValue>")[1]
    assert verify(from_prepared).nonce == "n-1"
    assert verify(signer.sign(prepared, now=NOW + timedelta(seconds=1))).timestamp == NOW + timedelta(seconds=1)
    with pytest.raises(ValueError, match='oadr:Id="oadrSignedObject"'):
        prepare_signed_object(BODIES["oadrPoll"].replace(' oadr:Id="oadrSignedObject"', ""))


# ------------------------------------------------------------------------------------------------ mutations


HONEST = {
    "ours-poll": ours(BODIES["oadrPoll"], EC),
    "ours-event-rsa": ours(BODIES["oadrDistributeEvent"], RSA),
    "openleadr-poll": signxml_message(BODIES["oadrPoll"], EC),
}
_ALPHABET = "abcdXYZ0189+/=-_. \n\t:#TZ" * 3 + "<>\"'&;!?[]"
"""Mostly characters that keep the document well-formed, so most edits reach the verifier."""


def _signed_content(message: str) -> tuple[bytes, Any]:
    tree = parse(message)
    return etree.tostring(tree[1], method="c14n", with_comments=False), messaging.parse_message(message)[1]


@settings(max_examples=1000, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(HONEST)), edits=st.lists(st.tuples(
    st.sampled_from(["replace", "insert", "delete"]), st.floats(0, 1, exclude_max=True),
    st.sampled_from(_ALPHABET)), min_size=1, max_size=3))
def test_whatever_is_accepted_after_random_edits_is_exactly_what_was_signed(
        name: str, edits: list[tuple[str, float, str]]) -> None:
    original = HONEST[name]
    message = original
    for operation, where, character in edits:
        at = int(where * len(message))
        message = {"replace": message[:at] + character + message[at + 1:],
                   "insert": message[:at] + character + message[at:],
                   "delete": message[:at] + message[at + 1:]}[operation]
    try:
        tree = parse(message)
    except etree.XMLSyntaxError:
        event("not well-formed")
        return  # a receiver refuses it before any signature check
    try:
        verified = SignatureVerifier().verify(tree, now=NOW)
    except SignatureRefused:
        event("refused")
        return
    event("accepted")
    expected = verify(original)
    assert (verified.timestamp, verified.nonce) == (expected.timestamp, expected.nonce)
    assert _signed_content(message) == _signed_content(original)
    # The key is the signer's. An edit of the certificate outside its key (its issuer's signature, say) can
    # survive; its fingerprint then differs, so it matches neither the TLS certificate nor an enrolment.
    assert verified.certificate.public_key() == expected.certificate.public_key()
    if verified.certificate != expected.certificate:
        assert verified.fingerprint_sha256 != expected.fingerprint_sha256


def _text_elements(tree: Any) -> list[Any]:
    """Every element whose text a reader uses: the signed object's leaves and the ReplayProtect values."""
    signature, body = tree[0], tree[1]
    leaves = [element for element in body.iter() if len(element) == 0]
    replay = [element for element in signature.iter() if element.tag.endswith(("}timestamp", "}nonce"))]
    return leaves + replay


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(name=st.sampled_from(sorted(HONEST)), index=st.integers(0, 10_000),
       value=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12))
def test_any_changed_signed_value_is_refused(name: str, index: int, value: str) -> None:
    tree = parse(HONEST[name])
    elements = _text_elements(tree)
    element = elements[index % len(elements)]
    if (element.text or "") == value:
        return
    element.text = value
    with pytest.raises(SignatureRefused):
        SignatureVerifier().verify(parse(etree.tostring(tree).decode()), now=NOW)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(name=st.sampled_from(sorted(HONEST)), index=st.integers(0, 10_000),
       value=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40))
def test_any_changed_attribute_of_signed_info_or_the_signed_object_is_refused(name: str, index: int,
                                                                              value: str) -> None:
    tree = parse(HONEST[name])
    attributes = [(element, key) for part in (tree[0][0], tree[1]) for element in part.iter()
                  for key in element.attrib]
    element, key = attributes[index % len(attributes)]
    if element.get(key) == value:
        return
    element.set(key, value)
    with pytest.raises(SignatureRefused):
        SignatureVerifier().verify(parse(etree.tostring(tree).decode()), now=NOW)


def test_the_certificate_in_a_message_is_the_one_reported() -> None:
    verified = verify(HONEST["openleadr-poll"])
    assert isinstance(verified.certificate, x509.Certificate)
    assert verified.certificate == EC.certificate
