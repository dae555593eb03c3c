"""XML signatures over real sockets between the reference and stock openleadr 0.5.36 (which signs and verifies
with signxml), both directions, over mutual TLS (PROFILE §12.5):

- a stock openleadr VEN registers at the reference VTN with ``sign_messages``, receives a published bandwidth and
  answers it: the VTN verifies each of its messages with ``protocol.oadr20b.xmldsig``, the VEN verifies each
  answer (oadrDistributeEvent included) with signxml against the VTN's fingerprint;
- the reference HEMS VEN registers and polls at a stock openleadr ``OpenADRServer`` that signs its answers and
  verifies every message's signature with signxml; a message changed after signing is refused there.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from openleadr import OpenADRClient, OpenADRServer, utils
from openleadr.messaging import parse_message
from support.contracts import household_toml
from support.security import LabPki
from support.signatures import keys_from_files, ours, signed_object

from dso_server.service import DsoServer
from hems_client.transport.oadr20b.openleadr_adapter import OpenleadrVen
from protocol import BandwidthInterval, CapacityBandwidth, Firmness, make_ean18
from protocol.clock import WallClock

EAN = make_ean18("87168712000000001")
CONTRACTS = household_toml(EAN)


async def eventually(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met within the timeout")
        await asyncio.sleep(0.05)


async def test_a_stock_openleadr_ven_and_the_reference_vtn_verify_each_others_signatures(tmp_path: Path) -> None:
    pki = LabPki.create(tmp_path / "pki")
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(CONTRACTS, encoding="utf-8")
    settings = pki.settings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, contracts_file=contracts,
                            poll_interval_s=1, sign_messages=True)
    cert, key = pki.issue_ven(EAN)
    received: list[dict[str, Any]] = []

    async def on_event(event: dict[str, Any]) -> str:
        received.append(event)
        return "optIn"

    async with DsoServer(settings, WallClock()) as dso:
        pki.enrol(dso.store, EAN)
        assert dso.vtn.fingerprint is not None
        client = OpenADRClient(ven_name=EAN, vtn_url=dso.vtn_url, cert=str(cert), key=str(key),
                               ca_file=str(pki.ca_file), vtn_fingerprint=dso.vtn.fingerprint, show_fingerprint=False)
        client.add_handler("on_event", on_event)
        await client.run()
        try:
            assert client.registration_id, "the VEN refused the VTN's signed answer or the VTN refused the VEN"
            start = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
            event_id = dso.publish(CapacityBandwidth(firmness=Firmness.FIRM, intervals=(
                BandwidthInterval(start=start, import_limit_kw=5, export_limit_kw=6),)),
                connection_point_ids=[EAN]).signals[0].event_id
            await eventually(lambda: bool(received))
            assert received[-1]["event_descriptor"]["event_id"] == event_id
            await eventually(lambda: bool(dso.store.responses(event_id=event_id)))
            assert dso.store.responses(event_id=event_id)[-1].response.opt_type == "optIn"
            assert len(dso.vtn.replay_guard) >= 4  # registration, report registration, polls, the event's answer
        finally:
            await client.stop()


async def test_the_reference_hems_and_a_stock_openleadr_vtn_verify_each_others_signatures(tmp_path: Path) -> None:
    pki = LabPki.create(tmp_path / "pki")
    cert, key = pki.issue_ven(EAN)
    ven_fingerprint = utils.certificate_fingerprint(cert.read_bytes())
    registered: dict[str, str] = {}

    def lookup(ven_id: str) -> dict[str, Any] | None:
        if ven_id != "ven-1" or not registered:
            return None
        return {"ven_id": "ven-1", "ven_name": EAN, "fingerprint": ven_fingerprint,
                "registration_id": registered["registration_id"]}

    def register(payload: dict[str, Any]) -> tuple[str, str]:
        registered["registration_id"] = "reg-1"
        return "ven-1", "reg-1"

    vtn_cert, vtn_key = str(pki.pki.vtn_cert_path), str(pki.pki.vtn_key_path)
    server = OpenADRServer(vtn_id="STOCK-VTN", cert=vtn_cert, key=vtn_key, http_cert=vtn_cert, http_key=vtn_key,
                           http_ca_file=str(pki.ca_file), http_host="127.0.0.1", http_port=0, ven_lookup=lookup,
                           show_fingerprint=False, requested_poll_freq=timedelta(seconds=1))
    server.add_handler("on_create_party_registration", register)
    await server.run()
    url = f"https://127.0.0.1:{server.app_runner.addresses[0][1]}/OpenADR2/Simple/2.0b"
    ven = OpenleadrVen(ven_name=EAN, vtn_url=url, tls=pki.ven_tls(EAN), sign=True,
                       vtn_fingerprint=utils.certificate_fingerprint(pki.pki.vtn_cert_path.read_bytes()))
    try:
        await ven.create_party_registration()
        assert ven.registration_id == "reg-1" and ven.ven_id == "ven-1"
        for _ in range(3):
            response_type, payload = await ven.poll()
            assert response_type == "oadrResponse", (response_type, payload)
        assert ven.refused_answers == 0 and len(ven.replay_guard) == 4  # every answer signed, verified, fresh

        # The stock VTN does verify: the same signed poll with its nonce changed after signing is refused.
        nonce = secrets.token_hex(16)
        honest = ours(signed_object("oadrPoll", ven_id="ven-1"), keys_from_files(cert, key),
                      now=datetime.now(UTC), nonce=nonce)
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        context.load_cert_chain(str(cert), str(key))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
            answers = []
            for message in (honest.replace(nonce, nonce[::-1]), honest):
                async with session.post(f"{url}/OadrPoll", data=message.encode(),
                                        headers={"Content-Type": "application/xml"}) as reply:
                    answers.append((reply.status, await reply.read()))
        (refused_status, refused), (accepted_status, accepted) = answers
        assert (refused_status, refused) == (403, b"Invalid Signature")
        assert accepted_status == 200 and parse_message(accepted)[0] == "oadrResponse"
    finally:
        await ven.close()
        await server.stop()
