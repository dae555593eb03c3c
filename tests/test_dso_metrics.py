"""What operators see of a running server: ``GET /metrics`` (Prometheus text, read role) and
``GET /api/allocation-runs`` (the planner's runs, a failed one with its error)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from api_auth import bearer
from openleadr.messaging import create_message, parse_message
from prometheus_client.parser import text_string_to_metric_families
from support.contracts import household_toml

import dso_server.service
from dso_server.security.tokens import Role
from dso_server.service import DsoServer
from dso_server.settings import DsoSettings
from protocol import make_ean18
from protocol.clock import AcceleratedClock, ManualClock

EAN = make_ean18("87168712000000301")
CONTRACTS = household_toml(EAN)
EXAMPLE_GRID = Path(__file__).parent.parent / "examples" / "grid.toml"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def scrape(session: aiohttp.ClientSession, dso: DsoServer, headers: dict[str, str]
                 ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with session.get(f"{dso.api_url}/metrics", headers=headers) as answer:
        assert answer.status == 200 and answer.content_type == "text/plain"
        return samples(await answer.text())


@pytest.fixture
async def dso(tmp_path: Path) -> AsyncIterator[DsoServer]:
    contracts = tmp_path / "contracts.toml"
    contracts.write_text(CONTRACTS)
    clock = ManualClock(datetime(2030, 1, 7, 12, 0, tzinfo=UTC))
    async with DsoServer(DsoSettings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0,
                                     contracts_file=contracts, insecure=True), clock) as dso:
        yield dso


async def post(session: aiohttp.ClientSession, url: str, body: str) -> tuple[str, dict]:
    async with session.post(url, data=body, headers={"Content-Type": "application/xml"}) as answer:
        assert answer.status == 200
        return parse_message(await answer.read())


async def test_metrics_count_polls_responses_and_vens_and_need_a_read_token(dso: DsoServer) -> None:
    clock = dso.clock
    assert isinstance(clock, ManualClock)
    async with aiohttp.ClientSession() as session:
        headers = bearer(dso, Role.READ)
        async with session.get(f"{dso.api_url}/metrics") as answer:
            assert answer.status == 401
        before = await scrape(session, dso, headers)
        assert before[("dso_vens_registered", ())] == 0
        _, registered = await post(session, f"{dso.vtn_url}/EiRegisterParty", create_message(
            "oadrCreatePartyRegistration", request_id="r1", ven_name=EAN, http_pull_model=True, xml_signature=False,
            report_only=False, profile_name="2.0b", transport_name="simpleHttp", transport_address=None))
        ven_id = registered["ven_id"]
        for _ in range(7):
            assert (await post(session, f"{dso.vtn_url}/OadrPoll", create_message("oadrPoll", ven_id=ven_id)))[0] \
                == "oadrResponse"
        await post(session, f"{dso.vtn_url}/EiEvent", create_message(
            "oadrCreatedEvent", ven_id=ven_id, response={"response_code": 200, "response_description": "OK",
                                                         "request_id": None},
            event_responses=[{"event_id": "ev-none", "modification_number": 0, "response_code": 200,
                              "response_description": "OK", "opt_type": "optIn", "request_id": None}]))
        after = await scrape(session, dso, headers)
        assert after[("dso_vtn_polls_total", ())] - before[("dso_vtn_polls_total", ())] == 7
        key = ("dso_vtn_event_responses_total", (("opt_type", "optIn"), ("response_code", "200")))
        assert after[key] - before.get(key, 0) == 1
        assert after[("dso_vens_registered", ())] == 1 and after[("dso_vens_silent", ())] == 0
        reads = ("dso_store_seconds_count", (("operation", "read"),))
        assert after[reads] > before[reads]  # store latency observed
        clock.advance(121)  # two minutes without a poll: the HEMS is in its failsafe by now
        await dso.vtn.liveness.flush()
        assert (await scrape(session, dso, headers))[("dso_vens_silent", ())] == 1


async def test_a_failed_planner_run_is_shown_by_the_api_and_counted(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("no forecast for transformer T9")

    monkeypatch.setattr(dso_server.service, "run_near_real_time", broken)
    clock = AcceleratedClock(datetime(2030, 1, 7, 12, 50, tzinfo=UTC), speed=3600)
    settings = DsoSettings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, grid_path=EXAMPLE_GRID,
                           insecure=True)
    async with DsoServer(settings, clock) as dso, aiohttp.ClientSession() as session:
        headers = bearer(dso, Role.READ)
        runs: list[dict] = []
        for _ in range(200):
            async with session.get(f"{dso.api_url}/api/allocation-runs?status=failed", headers=headers) as answer:
                assert answer.status == 200
                runs = (await answer.json())["runs"]
            if runs:
                break
            await asyncio.sleep(0.02)
        assert runs and runs[0]["kind"] == "non_firm" and runs[0]["status"] == "failed"
        assert runs[0]["error"] == "ValueError: no forecast for transformer T9" and runs[0]["publication_id"] is None
        async with session.get(f"{dso.api_url}/api/allocation-runs?kind=firm&day=2030-01-07",
                               headers=headers) as answer:
            firm = (await answer.json())["runs"]
        assert [(r["status"], r["worker"]) for r in firm] == [("ok", dso.origin)]
        async with session.get(f"{dso.api_url}/api/allocation-runs?status=maybe", headers=headers) as answer:
            assert answer.status == 400
        metrics = await scrape(session, dso, headers)
        assert metrics[("dso_planner_runs_total", (("kind", "non_firm"), ("status", "failed")))] >= 1
        assert metrics[("dso_planner_runs_total", (("kind", "firm"), ("status", "ok")))] >= 1
        assert metrics[("dso_planner_active", ())] >= 1
