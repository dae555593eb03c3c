"""One test per piece of openleadr the HEMS's VEN relies on beyond its documented API
(``hems_client/transport/oadr20b/openleadr_adapter.py``): an openleadr upgrade that breaks one shows here.
The parser replacement is checked with the VTN's in ``test_openleadr_adapter_vtn.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from openleadr import messaging, utils
from support.security import LabPki

from dso_server.security.pki import Pki
from dso_server.security.tls import VtnTls
from dso_server.transport.oadr20b.openleadr_adapter import MessageWriter
from hems_client.transport.oadr20b import openleadr_adapter as adapter
from hems_client.transport.oadr20b.openleadr_adapter import OpenleadrVen, VenTls
from protocol import make_ean18

EAN = make_ean18("87168712000000001")
OK = {"response_code": 200, "response_description": "OK", "request_id": None}


@dataclass
class FakeVtn:
    """An HTTP(S) endpoint that records what arrives and answers with ``answer(message_type)``."""

    url: str
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    answer: Callable[[str], tuple[int, bytes]] = lambda _: (200, b"")


@pytest.fixture
async def fake_vtn() -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []

    async def start(ssl_context: Any = None) -> FakeVtn:
        vtn = FakeVtn(url="")

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            message_type, _ = messaging.parse_message(body)
            vtn.received.append((request.match_info["service"], message_type, body))
            status, answer = vtn.answer(message_type)
            return web.Response(status=status, body=answer, content_type="application/xml")

        app = web.Application()
        app.router.add_post("/OpenADR2/Simple/2.0b/{service}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        runners.append(runner)
        scheme = "https" if ssl_context else "http"
        vtn.url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}/OpenADR2/Simple/2.0b"
        return vtn

    yield start
    for runner in runners:
        await runner.cleanup()


class Recording(OpenleadrVen):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(ven_name=EAN, **kwargs)
        self.exchanges: list[bool] = []

    def exchange_ended(self, *, answered: bool, reason: str | None = None) -> None:
        self.exchanges.append(answered)


async def test_openleadrs_public_coroutines_send_through_render_and_the_request_path(fake_vtn: Any) -> None:
    """OpenADRClient._create_message replaced by ``render``; its coroutines call our ``_perform_request``."""
    vtn = await fake_vtn()
    ven = Recording(vtn_url=vtn.url, ven_id="ven-1")
    assert ven._create_message == ven.render
    try:
        await ven.query_registration()
        await ven.create_party_registration(ven_id="ven-1")
        await ven.poll()
        await ven.request_event()
        await ven.send_response("EiRegisterParty")
        assert await ven.request("EiReport", "oadrCreatedReport", ven_id="ven-1", response=OK,
                                 pending_reports=[]) == (None, {})
    finally:
        await ven.close()
    assert [(service, kind) for service, kind, _ in vtn.received] == [
        ("EiRegisterParty", "oadrQueryRegistration"), ("EiRegisterParty", "oadrCreatePartyRegistration"),
        ("OadrPoll", "oadrPoll"), ("EiEvent", "oadrRequestEvent"), ("EiRegisterParty", "oadrResponse"),
        ("EiReport", "oadrCreatedReport")]
    for _, _, body in vtn.received:
        messaging.validate_xml_schema(body)
    assert ven.exchanges == [True] * 6  # empty HTTP 200s: the VTN was there
    assert ven.client_session is None and not ven.scheduler.running


async def test_perform_request_keeps_openleadrs_contract_and_reports_each_exchange(fake_vtn: Any) -> None:
    """(type, payload) for an answer; (None, {}) for none; ``exchange_ended`` says whether the VTN answered."""
    vtn = await fake_vtn()
    answers = iter([(200, MessageWriter().render("oadrResponse", {"response": OK, "ven_id": "v"}).encode()),
                    (500, b"boom"), (200, b"<oadr:oadrPayload")])
    vtn.answer = lambda _: next(answers)
    ven = Recording(vtn_url=vtn.url, ven_id="v")
    try:
        response_type, payload = await ven.poll()
        assert response_type == "oadrResponse" and payload["response"]["response_code"] == 200
        assert await ven.poll() == (None, {})
        assert await ven.poll() == (None, {})
        assert ven.refused_answers == 1
    finally:
        await ven.close()
    unreachable = Recording(vtn_url="http://127.0.0.1:9/OpenADR2/Simple/2.0b", ven_id="v")
    try:
        assert await unreachable.poll() == (None, {})
    finally:
        await unreachable.close()
    assert ven.exchanges == [True, False, False] and unreachable.exchanges == [False]


async def test_the_session_verifies_the_vtn_against_the_configured_ca_and_host_name(fake_vtn: Any,
                                                                                   tmp_path: Path) -> None:
    """_ensure_client_session: one session whose TLS context is ours (TLS 1.2+, CA, host name, client cert)."""
    pki = LabPki.create(tmp_path / "pki")
    elsewhere = LabPki.create(tmp_path / "elsewhere")
    server_tls = VtnTls(pki.pki.vtn_cert_path, pki.pki.vtn_key_path, pki.ca_file)
    vtn = await fake_vtn(server_tls.server_context())
    good = Recording(vtn_url=vtn.url, tls=pki.ven_tls(EAN), ven_id="v")
    cert, key = pki.issue_ven(EAN)
    untrusting = Recording(vtn_url=vtn.url, tls=VenTls(cert=cert, key=key, ca_file=elsewhere.ca_file), ven_id="v")
    try:
        await good.poll()
        await untrusting.poll()
    finally:
        await good.close()
        await untrusting.close()
    assert (good.exchanges, untrusting.exchanges) == ([True], [False])
    assert len(vtn.received) == 1  # the untrusting VEN sent nothing

    # A VTN certificate for another host name is refused unless the check is switched off explicitly.
    named = Pki(tmp_path / "named")
    named.init()
    named.issue_vtn(hosts=("dso.example.net",))
    vtn = await fake_vtn(VtnTls(named.vtn_cert_path, named.vtn_key_path, pki.ca_file).server_context())
    results = []
    for check_hostname in (True, False):
        ven = Recording(vtn_url=vtn.url, ven_id="v", tls=VenTls(cert=cert, key=key, ca_file=named.ca_cert_path,
                                                                check_hostname=check_hostname))
        try:
            await ven.poll()
        finally:
            await ven.close()
        results.append(ven.exchanges)
    assert results == [[False], [True]]


async def test_signing_parses_the_key_once_and_stock_openleadr_verifies(fake_vtn: Any, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pki = LabPki.create(tmp_path / "pki")
    vtn = await fake_vtn()
    tls = pki.ven_tls(EAN)
    signing = Recording(vtn_url=vtn.url, tls=tls, sign=True, ven_id="v")
    signing._ssl_context = None  # the fake VTN speaks plain HTTP; only the message signatures matter here
    monkeypatch.setattr(adapter, "load_pem_private_key", lambda *_: pytest.fail("key parsed per message"))
    try:
        await signing.poll()
        await signing.poll()
    finally:
        await signing.close()
    fingerprint = utils.certificate_fingerprint(tls.cert.read_bytes())
    for _, _, body in vtn.received:
        messaging.validate_xml_signature(messaging.validate_xml_schema(body), cert_fingerprint=fingerprint)


async def test_answers_must_be_signed_by_the_vtns_fingerprint_and_fresh(fake_vtn: Any, tmp_path: Path) -> None:
    """vtn_fingerprint set: unsigned, wrongly signed and replayed answers are refused (this VEN's own
    ReplayGuard, not openleadr's process-global nonce set)."""
    pki = LabPki.create(tmp_path / "pki")
    key = serialization.load_pem_private_key(pki.pki.vtn_key_path.read_bytes(), None)
    cert = pki.pki.vtn_cert_path.read_bytes()
    signed = MessageWriter(cert_pem=cert, private_key=key).render("oadrResponse", {"response": OK, "ven_id": "v"})
    other_cert, other_key = pki.issue_ven(make_ean18("87168712000000002"))
    forged = MessageWriter(cert_pem=other_cert.read_bytes(), private_key=serialization.load_pem_private_key(
        other_key.read_bytes(), None)).render("oadrResponse", {"response": OK, "ven_id": "v"})
    unsigned = MessageWriter().render("oadrResponse", {"response": OK, "ven_id": "v"})
    answers = iter([signed, signed, forged, unsigned])
    vtn = await fake_vtn()
    vtn.answer = lambda _: (200, next(answers).encode())
    ven = Recording(vtn_url=vtn.url, vtn_fingerprint=utils.certificate_fingerprint(cert), ven_id="v")
    try:
        assert (await ven.poll())[0] == "oadrResponse"
        for _ in range(3):  # the same answer again, another signer, no signature
            assert await ven.poll() == (None, {})
    finally:
        await ven.close()
    assert ven.exchanges == [True, False, False, False] and ven.refused_answers == 3


async def test_a_signing_ven_requires_answers_signed_by_the_certificate_the_vtn_presented(
    fake_vtn: Any, tmp_path: Path,
) -> None:
    """sign without vtn_fingerprint: the signer must be the certificate the VTN presented over TLS, which
    ``PeerCertificateResponse`` keeps (aiohttp's ``ClientResponse.start``); a signing HEMS accepted unsigned and
    foreign-signed answers before."""
    pki = LabPki.create(tmp_path / "pki")
    key = serialization.load_pem_private_key(pki.pki.vtn_key_path.read_bytes(), None)
    signed = MessageWriter(cert_pem=pki.pki.vtn_cert_path.read_bytes(), private_key=key).render(
        "oadrResponse", {"response": OK, "ven_id": "v"})
    other_cert, other_key = pki.issue_ven(make_ean18("87168712000000002"))
    forged = MessageWriter(cert_pem=other_cert.read_bytes(), private_key=serialization.load_pem_private_key(
        other_key.read_bytes(), None)).render("oadrResponse", {"response": OK, "ven_id": "v"})
    unsigned = MessageWriter().render("oadrResponse", {"response": OK, "ven_id": "v"})
    answers = iter([signed, forged, unsigned])
    vtn = await fake_vtn(VtnTls(pki.pki.vtn_cert_path, pki.pki.vtn_key_path, pki.ca_file).server_context())
    vtn.answer = lambda _: (200, next(answers).encode())
    ven = Recording(vtn_url=vtn.url, tls=pki.ven_tls(EAN), sign=True, ven_id="v")
    try:
        assert (await ven.poll())[0] == "oadrResponse"
        assert await ven.poll() == (None, {})  # signed by a certificate the same CA issued, but not the VTN's
        assert await ven.poll() == (None, {})  # not signed
    finally:
        await ven.close()
    assert ven.exchanges == [True, False, False] and ven.refused_answers == 2


def test_answers_are_read_from_the_signed_object_as_openleadr_reads_the_body(tmp_path: Path) -> None:
    """parse_answer hands openleadr's parse_message the oadrSignedObject alone (what the signature check
    verifies): the same type and payload as openleadr's own parse of the whole answer, signed or not."""
    pki = LabPki.create(tmp_path / "pki")
    key = serialization.load_pem_private_key(pki.pki.vtn_key_path.read_bytes(), None)
    payload = {"response": OK, "ven_id": "v", "registration_id": "reg-1", "vtn_id": "VTN",
               "profiles": [{"profile_name": "2.0b", "transports": [{"transport_name": "simpleHttp"}]}]}
    for writer in (MessageWriter(), MessageWriter(cert_pem=pki.pki.vtn_cert_path.read_bytes(), private_key=key)):
        answer = writer.render("oadrCreatedPartyRegistration", payload).encode()
        _, message_type, parsed = adapter.parse_answer(answer)
        assert (message_type, parsed) == messaging.parse_message(answer)
