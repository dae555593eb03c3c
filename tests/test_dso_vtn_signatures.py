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
from lxml import etree
from openleadr.messaging import create_message, parse_message
from support.contracts import household_toml
from support.security import LabPki
from support.signatures import keys_from_files, ours, signed_object, tampered_corpus
from support.store_dump import logical_dump

from dso_server.service import DsoServer
from dso_server.transport.oadr20b import openleadr_adapter as oadr
from hems_client.transport.oadr20b.openleadr_adapter import MessageSigner, render
from hems_client.transport.oadr20b.ven import HemsVen
from protocol import BandwidthInterval, CapacityBandwidth, Firmness, HouseholdContract, floor_to_interval, make_ean18
from protocol.clock import WallClock

EAN_A = make_ean18("87168712000000001")
EAN_B = make_ean18("87168712000000002")
CONTRACTS = "".join(household_toml(ean) for ean in (EAN_A, EAN_B))


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


async def register_signed(dso: DsoServer, pki: LabPki, ean: str = EAN_A) -> tuple[object, str]:
    """Register ``ean``'s VEN with a signed oadrCreatePartyRegistration over its own TLS connection: (its TLS
    context, its venID)."""
    registration = {"request_id": "r", "ven_name": ean, "http_pull_model": True, "xml_signature": True,
                    "report_only": False, "profile_name": "2.0b", "transport_name": "simpleHttp",
                    "transport_address": None}
    tls = context(pki, ean)
    _, answer = await post(f"{dso.vtn_url}/EiRegisterParty",
                           render("oadrCreatePartyRegistration", registration, signer(pki, ean)), tls)
    assert answer["response"]["response_code"] == 200
    return tls, str(answer["ven_id"])


@pytest.mark.parametrize("pinned", [True, False], ids=["vtn-fingerprint", "tls-certificate"])
async def test_a_signing_hems_and_a_signing_vtn_verify_each_other(dso: DsoServer, pki: LabPki, pinned: bool) -> None:
    """With --vtn-fingerprint or, without it, against the certificate the VTN presented over TLS."""
    assert dso.vtn.fingerprint is not None
    contract = HouseholdContract(connection_point_id=EAN_A, contracted_max_import_kw=17, contracted_max_export_kw=10,
                                 failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200)
    ven = HemsVen(contract=contract, vtn_url=dso.vtn_url, clock=WallClock(), tls=pki.ven_tls(EAN_A),
                  sign_messages=True, vtn_fingerprint=dso.vtn.fingerprint if pinned else None)
    try:
        assert await ven.connect()
        for _ in range(3):
            assert (await ven.poll())[0] == "oadrResponse"
    finally:
        await ven.stop()
    assert ven.refused_answers == 0 and len(ven.replay_guard) >= 5  # every answer was signed and checked


async def test_unsigned_foreign_signed_replayed_and_ill_timed_messages_are_refused(dso: DsoServer,
                                                                                  pki: LabPki) -> None:
    a, ven_id = await register_signed(dso, pki)
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


async def test_quiet_polls_are_signed_afresh_and_a_publish_reaches_the_next_signed_poll(
        dso: DsoServer, pki: LabPki, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signing VTN keeps each VEN's "nothing new" answer rendered, but signs it anew for every poll: each answer
    verifies with a nonce of its own, and an event published in between is delivered by the very next poll. A
    quiet signed poll skips openleadr's parser and template renderer (the hot path)."""
    parsed: list[bytes] = []
    original = oadr.parse
    monkeypatch.setattr(oadr, "parse", lambda body: parsed.append(body) or original(body))
    a, ven_id = await register_signed(dso, pki)

    async def signed_poll() -> tuple[str, dict, oadr.Signature]:  # type: ignore[type-arg]
        message = render("oadrPoll", {"ven_id": ven_id}, signer(pki, EAN_A)).encode()
        connector = aiohttp.TCPConnector(ssl=a)  # type: ignore[arg-type]
        async with aiohttp.ClientSession(connector=connector) as session, session.post(
                f"{dso.vtn_url}/OadrPoll", data=message, headers={"Content-Type": "application/xml"}) as reply:
            body = await reply.read()
        signature = oadr.verify_signature(etree.fromstring(body))
        assert signature.fingerprint_sha256[-20:].upper() == str(dso.vtn.fingerprint).replace(":", "").upper()
        return (*parse_message(body), signature)

    parsed.clear()
    quiet = [await signed_poll() for _ in range(3)]
    assert parsed == []
    assert [(kind, payload["response"]["response_code"]) for kind, payload, _ in quiet] == [("oadrResponse", 200)] * 3
    assert len({signature.nonce for _, _, signature in quiet}) == 3
    start = floor_to_interval(datetime.now(UTC)) + timedelta(hours=2)
    dso.publish(CapacityBandwidth(firmness=Firmness.FIRM, intervals=(
        BandwidthInterval(start=start, import_limit_kw=5.0, export_limit_kw=6.0),)), connection_point_ids=[EAN_A])
    kind, payload, _ = await signed_poll()
    assert kind == "oadrDistributeEvent" and len(payload["events"]) == 1
    [event] = payload["events"]
    assert (await signed_poll())[0] == "oadrDistributeEvent"  # sent again until the VEN answers it
    created = {"response": {"response_code": 200, "response_description": "OK", "request_id": payload["request_id"]},
               "ven_id": ven_id, "event_responses": [{
                   "response_code": 200, "response_description": "OK", "request_id": payload["request_id"],
                   "event_id": event["event_descriptor"]["event_id"], "opt_type": "optIn",
                   "modification_number": event["event_descriptor"]["modification_number"]}]}
    kind, payload = await post(f"{dso.vtn_url}/EiEvent", render("oadrCreatedEvent", created, signer(pki, EAN_A)), a)
    assert (kind, payload["response"]["response_code"]) == ("oadrResponse", 200)
    assert (await signed_poll())[0] == "oadrResponse"


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


async def test_every_tampered_message_is_refused_over_mutual_tls_and_stores_nothing(dso: DsoServer,
                                                                                    pki: LabPki) -> None:
    """The corpus of tests/support/signatures.py, made from polls signed with the household's own enrolled key
    and sent over its own TLS connection: each is answered 463 naming the problem (or 400 when the 2.0b schema
    refuses it first); the store is unchanged; the honest poll is then accepted."""
    a, ven_id = await register_signed(dso, pki)
    keys = keys_from_files(*pki.issue_ven(EAN_A))
    before = logical_dump(dso.settings.db_path)
    outcomes = {}
    connector = aiohttp.TCPConnector(ssl=a)
    async with aiohttp.ClientSession(connector=connector) as session:
        for case in tampered_corpus(keys, ven_id=ven_id, now=datetime.now(UTC)):
            async with session.post(f"{dso.vtn_url}/OadrPoll", data=case.message.encode(),
                                    headers={"Content-Type": "application/xml"}) as reply:
                body = await reply.read()
            if reply.status == 200:
                response_type, payload = parse_message(body)
                assert response_type == "oadrResponse" and payload["response"]["response_code"] == 463, case.name
                assert case.words in payload["response"]["response_description"], (case.name, payload)
            else:
                assert reply.status == 400, (case.name, reply.status, body[:200])
            outcomes[case.name] = reply.status
    assert logical_dump(dso.settings.db_path) == before
    assert sum(status == 200 for status in outcomes.values()) >= 40, outcomes  # most reach the signature check
    honest = ours(signed_object("oadrPoll", ven_id=ven_id), keys, now=datetime.now(UTC), nonce=None)
    response_type, payload = await post(f"{dso.vtn_url}/OadrPoll", honest, a)
    assert response_type == "oadrResponse" and payload["response"]["response_code"] == 200
