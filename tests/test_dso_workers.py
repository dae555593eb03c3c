"""Many VTN workers on one store: real ``dso-server serve`` processes on one PostgreSQL database (and, where the
behaviour is the store's, on one SQLite file too), driven by a raw 2.0b VEN over loopback HTTP.

* a VEN registered through one server polls another and gets the same events; a publish or a modification
  through one server's API reaches the next poll on the other; what one server delivered, the other knows;
* ``serve --workers 2``: two worker processes behind one port; a worker killed with SIGKILL is started again and
  serves the same state;
* ``kill -9`` in the middle of a stream of publications loses none that the API acknowledged, and leaves no
  publication half-written (both backends);
* the planner runs in exactly one server at a time (the store's planner lock) and moves to another when its
  holder stops, without publishing a day twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dso_process import DsoProcess, contracts_toml
from openleadr.messaging import create_message, parse_message
from prometheus_client.parser import text_string_to_metric_families

from dso_server.service import DsoServer
from dso_server.settings import DsoSettings
from dso_server.store.grid_store import GridStore
from dso_server.store.sqlite import DsoStore
from protocol import floor_to_interval, make_ean18
from protocol.clock import AcceleratedClock

pytestmark = pytest.mark.slow

Q = timedelta(minutes=15)
EANS = [make_ean18(f"8716871200000010{i}") for i in range(3)]
CONTRACTS = contracts_toml(EANS)
EXAMPLE_GRID = Path(__file__).parent.parent / "examples" / "grid.toml"


# ------------------------------------------------------------------------------------------ processes


@contextlib.contextmanager
def serve(db: str, workdir: Path, *args: str, name: str = "dso") -> Iterator[DsoProcess]:
    """``dso-server serve`` on free ports with the households of ``CONTRACTS`` (an operate token made for it)."""
    directory = workdir / name
    directory.mkdir(exist_ok=True)
    contracts = directory / "contracts.toml"
    contracts.write_text(CONTRACTS)
    shared = workdir / "operate.token"  # one token for every server of the test, which share the store
    if shared.exists():
        shutil.copy(shared, directory / "operate.token")
    with DsoProcess(directory, "--contracts", str(contracts), "--insecure", *args, db=db) as served:  # type: ignore[arg-type]
        if not shared.exists():
            shutil.copy(served.token_file, shared)
        yield served


def api(served: DsoProcess, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(served.api_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **served.headers()})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def bandwidth_body(import_kw: float, **targets: Any) -> dict[str, Any]:
    start = floor_to_interval(datetime.now(UTC)) + 8 * Q
    return {"firmness": "firm", **targets, "intervals": [
        {"start": (start + i * Q).isoformat(), "import_limit_kw": import_kw, "export_limit_kw": 5.0}
        for i in range(4)]}


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return sorted(out)


# --------------------------------------------------------------------------------------------- the VEN


class RawVen:
    """A 2.0b VEN speaking openleadr's messages over plain HTTP to whichever VTN URL it is told."""

    def __init__(self, session: aiohttp.ClientSession, name: str) -> None:
        self.session = session
        self.name = name
        self.ven_id = ""

    async def send(self, vtn_url: str, service: str, message_type: str, **payload: Any) -> tuple[str, dict[str, Any]]:
        body = create_message(message_type, **payload)
        async with self.session.post(f"{vtn_url}/{service}", data=body,
                                     headers={"Content-Type": "application/xml"}) as answer:
            text = await answer.read()
            assert answer.status == 200, text
        return parse_message(text)

    async def register(self, vtn_url: str) -> None:
        kind, payload = await self.send(vtn_url, "EiRegisterParty", "oadrCreatePartyRegistration",
                                        request_id="r1", ven_name=self.name, http_pull_model=True,
                                        xml_signature=False, report_only=False, profile_name="2.0b",
                                        transport_name="simpleHttp", transport_address=None)
        assert kind == "oadrCreatedPartyRegistration" and payload["response"]["response_code"] == 200, payload
        self.ven_id = payload["ven_id"]

    async def poll(self, vtn_url: str) -> list[tuple[str, int]]:
        """(event id, modification number) of an oadrDistributeEvent (answered with oadrCreatedEvent on the same
        VTN), or [] for an oadrResponse."""
        kind, payload = await self.send(vtn_url, "OadrPoll", "oadrPoll", ven_id=self.ven_id)
        if kind == "oadrResponse":
            return []
        assert kind == "oadrDistributeEvent", (kind, payload)
        events = [(e["event_descriptor"]["event_id"], e["event_descriptor"]["modification_number"])
                  for e in payload.get("events") or []]
        kind, _ = await self.send(vtn_url, "EiEvent", "oadrCreatedEvent", ven_id=self.ven_id, event_responses=[
            {"event_id": e, "modification_number": m, "response_code": 200, "response_description": "OK",
             "opt_type": "optIn", "request_id": payload.get("request_id")} for e, m in events],
            response={"response_code": 200, "response_description": "OK", "request_id": payload.get("request_id")})
        assert kind == "oadrResponse"
        return events


# ------------------------------------------------------------------------------------------------ tests


async def test_two_servers_on_one_postgres_share_vens_events_and_deliveries(postgres_url: str,
                                                                            tmp_path: Path) -> None:
    with serve(postgres_url, tmp_path, name="a") as a, serve(postgres_url, tmp_path, name="b") as b:
        async with aiohttp.ClientSession() as session:
            ven = RawVen(session, EANS[0])
            await ven.register(a.vtn_url)
            assert await ven.poll(b.vtn_url) == []  # known to B, nothing published yet
            published = await asyncio.to_thread(api, a, "POST", "/api/bandwidths",
                                                bandwidth_body(5.0, connection_point_ids=[EANS[0]]))
            event_id = published["events"][0]["event_id"]
            assert await ven.poll(b.vtn_url) == [(event_id, 0)]  # published through A, delivered by B
            assert await ven.poll(a.vtn_url) == []  # A knows B delivered it (and the VEN answered)
            await asyncio.to_thread(api, b, "PUT", f"/api/signals/{event_id}", bandwidth_body(3.0))
            assert await ven.poll(a.vtn_url) == [(event_id, 1)]  # modified through B, the next poll on A has it
            assert await ven.poll(b.vtn_url) == []
            responses = await asyncio.to_thread(api, b, "GET", f"/api/responses?event_id={event_id}")
            assert [(r["modification_number"], r["response_code"]) for r in responses["responses"]] == [
                (0, 200), (1, 200)]
            other = RawVen(session, EANS[1])
            await other.register(b.vtn_url)
            group = await asyncio.to_thread(api, b, "POST", "/api/bandwidths",
                                            bandwidth_body(4.0, group="feeder-1"))
            mine = {e["connection_point_id"]: e["event_id"] for e in group["events"]}
            assert await other.poll(a.vtn_url) == [(mine[EANS[1]], 0)]
            assert sorted(await ven.poll(a.vtn_url)) == sorted([(event_id, 1), (mine[EANS[0]], 0)])


async def test_workers_share_one_port_and_a_killed_worker_comes_back(postgres_url: str, tmp_path: Path) -> None:
    with serve(postgres_url, tmp_path, "--workers", "2") as served:
        workers = await _wait_for_children(served.process.pid, 2)
        async with aiohttp.ClientSession() as session:
            vens = [RawVen(session, ean) for ean in EANS]
            for ven in vens:
                await ven.register(served.vtn_url)
            published = await asyncio.to_thread(api, served, "POST", "/api/bandwidths",
                                                bandwidth_body(5.0, group="feeder-1"))
            events = {e["connection_point_id"]: e["event_id"] for e in published["events"]}
            for ven in vens:
                assert await ven.poll(served.vtn_url) == [(events[ven.name], 0)]
            os.kill(workers[0], signal.SIGKILL)
            restarted = await _wait_for_children(served.process.pid, 2, without=workers[0])
            assert workers[0] not in restarted and workers[1] in restarted
        async with aiohttp.ClientSession() as session:  # new connections reach both workers again
            for ean in EANS:
                ven = RawVen(session, ean)
                await ven.register(served.vtn_url)  # registering again: all events are delivered anew
                assert await ven.poll(served.vtn_url) == [(events[ean], 0)]
                assert await ven.poll(served.vtn_url) == []
            # One scrape, whichever worker answers it, counts the polls of all workers, the killed one's too.
            request = urllib.request.Request(f"{served.api_url}/metrics", headers=served.headers())
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=30).read().decode())
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(text) for s in family.samples}
    assert values[("dso_vtn_polls_total", ())] == 3 * 3
    assert values[("dso_vens_registered", ())] == 3
    assert values[("dso_planner_active", ())] == 0  # no grid: no planner
    assert "exited with -9; starting it again" in served.log.read_text()


async def _wait_for_children(pid: int, count: int, *, without: int | None = None) -> list[int]:
    for _ in range(300):
        children = [c for c in _children(pid) if c != without]
        if len(children) == count:
            await asyncio.sleep(0.5)  # let them finish starting
            return children
        await asyncio.sleep(0.1)
    raise AssertionError(f"supervisor {pid} has children {_children(pid)}, wanted {count}")


@pytest.mark.parametrize(("backend", "workers"), [("sqlite", 1), ("postgresql", 1), ("postgresql", 2)])
def test_kill_9_mid_publish_loses_nothing_acknowledged(backend: str, workers: int, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    db_location = str(tmp_path / "dso.sqlite") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    acknowledged: list[str] = []
    stop = threading.Event()

    def publish_forever(served: DsoProcess) -> None:
        while not stop.is_set():
            try:
                answer = api(served, "POST", "/api/bandwidths", bandwidth_body(5.0, group="feeder-1"))
            except (urllib.error.URLError, ConnectionError, OSError):
                continue  # the server is down for the moment: this one was not acknowledged
            acknowledged.append(answer["publication_id"])

    args = ("--workers", str(workers)) if workers > 1 else ()
    with serve(db_location, tmp_path, *args, name="first") as first:
        threads = [threading.Thread(target=publish_forever, args=(first,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            while len(acknowledged) < 20:
                time.sleep(0.01)
            victims = _children(first.process.pid) if workers > 1 else [first.process.pid]
            for victim in victims:
                os.kill(victim, signal.SIGKILL)  # mid-publish: three clients are writing right now
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    seen = list(acknowledged)
    with serve(db_location, tmp_path, name="second") as second:  # a restarted server serves the same state
        stored = api(second, "GET", "/api/signals")["signals"]
    by_publication: dict[str, list[str]] = {}
    for signal_json in stored:
        by_publication.setdefault(signal_json["publication_id"], []).append(signal_json["connection_point_id"])
    assert set(seen) <= set(by_publication), "an acknowledged publication is missing"
    assert all(sorted(members) == sorted(EANS) for members in by_publication.values()), "a half-written publication"


async def test_the_planner_runs_in_one_server_and_moves_when_it_stops(db_location: str) -> None:
    clock = AcceleratedClock(datetime(2030, 1, 7, 12, 50, tzinfo=UTC), speed=3600)  # 13:50 local, 1 h per s
    settings = DsoSettings(db_path=db_location, vtn_port=0, api_port=0, grid_path=EXAMPLE_GRID, insecure=True,
                           near_real_time_interval_s=300)
    first = DsoServer(settings, clock)
    second = DsoServer(settings, clock)
    await first.start()
    try:
        await second.start()
        try:
            await asyncio.sleep(1.0)  # an hour of server time: today's and tomorrow's firm runs, non-firm runs
            assert [first.planner_active, second.planner_active].count(True) == 1
            holder, other = (first, second) if first.planner_active else (second, first)
            await holder.stop()
            for _ in range(100):
                if other.planner_active:
                    break
                await asyncio.sleep(0.05)
            assert other.planner_active
            await asyncio.sleep(0.5)
        finally:
            await second.stop()
    finally:
        await first.stop()
    with DsoStore(db_location) as store:
        runs = GridStore(store).runs(limit=1000)
    firm = [r for r in runs if r.kind == "firm"]
    assert sorted(r.day for r in firm) == ["2030-01-07", "2030-01-08"]  # each day published once
    assert len({r.publication_id for r in firm}) == 2
    workers = {r.worker for r in runs if r.kind == "non_firm"}
    assert workers == {first.origin, second.origin}  # non-firm runs by the first holder, then by the other
    assert all(r.status == "ok" for r in runs)
