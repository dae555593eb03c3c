"""XML-signature benchmark: the reference signer and verifier (``protocol.oadr20b.xmldsig``) against signxml as
openleadr uses it, measured in the same run, rounds interleaved so both see the same machine load.

Certificates come from the project's own PKI (``dso_server.security.pki``): EC P-256 by default, ``--key-type rsa``
for RSA 2048. What is timed, each the median over ``--reps`` messages:

* sign: an oadrResponse answer (what the VTN signs per poll) — ours with the key parsed once; signxml with the key
  parsed once (what the adapters did before); openleadr's ``create_message`` (re-reads the key per message);
* verify: a signed oadrPoll already parsed (what the VTN verifies per poll) — ours; signxml's ``XMLVerifier``
  with the embedded certificate, both references (what openleadr and the adapters did before);
* per signed poll on the VTN, through its openleadr adapter: parse + verify the signed poll and render + sign the
  answer, minus the same for an unsigned poll and answer: the server CPU a signature adds to one poll.

From that extra cost and the server CPU of a plain poll (``--plain-poll-ms``; issue 10's target of 2,000 plain
polls/s on one event loop is 0.5 ms) it estimates the signed polls/s one VTN process can serve. ``bench/vtn_load.py``
measures the real figure over sockets.

The last line is ``sign_ms=<x> verify_ms=<y> signxml_verify_ms=<z> speedup=<r>`` (r = signxml_verify_ms / verify_ms).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from openleadr import messaging, utils
from signxml import XMLSigner, XMLVerifier, methods
from signxml.algorithms import SignatureMethod

from dso_server.security.pki import Pki
from dso_server.transport.oadr20b import openleadr_adapter as oadr
from protocol.oadr20b.xmldsig import (
    C14N_1_0,
    OADR_NAMESPACE,
    REPLAY_NAMESPACE,
    MessageSigner,
    SignatureVerifier,
)

EAN = "871687120000000011"
OK = {"response_code": 200, "response_description": "OK", "request_id": "r"}


def _signed_object(message_type: str, **payload: Any) -> str:
    return str(utils.flatten_xml(messaging.TEMPLATES.get_template(f"{message_type}.xml").render(**payload)))


class SignxmlSigner:
    """signxml configured as openleadr configures it, with the key parsed once (the adapters before this bench)."""

    def __init__(self, certificate: x509.Certificate, key: Any, *, ec_key: bool) -> None:
        self._signer = XMLSigner(method=methods.detached, c14n_algorithm=C14N_1_0)
        self._signer.namespaces["oadr"] = OADR_NAMESPACE
        self._signer.sign_alg = SignatureMethod.from_fragment("ecdsa-sha256" if ec_key else "rsa-sha256")
        self._certificates = [certificate]
        self._key = key

    def sign(self, signed_object: str, *, now: datetime) -> str:
        replay = etree.Element(f"{{{REPLAY_NAMESPACE}}}ReplayProtect", nsmap={"dsp": REPLAY_NAMESPACE},
                               attrib={"Id": "myid", "Target": "#mytarget"})
        etree.SubElement(replay, f"{{{REPLAY_NAMESPACE}}}timestamp").text = utils.datetimeformat(now)
        etree.SubElement(replay, f"{{{REPLAY_NAMESPACE}}}nonce").text = "0" * 32
        signature = self._signer.sign(etree.fromstring(signed_object), key=self._key, cert=self._certificates,
                                      reference_uri="#oadrSignedObject", signature_properties=replay)
        return str(messaging.TEMPLATES.get_template("oadrPayload.xml").render(
            signature=etree.tostring(signature).decode(), signed_object=signed_object))


def signxml_verify(tree: Any) -> None:
    """What openleadr's ``validate_xml_signature`` does short of its replay check (and the adapters did before)."""
    XMLVerifier().verify(tree, x509_cert=utils.extract_pem_cert(tree), expect_references=2)


def _rounds(cases: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median ms per case; one call of every case per round, so load changes hit all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, case in cases.items():
            start = time.perf_counter()
            case()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400, help="messages per case (median reported)")
    parser.add_argument("--key-type", choices=["ec", "rsa"], default="ec", help="ec: P-256 (default); rsa: 2048")
    parser.add_argument("--plain-poll-ms", type=float, default=0.5,
                        help="server CPU of one unsigned poll, for the signed polls/s estimate (default: issue 10's "
                             "2,000 polls/s target)")
    args = parser.parse_args()
    key_type: Literal["ec", "rsa"] = args.key_type

    with tempfile.TemporaryDirectory() as directory:
        pki = Pki(Path(directory))
        pki.init(name="bench CA", key_type=key_type)
        pki.issue_vtn(key_type=key_type)
        pki.issue_ven(ean=EAN, key_type=key_type)
        vtn_cert_pem, vtn_key_pem = pki.vtn_cert_path.read_bytes(), pki.vtn_key_path.read_bytes()
        ven_cert_path, ven_key_path = pki.ven_paths(EAN)
        ven_cert_pem, ven_key_pem = ven_cert_path.read_bytes(), ven_key_path.read_bytes()
    vtn_cert, vtn_key = x509.load_pem_x509_certificate(vtn_cert_pem), serialization.load_pem_private_key(
        vtn_key_pem, None)
    ven_cert, ven_key = x509.load_pem_x509_certificate(ven_cert_pem), serialization.load_pem_private_key(
        ven_key_pem, None)
    now = datetime.now(UTC)

    answer = _signed_object("oadrResponse", response=OK, ven_id="ven-1")
    poll = _signed_object("oadrPoll", ven_id="ven-1")
    ours = MessageSigner(certificate=vtn_cert, private_key=vtn_key)
    theirs = SignxmlSigner(vtn_cert, vtn_key, ec_key=key_type == "ec")
    verifier = SignatureVerifier()
    signed_poll = MessageSigner(certificate=ven_cert, private_key=ven_key).sign(poll, now=now)
    poll_tree = oadr.parse(signed_poll.encode()).tree
    verifier.verify(poll_tree, now=now)  # both accept the same message
    signxml_verify(poll_tree)
    signxml_verify(etree.fromstring(ours.sign(answer, now=now).encode()))
    verifier.verify(etree.fromstring(theirs.sign(answer, now=now).encode()), now=now)

    # The VTN's per-poll path through its adapter, signed and unsigned.
    signed_writer = oadr.MessageWriter(cert_pem=vtn_cert_pem, private_key=vtn_key)
    plain_writer = oadr.MessageWriter()
    unsigned_poll = plain_writer.render("oadrPoll", {"ven_id": "ven-1"}).encode()
    answer_payload = {"response": OK, "ven_id": "ven-1"}

    def vtn_signed() -> None:
        parsed = oadr.parse(signed_poll.encode())
        oadr.verify_signature(parsed.tree, now=now)
        signed_writer.render("oadrResponse", answer_payload)

    def vtn_unsigned() -> None:
        oadr.parse(unsigned_poll)
        plain_writer.render("oadrResponse", answer_payload)

    def vtn_signxml() -> None:
        parsed = oadr.parse(signed_poll.encode())
        signxml_verify(parsed.tree)
        theirs.sign(_signed_object("oadrResponse", response=OK, ven_id="ven-1"), now=now)

    medians = _rounds({
        "sign": lambda: ours.sign(answer, now=now),
        "signxml_sign": lambda: theirs.sign(answer, now=now),
        "openleadr_create_message": lambda: messaging.create_message(
            "oadrResponse", cert=vtn_cert_pem, key=vtn_key_pem, response=OK, ven_id="ven-1"),
        "verify": lambda: verifier.verify(poll_tree, now=now),
        "signxml_verify": lambda: signxml_verify(poll_tree),
        "vtn_signed": vtn_signed,
        "vtn_unsigned": vtn_unsigned,
        "vtn_signxml": vtn_signxml,
    }, args.reps)

    extra = medians["vtn_signed"] - medians["vtn_unsigned"]
    extra_signxml = medians["vtn_signxml"] - medians["vtn_unsigned"]
    label = "EC P-256" if key_type == "ec" else "RSA 2048"
    print(f"key={label} reps={args.reps} signed poll {len(signed_poll)} bytes, unsigned {len(unsigned_poll)} bytes")
    print(f"sign an answer:   ours {medians['sign']:.3f} ms | signxml, key parsed once {medians['signxml_sign']:.3f} ms"
          f" | openleadr create_message {medians['openleadr_create_message']:.3f} ms")
    print(f"verify a poll:    ours {medians['verify']:.3f} ms | signxml {medians['signxml_verify']:.3f} ms "
          f"({medians['signxml_verify'] / medians['verify']:.1f}x)")
    print(f"VTN per poll (adapter: parse, verify, render, sign): signed {medians['vtn_signed']:.3f} ms, "
          f"unsigned {medians['vtn_unsigned']:.3f} ms, signed with signxml {medians['vtn_signxml']:.3f} ms")
    print(f"server CPU a signature adds per poll: {extra:.3f} ms (signxml: {extra_signxml:.3f} ms)")
    for name, cost in (("ours", extra), ("signxml", extra_signxml)):
        print(f"estimate, one VTN process, plain poll {args.plain_poll_ms:.2f} ms: {name} "
              f"{1000 / (args.plain_poll_ms + cost):,.0f} signed polls/s (signature work alone: "
              f"{1000 / cost:,.0f}/s)")
    print(f"sign_ms={medians['sign']:.3f} verify_ms={medians['verify']:.3f} "
          f"signxml_verify_ms={medians['signxml_verify']:.3f} "
          f"speedup={medians['signxml_verify'] / medians['verify']:.1f}")


if __name__ == "__main__":
    main()
