"""The VEN suite passes our hems_client and a correct scripted VEN, and fails each faulty VEN on exactly the rules
it breaks. All runs share one event loop and run side by side (about two minutes of wall time in all)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import pytest

from conformance.cli import main
from conformance.report import write_reports
from conformance.rules import Severity, Side, rules_for
from conformance.ven_judge import limit_owed_kw
from conformance.ven_scenario import JUDGED, snapshots
from conformance.ven_suite import check_ven_cmd, run_ven_suite, scenario_start
from conformance.verdicts import Outcome, Verdict, failed_ids
from protocol import INTERVAL

FAULTY = Path(__file__).parent / "faulty" / "ven_script.py"
HEMS = (f"{sys.executable} -m hems_client.cli run --vtn-url {{vtn_url}} --contract {{contract}} --speed {{speed}} "
        "--start {start} --duration-h 24 --cert {cert} --key {key} --ca-file {ca_file}")
"""Our HEMS is secure by default: the suite runs its scripted VTN over mutual TLS for it (and the impostor)."""

BREAKS: dict[str, set[str]] = {
    "good": set(),
    # Ignores every limit and opts in to the out-of-profile event: every rule judged on telemetry fails.
    "greedy": {"VEN-EVT-01", "VEN-LIM-01", "VEN-LIM-02", "VEN-EVT-02", "VEN-EVT-03", "VEN-EVT-04", "VEN-EVT-05",
               "VEN-FS-01", "VEN-FS-02"},
    # Never requests or answers events, never reports, never registers again; its limits cannot be judged.
    "silent": {"VEN-REG-02", "VEN-REG-04", "VEN-ANS-01", "VEN-EVT-01", "VEN-EVT-02", "VEN-EVT-03", "VEN-EVT-05",
               "VEN-RPT-01", "VEN-RPT-02", "VEN-RPT-03", "VEN-RPT-04", "VEN-NEED-01", "VEN-PERF-01"},
    "forgetful": {"VEN-LIM-02"},
    "stale": {"VEN-EVT-02"},
    "keeps_cancelled": {"VEN-EVT-03"},
    "no_implied_cancel": {"VEN-EVT-04"},
    "trusts_status": {"VEN-EVT-05"},
    "no_rereg": {"VEN-REG-04"},
    "no_failsafe": {"VEN-FS-01"},
    "sticky_failsafe": {"VEN-FS-02"},
    "no_backfill": {"VEN-RPT-03"},
    "answers_all": {"VEN-ANS-02"},
    # Sends the indoor temperature every interval though the contract records no consent (PROFILE §14).
    "leaky": {"VEN-PRIV-01"},
}


def _faulty(mode: str) -> str:
    return f"{sys.executable} {FAULTY} {mode} {{vtn_url}} {{ean}} {{start}} {{speed}} {{contract}}"


@pytest.fixture(scope="module")
def runs() -> dict[str, list[Verdict]]:
    """Every VEN of this module against the suite, concurrently; keyed by mode ('hems', 'hems-no-failsafe')."""
    commands = {"hems": HEMS, "hems-no-failsafe": HEMS + " --failsafe-after-s 0",
                **{mode: _faulty(mode) for mode in BREAKS}}

    async def all_runs() -> list[list[Verdict]]:
        return await asyncio.gather(*(run_ven_suite(command) for command in commands.values()))

    return dict(zip(commands, asyncio.run(all_runs()), strict=True))


@pytest.fixture(scope="module")
def security_runs() -> dict[str, list[Verdict]]:
    """Scripted VENs over TLS, only the security rules (the impostor VTN): a correct one and one that trusts any
    VTN certificate."""
    commands = {mode: _faulty(mode) + " {cert} {key} {ca_file}" for mode in ("good", "trusts_any_vtn")}

    async def all_runs() -> list[list[Verdict]]:
        return await asyncio.gather(*(run_ven_suite(command, security_only=True) for command in commands.values()))

    return dict(zip(commands, asyncio.run(all_runs()), strict=True))


def _explain(verdicts: list[Verdict]) -> list[str]:
    return [f"{v.rule.rule_id}: {v.summary}" for v in verdicts if v.outcome is Outcome.FAIL]


@pytest.mark.slow
def test_our_hems_client_passes_every_automated_ven_rule(runs: dict[str, list[Verdict]]) -> None:
    verdicts = runs["hems"]
    assert failed_ids(verdicts) == set(), _explain(verdicts)
    automated = {r.rule_id for r in rules_for(Side.VEN) if r.automated}
    assert {v.rule.rule_id for v in verdicts if v.outcome is Outcome.PASS} == automated
    by_id = {v.rule.rule_id: v for v in verdicts}
    # The scenario's prices make our HEMS press against the limits, so the limit checks bite on it too.
    judged = [e for e in by_id["VEN-LIM-01"].evidence if "import_kw" in e]
    assert max(e["import_kw"] for e in judged) > 0.8 * max(e["limit_kw"] for e in judged)
    resumed = [e["import_kw"] for e in by_id["VEN-FS-02"].evidence if "import_kw" in e]
    assert max(resumed) > 1.5  # it left the 1 kW failsafe after the fresh limits


@pytest.mark.slow
def test_our_hems_client_with_its_failsafe_switched_off_fails_exactly_vens_fs_01(
        runs: dict[str, list[Verdict]]) -> None:
    verdicts = runs["hems-no-failsafe"]
    assert failed_ids(verdicts) == {"VEN-FS-01"}, _explain(verdicts)
    failing = [e for v in verdicts if v.rule.rule_id == "VEN-FS-01" for e in v.evidence if "FAILED" in e["what"]]
    assert all(e["import_kw"] > e["limit_kw"] + 0.1 and e["limit_kw"] == 1.0 for e in failing)


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(BREAKS))
def test_a_scripted_ven_fails_exactly_the_rules_it_breaks(runs: dict[str, list[Verdict]], mode: str) -> None:
    verdicts = runs[mode]
    assert failed_ids(verdicts) == BREAKS[mode], _explain(verdicts)
    for verdict in verdicts:
        if verdict.outcome is Outcome.FAIL:
            assert any(e["what"].startswith("FAILED: ") for e in verdict.evidence), verdict.rule.rule_id


def test_a_ven_that_trusts_any_vtn_fails_exactly_ven_sec_01(security_runs: dict[str, list[Verdict]]) -> None:
    good, careless = security_runs["good"], security_runs["trusts_any_vtn"]
    assert failed_ids(good) == set() and {v.rule.rule_id for v in good if v.outcome is Outcome.PASS} == {
        "VEN-SEC-01"}, _explain(good)
    assert failed_ids(careless) == {"VEN-SEC-01"}, _explain(careless)
    [verdict] = [v for v in careless if v.rule.rule_id == "VEN-SEC-01"]
    assert "completed a TLS handshake with an impostor VTN" in verdict.summary
    assert "oadrCreatePartyRegistration" in verdict.summary or "oadrQueryRegistration" in verdict.summary


@pytest.mark.slow
def test_over_plain_http_the_security_rules_are_not_run(runs: dict[str, list[Verdict]]) -> None:
    [verdict] = [v for v in runs["good"] if v.rule.rule_id == "VEN-SEC-01"]
    assert verdict.outcome is Outcome.NOT_RUN and "plain http" in verdict.summary


@pytest.mark.slow
def test_the_evidence_and_the_reports_say_what_was_seen(runs: dict[str, list[Verdict]], tmp_path: Path) -> None:
    greedy = runs["greedy"]
    lim = next(v for v in greedy if v.rule.rule_id == "VEN-LIM-01")
    assert any(e.get("import_kw") == 6.0 and e.get("limit_kw") == 5.0 for e in lim.evidence)
    silent = {v.rule.rule_id: v for v in runs["silent"]}
    assert silent["VEN-LIM-01"].outcome is Outcome.NOT_RUN  # no telemetry: nothing to judge, not a pass

    write_reports(tmp_path, "ven", "greedy", greedy)
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["must_failed"]) == BREAKS["greedy"] and report["conforms"] is False
    junit = ElementTree.parse(tmp_path / "junit.xml").getroot()
    assert {case.get("name") for case in junit if case.find("failure") is not None} == BREAKS["greedy"]
    assert "DOES NOT CONFORM" in (tmp_path / "report.html").read_text()


def test_each_judged_interval_owes_the_limit_the_scenario_table_gives() -> None:
    start = datetime(2030, 1, 14, 19, tzinfo=UTC)
    owed = {k: limit_owed_kw(snapshots(start), start + k * INTERVAL, (timedelta(0), timedelta(minutes=2)))
            for k in JUDGED}
    assert owed == {1: (5.0, False), 2: (5.0, False), 3: (5.0, False), 4: (5.0, False), 5: (2.0, False),
                    6: (2.0, False), 7: (2.0, False), 8: (1.2, False), 9: (1.0, True), 10: (1.0, True),
                    11: (2.0, False), 12: (3.0, False)}
    assert JUDGED.keys() == set(range(1, 13))
    assert {r for r in JUDGED.values()} <= {r.rule_id for r in rules_for(Side.VEN)}
    assert all(r.severity is Severity.MUST for r in rules_for(Side.VEN) if r.rule_id in JUDGED.values())


def test_the_scenario_starts_on_an_evening_before_now() -> None:
    now = datetime(2030, 1, 14, 8, 30, tzinfo=UTC)
    assert scenario_start(now) == datetime(2030, 1, 13, 19, tzinfo=UTC)
    assert scenario_start(datetime(2030, 1, 14, 19, 5, tzinfo=UTC)) == datetime(2030, 1, 14, 19, tzinfo=UTC)


def test_bad_arguments_exit_with_2_and_say_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ven"]) == 2
    assert main(["ven", "--ven-cmd", "no-placeholder"]) == 2
    assert "{vtn_url}" in capsys.readouterr().err
    assert main(["ven", "--ven-cmd", "run {vtn_url} {bogus}"]) == 2
    assert "unknown placeholder 'bogus'" in capsys.readouterr().err
    assert main(["ven", "--ven-cmd", "run {vtn_url}", "--speed", "-3"]) == 2
    assert main(["bogus"]) == 2
    assert check_ven_cmd("run {vtn_url} 'unclosed") is not None
    assert check_ven_cmd(HEMS) is None
