"""The VTN suite passes our DSO server and fails faulty VTNs on exactly the rules they break."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import aiohttp
import pytest
from api_auth import bearer, token
from faulty.vtn_proxy import (
    Fault,
    FaultyVtnProxy,
    accepts_any_certificate,
    interval_gap,
    only_changes,
    requests_comfort,
    reuse_modification_numbers,
    stale_status,
    unchanged,
)
from support.security import LabPki, enrol_certificate, plain_settings
from verdict_log import record_verdicts

from conformance.certificates import SuiteCertificates, issue
from conformance.cli import main
from conformance.report import write_reports
from conformance.rules import RULES, Severity, Side
from conformance.verdicts import Outcome, failed_ids
from conformance.vtn_suite import run_vtn_suite, run_vtn_suite_report
from dso_server.service import DsoServer
from protocol import ComfortTerms, HouseholdContract, make_ean18
from protocol.clock import AcceleratedClock

QUARTER = datetime(2030, 1, 14, 16, 15, tzinfo=UTC)

EAN_A, EAN_B = make_ean18("87168712345600001"), make_ean18("87168712345600002")


@pytest.fixture
async def dso(tmp_path: Path) -> AsyncIterator[DsoServer]:
    """Plain HTTP on loopback: for the faulty proxies in front of it (the security rules are then not run)."""
    settings = plain_settings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, poll_interval_s=1)
    async with DsoServer(settings) as server:
        yield server


@pytest.fixture
async def tls_dso(tmp_path: Path) -> AsyncIterator[tuple[DsoServer, SuiteCertificates, Path]]:
    """Our DSO as an operator would set it up for the suite: its own VTN certificate, the suite's CA trusted for
    VEN certificates, and the suite's certificates for two households enrolled."""
    certificates = issue(tmp_path / "suite", [EAN_A, EAN_B])
    pki = LabPki.create(tmp_path / "pki")
    settings = pki.settings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, poll_interval_s=1)
    settings = settings.model_copy(update={"ca_file": certificates.ca_file})
    async with DsoServer(settings) as server:
        for ean in (EAN_A, EAN_B):
            enrol_certificate(server.store, ean, certificates.ven(ean)[0])
        yield server, certificates, pki.ca_file


def test_catalogue_ids_are_unique_and_well_formed() -> None:
    ids = [rule.rule_id for rule in RULES]
    assert len(ids) == len(set(ids))
    assert all(rule.requirement.endswith(".") and rule.source for rule in RULES)
    assert {rule.side for rule in RULES} == {Side.VEN, Side.VTN}


async def test_our_dso_passes_every_automated_vtn_must_rule(
        tls_dso: tuple[DsoServer, SuiteCertificates, Path]) -> None:
    dso, certificates, vtn_ca = tls_dso
    verdicts = await run_vtn_suite(dso.vtn_url, dso.api_url, seed=1, admin_token=token(dso),
                                   certificates=certificates, vtn_ca=vtn_ca)
    record_verdicts("vtn", {"dso": verdicts})
    assert failed_ids(verdicts) == set(), [f"{v.rule.rule_id}: {v.summary}" for v in verdicts
                                           if v.outcome is Outcome.FAIL]
    automated_musts = {v.rule.rule_id for v in verdicts if v.rule.automated and v.rule.severity is Severity.MUST}
    assert {v.rule.rule_id for v in verdicts if v.outcome is Outcome.PASS} >= automated_musts


async def test_without_an_operator_api_the_publish_rules_are_not_run(dso: DsoServer) -> None:
    ean = make_ean18("87168712999990042")
    contract = HouseholdContract(connection_point_id=ean, contracted_max_import_kw=17.0,
                                 contracted_max_export_kw=10.0, failsafe_import_kw=4.2, failsafe_export_kw=4.2,
                                 failsafe_duration_s=7200, comfort=ComfortTerms())
    async with aiohttp.ClientSession(headers=bearer(dso)) as http, \
            http.post(f"{dso.api_url}/api/households", json=contract.model_dump(mode="json")) as reply:
        assert reply.status == 201
    verdicts = {v.rule.rule_id: v for v in await run_vtn_suite(dso.vtn_url, None, ean=ean)}
    assert verdicts["VTN-EVT-02"].outcome is Outcome.NOT_RUN
    assert verdicts["VTN-REG-01"].outcome is Outcome.PASS


@pytest.mark.parametrize(("fault", "broken"), [
    (reuse_modification_numbers, {"VTN-EVT-02", "VTN-EVT-03"}),
    (interval_gap, {"VTN-SHP-03"}),
    (only_changes, {"VTN-EVT-06"}),
    (stale_status, {"VTN-EVT-05"}),
])
async def test_a_faulty_vtn_fails_exactly_the_rules_it_breaks(
        dso: DsoServer, fault: Fault, broken: set[str], tmp_path: Path) -> None:
    async with FaultyVtnProxy(dso.vtn_url, fault) as proxy:
        result = await run_vtn_suite_report(proxy.url, dso.api_url, seed=3, admin_token=token(dso))
    verdicts = result.verdicts
    record_verdicts("vtn", {fault.__name__: verdicts})
    assert failed_ids(verdicts) == broken
    evidence = [v.evidence for v in verdicts if v.rule.rule_id in broken]
    assert all(any("FAILED" in e["what"] for e in each) for each in evidence)

    write_reports(tmp_path, "vtn", result)
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["must_failed"]) == broken and report["conforms"] is False
    assert report["url"] == proxy.url and report["product"].startswith("Python/3")
    junit = ElementTree.parse(tmp_path / "junit.xml").getroot()
    assert {case.get("name") for case in junit if case.find("failure") is not None} == broken
    assert "DOES NOT CONFORM" in (tmp_path / "report.html").read_text()


async def test_a_vtn_requesting_raw_comfort_readings_without_consent_fails_exactly_vtn_priv_01(
        dso: DsoServer) -> None:
    async with FaultyVtnProxy(dso.vtn_url, unchanged, answer_fault=requests_comfort) as proxy:
        verdicts = await run_vtn_suite(proxy.url, dso.api_url, seed=3, admin_token=token(dso))
    assert failed_ids(verdicts) == {"VTN-PRIV-01"}, [f"{v.rule.rule_id}: {v.summary}" for v in verdicts
                                                     if v.outcome is Outcome.FAIL]
    [verdict] = [v for v in verdicts if v.rule.rule_id == "VTN-PRIV-01"]
    assert "HEMS_COMFORT" in verdict.summary


async def test_a_vtn_serving_any_certificate_of_its_ca_fails_exactly_vtn_sec_02_and_03(
        dso: DsoServer, tmp_path: Path) -> None:
    certificates = issue(tmp_path / "suite", [EAN_A, EAN_B])
    async with FaultyVtnProxy(dso.vtn_url, accepts_any_certificate,
                              ssl_context=certificates.server_context()) as proxy:
        verdicts = await run_vtn_suite(proxy.url, dso.api_url, seed=3, admin_token=token(dso),
                                       certificates=certificates, vtn_ca=certificates.ca_file)
    by_id = {v.rule.rule_id: v for v in verdicts}
    assert failed_ids(verdicts) == {"VTN-SEC-02", "VTN-SEC-03"}, [f"{v.rule.rule_id}: {v.summary}" for v in verdicts
                                                                  if v.outcome is Outcome.FAIL]
    assert by_id["VTN-SEC-01"].outcome is Outcome.PASS
    assert "no household enrolled" in by_id["VTN-SEC-02"].summary


async def test_over_plain_http_the_security_rules_are_not_run(dso: DsoServer) -> None:
    verdicts = {v.rule.rule_id: v for v in await run_vtn_suite(dso.vtn_url, dso.api_url, seed=2,
                                                               admin_token=token(dso))}
    for rule_id in ("VTN-SEC-01", "VTN-SEC-02", "VTN-SEC-03"):
        assert verdicts[rule_id].outcome is Outcome.NOT_RUN and "plain http" in verdicts[rule_id].summary


def test_bad_arguments_exit_with_2() -> None:
    assert main(["ven"]) == 2
    assert main(["ven", "--ven-cmd", "no-placeholder"]) == 2
    assert main(["bogus"]) == 2


@pytest.mark.parametrize("before_quarter_s", [0.5, 2.0, 4.0])
@pytest.mark.parametrize(("fault", "broken"), [(None, set()), (stale_status, {"VTN-EVT-05"})])
async def test_a_run_started_seconds_before_a_quarter_hour_judges_every_status_rule(
        tmp_path: Path, before_quarter_s: float, fault: Fault | None, broken: set[str]) -> None:
    """No dependence on the time of day: the DSO and the suite share a clock that starts a few seconds before
    16:15. Wherever the status checks fall, eventStatus and currentValue are judged (the suite waits past an
    interval boundary instead of skipping), and a stale eventStatus still fails."""
    clock = AcceleratedClock(QUARTER - timedelta(seconds=before_quarter_s), speed=1.0)
    settings = plain_settings(db_path=str(tmp_path / "dso.sqlite"), vtn_port=0, api_port=0, poll_interval_s=1)
    async with DsoServer(settings, clock) as dso:
        if fault is None:
            verdicts = await run_vtn_suite(dso.vtn_url, dso.api_url, seed=5, clock=clock, admin_token=token(dso))
        else:
            async with FaultyVtnProxy(dso.vtn_url, fault) as proxy:
                verdicts = await run_vtn_suite(proxy.url, dso.api_url, seed=5, clock=clock,
                                               admin_token=token(dso))
    record_verdicts("vtn", {f"{getattr(fault, '__name__', 'dso')}-{before_quarter_s:g}s-before-16:15": verdicts})
    by_id = {v.rule.rule_id: v for v in verdicts}
    assert failed_ids(verdicts) == broken
    assert {by_id[r].outcome for r in ("VTN-EVT-04", "VTN-EVT-05")} <= {Outcome.PASS, Outcome.FAIL}
    judged = [e["what"] for e in by_id["VTN-EVT-05"].evidence if e["what"].startswith(("ok:", "FAILED:"))]
    assert any("active event B" in w for w in judged) and any("future event A" in w for w in judged)
