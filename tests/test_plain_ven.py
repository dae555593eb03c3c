"""A plain openleadr VEN, written from protocol/PROFILE.md alone (no project imports on the VEN side),
registers at `dso-server serve` and receives a bandwidth published with `dso-server publish`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openleadr import OpenADRClient

EAN = "871687120000000011"  # 18 digits, GS1 check digit 1
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


@pytest.fixture
def dso(tmp_path: Path) -> Iterator[tuple[str, str]]:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(
        f"""
[[household]]
connection_point_id = "{EAN}"
group = "feeder-1"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
failsafe_import_kw = 4.2
failsafe_export_kw = 4.2
failsafe_duration_s = 7200
"""
    )
    vtn_port, api_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [str(BIN / "dso-server"), "serve", "--db", str(tmp_path / "dso.sqlite"), "--vtn-port", str(vtn_port),
         "--api-port", str(api_port), "--poll-interval-s", "1", "--contracts", str(contracts)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    api = f"http://127.0.0.1:{api_port}"
    try:
        _wait_http(f"{api}/api/households")
        yield f"http://127.0.0.1:{vtn_port}/OpenADR2/Simple/2.0b", api
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        if os.environ.get("SHOW_DSO_LOG"):
            print(output)


async def test_plain_openleadr_ven_receives_published_bandwidth(dso: tuple[str, str]) -> None:
    vtn_url, api_url = dso
    received: list[dict] = []

    async def on_event(event: dict) -> str:
        received.append(event)
        return "optIn"

    client = OpenADRClient(ven_name=EAN, vtn_url=vtn_url)
    client.add_handler("on_event", on_event)
    client.add_handler("on_update_event", on_event)
    await client.run()
    try:
        assert client.registration_id, "the DSO did not register a VEN whose venName is a known EAN"
        start = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
        published = subprocess.run(
            [str(BIN / "dso-server"), "publish", "bandwidth", "--api-url", api_url, "--connection-point", EAN,
             "--firmness", "firm", "--start", start.isoformat(), "--import-kw", "5,4.5,3,3",
             "--export-kw", "6,6,6,6"],
            capture_output=True, text=True, timeout=30,
        )
        assert published.returncode == 0, published.stderr
        deadline = time.monotonic() + 15
        while not received and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert received, "the published bandwidth never reached the VEN"
        event = received[-1]
        descriptor = event["event_descriptor"]
        assert descriptor["market_context"] == "urn:hems-dso:program:capacity:firm:1.0"
        assert descriptor["modification_number"] == 0
        assert event["response_required"] == "always"
        assert event["active_period"]["dtstart"] == start
        assert event["active_period"]["duration"] == timedelta(hours=1)
        signals = {signal["signal_name"]: signal for signal in event["event_signals"]}
        assert set(signals) == {"x-IMPORT_CAPACITY_LIMIT", "x-EXPORT_CAPACITY_LIMIT"}
        for name, values in (("x-IMPORT_CAPACITY_LIMIT", [5, 4.5, 3, 3]), ("x-EXPORT_CAPACITY_LIMIT", [6] * 4)):
            signal = signals[name]
            assert signal["signal_type"] == "setpoint"
            assert signal["measurement"]["name"] == "powerReal"
            assert (signal["measurement"]["unit"], signal["measurement"]["scale"]) == ("W", "k")
            assert signal["current_value"] == 0  # not active yet
            assert [i["uid"] for i in signal["intervals"]] == [0, 1, 2, 3]
            assert [i["duration"] for i in signal["intervals"]] == [timedelta(minutes=15)] * 4
            assert [i["signal_payload"] for i in signal["intervals"]] == values

        # The DSO stored the VEN's answer (a stock openleadr VEN answers optIn, with 460 for x- names).
        event_id = descriptor["event_id"]
        deadline = time.monotonic() + 10
        answers: list[dict] = []
        while not answers and time.monotonic() < deadline:
            with urllib.request.urlopen(f"{api_url}/api/responses?event_id={event_id}") as reply:
                answers = json.load(reply)
                answers = answers.get("responses", answers) if isinstance(answers, dict) else answers
            await asyncio.sleep(0.2)
        assert answers and answers[-1]["opt_type"] == "optIn"
    finally:
        await client.stop()
