"""A plain openleadr VEN, written from protocol/PROFILE.md alone (no project imports on the VEN side),
registers at `dso-server serve` over mutual TLS and receives a bandwidth published with `dso-server publish`.

The operator's side is the README's guide, run as commands: `dso-server pki init`, `pki issue-vtn`,
`pki issue-ven --ean ... --db` (issues the household's certificate and enrols it), `serve --pki`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dso_process import BIN, DsoProcess, dso_server
from openleadr import OpenADRClient

EAN = "871687120000000011"  # 18 digits, GS1 check digit 1


@pytest.fixture
def dso(tmp_path: Path) -> Iterator[DsoProcess]:
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
    pki = tmp_path / "pki"
    for command in (["init"], ["issue-vtn"], ["issue-ven", "--ean", EAN, "--db", str(tmp_path / "dso.sqlite")]):
        done = dso_server("pki", *command, "--dir", str(pki))
        assert done.returncode == 0, done.stderr
    with DsoProcess(tmp_path, "--poll-interval-s", "1", "--contracts", str(contracts), "--pki", str(pki)) as process:
        yield process


async def test_plain_openleadr_ven_receives_published_bandwidth(dso: DsoProcess) -> None:
    vtn_url, api_url, pki = dso.vtn_url, dso.api_url, dso.directory / "pki"
    assert vtn_url.startswith("https://")
    received: list[dict] = []

    async def on_event(event: dict) -> str:
        received.append(event)
        return "optIn"

    client = OpenADRClient(ven_name=EAN, vtn_url=vtn_url, cert=str(pki / "vens" / f"{EAN}.crt"),
                           key=str(pki / "vens" / f"{EAN}.key"), ca_file=str(pki / "ca.crt"), show_fingerprint=False)
    client.add_handler("on_event", on_event)
    client.add_handler("on_update_event", on_event)
    await client.run()
    try:
        assert client.registration_id, "the DSO did not register a VEN whose venName is a known EAN"
        start = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
        published = subprocess.run(
            [str(BIN / "dso-server"), "publish", "bandwidth", "--api-url", api_url, "--token-file",
             str(dso.token_file), "--connection-point", EAN,
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
        assert descriptor["market_context"] == "urn:hems-dso:program:capacity:firm"
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
            request = urllib.request.Request(f"{api_url}/api/responses?event_id={event_id}", headers=dso.headers())
            with urllib.request.urlopen(request) as reply:
                answers = json.load(reply)
                answers = answers.get("responses", answers) if isinstance(answers, dict) else answers
            await asyncio.sleep(0.2)
        assert answers and answers[-1]["opt_type"] == "optIn"
    finally:
        await client.stop()
