"""XML signatures (2.0b, optional in the profile) with ``sign_messages``: the VTN signs its answers, requires every
message to be signed by the certificate it speaks with, and refuses replays and stale or future signing times;
each refusal is 463, logged, and stores nothing. Over real sockets, with our HEMS on the other side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from openleadr.messaging import create_message, parse_message
from support.security import LabPki
from support.store_dump import logical_dump

from dso_server.service import DsoServer
from hems_client.transport.oadr20b.openleadr_adapter import MessageSigner, render
from hems_client.transport.oadr20b.ven import HemsVen
from protocol import HouseholdContract, make_ean18
from protocol.clock import WallClock

EAN_A = make_ean18("87168712000000001")
EAN_B = make_ean18("87168712000000002")
CONTRACTS = "".join(f"""
[[household]]
connection_point_id = "{ean}"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
failsafe_import_kw = 4.2
failsafe_export_kw = 4.2
failsafe_duration_s = 7200
""" for ean in (EAN_A, EAN_B))


@pytest.fixture
def pki(tmp_path: Path) -> LabPki:
    return LabPki.create(tmp_path / "pki")


async def serve(tmp_path: Path, pki: LabPki, **fields: object) -> DsoServer:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(CONTRACTS, encoding="utf-8")
    settings = pki.settings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, contracts_file=contracts,
                            poll_interval_s=1, sign_messages=True).model_copy(update=fields)
    server = DsoServer(settings, WallClock())
    await server.start()
    for ean in (EAN_A, EAN_B):
        pki.enrol(server.store, ean)
    return server


@pytest.fixture
async def dso(tmp_path: Path, pki: LabPki) -> AsyncIterator[DsoServer]:
    server = await serve(tmp_path, pki)
    yield server
    await server.stop()


def signer(pki: LabPki, ean: str, now: datetime | None = None) -> MessageSigner:
    cert, key = pki.issue_ven(ean)
    return MessageSigner(cert.read_bytes(), serialization.load_pem_private_key(key.read_bytes(), None),
                         now=(lambda: now) if now is not None else (lambda: datetime.now(UTC)))


def context(pki: LabPki, ean: str) -> object:
    import ssl

    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.load_cert_chain(*(str(p) for p in pki.issue_ven(ean)))
    return ctx


async def post(url: str, message: str, ssl_context: object | None) -> tuple[str, dict]:  # type: ignore[type-arg]
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
    async with aiohttp.ClientSession(connector=connector) as session, session.post(
            url, data=message.encode(), headers={"Content-Type": "application/xml"}) as reply:
        assert reply.status == 200, await reply.text()
        return parse_message(await reply.read())


async def test_a_signing_hems_and_a_signing_vtn_verify_each_other(dso: DsoServer, pki: LabPki) -> None:
    assert dso.vtn.fingerprint is not None
    contract = HouseholdContract(connection_point_id=EAN_A, contracted_max_import_kw=17, contracted_max_export_kw=10,
                                 failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200)
    ven = HemsVen(contract=contract, vtn_url=dso.vtn_url, clock=WallClock(), tls=pki.ven_tls(EAN_A),
                  sign_messages=True, vtn_fingerprint=dso.vtn.fingerprint)
    try:
        assert await ven.connect()
        for _ in range(3):
            assert (await ven.poll())[0] == "oadrResponse"
    finally:
        await ven.stop()
    assert ven.refused_answers == 0 and len(ven.replay_guard) >= 5  # every answer was signed and checked


async def test_unsigned_foreign_signed_replayed_and_ill_timed_messages_are_refused(dso: DsoServer,
                                                                                  pki: LabPki) -> None:
    url = f"{dso.vtn_url}/EiRegisterParty"
    registration = {"request_id": "r", "ven_name": EAN_A, "http_pull_model": True, "xml_signature": True,
                    "report_only": False, "profile_name": "2.0b", "transport_name": "simpleHttp",
                    "transport_address": None}
    a = context(pki, EAN_A)
    _, answer = await post(url, render("oadrCreatePartyRegistration", registration, signer(pki, EAN_A)), a)
    assert answer["response"]["response_code"] == 200
    ven_id = answer["ven_id"]
    before = logical_dump(dso.settings.db_path)
    poll_url = f"{dso.vtn_url}/OadrPoll"
    signed_poll = render("oadrPoll", {"ven_id": ven_id}, signer(pki, EAN_A))
    now = datetime.now(UTC)
    cases = [
        (create_message("oadrPoll", ven_id=ven_id), "not signed"),
        (render("oadrPoll", {"ven_id": ven_id}, signer(pki, EAN_B)), "not with the certificate of its TLS connection"),
        (render("oadrPoll", {"ven_id": ven_id}, signer(pki, EAN_A, now - timedelta(seconds=60))), "s before"),
        (render("oadrPoll", {"ven_id": ven_id}, signer(pki, EAN_A, now + timedelta(seconds=60))), "runs ahead"),
        (signed_poll.replace(f"<ei:venID>{ven_id}</ei:venID>", "<ei:venID>ven-other</ei:venID>"), "does not verify"),
    ]
    for message, words in cases:
        response_type, payload = await post(poll_url, message, a)
        assert (response_type, payload["response"]["response_code"]) == ("oadrResponse", 463), words
        assert words in payload["response"]["response_description"], payload["response"]
    assert logical_dump(dso.settings.db_path) == before
    response_type, _ = await post(poll_url, signed_poll, a)
    assert response_type == "oadrResponse"
    _, payload = await post(poll_url, signed_poll, a)  # the very same bytes again
    assert payload["response"]["response_code"] == 463 and "already used" in payload["response"][
        "response_description"]


async def test_on_plain_http_the_signing_certificate_is_the_identity(tmp_path: Path, pki: LabPki) -> None:
    """Without TLS (insecure, loopback) a signature still binds a message to one enrolled household."""
    dso = await serve(tmp_path, pki, insecure=True, ca_file=None)
    try:
        assert dso.vtn_url.startswith("http://")
        url = f"{dso.vtn_url}/EiRegisterParty"
        registration = {"request_id": "r", "http_pull_model": True, "xml_signature": True, "report_only": False,
                        "profile_name": "2.0b", "transport_name": "simpleHttp", "transport_address": None}
        _, payload = await post(url, render("oadrCreatePartyRegistration", {**registration, "ven_name": EAN_B},
                                            signer(pki, EAN_A)), None)
        assert payload["response"]["response_code"] == 463 and f"speaks for household {EAN_A}" in payload[
            "response"]["response_description"]
        _, payload = await post(url, render("oadrCreatePartyRegistration", {**registration, "ven_name": EAN_A},
                                            signer(pki, EAN_A)), None)
        assert payload["response"]["response_code"] == 200
    finally:
        await dso.stop()


async def test_each_vtn_keeps_its_own_nonces(tmp_path: Path, pki: LabPki) -> None:
    """openleadr keeps one process-global nonce set; two VTNs in one process must not share theirs."""
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    first, second = await serve(tmp_path / "1", pki), await serve(tmp_path / "2", pki)
    try:
        query = render("oadrQueryRegistration", {"request_id": "q"}, signer(pki, EAN_A))
        for dso in (first, second):
            _, payload = await post(f"{dso.vtn_url}/EiRegisterParty", query, context(pki, EAN_A))
            assert payload["response"]["response_code"] == 200
    finally:
        await first.stop()
        await second.stop()
