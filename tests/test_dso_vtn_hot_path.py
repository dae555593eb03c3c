"""The VTN's hot path over real loopback HTTP: a quiet oadrPoll answered from memory, exactly as the general
path answers it, with no store write; every change committed before a poll reaches it (both backends)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from api_auth import bearer
from openleadr.messaging import create_message, parse_message
from support.contracts import household_toml
from support.security import LabPki

from dso_server import metrics
from dso_server.service import DsoServer
from dso_server.settings import DsoSettings
from dso_server.store.certificates import CertificateStore
from dso_server.store.sqlite import DsoStore
from dso_server.transport.oadr20b import openleadr_adapter as oadr
from dso_server.transport.oadr20b.fast_poll import poll_ven_id
from protocol import floor_to_interval, make_ean18
from protocol.clock import WallClock

Q = timedelta(minutes=15)
EAN = make_ean18("87168712000000201")
OTHER = make_ean18("87168712000000202")
CONTRACTS = "".join(household_toml(ean) for ean in (EAN, OTHER))


@pytest.fixture
async def dso(db_location: str, tmp_path: Path) -> AsyncIterator[DsoServer]:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(CONTRACTS)
    async with DsoServer(DsoSettings(db_path=db_location, vtn_port=0, api_port=0, contracts_file=contracts,
                                     insecure=True)) as dso:
        yield dso


async def post(session: aiohttp.ClientSession, url: str, body: bytes | str) -> bytes:
    async with session.post(url, data=body, headers={"Content-Type": "application/xml"}) as answer:
        assert answer.status == 200
        return await answer.read()


async def register(session: aiohttp.ClientSession, dso: DsoServer, ean: str = EAN) -> str:
    body = create_message("oadrCreatePartyRegistration", request_id="r1", ven_name=ean, http_pull_model=True,
                          xml_signature=False, report_only=False, profile_name="2.0b", transport_name="simpleHttp",
                          transport_address=None)
    _, payload = parse_message(await post(session, f"{dso.vtn_url}/EiRegisterParty", body))
    return str(payload["ven_id"])


async def opt_in(session: aiohttp.ClientSession, dso: DsoServer, ven_id: str, events: list[dict[str, Any]]) -> None:
    """The VEN's oadrCreatedEvent (optIn) to the events it was sent: until then each poll sends them again
    (PROFILE §7.4.3)."""
    body = create_message("oadrCreatedEvent", ven_id=ven_id, response={
        "response_code": 200, "response_description": "OK", "request_id": None}, event_responses=[
        {"response_code": 200, "response_description": "OK", "request_id": "d1", "opt_type": "optIn",
         "event_id": e["event_descriptor"]["event_id"],
         "modification_number": e["event_descriptor"]["modification_number"]} for e in events])
    assert parse_message(await post(session, f"{dso.vtn_url}/EiEvent", body))[0] == "oadrResponse"


def store_writes() -> float:
    return sum(sample.value for family in metrics.STORE_SECONDS.collect() for sample in family.samples
               if sample.name == "dso_store_seconds_count" and sample.labels["operation"] != "read")


async def test_a_quiet_poll_is_answered_from_memory_exactly_as_the_general_path_answers(dso: DsoServer) -> None:
    async with aiohttp.ClientSession() as session:
        ven_id = await register(session, dso)
        poll = create_message("oadrPoll", ven_id=ven_id)
        assert poll_ven_id(poll.encode()) == ven_id
        first = await post(session, f"{dso.vtn_url}/OadrPoll", poll)  # loads the VEN's state
        assert parse_message(first)[0] == "oadrResponse"
        writes, polls = store_writes(), metrics.POLLS._value.get()
        fast = [await post(session, f"{dso.vtn_url}/OadrPoll", poll) for _ in range(50)]
        assert store_writes() == writes  # no write per poll: liveness goes to the store in batches
        assert metrics.POLLS._value.get() == polls + 50
        # The same poll with a comment in it is not the fast path's: the general path answers it.
        general = await post(session, f"{dso.vtn_url}/OadrPoll",
                             poll.replace("<oadr:oadrPoll ", "<!-- general path --><oadr:oadrPoll "))
        assert poll_ven_id(poll.replace("<oadr:oadrPoll ", "<!-- x --><oadr:oadrPoll ").encode()) is None
        assert set(fast) == {general}


async def test_a_change_through_the_api_reaches_the_next_poll(dso: DsoServer) -> None:
    async with aiohttp.ClientSession() as session:
        headers = bearer(dso)
        ven_id = await register(session, dso)
        poll = create_message("oadrPoll", ven_id=ven_id)
        assert parse_message(await post(session, f"{dso.vtn_url}/OadrPoll", poll))[0] == "oadrResponse"
        start = floor_to_interval(datetime.now(UTC)) + 8 * Q
        body: dict[str, Any] = {"connection_point_ids": [EAN], "firmness": "firm", "intervals": [
            {"start": start.isoformat(), "import_limit_kw": 5.0, "export_limit_kw": 5.0}]}
        async with session.post(f"{dso.api_url}/api/bandwidths", json=body, headers=headers) as answer:
            assert answer.status == 201
            event_id = (await answer.json())["events"][0]["event_id"]
        kind, payload = parse_message(await post(session, f"{dso.vtn_url}/OadrPoll", poll))
        assert kind == "oadrDistributeEvent"
        assert [e["event_descriptor"]["event_id"] for e in payload["events"]] == [event_id]
        kind, _ = parse_message(await post(session, f"{dso.vtn_url}/OadrPoll", poll))
        assert kind == "oadrDistributeEvent"  # not answered yet: sent again
        await opt_in(session, dso, ven_id, payload["events"])
        assert parse_message(await post(session, f"{dso.vtn_url}/OadrPoll", poll))[0] == "oadrResponse"
        async with session.delete(f"{dso.api_url}/api/signals/{event_id}", headers=headers) as answer:
            assert answer.status == 200
        kind, payload = parse_message(await post(session, f"{dso.vtn_url}/OadrPoll", poll))
        assert kind == "oadrDistributeEvent" and payload["events"][0]["event_descriptor"]["event_status"] == "cancelled"


async def test_a_change_is_sent_only_to_the_vens_whose_events_changed(dso: DsoServer) -> None:
    async with aiohttp.ClientSession() as session:
        headers = bearer(dso)
        mine, other = await register(session, dso), await register(session, dso, OTHER)
        polls = {ven_id: create_message("oadrPoll", ven_id=ven_id) for ven_id in (mine, other)}

        async def poll(ven_id: str) -> str:
            kind, payload = parse_message(await post(session, f"{dso.vtn_url}/OadrPoll", polls[ven_id]))
            if kind == "oadrDistributeEvent":
                await opt_in(session, dso, ven_id, payload["events"])
            return str(kind)

        assert [await poll(mine), await poll(other)] == ["oadrResponse", "oadrResponse"]
        start = floor_to_interval(datetime.now(UTC)) + 8 * Q
        body = {"connection_point_ids": [EAN], "firmness": "non_firm", "intervals": [
            {"start": start.isoformat(), "import_limit_kw": 2.0, "export_limit_kw": 2.0}]}
        async with session.post(f"{dso.api_url}/api/bandwidths", json=body, headers=headers) as answer:
            event_id = (await answer.json())["events"][0]["event_id"]
        assert [await poll(other), await poll(mine)] == ["oadrResponse", "oadrDistributeEvent"]
        body = {"firmness": "non_firm", "intervals": [
            {"start": start.isoformat(), "import_limit_kw": 3.0, "export_limit_kw": 2.0}]}
        async with session.put(f"{dso.api_url}/api/signals/{event_id}", json=body, headers=headers) as answer:
            assert answer.status == 200
        assert [await poll(other), await poll(mine), await poll(mine)] == [
            "oadrResponse", "oadrDistributeEvent", "oadrResponse"]


def test_the_fast_path_takes_only_plain_schema_valid_polls() -> None:
    poll = create_message("oadrPoll", ven_id="ven-1").encode()
    assert poll_ven_id(poll) == "ven-1"
    assert poll_ven_id(create_message("oadrRequestEvent", ven_id="ven-1", request_id="r").encode()) is None
    assert poll_ven_id(poll.replace(b"<?xml", b'<!DOCTYPE x [<!ENTITY e "e">]><?xml')) is None
    assert poll_ven_id(poll.replace(b"ven-1", b"")) is None  # no venID
    assert poll_ven_id(poll.replace(b"ei:venID", b"ei:venId")) is None  # not schema-valid
    assert poll_ven_id(poll[:-30]) is None  # not well-formed
    assert poll_ven_id(poll + b" " * 30_000) is None  # too large for a poll, even a signed one


async def test_over_mutual_tls_quiet_polls_skip_the_parser_and_a_revocation_holds_at_the_next_poll(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = LabPki.create(tmp_path / "pki")
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(CONTRACTS)
    db = str(tmp_path / "dso.sqlite")
    parsed: list[bytes] = []
    original = oadr.parse
    monkeypatch.setattr(oadr, "parse", lambda body: parsed.append(body) or original(body))
    settings = pki.settings(db_path=db, vtn_port=0, api_port=0, contracts_file=contracts)
    async with DsoServer(settings, WallClock()) as dso:
        pki.enrol(dso.store, EAN)
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        context.load_cert_chain(*(str(path) for path in pki.issue_ven(EAN)))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            ven_id = await register(session, dso)
            poll = create_message("oadrPoll", ven_id=ven_id)
            first = await post(session, f"{dso.vtn_url}/OadrPoll", poll)
            parsed.clear()
            assert {await post(session, f"{dso.vtn_url}/OadrPoll", poll) for _ in range(20)} == {first}
            assert parsed == []  # answered from memory, certificate checked against the cached enrolment
            with DsoStore(db) as other:  # the operator revokes it, from another process's connection
                fingerprint = CertificateStore(other).enrolments(EAN)[0].fingerprint_sha256
                CertificateStore(other).revoke(fingerprint, reason="stolen", now=datetime.now(UTC))
            kind, payload = parse_message(await post(session, f"{dso.vtn_url}/OadrPoll", poll))
            assert (kind, payload["response"]["response_code"]) == ("oadrResponse", 463)
            assert "revoked" in payload["response"]["response_description"]
