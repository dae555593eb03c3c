"""The operator API's security: where it listens, tokens and roles, TLS and client certificates, the audit log."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from api_auth import bearer, token
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError
from support.security import LabPki
from test_dso_cli import run

from dso_server.api.app import create_app
from dso_server.cli import main
from dso_server.records import Household
from dso_server.security.tokens import Role, looks_like_token, new_token, parse_bearer, token_hash
from dso_server.service import DsoServer
from dso_server.settings import DsoSettings, is_loopback
from dso_server.store.security_store import SecurityStore
from dso_server.store.sqlite import DsoStore
from protocol import HouseholdContract, make_ean18
from protocol.clock import ManualClock

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
EAN = make_ean18("87168712000000001")
CONTRACT = {"connection_point_id": EAN, "contracted_max_import_kw": 17.0, "contracted_max_export_kw": 10.0,
            "failsafe_import_kw": 4.2, "failsafe_export_kw": 4.2, "failsafe_duration_s": 7200}


def bandwidth(**targets: Any) -> dict[str, Any]:
    start = NOW + timedelta(hours=1)
    return {**(targets or {"connection_point_ids": [EAN]}), "firmness": "firm", "intervals": [
        {"start": (start + i * timedelta(minutes=15)).isoformat(), "import_limit_kw": 5.0, "export_limit_kw": 5.0}
        for i in range(4)]}


@pytest.fixture
def store() -> DsoStore:
    store = DsoStore()
    store.put_households([Household(HouseholdContract.model_validate(CONTRACT), "feeder-1")], now=NOW)
    return store


@pytest.fixture
async def client(store: DsoStore) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(store, ManualClock(NOW)))) as client:
        yield client


# ------------------------------------------------------------------------------------------------ tokens


def test_tokens_are_random_256_bit_and_only_their_hash_is_stored(tmp_path: Path) -> None:
    first, second = new_token(), new_token()
    assert first != second and looks_like_token(first) and len(first) == 4 + 43
    assert parse_bearer(f"Bearer {first}") == first and parse_bearer(f"bearer  {first} ") == first
    assert parse_bearer(f"Basic {first}") is None and parse_bearer("Bearer x") is None
    assert Role.OPERATE.allows(Role.READ) and not Role.READ.allows(Role.OPERATE)
    with DsoStore(tmp_path / "dso.sqlite") as store:
        made, secret = SecurityStore(store).create_token("alice", Role.OPERATE, now=NOW, actor="local:root")
    assert secret is not None
    raw = (tmp_path / "dso.sqlite").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("dso.sqlite-*"))
    assert secret.encode() not in raw and token_hash(secret).encode() in raw
    assert made.name == "alice" and made.role is Role.OPERATE and made.created_by == "local:root"


def test_names_revocation_expiry_and_sessions(store: DsoStore) -> None:
    security = SecurityStore(store)
    alice, secret = security.create_token("alice", Role.READ, now=NOW, actor="local:root",
                                          expires_at=NOW + timedelta(days=1))
    assert secret is not None
    with pytest.raises(Exception, match="already named 'alice'"):
        security.create_token("alice", Role.OPERATE, now=NOW, actor="local:root")
    with pytest.raises(ValueError, match="token name"):
        security.create_token("alice smith", Role.READ, now=NOW, actor="local:root")
    assert security.authenticate(secret, now=NOW) == alice
    assert security.authenticate(secret, now=NOW + timedelta(days=1)) is None  # expired
    session, _ = security.create_session(alice, now=NOW, ttl=timedelta(hours=8))
    assert security.session(session, now=NOW + timedelta(hours=7)) is not None
    assert security.session(session, now=NOW + timedelta(hours=8)) is None
    security.revoke_token("alice", now=NOW + timedelta(minutes=1), actor="local:root")
    assert security.authenticate(secret, now=NOW + timedelta(minutes=2)) is None
    assert security.session(session, now=NOW + timedelta(minutes=2)) is None
    with pytest.raises(Exception, match="was revoked"):
        security.revoke_token(alice.token_id, now=NOW, actor="local:root")
    # The name is free again once the old token is revoked; the log keeps both ids.
    bob, _ = security.create_token("alice", Role.OPERATE, now=NOW + timedelta(minutes=3), actor="local:root")
    assert security.token("alice") == bob
    assert [(e.action, e.target) for e in security.audit(action="token")] == [
        ("token.create", alice.token_id), ("token.revoke", alice.token_id), ("token.create", bob.token_id)]


# ----------------------------------------------------------------------------------------- authentication


async def test_every_route_but_health_and_the_document_needs_a_token(client: TestClient, store: DsoStore) -> None:
    assert (await client.get("/api/health")).status == 200
    assert (await client.get("/api/openapi.json")).status == 200
    from dso_server.api.app import ROUTES

    for route in ROUTES:
        if route.role is None:
            continue
        path = route.path.format(event_id="ev-1", publication_id="pub-1", transformer_id="T1",
                                 connection_point_id=EAN)
        response = await client.request(route.method, path, json={} if route.body else None)
        body = await response.json()
        assert response.status == 401, (route.method, path, body)
        assert response.headers["WWW-Authenticate"].startswith("Bearer") and body["field"] == "Authorization"
    for header in ("Bearer dso_" + "A" * 43, "Bearer not-a-token", "Basic YWxpY2U6c2VjcmV0", token(store)):
        response = await client.get("/api/households", headers={"Authorization": header})
        assert response.status == 401 and "valid token" in (await response.json())["error"]
    assert SecurityStore(store).audit(outcome="refused") == []  # no credential, no log line


async def test_read_reads_operate_changes_and_refusals_are_audited(client: TestClient, store: DsoStore) -> None:
    reader, operator = bearer(store, Role.READ, name="reader"), bearer(store, name="operator")
    assert (await client.get("/api/households", headers=reader)).status == 200
    refused = await client.post("/api/bandwidths", json=bandwidth(), headers=reader)
    assert refused.status == 403
    assert (await refused.json())["error"] == ("token:reader has the role read; POST /api/bandwidths needs "
                                               "operate.")
    assert store.signals() == []
    published = await client.post("/api/bandwidths", json=bandwidth(), headers=operator)
    assert published.status == 201
    publication_id = (await published.json())["publication_id"]
    # A revoked token is refused from the next request on.
    SecurityStore(store).revoke_token("operator", now=NOW, actor="local:root")
    assert (await client.delete(f"/api/publications/{publication_id}", headers=operator)).status == 401
    entries = SecurityStore(store).audit(action="signal")
    assert [(e.actor, e.action, e.outcome) for e in entries] == [
        ("token:reader", "signal.publish", "refused"), ("token:operator", "signal.publish", "ok")]
    assert entries[0].detail["status"] == 403 and entries[1].target == publication_id
    assert entries[1].detail["households"] == 1 and entries[1].detail["import_limit_kw"] == [5.0, 5.0]
    answer = await client.get("/api/audit", params={"actor": "token:reader"}, headers=reader)
    assert [e["outcome"] for e in (await answer.json())["entries"]] == ["refused"]


async def test_the_web_session_only_reads(client: TestClient, store: DsoStore) -> None:
    secret = token(store, Role.OPERATE, name="ops")
    refused = await client.post("/api/session", json={"token": "dso_" + "B" * 43})
    assert refused.status == 401 and "dso_session" not in refused.cookies
    login = await client.post("/api/session", json={"token": secret})
    assert login.status == 200 and (await login.json())["via"] == "session"
    cookie = login.cookies["dso_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]
    assert cookie.value != secret and int(cookie["max-age"]) == 8 * 3600
    # The cookie jar of the client now carries the session: reads work, changes do not, even for an operator.
    assert (await client.get("/api/households")).status == 200
    assert (await client.get("/")).status == 200
    changed = await client.post("/api/bandwidths", json=bandwidth())
    assert changed.status == 403 and "only reads" in (await changed.json())["error"]
    assert store.signals() == []
    assert (await client.post("/api/bandwidths", json=bandwidth(), headers={"Authorization": f"Bearer {secret}"})
            ).status == 201
    who = await (await client.get("/api/session")).json()
    assert (who["actor"], who["role"], who["via"]) == ("token:ops", "operate", "session")
    assert (await client.delete("/api/session")).status == 200
    assert (await client.get("/api/households")).status == 401
    actions = [(e.action, e.outcome) for e in SecurityStore(store).audit()]
    assert actions == [("token.create", "ok"), ("session.login", "ok"), ("signal.publish", "refused"),
                       ("signal.publish", "ok"), ("session.logout", "ok")]


# ------------------------------------------------------------------------------------------------ binding


def test_the_api_stays_on_loopback_unless_it_runs_tls_or_is_told(tmp_path: Path) -> None:
    vtn_tls = LabPki.create(tmp_path / "pki")  # a VTN off loopback serves mutual TLS
    assert DsoSettings(insecure=True).api_host == "127.0.0.1"
    assert vtn_tls.settings(vtn_host="0.0.0.0").api_host == "127.0.0.1"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("dso.example")
    with pytest.raises(ValidationError, match="not a loopback address: serve the API over TLS"):
        DsoSettings(insecure=True, api_host="0.0.0.0")
    assert DsoSettings(insecure=True, api_host="0.0.0.0", api_insecure=True).api_insecure
    cert, key, _ = server_certificate(tmp_path)
    assert DsoSettings(insecure=True, api_host="0.0.0.0", api_cert=cert, api_key=key).api_tls
    with pytest.raises(ValidationError, match="api_cert and api_key go together"):
        DsoSettings(insecure=True, api_cert=cert)
    with pytest.raises(ValidationError, match="needs api_cert"):
        DsoSettings(insecure=True, api_client_ca=cert)
    from dso_server.cli import build_parser, serve_settings

    served = serve_settings(build_parser().parse_args(["serve", "--host", "0.0.0.0", "--pki", str(tmp_path / "pki")]),
                            {})
    assert (served.vtn_host, served.api_host) == ("0.0.0.0", "127.0.0.1")


async def test_the_vtn_on_all_addresses_leaves_the_api_on_loopback(tmp_path: Path) -> None:
    settings = LabPki.create(tmp_path / "pki").settings(db_path=":memory:", vtn_host="0.0.0.0", vtn_port=0,
                                                        api_port=0)
    async with DsoServer(settings) as dso:
        assert dso.api_url.startswith("http://127.0.0.1:")
        [(host, _)] = [address[:2] for address in _bound(dso)]
        assert host == "127.0.0.1"


def _bound(dso: DsoServer) -> list[Any]:
    """The addresses the API's listening socket is bound to, read from the live aiohttp runners."""
    import gc

    from aiohttp import web

    runners = [obj for obj in gc.get_objects() if isinstance(obj, web.AppRunner)]
    return [address for runner in runners for address in runner.addresses if address[1] == dso.api_port]


# ---------------------------------------------------------------------------------------- TLS and certificates


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
                 *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def server_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A lab CA and a server certificate for 127.0.0.1 signed by it: (cert, key, ca)."""
    ca_key, server_key = _key(), _key()
    ca = _certificate("Test operator CA", ca_key, None, ca=True)
    cert = _write(directory / "api.crt", _certificate("127.0.0.1", server_key, ("Test operator CA", ca_key),
                                                       server=True), server_key)
    _write(directory / "ca.key.crt", ca, ca_key)
    return cert, cert.with_suffix(".key"), _write(directory / "ca.crt", ca)


async def test_the_api_over_tls_with_tokens_and_client_certificates(tmp_path: Path) -> None:
    cert, key, ca = server_certificate(tmp_path)
    ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
    ca_key = serialization.load_pem_private_key((tmp_path / "ca.key.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    client_key, stranger_key = _key(), _key()
    client_cert = _write(tmp_path / "operator.crt", _certificate(
        "operator", client_key, (ca_cert.subject.rfc4514_string().removeprefix("CN="), ca_key)), client_key)
    stranger = _write(tmp_path / "stranger.crt", _certificate(
        "stranger", stranger_key, (ca_cert.subject.rfc4514_string().removeprefix("CN="), ca_key)), stranger_key)
    db = tmp_path / "dso.sqlite"
    code = await asyncio.to_thread(main, ["token", "create", "--db", str(db), "--name", "operator-cert", "--role",
                                          "read", "--cert", str(client_cert)])
    assert code == 0
    settings = DsoSettings(db_path=str(db), vtn_port=0, api_port=0, api_host="127.0.0.1", api_cert=cert,
                           api_key=key, api_client_ca=ca, insecure=True)
    async with DsoServer(settings) as dso:
        assert dso.api_url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(ca))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{dso.api_url}/api/households", ssl=trust) as reply:
                assert reply.status == 401
            async with http.get(f"{dso.api_url}/api/households", ssl=trust, headers=bearer(dso, Role.READ)) as reply:
                assert reply.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{dso.api_url}/api/health")  # not trusted without the lab CA
            # A registered client certificate is a credential; another one from the same CA is not.
            for certificate, expected in ((client_cert, 200), (stranger, 401)):
                context = ssl.create_default_context(cafile=str(ca))
                context.load_cert_chain(certificate, certificate.with_suffix(".key"))
                async with http.get(f"{dso.api_url}/api/session", ssl=context) as reply:
                    assert reply.status == expected, await reply.text()
                    if expected == 200:
                        assert (await reply.json())["via"] == "certificate"
            # Under TLS the session cookie is Secure and __Host- prefixed.
            login = await http.post(f"{dso.api_url}/api/session", ssl=trust, json={"token": token(dso, Role.READ)})
            assert login.status == 200
            cookie = login.cookies["__Host-dso_session"]
            assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"


# ------------------------------------------------------------------------------------------- CLI and audit


async def test_token_commands_and_a_running_server(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(tmp_path / "dso.sqlite")
    code, out, err = await asyncio.to_thread(run, ["token", "create", "--db", db, "--name", "alice", "--role",
                                                   "operate"], capsys)
    assert code == 0 and looks_like_token(out.strip()) and "only time" in err
    alice = out.strip()
    path = tmp_path / "reader.token"
    code, out, err = await asyncio.to_thread(run, ["token", "create", "--db", db, "--name", "reader", "--role",
                                                   "read", "--expires-days", "30", "--output", str(path)], capsys)
    assert code == 0 and out == "" and stat.S_IMODE(path.stat().st_mode) == 0o600
    code, _, err = await asyncio.to_thread(run, ["token", "create", "--db", db, "--name", "alice", "--role",
                                                 "read"], capsys)
    assert code == 2 and "already named 'alice'" in err
    code, _, err = await asyncio.to_thread(run, ["token", "create", "--db", db, "--name", "x", "--role", "read",
                                                 "--output", str(path)], capsys)
    assert code == 2 and "never overwritten" in err
    code, out, _ = await asyncio.to_thread(run, ["token", "list", "--db", db, "--json"], capsys)
    listed = json.loads(out)["tokens"]
    assert [(t["name"], t["role"], t["state"]) for t in listed] == [("alice", "operate", "active"),
                                                                    ("reader", "read", "active")]
    assert alice not in out and listed[1]["expires_at"] is not None

    async with DsoServer(DsoSettings(db_path=db, vtn_port=0, api_port=0, insecure=True)) as dso:
        url = ["--api-url", dso.api_url]
        monkeypatch.setenv("DSO_API_TOKEN", alice)
        code, _, err = await asyncio.to_thread(run, ["households", *url], capsys)
        assert code == 0, err
        monkeypatch.delenv("DSO_API_TOKEN")
        code, _, err = await asyncio.to_thread(run, ["households", *url], capsys)
        assert code == 2 and "no API token" in err
        code, _, err = await asyncio.to_thread(run, ["households", *url, "--token-file", str(path)], capsys)
        assert code == 0, err
        code, out, _ = await asyncio.to_thread(run, ["token", "revoke", "reader", "--db", db], capsys)
        assert code == 0 and "revoked" in out
        code, _, err = await asyncio.to_thread(run, ["households", *url, "--token-file", str(path)], capsys)
        assert code == 1 and "valid token" in err
    code, out, _ = await asyncio.to_thread(run, ["audit", "--db", db, "--action", "token", "--json"], capsys)
    entries = json.loads(out)["entries"]
    assert [(e["action"], e["detail"]["name"]) for e in entries] == [
        ("token.create", "alice"), ("token.create", "reader"), ("token.revoke", "reader")]
    assert all(e["actor"].startswith("local:") for e in entries)


async def test_contract_and_grid_changes_are_audited_with_before_and_after(client: TestClient, store: DsoStore,
                                                                           tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    headers = bearer(store, name="contracts")
    same = await client.post("/api/households", json={**CONTRACT, "group": "feeder-1"}, headers=headers)
    assert same.status == 200
    changed = await client.post("/api/households", json={**CONTRACT, "group": "feeder-2",
                                                         "failsafe_import_kw": 5.0}, headers=headers)
    assert changed.status == 200
    [entry] = SecurityStore(store).audit(action="household.put")  # the unchanged one left no entry
    assert (entry.actor, entry.target) == ("token:contracts", EAN)
    assert entry.detail == {"failsafe_import_kw": [4.2, 5.0], "group": ["feeder-1", "feeder-2"]}
    db = tmp_path / "dso.sqlite"
    grid = Path(__file__).parent.parent / "examples" / "grid.toml"
    code, _, err = await asyncio.to_thread(run, ["grid", "load", str(grid), "--db", str(db)], capsys)
    assert code == 0, err
    code, out, _ = await asyncio.to_thread(run, ["audit", "--db", str(db), "--json"], capsys)
    [load] = json.loads(out)["entries"]
    assert load["action"] == "grid.load" and load["target"] == str(grid) and load["detail"]["transformers"] >= 1
