"""Slow clients (slowloris) against a real DsoServer on loopback: a connection that sends nothing, half a request
head or half a body is closed (the body answered 408) on the VTN and on the operator API, while a VEN polling on
its keep-alive connection, back to back or after a pause, keeps it. The guard's timeout is 1 s for the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from openleadr.messaging import create_message
from support.contracts import household_toml
from support.security import LabPki, plain_settings

from dso_server.security import slow_clients
from dso_server.security.tokens import Role
from dso_server.service import DsoServer
from protocol import make_ean18
from protocol.clock import WallClock

EAN_A = make_ean18("87168712000000001")
CONTRACTS = household_toml(EAN_A)
TIMEOUT_S = 1.0
CLOSED_WITHIN_S = 30.0
"""Generous: the guard closes after 1 to 1.25 s; a loaded CI machine may take longer to get there."""


@pytest.fixture
async def dso(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DsoServer]:
    monkeypatch.setattr(slow_clients, "TIMEOUT_S", TIMEOUT_S)
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(CONTRACTS, encoding="utf-8")
    settings = plain_settings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, contracts_file=contracts)
    async with DsoServer(settings, WallClock()) as server:
        yield server


async def open_connection(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it closed the connection (fails if it is still open after a long while)."""
    return await asyncio.wait_for(reader.read(), CLOSED_WITHIN_S)


@pytest.mark.parametrize("server", ["vtn", "api"])
@pytest.mark.parametrize("sent", [b"", b"POST /x HTTP/1.1\r\nHost: dso\r\n"], ids=["nothing", "half a head"])
async def test_a_connection_without_a_complete_request_head_is_closed(dso: DsoServer, server: str,
                                                                      sent: bytes) -> None:
    reader, writer = await open_connection(dso.vtn_url if server == "vtn" else dso.api_url)
    writer.write(sent)
    assert await until_closed(reader) == b""
    writer.close()
    assert await dso_answers(dso)  # the server itself is fine


@pytest.fixture
async def tls_dso(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[DsoServer, LabPki]]:
    monkeypatch.setattr(slow_clients, "TIMEOUT_S", TIMEOUT_S)
    pki = LabPki.create(tmp_path / "pki")
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(CONTRACTS, encoding="utf-8")
    settings = pki.settings(db_path=str(tmp_path / "dso.sqlite"), vtn_host="127.0.0.1", vtn_port=0, api_port=0,
                            contracts_file=contracts)
    async with DsoServer(settings, WallClock()) as server:
        yield server, pki


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
                         ids=["nothing", "half a client hello"])
async def test_a_tls_handshake_that_does_not_end_is_closed(tls_dso: tuple[DsoServer, LabPki], sent: bytes) -> None:
    """Before its handshake ends a TLS connection is not among the server's connections (the guard cannot see
    it): the handshake itself is bounded by the same timeout (the event loop's default was 60 s)."""
    dso, _ = tls_dso
    reader, writer = await open_connection(dso.vtn_url)
    writer.write(sent)
    assert await until_closed(reader) == b""
    writer.close()


async def test_a_tls_connection_without_a_request_is_closed_after_its_handshake(
    tls_dso: tuple[DsoServer, LabPki],
) -> None:
    dso, pki = tls_dso
    parts = urlsplit(dso.vtn_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port,
                                                   ssl=pki.ven_tls(EAN_A).context(), server_hostname="localhost")
    assert writer.get_extra_info("peercert") is not None  # the handshake ended
    assert await until_closed(reader) == b""
    writer.close()


@pytest.mark.parametrize("server", ["vtn", "api"])
async def test_a_body_that_does_not_arrive_is_answered_408(dso: DsoServer, server: str) -> None:
    path = urlsplit(f"{dso.vtn_url}/OadrPoll").path if server == "vtn" else "/api/bandwidths"
    reader, writer = await open_connection(dso.vtn_url if server == "vtn" else dso.api_url)
    headers = "Content-Type: application/xml\r\n" if server == "vtn" else (
        "Content-Type: application/json\r\nAuthorization: Bearer " + dso.create_token("slow", Role.OPERATE) + "\r\n")
    writer.write(f"POST {path} HTTP/1.1\r\nHost: dso\r\n{headers}Content-Length: 1000\r\n\r\n<oadr".encode())
    head, body = await read_answer(reader)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert b"did not arrive within 1 s" in body


async def test_a_ven_polling_on_its_keep_alive_connection_is_left_open(dso: DsoServer) -> None:
    reader, writer = await open_connection(dso.vtn_url)
    path = urlsplit(f"{dso.vtn_url}/OadrPoll").path
    body = create_message("oadrPoll", ven_id="ven-unknown").encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: dso\r\nContent-Type: application/xml\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    loop = asyncio.get_running_loop()
    answers, until = 0, loop.time() + 4 * TIMEOUT_S
    while loop.time() < until:  # back to back, for four times the guard's timeout
        writer.write(request)
        assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
        answers += 1
    await asyncio.sleep(3 * TIMEOUT_S)  # a pause longer than the guard's timeout: still the same connection
    writer.write(request)
    assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert answers >= 2


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP answer: its head and its body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSED_WITHIN_S)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    return head, await asyncio.wait_for(reader.readexactly(length), CLOSED_WITHIN_S)


async def dso_answers(dso: DsoServer) -> bool:
    reader, writer = await open_connection(dso.api_url)
    writer.write(b"GET /api/health HTTP/1.1\r\nHost: dso\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), CLOSED_WITHIN_S)
    writer.close()
    return answer.startswith(b"HTTP/1.1 200 ")
