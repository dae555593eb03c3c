"""Link loss is quiet and clear: against a real VTN that is stopped and restarted, the HEMS logs one warning
when contact is lost, one line when it returns and each failsafe state change - not openleadr's two ERROR
lines per failed poll - and the failsafe engages 120 s of clock time after the last contact."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from api_auth import bearer
from support.security import PLAIN_HTTP, plain_settings  # plain HTTP on loopback: this module is not about security

from dso_server.service import DsoServer
from hems_client.app import HemsApp
from hems_client.control.failsafe import FailsafeEvent, FailsafeState
from hems_client.devices.household import make_household
from hems_client.devices.weather import Weather
from protocol import ComfortTerms, HouseholdContract, floor_to_interval, make_ean18
from protocol.clock import AcceleratedClock, WallClock

SPEED = 60.0  # the 120 s failsafe comes 2 s of wall time after the last contact
POLL_S = 0.1  # wall seconds: 6 s of clock time
CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712999990007"), contracted_max_import_kw=17.0,
    contracted_max_export_kw=10.0, failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
    comfort=ComfortTerms(),
)


async def wait_for(predicate: Callable[[], Any], *, timeout_s: float = 15.0, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


@pytest.mark.slow
async def test_a_stopped_and_restarted_vtn_gives_one_line_each_way_and_the_failsafe_moves_on_time(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = AcceleratedClock(start=floor_to_interval(WallClock().now()), speed=SPEED)
    settings = plain_settings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, poll_interval_s=1.0)
    weather = Weather.synthetic(start=clock.start - timedelta(hours=1), days=2, seed=3, mean_temp_c=2.0)
    dso = DsoServer(settings, clock)
    await dso.start()
    restarted: DsoServer | None = None
    async with aiohttp.ClientSession(headers=bearer(dso)) as http, http.post(
            f"{dso.api_url}/api/households", json={**CONTRACT.model_dump(mode="json"), "group": "g"}) as reply:
        assert reply.status in (200, 201), await reply.text()
    app = HemsApp(CONTRACT, make_household(CONTRACT, weather=weather, seed=1), clock, dso.vtn_url,
                  poll_interval_s=POLL_S, security=PLAIN_HTTP)
    try:
        await app.start()
        await wait_for(lambda: app.ven.registered and app.ven.last_contact_at is not None, what="registration")
        same_ports = settings.model_copy(update={"vtn_port": dso.vtn_port, "api_port": dso.api_port})
        await dso.stop()
        # Lost: the failsafe engages, and ten more failed polls follow in silence.
        await wait_for(lambda: app.controller.failsafe_state is FailsafeState.FAILSAFE, what="the failsafe")
        await asyncio.sleep(10 * POLL_S)
        lost = app.controller.failsafe_transitions[0]
        last_contact = app.controller.failsafe.contact_lost_after  # type: ignore[union-attr]
        assert last_contact is not None
        # 120 s after the last contact, give or take the accelerated clock's scheduling (not a poll period).
        assert 120.0 <= (lost.at - last_contact).total_seconds() < 120.0 + 0.5 * SPEED * POLL_S
        assert len(lines(caplog, "contact with the VTN at")) == 1
        (warning,) = lines(caplog, "lost (")
        # The cause is named: the listener gone, or (when a poll meets the shutdown) the connection closed under it.
        assert warning.levelno == logging.WARNING and any(
            cause in warning.getMessage() for cause in ("Cannot connect to host", "Server disconnected"))
        assert [r for r in caplog.records if r.name.startswith("openleadr") and r.levelno >= logging.ERROR] == []
        assert len(lines(caplog, "failsafe normal -> failsafe at")) == 1

        restarted = DsoServer(same_ports, clock)
        await restarted.start()
        await wait_for(lambda: app.controller.failsafe_state is FailsafeState.FAILSAFE_RECONNECTED,
                       what="contact back")
        await asyncio.sleep(10 * POLL_S)
        assert len(lines(caplog, "restored (no answer for")) == 1
        assert len(lines(caplog, "contact with the VTN at")) == 2
        assert len(lines(caplog, "failsafe failsafe -> failsafe_reconnected at")) == 1
        assert [t.event for t in app.controller.failsafe_transitions] == [FailsafeEvent.CONTACT_LOST,
                                                                          FailsafeEvent.CONTACT_RESTORED]
        assert [r for r in caplog.records if r.name.startswith("openleadr") and r.levelno >= logging.ERROR] == []
    finally:
        await app.stop()
        if restarted is not None:
            await restarted.stop()
        await dso.stop()
