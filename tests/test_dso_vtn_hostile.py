"""The VTN answers hostile and malformed requests with a 4xx (or a 2.0b error code) that names the problem, and
stores nothing for them. In-process and quick; ``test_dso_vtn_fuzz.py`` runs the same corpus against a real
``dso-server serve`` process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from openleadr.messaging import create_message, parse_message
from support.hostile import XML, Hostile, corpus
from support.security import plain_settings  # plain HTTP on loopback; mutual TLS: test_dso_vtn_tls.py
from support.store_dump import logical_dump

from dso_server.service import DsoServer
from protocol import make_ean18
from protocol.clock import WallClock

EAN_A = make_ean18("87168712000000001")
MAX_BYTES = 64 * 1024
CONTRACTS = """
[[household]]
connection_point_id = "{a}"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
failsafe_import_kw = 4.2
failsafe_export_kw = 4.2
failsafe_duration_s = 7200
"""


@pytest.fixture
async def dso(tmp_path: Path) -> AsyncIterator[DsoServer]:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(CONTRACTS.format(a=EAN_A), encoding="utf-8")
    settings = plain_settings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, contracts_file=contracts,
                           max_message_bytes=MAX_BYTES)
    async with DsoServer(settings, WallClock()) as server:
        yield server


async def post(session: aiohttp.ClientSession, url: str, body: bytes, content_type: str | None
               ) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type} if content_type else {}
    async with session.post(url, data=body, headers=headers, skip_auto_headers=["Content-Type"]) as reply:
        return reply.status, await reply.read()


async def register(session: aiohttp.ClientSession, vtn_url: str) -> str:
    message = create_message("oadrCreatePartyRegistration", request_id="r1", ven_name=EAN_A, http_pull_model=True,
                             xml_signature=False, report_only=False, profile_name="2.0b",
                             transport_name="simpleHttp", transport_address=None)
    status, answer = await post(session, f"{vtn_url}/EiRegisterParty", message.encode(), XML)
    assert status == 200
    return str(parse_message(answer)[1]["ven_id"])


@pytest.mark.parametrize("case", corpus(MAX_BYTES), ids=lambda case: case.name)
async def test_each_hostile_request_is_refused_by_name_and_stores_nothing(dso: DsoServer, case: Hostile) -> None:
    async with aiohttp.ClientSession() as session:
        ven_id = await register(session, dso.vtn_url)
        before = logical_dump(dso.settings.db_path)
        status, answer = await post(session, f"{dso.vtn_url}/{case.service}",
                                    case.body.replace(b"{ven_id}", ven_id.encode()), case.content_type)
        assert status == case.status, answer[:300]
        text = answer.decode("utf-8", "replace")
        if case.response_code is not None:
            _, payload = parse_message(answer)
            assert payload["response"]["response_code"] == case.response_code
            text = payload["response"]["response_description"]
        assert all(word.lower() in text.lower() for word in case.words), text
        assert logical_dump(dso.settings.db_path) == before
        # ... and the VTN still serves the registered VEN.
        status, answer = await post(session, f"{dso.vtn_url}/OadrPoll",
                                    create_message("oadrPoll", ven_id=ven_id).encode(), XML)
        assert status == 200 and parse_message(answer)[0] == "oadrResponse"


async def test_a_message_without_a_ven_id_where_one_is_needed_is_refused(dso: DsoServer) -> None:
    async with aiohttp.ClientSession() as session:
        before = logical_dump(dso.settings.db_path)
        message = create_message("oadrPoll", ven_id="")
        status, answer = await post(session, f"{dso.vtn_url}/OadrPoll", message.encode(), XML)
        assert status == 200
        message_type, payload = parse_message(answer)
        assert (message_type, payload["response"]["response_code"]) == ("oadrResponse", 452)
        assert "venID" in payload["response"]["response_description"]
        assert logical_dump(dso.settings.db_path) == before


async def test_get_is_not_allowed(dso: DsoServer) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{dso.vtn_url}/OadrPoll") as reply:
        assert reply.status == 405
