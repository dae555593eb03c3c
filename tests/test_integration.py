"""The whole thread over real sockets: the DSO server (VTN + operator API + SQLite file) and two HEMS VENs.

Every signal is published through the operator's HTTP API and travels as real OpenADR 2.0b XML to VENs
built on openleadr; answers and telemetry travel back the same way into the DSO's SQLite file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from api_auth import bearer
from support.security import PLAIN_HTTP, plain_settings  # plain HTTP on loopback: this module is not about security

from dso_server.service import DsoServer
from hems_client.app import HemsApp
from hems_client.devices.household import make_household
from hems_client.devices.weather import Weather
from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    ComfortTerms,
    Firmness,
    HouseholdContract,
    floor_to_interval,
    make_ean18,
)
from protocol.clock import AcceleratedClock, WallClock

SPEED = 300.0  # one 15-minute interval every 3 s of wall time
CONTRACTS = [
    HouseholdContract(
        connection_point_id=make_ean18(f"8716871299999{index:04d}"),
        contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
        failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
        comfort=ComfortTerms(),
    )
    for index in (1, 2)
]


async def wait_for(predicate: Callable[[], Any], *, timeout_s: float = 15.0, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class World:
    dso: DsoServer
    apps: list[HemsApp]
    clock: AcceleratedClock
    http: aiohttp.ClientSession
    db_path: Path

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, f"{self.dso.api_url}{path}", json=body) as reply:
            return reply.status, await reply.json()


def _bandwidth(clock: AcceleratedClock, import_kw: list[float]) -> CapacityBandwidth:
    start = floor_to_interval(clock.now()) + 4 * INTERVAL
    return CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=start + index * INTERVAL, import_limit_kw=value, export_limit_kw=5.0)
        for index, value in enumerate(import_kw)
    ))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = AcceleratedClock(start=floor_to_interval(WallClock().now()), speed=SPEED)
    db_path = tmp_path / "dso.sqlite"
    settings = plain_settings(db_path=str(db_path), vtn_port=0, api_port=0, poll_interval_s=1.0)
    weather = Weather.synthetic(start=clock.start - timedelta(hours=1), days=3, seed=3, mean_temp_c=2.0)
    async with DsoServer(settings, clock) as dso, aiohttp.ClientSession() as http:
        http.headers.update(bearer(dso))
        for contract in CONTRACTS:
            async with http.post(f"{dso.api_url}/api/households",
                                 json={**contract.model_dump(mode="json"), "group": "street"}) as reply:
                assert reply.status in (200, 201), await reply.text()
        apps = [
            HemsApp(contract, make_household(contract, weather=weather, seed=index), clock, dso.vtn_url,
                    poll_interval_s=0.1, store=tmp_path / f"hems-{index}.sqlite", security=PLAIN_HTTP)
            for index, contract in enumerate(CONTRACTS)
        ]
        for app in apps:
            await app.start()
        try:
            yield World(dso=dso, apps=apps, clock=clock, http=http, db_path=db_path)
        finally:
            for app in apps:
                await app.stop()


async def test_registration_delivery_answer_telemetry_modification_cancellation(world: World) -> None:
    dso, apps = world.dso, world.apps
    # Registration: both VENs are known to the DSO under their connection points.
    await wait_for(lambda: len(dso.store.vens()) == 2, what="two registered VENs")
    assert {ven.connection_point_id for ven in dso.store.vens()} == {c.connection_point_id for c in CONTRACTS}

    # A bandwidth published to the group arrives at both HEMS and decodes to exactly what was published.
    published = _bandwidth(world.clock, [5.0, 4.0, 3.0, 3.0, 6.0, 6.0, 6.0, 6.0])
    status, answer = await world.api("POST", "/api/bandwidths",
                                     {"group": "street", **published.model_dump(mode="json")})
    assert status == 201, answer
    event_ids = {event["connection_point_id"]: event["event_id"] for event in answer["events"]}
    for app in apps:
        event_id = event_ids[app.contract.connection_point_id]
        await wait_for(lambda app=app, event_id=event_id: event_id in app.signal_book.signals,
                       what="the bandwidth at the HEMS")
        held = app.signal_book.signals[event_id]
        assert held.payload == published
        assert held.modification_number == 0

    # The DSO stored each VEN's answer: optIn with response code 200 for the event's modification number.
    for app in apps:
        event_id = event_ids[app.contract.connection_point_id]
        responses = await wait_for(lambda event_id=event_id: world.dso.store.responses(event_id=event_id),
                                   what="the VEN's oadrCreatedEvent in the DSO store")
        assert [(r.response.opt_type, r.response.response_code, r.response.modification_number)
                for r in responses] == [("optIn", 200, 0)]

    # Telemetry of finished intervals arrives in the DSO store, as the HEMS measured it.
    for app in apps:
        cp = app.contract.connection_point_id
        rows = await wait_for(lambda cp=cp: world.dso.store.telemetry(cp), timeout_s=20,
                              what="telemetry in the DSO store")
        sent = {interval.start: interval for interval in app.controller.telemetry}
        for row in rows:
            assert row.interval_start in sent
            assert row.import_kw == pytest.approx(sent[row.interval_start].import_kw, abs=1e-9)
            assert row.export_kw == pytest.approx(sent[row.interval_start].export_kw, abs=1e-9)

    # A modification replaces the previous version at the HEMS (same event id, modification number 1).
    first_app = apps[0]
    event_id = event_ids[first_app.contract.connection_point_id]
    modified = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        interval.model_copy(update={"import_limit_kw": 2.5}) for interval in published.intervals))
    status, answer = await world.api("PUT", f"/api/signals/{event_id}", modified.model_dump(mode="json"))
    assert status == 200, answer
    await wait_for(lambda: first_app.signal_book.signals.get(event_id) is not None
                   and first_app.signal_book.signals[event_id].modification_number == 1,
                   what="the modified bandwidth at the HEMS")
    assert first_app.signal_book.signals[event_id].payload == modified
    assert first_app.signal_book.bandwidths() == [modified]
    # The other household's event was not touched.
    other = apps[1]
    assert other.signal_book.signals[event_ids[other.contract.connection_point_id]].modification_number == 0

    # A cancellation removes it from the HEMS, and the DSO records the VEN's acknowledgement of it.
    status, answer = await world.api("DELETE", f"/api/signals/{event_id}")
    assert status == 200, answer
    await wait_for(lambda: event_id not in first_app.signal_book.signals, what="the cancellation at the HEMS")
    assert first_app.signal_book.bandwidths() == []
    await wait_for(lambda: any(r.response.modification_number == 2 for r in dso.store.responses(event_id=event_id)),
                   what="the acknowledgement of the cancellation")


async def test_vtn_restart_keeps_registrations_and_signals(world: World, tmp_path: Path) -> None:
    await wait_for(lambda: len(world.dso.store.vens()) == 2, what="two registered VENs")
    vens_before = {ven.ven_id: ven.connection_point_id for ven in world.dso.store.vens()}
    published = _bandwidth(world.clock, [4.0] * 8)
    status, answer = await world.api("POST", "/api/bandwidths",
                                     {"group": "street", **published.model_dump(mode="json")})
    assert status == 201, answer
    for app in world.apps:
        await wait_for(lambda app=app: app.signal_book.bandwidths() == [published], what="the bandwidth")

    # Stop the DSO and start a new one on the same SQLite file and the same ports.
    settings = world.dso.settings.model_copy(update={"vtn_port": world.dso.vtn_port,
                                                      "api_port": world.dso.api_port})
    await world.dso.stop()
    restarted = DsoServer(settings, world.clock)
    await restarted.start()
    try:
        assert {ven.ven_id: ven.connection_point_id for ven in restarted.store.vens()} == vens_before
        assert len(restarted.store.signals(ending_after=world.clock.now())) == 2
        # A HEMS that starts afresh (no local store) after the restart gets the signal delivered again,
        # under the VEN id it had before: the restarted DSO still knows it.
        contract = world.apps[0].contract
        fresh = HemsApp(contract, world.apps[0].household, world.clock, restarted.vtn_url, poll_interval_s=0.1,
                        security=PLAIN_HTTP)
        await fresh.start()
        try:
            await wait_for(lambda: fresh.signal_book.bandwidths() == [published], what="redelivery after restart")
            assert {ven.ven_id for ven in restarted.store.vens()} == set(vens_before)
        finally:
            await fresh.stop()
        # The HEMS that kept running goes on reporting to the restarted DSO.
        cp = world.apps[1].contract.connection_point_id
        since = world.clock.now()
        await wait_for(lambda: any(row.received_at >= since for row in restarted.store.telemetry(cp)),
                       timeout_s=20, what="telemetry after the restart")
    finally:
        await restarted.stop()
