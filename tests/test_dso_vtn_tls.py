"""Mutual TLS between the VTN and the HEMS, over real loopback sockets: one household per certificate.

The VTN serves only TLS 1.2+ with a client certificate chained to its CA; a message whose certificate is not
enrolled, is revoked, or speaks for another household than the venID/venName it names is refused with 463, logged,
and stores nothing. The HEMS refuses a VTN whose certificate does not chain to its CA. Plain HTTP only when asked
for, and only on loopback.
"""

from __future__ import annotations

import logging
import ssl
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from openleadr.messaging import create_message, parse_message
from pydantic import ValidationError
from support.contracts import household_toml
from support.security import PLAIN_HTTP, LabPki
from support.store_dump import logical_dump

from dso_server.service import DsoServer
from dso_server.settings import DsoSettings
from dso_server.store.certificates import CertificateStore
from hems_client.app import VenSecurity
from hems_client.transport.oadr20b.ven import HemsVen
from protocol import HouseholdContract, make_ean18
from protocol.clock import WallClock

EAN_A = make_ean18("87168712000000001")
EAN_B = make_ean18("87168712000000002")
EAN_C = make_ean18("87168712000000003")
CONTRACTS = "".join(household_toml(ean) for ean in (EAN_A, EAN_B, EAN_C))


def contract(ean: str) -> HouseholdContract:
    return HouseholdContract(connection_point_id=ean, contracted_max_import_kw=17, contracted_max_export_kw=10,
                             failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200)


@pytest.fixture
def pki(tmp_path: Path) -> LabPki:
    return LabPki.create(tmp_path / "pki")


@pytest.fixture
async def dso(tmp_path: Path, pki: LabPki) -> AsyncIterator[DsoServer]:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(CONTRACTS, encoding="utf-8")
    settings = pki.settings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, contracts_file=contracts,
                            poll_interval_s=1)
    async with DsoServer(settings, WallClock()) as server:
        for ean in (EAN_A, EAN_B):
            pki.enrol(server.store, ean)
        yield server


def client_context(pki: LabPki, ean: str | None, *, ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca or pki.ca_file))
    if ean is not None:
        cert, key = pki.issue_ven(ean)
        context.load_cert_chain(str(cert), str(key))
    return context


async def post(url: str, message: str, context: ssl.SSLContext) -> tuple[str, dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session, session.post(
            url, data=message.encode(), headers={"Content-Type": "application/xml"}) as reply:
        assert reply.status == 200, await reply.text()
        return parse_message(await reply.read())


def registration(ean: str) -> str:
    return create_message("oadrCreatePartyRegistration", request_id="r1", ven_name=ean, http_pull_model=True,
                          xml_signature=False, report_only=False, profile_name="2.0b", transport_name="simpleHttp",
                          transport_address=None)


async def test_a_hems_registers_and_polls_over_mutual_tls(dso: DsoServer, pki: LabPki) -> None:
    assert dso.vtn_url.startswith("https://127.0.0.1:")
    ven = HemsVen(contract=contract(EAN_A), vtn_url=dso.vtn_url, clock=WallClock(), tls=pki.ven_tls(EAN_A))
    try:
        assert await ven.connect()
        response_type, _ = await ven.poll()
        assert response_type == "oadrResponse"
    finally:
        await ven.stop()
    [stored] = dso.store.vens()  # the registration records the certificate it came with
    assert (stored.ven_name, stored.fingerprint) == (
        EAN_A, CertificateStore(dso.store).enrolments(EAN_A)[0].fingerprint_sha256)


async def test_impersonation_is_refused_with_463_logged_and_stores_nothing(
    dso: DsoServer, pki: LabPki, caplog: pytest.LogCaptureFixture
) -> None:
    url = dso.vtn_url
    _, registered_b = await post(f"{url}/EiRegisterParty", registration(EAN_B), client_context(pki, EAN_B))
    ven_b = registered_b["ven_id"]
    a = client_context(pki, EAN_A)
    before = logical_dump(dso.settings.db_path)
    with caplog.at_level(logging.WARNING):
        attempts = [
            ("OadrPoll", create_message("oadrPoll", ven_id=ven_b), "oadrResponse", "another household"),
            ("EiRegisterParty", registration(EAN_B), "oadrCreatedPartyRegistration", f"not for venName '{EAN_B}'"),
            ("EiRegisterParty", create_message("oadrCancelPartyRegistration", ven_id=ven_b, registration_id="x",
                                               request_id="r"), "oadrResponse", "another household"),
            ("EiEvent", create_message("oadrRequestEvent", ven_id=ven_b, request_id="r"), "oadrDistributeEvent",
             "another household"),
        ]
        for service, message, answer_type, words in attempts:
            response_type, payload = await post(f"{url}/{service}", message, a)
            assert (response_type, payload["response"]["response_code"]) == (answer_type, 463), payload
            assert words in payload["response"]["response_description"]
    assert logical_dump(dso.settings.db_path) == before
    refusals = [r.getMessage() for r in caplog.records if "(463)" in r.getMessage()]
    assert len(refusals) == len(attempts) and all(EAN_A in line for line in refusals), refusals


async def test_unknown_revoked_and_untrusted_certificates_are_refused(dso: DsoServer, pki: LabPki,
                                                                       tmp_path: Path) -> None:
    url = dso.vtn_url
    # Issued by the CA but never enrolled: the TLS handshake succeeds, the VTN refuses.
    _, payload = await post(f"{url}/EiRegisterParty", registration(EAN_C), client_context(pki, EAN_C))
    assert payload["response"]["response_code"] == 463 and "not enrolled" in payload["response"][
        "response_description"]
    # Revoked after registration: refused from the next message on.
    _, registered = await post(f"{url}/EiRegisterParty", registration(EAN_A), client_context(pki, EAN_A))
    fingerprint = CertificateStore(dso.store).enrolments(EAN_A)[0].fingerprint_sha256
    CertificateStore(dso.store).revoke(fingerprint, reason="test", now=datetime.now(UTC))
    _, payload = await post(f"{url}/OadrPoll", create_message("oadrPoll", ven_id=registered["ven_id"]),
                            client_context(pki, EAN_A))
    assert payload["response"]["response_code"] == 463 and "revoked" in payload["response"]["response_description"]
    # A certificate from another CA, and no certificate at all, do not get through the handshake.
    stranger = LabPki.create(tmp_path / "stranger")
    for context in (client_context(stranger, EAN_B, ca=pki.ca_file), client_context(pki, None)):
        with pytest.raises(aiohttp.ClientError):
            await post(f"{url}/OadrPoll", create_message("oadrPoll", ven_id=registered["ven_id"]), context)


async def test_tls_below_1_2_is_refused_and_the_2_0b_suite_is_offered(dso: DsoServer, pki: LabPki) -> None:
    old = client_context(pki, EAN_A)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # a client that still offers TLS 1.1 (it gets through to a server
    with warnings.catch_warnings():          # that allows it: checked by hand with a TLS 1.0 minimum)
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((aiohttp.ClientError, ConnectionError)):
        await post(f"{dso.vtn_url}/EiRegisterParty", registration(EAN_A), old)
    mandated = client_context(pki, EAN_A)
    mandated.maximum_version = ssl.TLSVersion.TLSv1_2
    mandated.set_ciphers("ECDHE-ECDSA-AES128-SHA256")  # TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 (2.0b)
    response_type, payload = await post(f"{dso.vtn_url}/EiRegisterParty", registration(EAN_A), mandated)
    assert (response_type, payload["response"]["response_code"]) == ("oadrCreatedPartyRegistration", 200)


async def test_the_hems_refuses_a_vtn_its_ca_did_not_certify(dso: DsoServer, pki: LabPki, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    other = LabPki.create(tmp_path / "other")
    cert, key = pki.issue_ven(EAN_A)
    security = VenSecurity(cert=str(cert), key=str(key), ca_file=str(other.ca_file))
    tls = security.tls()
    assert tls is not None
    ven = HemsVen(contract=contract(EAN_A), vtn_url=dso.vtn_url, clock=WallClock(), tls=tls)
    try:
        with caplog.at_level(logging.WARNING):
            assert await ven.connect() is False
        assert ven.last_contact_at is None
        assert any("certificate verify failed" in r.getMessage() for r in caplog.records)
    finally:
        await ven.stop()
    assert dso.store.vens() == []


def test_plain_http_only_when_asked_for_and_only_on_loopback() -> None:
    with pytest.raises(ValidationError, match="cert, key, ca_file missing"):
        DsoSettings(db_path=":memory:")
    with pytest.raises(ValidationError, match=r"refused on vtn_host '0\.0\.0\.0'"):
        DsoSettings(insecure=True, vtn_host="0.0.0.0")
    DsoSettings(insecure=True, vtn_host="::1")
    for url, security, words in [
        ("http://127.0.0.1:9/x", VenSecurity(), "refused unless insecure"),
        ("http://192.0.2.1:9/x", PLAIN_HTTP, "only for a VTN on a loopback address"),
        ("https://127.0.0.1:9/x", PLAIN_HTTP, "needs its certificate"),
        ("ftp://127.0.0.1:9/x", PLAIN_HTTP, "must start with https://"),
    ]:
        with pytest.raises(ValueError, match=words):
            HemsVen(contract=contract(EAN_A), vtn_url=url, clock=WallClock(), tls=security.tls(),
                    insecure=security.insecure)
    with pytest.raises(ValueError, match="ca_file missing"):
        VenSecurity(cert="a.pem", key="a.key").tls()
