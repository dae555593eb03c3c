"""One test per piece of openleadr the VTN relies on beyond its documented API
(``dso_server/transport/oadr20b/openleadr_adapter.py``): an openleadr or lxml upgrade that breaks one shows here."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from openleadr import messaging, utils
from support.hostile import poll
from support.security import LabPki

from dso_server.transport.oadr20b import openleadr_adapter as oadr
from protocol import BandwidthInterval, CapacityBandwidth, Firmness, make_ean18
from protocol.oadr20b import encode_event, encode_telemetry_report, hems_report_metadata
from protocol.reports import Telemetry, TelemetryInterval

ROOT = Path(__file__).parent.parent
EAN = make_ean18("87168712000000001")
T0 = datetime(2030, 1, 1, 17, tzinfo=UTC)
ENTITY_POLL = poll("&x;", prolog='<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE oadrPayload '
                                 '[<!ENTITY x "ven-1">]>\n')

_PROBE = """
import sys
from lxml import etree
from {module} import harden_xml_parser, xml_parser_is_hardened
from openleadr import messaging
harden_xml_parser()
assert xml_parser_is_hardened()
try:
    tree = messaging.validate_xml_schema(sys.stdin.buffer.read())
except etree.XMLSyntaxError as error:
    print("refused", error)
else:
    print("parsed; venID text:", repr(tree.findtext(".//{{http://docs.oasis-open.org/ns/energyinterop/201110}}venID")))
"""


@pytest.mark.parametrize("module", ["dso_server.transport.oadr20b.openleadr_adapter",
                                    "hems_client.transport.oadr20b.openleadr_adapter"])
def test_the_hardened_parser_survives_an_entity_even_without_the_guard(module: str) -> None:
    """messaging.XML_PARSER replaced: should anything reach openleadr's validate_xml_schema without the guard,
    the installed lxml must not crash (lxml 5.4-6.2 segfault here with openleadr's own parser) nor expand."""
    probe = subprocess.run([sys.executable, "-c", _PROBE.format(module=module)], input=ENTITY_POLL.encode(),
                           capture_output=True, timeout=60)
    assert probe.returncode == 0, (probe.returncode, probe.stderr.decode()[-2000:])
    assert b"ven-1" not in probe.stdout, probe.stdout  # the entity was not expanded


def test_only_the_adapters_import_openleadr() -> None:
    """The VTN's and the HEMS's reliance on openleadr is exactly what their adapters hold."""
    importers = set()
    for package in ("dso_server", "hems_client"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                    [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
                if any(name == "openleadr" or name.startswith("openleadr.") for name in names):
                    importers.add(str(path.relative_to(ROOT)))
    assert importers == {"dso_server/transport/oadr20b/openleadr_adapter.py",
                         "hems_client/transport/oadr20b/openleadr_adapter.py"}


def _ven_messages() -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    telemetry = Telemetry(intervals=(TelemetryInterval(start=T0, import_kw=2.5, export_kw=0.0),))
    return [
        ("oadrPoll", {"ven_id": "ven-1"}),
        ("oadrQueryRegistration", {"request_id": "q"}),
        ("oadrCreatePartyRegistration", {"request_id": "r", "ven_name": EAN, "http_pull_model": True,
                                         "xml_signature": False, "report_only": False, "profile_name": "2.0b",
                                         "transport_name": "simpleHttp", "transport_address": None}),
        ("oadrCancelPartyRegistration", {"request_id": "r", "registration_id": "reg-1", "ven_id": "ven-1"}),
        ("oadrRequestEvent", {"request_id": "r", "ven_id": "ven-1", "reply_limit": 5}),
        ("oadrCreatedEvent", {"ven_id": "ven-1", "response": {"response_code": 200, "response_description": "OK",
                                                              "request_id": None},
                              "event_responses": [{"response_code": 200, "response_description": "OK",
                                                   "request_id": "r", "event_id": "ev-1", "modification_number": 2,
                                                   "opt_type": "optIn"}]}),
        ("oadrRegisterReport", {"ven_id": "ven-1", "request_id": "r", "report_request_id": 0,
                                "reports": hems_report_metadata(resource_id=EAN, created_at=T0)}),
        ("oadrUpdateReport", {"ven_id": "ven-1", "request_id": "r", "reports": [
            encode_telemetry_report(telemetry, report_request_id="rr-1", created_at=T0)]}),
        ("oadrCreatedReport", {"ven_id": "ven-1", "pending_reports": [{"report_request_id": "rr-1"}],
                               "response": {"response_code": 200, "response_description": "OK", "request_id": "r"}}),
    ]


@pytest.mark.parametrize("message_type, payload", _ven_messages(), ids=[m for m, _ in _ven_messages()])
def test_parse_reads_each_message_a_ven_sends_into_the_fields_the_vtn_uses(message_type: str,
                                                                           payload: dict) -> None:  # type: ignore[type-arg]
    """messaging.validate_xml_schema + parse_message: the payload keys the VTN's handlers read."""
    parsed = oadr.parse(messaging.create_message(message_type, **payload).encode())
    assert parsed.message_type == message_type
    for key in ("ven_id", "ven_name", "request_id", "reply_limit", "registration_id"):
        if key in payload:
            assert str(parsed.payload[key]) == str(payload[key]), key
    if message_type == "oadrCreatedEvent":
        [answer] = parsed.payload["event_responses"]
        assert (answer["event_id"], answer["modification_number"], answer["opt_type"], answer["response_code"]) == (
            "ev-1", 2, "optIn", 200)
    if message_type in ("oadrRegisterReport", "oadrUpdateReport"):
        assert [r["report_specifier_id"] for r in parsed.payload["reports"]] == [
            r["report_specifier_id"] for r in payload["reports"]]
    if message_type == "oadrCreatedReport":
        assert parsed.payload["pending_reports"] == [{"report_request_id": "rr-1"}]


def test_parse_refuses_a_schema_valid_message_outside_its_envelope() -> None:
    with pytest.raises(oadr.NotOpenAdr, match="oadrPayload"):
        oadr.parse(b'<oadr:oadrPoll xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07" ei:schemaVersion="2.0b" '
                   b'xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110"><ei:venID>v</ei:venID>'
                   b"</oadr:oadrPoll>")


def _vtn_answers() -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    ok = {"response_code": 200, "response_description": "OK", "request_id": "r"}
    bandwidth = CapacityBandwidth(firmness=Firmness.FIRM, intervals=(
        BandwidthInterval(start=T0, import_limit_kw=3, export_limit_kw=3),))
    event = encode_event(bandwidth, event_id="ev-1", modification_number=0, ven_id="ven-1", created_at=T0,
                         modified_at=T0, now=T0 - timedelta(hours=1), cancelled=False)
    return [
        ("oadrResponse", {"response": ok, "ven_id": "ven-1"}),
        ("oadrCreatedPartyRegistration", {"response": ok, "ven_id": "ven-1", "registration_id": "reg-1",
                                          "vtn_id": "DSO-VTN", "profiles": [{"profile_name": "2.0b", "transports": [
                                              {"transport_name": "simpleHttp"}]}],
                                          "requested_oadr_poll_freq": timedelta(seconds=10)}),
        ("oadrDistributeEvent", {"response": ok, "request_id": "d", "vtn_id": "DSO-VTN", "events": [event]}),
        ("oadrDistributeEvent", {"response": {**ok, "response_code": 463}, "request_id": "d", "vtn_id": "DSO-VTN",
                                 "events": []}),
        ("oadrRegisteredReport", {"response": ok, "ven_id": "ven-1", "report_requests": []}),
        ("oadrUpdatedReport", {"response": ok, "ven_id": "ven-1"}),
        ("oadrCanceledPartyRegistration", {"response": ok, "ven_id": "ven-1", "registration_id": "reg-1"}),
        ("oadrRequestReregistration", {"ven_id": "ven-1", "vtn_id": "DSO-VTN"}),
    ]


@pytest.mark.parametrize("message_type, payload", _vtn_answers(), ids=[m for m, _ in _vtn_answers()])
def test_the_writer_renders_every_answer_as_schema_valid_2_0b(message_type: str,
                                                              payload: dict) -> None:  # type: ignore[type-arg]
    """messaging.TEMPLATES + preflight_message + flatten_xml: what the VTN sends validates against the XSD and
    reads back with the values given."""
    parsed = oadr.parse(oadr.MessageWriter().render(message_type, payload).encode())
    assert parsed.message_type == message_type
    if "events" in payload:
        assert len(parsed.payload.get("events") or []) == len(payload["events"])
    if "response" in payload:
        assert parsed.payload["response"]["response_code"] == payload["response"]["response_code"]


def _key_and_cert(pki: LabPki) -> tuple[object, bytes]:
    key = serialization.load_pem_private_key(pki.pki.vtn_key_path.read_bytes(), None)
    return key, pki.pki.vtn_cert_path.read_bytes()


def test_the_writer_signs_with_a_key_parsed_once_and_openleadr_verifies_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Signed answers (signxml, detached, C14N 1.0, ReplayProtect) verify with openleadr's own check, so a stock
    openleadr VEN configured with the VTN's fingerprint accepts them; no key is parsed per message."""
    key, cert = _key_and_cert(LabPki.create(tmp_path / "pki"))
    writer = oadr.MessageWriter(cert_pem=cert, private_key=key)

    def no_key_parsing(*_: object, **__: object) -> None:
        raise AssertionError("the signing key was parsed again for a message")

    monkeypatch.setattr(serialization, "load_pem_private_key", no_key_parsing)
    monkeypatch.setattr(messaging, "load_private_key", no_key_parsing)
    for _ in range(3):
        message = writer.render("oadrResponse", {"response": {"response_code": 200, "response_description": "OK",
                                                              "request_id": None}, "ven_id": "v"})
        tree = oadr.parse(message.encode()).tree
        messaging.validate_xml_signature(tree, cert_fingerprint=utils.certificate_fingerprint(cert))
    assert writer.fingerprint == utils.certificate_fingerprint(cert)


def test_verify_signature_names_the_signer_and_refuses_tampering(tmp_path: Path) -> None:
    """messaging.VERIFIER + utils.extract_pem_cert: the signer's certificate, the ReplayProtect read from the
    signed bytes; a changed body, a missing signature or one not covering the body are refused."""
    key, cert = _key_and_cert(LabPki.create(tmp_path / "pki"))
    now = datetime(2030, 1, 1, tzinfo=UTC)
    writer = oadr.MessageWriter(cert_pem=cert, private_key=key, now=lambda: now)
    message = writer.render("oadrPoll", {"ven_id": "ven-1"})
    signature = oadr.verify_signature(oadr.parse(message.encode()).tree)
    certificate = x509.load_pem_x509_certificate(cert)
    assert signature.fingerprint_sha256 == oadr.fingerprint_sha256(certificate.public_bytes(serialization.Encoding.DER))
    assert signature.timestamp == now and len(signature.nonce) == 32

    tampered = message.replace("<ei:venID>ven-1</ei:venID>", "<ei:venID>ven-2</ei:venID>")
    with pytest.raises(oadr.BadSignature, match="does not verify"):
        oadr.verify_signature(oadr.parse(tampered.encode()).tree)
    with pytest.raises(oadr.BadSignature, match="not signed"):
        oadr.verify_signature(oadr.parse(oadr.MessageWriter().render("oadrPoll", {"ven_id": "v"}).encode()).tree)
    forged = message.replace(message[message.index("<ds:SignatureValue>"):message.index("</ds:SignatureValue>")],
                             "<ds:SignatureValue>" + "A" * 88)
    with pytest.raises(oadr.BadSignature):
        oadr.verify_signature(oadr.parse(forged.encode()).tree)


def test_fingerprints_match_openleadrs(tmp_path: Path) -> None:
    """utils.certificate_fingerprint_from_der: the OpenADR short form shown beside the full SHA-256."""
    cert = LabPki.create(tmp_path / "pki").pki.vtn_cert_path.read_bytes()
    der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    assert oadr.openadr_fingerprint(der) == utils.certificate_fingerprint(cert)
    assert oadr.fingerprint_sha256(der).endswith(utils.certificate_fingerprint(cert).replace(":", "").lower())
