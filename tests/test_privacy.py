"""Privacy by design on the wire: what leaves a home is read off the raw XML between the HEMS and the DSO.

A real DSO server and three real HEMS (performance contracts; one with the household's consent to raw comfort
readings) talk OpenADR 2.0b through a recording proxy on loopback, from 21:15 to 00:15 local: the houses start cold
(comfort lost), each EV leaves at 23:30 (its contracted departure; the HEMSs have over two simulated hours to
register before it), the day ends at midnight (daily verdicts).
No message of a household without consent carries an indoor temperature or an EV range (the rIDs that would name
them, and the values themselves); the consenting household's do, so the check can see them. What the DSO stored
agrees, and 'hems-client data export' shows each household every message its HEMS sent.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from dso_server.service import DsoServer
from dso_server.settings import DsoSettings
from dso_server.store.performance_store import PerformanceStore
from hems_client.app import HemsApp, VenSecurity
from hems_client.cli import main as hems_main
from hems_client.devices import Weather, make_household
from protocol import ComfortTerms, HouseholdContract, PerformanceTerms, make_ean18
from protocol.clock import AcceleratedClock
from protocol.oadr20b import names

START = datetime(2027, 1, 13, 20, 15, tzinfo=UTC)  # 21:15 in Amsterdam
END = START + timedelta(hours=3)
SPEED = 1200.0
RAW_RIDS = names.RAW_COMFORT_RIDS


def contract(index: int, *, consent: bool) -> HouseholdContract:
    return HouseholdContract(
        connection_point_id=make_ean18(f"87168712666600{index:03d}"), contracted_max_import_kw=17.0,
        contracted_max_export_kw=10.0, failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
        comfort=ComfortTerms(ev_departure_local=time(23, 30), ev_required_range_km=150.0),
        performance=PerformanceTerms(), raw_data_consent=consent)


PRIVATE = [contract(1, consent=False), contract(2, consent=False)]
CONSENTING = contract(3, consent=True)


@dataclass
class Recorder:
    """A plain-HTTP proxy in front of the VTN that keeps every request body as it went over the wire."""

    target: str
    bodies: list[tuple[str, str]] = field(default_factory=list)
    """(path, XML) of every message a VEN sent."""

    async def forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append((request.path, body.decode("utf-8")))
        async with aiohttp.ClientSession() as session, session.post(
                self.target + request.path, data=body, headers={"Content-Type": "application/xml"}) as answer:
            return web.Response(status=answer.status, body=await answer.read(),
                                content_type=answer.content_type or "application/xml")


@pytest.fixture
async def wire(tmp_path: Path) -> AsyncIterator[tuple[DsoServer, Recorder, dict[str, HemsApp]]]:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text("\n".join(
        f'[[household]]\n{_toml(c)}' for c in (*PRIVATE, CONSENTING)), encoding="utf-8")
    clock = AcceleratedClock(start=START, speed=SPEED)
    settings = DsoSettings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, poll_interval_s=1.0,
                           contracts_file=contracts, insecure=True)
    async with DsoServer(settings, clock) as dso:
        base = dso.vtn_url.split("/OpenADR2")[0]
        recorder = Recorder(target=base)
        app = web.Application()
        app.router.add_post("/{tail:.*}", recorder.forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        proxy = f"http://127.0.0.1:{runner.addresses[0][1]}" + dso.vtn_url[len(base):]
        weather = Weather.constant(start=START - timedelta(hours=1), outdoor_temp_c=-4.0)
        apps = {}
        try:
            for index, c in enumerate((*PRIVATE, CONSENTING)):
                household = make_household(c, weather=weather, seed=20 + index, pv_kw=0.0, indoor_temp_c=17.5)
                apps[c.connection_point_id] = HemsApp(c, household, clock, proxy, poll_interval_s=0.05,
                                                      security=VenSecurity(insecure=True),
                                                      store=tmp_path / f"hems-{index}.sqlite")
            await asyncio.gather(*(hems.start(until=END) for hems in apps.values()))
            for hems in apps.values():
                await hems.finished()
            yield dso, recorder, apps
        finally:
            for hems in apps.values():
                await hems.stop()
            await runner.cleanup()


def _toml(c: HouseholdContract) -> str:
    data = c.model_dump()
    comfort, performance = data.pop("comfort"), data.pop("performance")

    def value(v: object) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else f'"{v}"' if isinstance(v, str) else str(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items()]
    lines += ["[household.comfort]", *(f"{k} = {value(v)}" for k, v in comfort.items())]
    lines += ["[household.performance]", *(f"{k} = {value(v)}" for k, v in performance.items())]
    return "\n".join(lines) + "\n"


def _sender(xml: str) -> str | None:
    """The household a message is from: its venName, or its reports' resourceID / the venID of its registration."""
    found = re.search(r"<(?:\w+:)?oadrVenName>(\d{18})<", xml) or re.search(r"<(?:\w+:)?resourceID>(\d{18})<", xml)
    return found.group(1) if found else None


@pytest.mark.slow
async def test_no_message_of_a_household_without_consent_carries_an_indoor_temperature_or_an_ev_range(
        wire: tuple[DsoServer, Recorder, dict[str, HemsApp]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dso, recorder, apps = wire
    # Which venID belongs to which household, from the store (a report update names only the venID).
    vens = {dso.store.ven_for(ean).ven_id: ean for ean in apps}  # type: ignore[union-attr]

    def household_of(xml: str) -> str | None:
        found = re.search(r"<(?:\w+:)?venID>([^<]+)<", xml)
        return vens.get(found.group(1)) if found else _sender(xml)

    by_household: dict[str, list[str]] = {ean: [] for ean in apps}
    for _, xml in recorder.bodies:
        ean = household_of(xml)
        if ean is not None:
            by_household[ean].append(xml)
    # Everything of interest went over the wire: registration, offers, telemetry, needs, verdicts with EV and losses.
    for ean, messages in by_household.items():
        text = "\n".join(messages)
        for marker in ("oadrCreatePartyRegistration", "oadrRegisterReport", "TELEMETRY_USAGE", "x-CAPACITY_NEED",
                       "x-PERFORMANCE", names.RID_EV_SHORTFALL_KM, names.RID_COMFORT_LOST_KH):
            assert marker in text, (ean, marker)
    # The households without consent: no rID of a raw reading, no comfort status, in any message ...
    for c in PRIVATE:
        leaks = [xml for xml in by_household[c.connection_point_id]
                 if any(rid in xml for rid in RAW_RIDS) or names.REPORT_COMFORT in xml]
        assert leaks == [], leaks[0][:2000]
        # ... nor the values themselves: the EV's range at its departure does not appear as a number.
        departures = apps[c.connection_point_id].household.ev.departures  # type: ignore[union-attr]
        assert departures, "the EV did not leave: the verdict has no EV part to check"
        values = {float(v) for xml in by_household[c.connection_point_id]
                  for v in re.findall(r"<(?:\w+:)?value>([-0-9.eE]+)<", xml)}
        assert all(abs(v - departures[-1].range_km) > 1e-6 for v in values)
    # The consenting household's messages do carry them: the check above can see a leak.
    consenting = "\n".join(by_household[CONSENTING.connection_point_id])
    assert names.RID_INDOOR_TEMPERATURE_C in consenting and names.RID_EV_RANGE_AT_DEPARTURE_KM in consenting

    # What the DSO stored agrees: verdicts for everyone, comfort readings of the consenting household only.
    reports = {r.connection_point_id: r.report for r in PerformanceStore(dso.store).performance_reports()}
    assert set(reports) == set(apps)
    assert all(reports[c.connection_point_id].ev is not None and reports[c.connection_point_id].ev.range_km is None
               for c in PRIVATE)
    assert reports[CONSENTING.connection_point_id].ev.range_km is not None  # type: ignore[union-attr]
    assert [c.connection_point_id for c in (*PRIVATE, CONSENTING)
            if dso.store.latest_comfort(c.connection_point_id) is not None] == [CONSENTING.connection_point_id]

    # The household sees what its HEMS sent: the export holds each of its messages as they went over the wire.
    for index, c in enumerate(PRIVATE):
        code = hems_main(["data", "export", "--db", str(tmp_path / f"hems-{index}.sqlite")])
        assert code == 0
        document = json.loads(capsys.readouterr().out)
        assert document["connection_point_id"] == c.connection_point_id
        exported = {message["xml"] for message in document["messages"]}
        sent = {xml for xml in by_household[c.connection_point_id] if "oadrPoll" not in xml}
        assert sent <= exported
        kinds = {r["kind"] for m in document["messages"] for r in m["content"].get("reports", [])}
        assert {"Telemetry", "CapacityNeed", "PerformanceReport"} <= kinds
