"""The HEMS reads a VTN's answers through the same guard as the VTN: a hostile or oversized answer is refused and
logged, counts as a failed exchange, and the HEMS keeps running."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from openleadr.messaging import create_message
from support.hostile import poll

from hems_client.transport.oadr20b.ven import HemsVen
from protocol import HouseholdContract, make_ean18
from protocol.clock import WallClock
from protocol.oadr20b.xml_guard import MAX_ANSWER_BYTES

CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000042"), contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
    failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
)
ENTITY_ANSWER = create_message("oadrResponse", ven_id="&x;", response={
    "response_code": 200, "response_description": "OK", "request_id": None}).replace(
    '<?xml version="1.0" encoding="utf-8"?>', '<?xml version="1.0" encoding="utf-8"?><!DOCTYPE oadrPayload '
    '[<!ENTITY x "ven-1">]>')


@pytest.fixture
async def vtn_answering() -> AsyncIterator[Callable[[bytes], str]]:
    """A bare HTTP server that answers every VEN request with the body given; returns the VTN URL."""
    runners: list[web.AppRunner] = []
    bodies: list[bytes] = []

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=bodies[-1], content_type="application/xml")

    async def start(body: bytes) -> str:
        bodies.append(body)
        app = web.Application()
        app.router.add_post("/OpenADR2/Simple/2.0b/{service}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}/OpenADR2/Simple/2.0b"

    yield start  # type: ignore[misc]
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize("body, words", [
    (ENTITY_ANSWER.encode(), "DOCTYPE"),
    (poll("ven-1", prolog='<?xml version="1.0"?><?xml-stylesheet href="x"?>').encode(), "processing instruction"),
    (b"<oadr:oadrPayload", "not valid OpenADR"),
    (create_message("oadrResponse", ven_id="v", response={  # just over the 16 MiB a VTN may send (PROFILE §1.5)
        "response_code": 200, "response_description": "x" * (MAX_ANSWER_BYTES + 1), "request_id": None}).encode(),
     "bytes"),
], ids=["internal entity", "processing instruction", "truncated", "oversized"])
async def test_a_hostile_answer_is_a_logged_failed_exchange(
    vtn_answering: Callable[[bytes], str], body: bytes, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    vtn_url = await vtn_answering(body)  # type: ignore[misc]
    ven = HemsVen(contract=CONTRACT, vtn_url=vtn_url, clock=WallClock(), insecure=True)
    try:
        with caplog.at_level(logging.WARNING):
            assert await ven.connect() is False
        assert ven.refused_answers >= 1
        assert ven.last_contact_at is None and ven.last_attempt_at is not None  # a failed exchange, not contact
        refusals = [r.getMessage() for r in caplog.records if "refused the VTN's answer" in r.getMessage()]
        assert refusals and words.lower() in refusals[0].lower(), refusals
    finally:
        await ven.stop()


async def test_the_hems_keeps_polling_through_hostile_answers(vtn_answering: Callable[[bytes], str]) -> None:
    vtn_url = await vtn_answering(ENTITY_ANSWER.encode())  # type: ignore[misc]
    ven = HemsVen(contract=CONTRACT, vtn_url=vtn_url, clock=WallClock(), insecure=True, poll_interval_s=0.05)
    try:
        await ven.run()
        await asyncio.sleep(0.5)
        assert ven._poll_task is not None and not ven._poll_task.done()  # still trying to register
        assert ven.refused_answers >= 4 and ven.transport_errors == 0 and ven.last_contact_at is None
    finally:
        await ven.stop()
