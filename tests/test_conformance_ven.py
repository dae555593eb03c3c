"""The VEN suite passes our hems_client and a correct scripted VEN, and fails each faulty VEN on exactly the rules
it breaks. All runs share one event loop and run side by side (about two minutes of wall time in all)."""

from __future__ import annotations

import ast
import asyncio
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import pytest
from products.profile_appendix import appendix_program, write_appendix_program
from verdict_log import UNDER_LOAD_SKIP, keep_reports, record_verdicts, under_load

from conformance.cli import main
from conformance.report import write_reports
from conformance.rules import Severity, Side, rules_for
from conformance.scripted_vtn import Distribution, Expected, Message, Received, ScriptedVtn
from conformance.ven_judge import (
    WALL_ONLY,
    Run,
    VenClock,
    answers_to,
    conforming_changes,
    estimate_clock,
    judge_fairness,
    judge_limits,
    possible,
)
from conformance.ven_scenario import END_MIN, JUDGED, PERFORMANCE_RULES, PLAIN_CONTRACT, STEPS, Action
from conformance.ven_suite import (
    ClockMode,
    _Script,
    check_ven_cmd,
    faketime_prefix,
    run_ven_suite,
    run_ven_suite_report,
    scenario_origin,
    scenario_start,
)
from conformance.verdicts import Outcome, Recorder, Report, Verdict, failed_ids
from protocol import Telemetry, TelemetryInterval

pytestmark = pytest.mark.timeout(900)
"""The first test waits for the module's runs (about 4.5 minutes of wall time, fixed by the scenario's speed, not by
the machine), longer than the 300 s the other tests get."""

FAULTY = Path(__file__).parent / "faulty" / "ven_script.py"
PRODUCTS = Path(__file__).parent / "products"
STOCK = f"{sys.executable} {PRODUCTS / 'stock_openleadr_ven.py'} {{vtn_url}} {{ean}}"
"""A stock openleadr VEN as it ships: the wall clock only, no option to give it a simulated one."""
STOCK_BREAKS = {"VEN-ANS-01", "VEN-EVT-01", "VEN-EVT-02", "VEN-EVT-03", "VEN-EVT-05", "VEN-RPT-01", "VEN-RPT-02",
                "VEN-RPT-03", "VEN-RPT-04", "VEN-REG-06"}
"""It opts in to everything with responseCode 460 (§8.3 note), offers and sends no reports (so its limits cannot be
judged), registers again at every poll while refused (§2.11), and otherwise registers, polls, re-registers and
comes back after the refusal as it should."""
HEMS = (f"{sys.executable} -m hems_client.cli run --vtn-url {{vtn_url}} --contract {{contract}} --speed {{speed}} "
        "--start {start} --duration-h 24 --cert {cert} --key {key} --ca-file {ca_file}")
"""Our HEMS is secure by default: the suite runs its scripted VTN over mutual TLS for it (and the impostor)."""

BREAKS: dict[str, set[str]] = {
    "good": set(),
    # Ignores every limit and opts in to the out-of-profile event: every rule judged on telemetry fails.
    "greedy": {"VEN-EVT-01", "VEN-LIM-01", "VEN-LIM-02", "VEN-EVT-02", "VEN-EVT-03", "VEN-EVT-04", "VEN-EVT-05",
               "VEN-FS-01", "VEN-FS-02"},
    # Never requests or answers events, never reports, never registers again; its limits cannot be judged.
    "silent": {"VEN-REG-02", "VEN-REG-04", "VEN-REG-05", "VEN-ANS-01", "VEN-EVT-01", "VEN-EVT-02", "VEN-EVT-03",
               "VEN-EVT-05", "VEN-RPT-01", "VEN-RPT-02", "VEN-RPT-03", "VEN-RPT-04", "VEN-NEED-01", "VEN-PERF-01"},
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
    # The three below break one thing that shows in many rules; a finding names it first.
    "offset": {"VEN-LIM-01", "VEN-LIM-02", "VEN-EVT-02", "VEN-EVT-03", "VEN-EVT-04", "VEN-EVT-05", "VEN-FS-01",
               "VEN-FS-02"},
    "watts": {"VEN-RPT-02", "VEN-RPT-03"},
    "local_time": {"VEN-RPT-02"},
    # PROFILE 1.0, §10.1/§10.3/§7.3.2/§2.11/§2.12:
    "counts_refusals": {"VEN-FS-01"},
    "early_release": {"VEN-FS-01"},
    "optout_cancel": {"VEN-EVT-03"},
    "no_backoff": {"VEN-REG-06"},
    "rereg_after_cancel": {"VEN-REG-05"},
    # Sends the indoor temperature every interval though the contract records no consent (PROFILE §14).
    "leaky": {"VEN-PRIV-01"},
}


def _faulty(mode: str) -> str:
    return f"{sys.executable} {FAULTY} {mode} {{vtn_url}} {{ean}} {{start}} {{speed}} {{contract}}"


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    """Every VEN of this module against the suite, concurrently; keyed by mode ('hems', 'hems-no-failsafe', ...)."""
    # PROFILE.md Appendix A's code blocks, put one after the other: a VEN built from the profile's text alone.
    appendix = write_appendix_program(tmp_path_factory.mktemp("appendix-a"))
    faketime = {"stock-openleadr": (STOCK, ClockMode.FAKETIME),
                "appendix-a": (f"{sys.executable} {appendix} {{vtn_url}} {{contract}} {{cert}} {{key}} {{ca_file}}",
                               ClockMode.FAKETIME)}
    commands = {"hems": (HEMS, None), "hems-no-failsafe": (HEMS + " --failsafe-after-s 0", None),
                **({} if under_load() else faketime), **{mode: (_faulty(mode), None) for mode in BREAKS}}

    async def all_runs() -> list[Report]:
        # A VEN under faketime at speed 120 waits at most 42 ms of wall time to connect and 83 ms for an answer (its
        # 5 s and 10 s timeouts): the products under faketime run after the others, as a vendor runs one product on
        # a machine of its own, not beside twenty-three other VENs.
        own = [run_ven_suite_report(command, clock_mode=mode) for command, mode in commands.values() if mode is None]
        first = await asyncio.gather(*own)
        # The products under faketime offer no performance contract: they get the plain one (--contract plain).
        second = await asyncio.gather(*(run_ven_suite_report(command, clock_mode=mode, contract=PLAIN_CONTRACT)
                                        for command, mode in commands.values() if mode is not None))
        done = iter(first), iter(second)
        return [next(done[mode is not None]) for _, mode in commands.values()]

    done = dict(zip(commands, asyncio.run(all_runs()), strict=True))
    record_verdicts("ven", {mode: report.verdicts for mode, report in done.items()},
                    skipped=dict.fromkeys(faketime, UNDER_LOAD_SKIP) if under_load() else None)
    keep_reports("ven", done)
    return done


@pytest.fixture(scope="module")
def runs(reports: dict[str, Report]) -> dict[str, list[Verdict]]:
    return {mode: report.verdicts for mode, report in reports.items()}


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
    automated = {r.rule_id for r in rules_for(Side.VEN) if r.automated} - set(WALL_ONLY)
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
@pytest.mark.parametrize(("mode", "title", "explained"), [
    ("offset", "over every limit by 1.5 kW", {"VEN-EVT-03", "VEN-FS-01", "VEN-LIM-01"}),
    ("watts", "telemetry in W, not kW", {"VEN-RPT-02", "VEN-LIM-01"}),
    ("local_time", "telemetry labelled 60 min ahead of the VEN's own clock", {"VEN-RPT-02", "VEN-FS-01"}),
])
def test_a_finding_names_the_root_cause_before_the_rules_it_shows_in(
        runs: dict[str, list[Verdict]], reports: dict[str, Report], mode: str, title: str,
        explained: set[str]) -> None:
    """A VEN over every limit by a constant fails EVT-03 and FS-01 as it must, but the report leads with the one
    cause instead of a cancelled event kept and a failsafe ignored; all-invalid or mislabelled telemetry makes the
    limit rules 'not judged' with the reason, never 'not run - scenario did not reach it'."""
    [finding] = reports[mode].findings
    assert finding.title == title and explained <= set(finding.explains)
    by_id = {v.rule.rule_id: v for v in runs[mode]}
    for rule_id in explained:
        assert by_id[rule_id].summary.startswith(f"{title} (root cause, see findings)"), by_id[rule_id].summary
    if mode != "offset":
        assert by_id["VEN-LIM-01"].outcome is Outcome.NOT_RUN and "not judged" in by_id["VEN-LIM-01"].summary
    assert not any("scenario did not reach it" in v.summary for v in runs[mode])


@pytest.mark.slow
def test_a_ven_built_from_profile_appendix_a_alone_passes_at_speed(runs: dict[str, list[Verdict]]) -> None:
    """PROFILE.md is implementable from its text: Appendix A's code blocks, one after the other, with nothing of
    this repository's code, pass every automated rule - reading only the wall clock, run at speed 120 under
    faketime."""
    if under_load():
        pytest.skip(UNDER_LOAD_SKIP)
    verdicts = runs["appendix-a"]
    assert failed_ids(verdicts) == set(), _explain(verdicts)
    automated = {r.rule_id for r in rules_for(Side.VEN) if r.automated} - set(WALL_ONLY) - set(PERFORMANCE_RULES)
    assert {v.rule.rule_id for v in verdicts if v.outcome is Outcome.PASS} == automated, [
        f"{v.rule.rule_id} {v.outcome}: {v.summary}" for v in verdicts if v.outcome is not Outcome.PASS]


def test_the_appendix_a_program_uses_nothing_but_openleadr_and_the_standard_library() -> None:
    tree = ast.parse(appendix_program())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - set(sys.stdlib_module_names) == {"openleadr"}
    compile(tree, "ven.py", "exec")


@pytest.mark.slow
def test_a_stock_openleadr_ven_on_the_wall_clock_is_judged_at_speed_under_faketime(
        runs: dict[str, list[Verdict]]) -> None:
    """Any VEN as it ships: run under libfaketime at speed 120, a VEN that only reads the wall clock gets its
    expected verdict, judged on its own clock (read from faketime, its polls and answers on the VEN's seconds)."""
    if under_load():
        pytest.skip(UNDER_LOAD_SKIP)
    verdicts = {v.rule.rule_id: v for v in runs["stock-openleadr"]}
    assert failed_ids(runs["stock-openleadr"]) == STOCK_BREAKS, [
        f"{v.rule.rule_id} {v.outcome}: {v.summary}" for v in verdicts.values() if v.outcome is not Outcome.PASS]
    for rule_id in ("VEN-REG-01", "VEN-REG-02", "VEN-REG-03", "VEN-REG-04", "VEN-ANS-02"):
        assert verdicts[rule_id].outcome is Outcome.PASS, verdicts[rule_id].summary
    assert "requested 30 s" in verdicts["VEN-REG-03"].summary  # the VEN's seconds, not the wall's
    assert any("clock mode faketime" in e["what"] for e in verdicts["VEN-LIM-01"].evidence)


@pytest.mark.slow
def test_the_evidence_and_the_reports_say_what_was_seen(runs: dict[str, list[Verdict]],
                                                        reports: dict[str, Report], tmp_path: Path) -> None:
    greedy = runs["greedy"]
    lim = next(v for v in greedy if v.rule.rule_id == "VEN-LIM-01")
    assert any(e.get("import_kw") == 6.0 and e.get("limit_kw") == 5.0 for e in lim.evidence)
    silent = {v.rule.rule_id: v for v in runs["silent"]}
    assert silent["VEN-LIM-01"].outcome is Outcome.NOT_RUN  # no telemetry: nothing to judge, not a pass
    assert silent["VEN-LIM-01"].summary.startswith("not judged: no telemetry arrived")

    write_reports(tmp_path, "ven", reports["greedy"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["must_failed"]) == BREAKS["greedy"] and report["conforms"] is False
    assert report["command"] == _faulty("greedy") and report["clock"] == "own" and report["profile_version"]
    junit = ElementTree.parse(tmp_path / "junit.xml").getroot()
    assert {case.get("name") for case in junit if case.find("failure") is not None} == BREAKS["greedy"]
    page = (tmp_path / "report.html").read_text()
    assert "DOES NOT CONFORM" in page and "ven_script.py greedy" in page and "Profile version" in page
    assert "hems-conformance version" in page and "Python/3" in page  # the User-Agent the product sent

    write_reports(tmp_path / "offset", "ven", reports["offset"])
    page = (tmp_path / "offset" / "report.html").read_text()
    assert page.index("Findings: read these first") < page.index("<table class=rules>")
    assert json.loads((tmp_path / "offset" / "report.json").read_text())["findings"][0]["title"] == (
        "over every limit by 1.5 kW")


ORIGIN = datetime(2030, 1, 14, 19, tzinfo=UTC)


def _played(late_min: dict[float, float] | None = None) -> Run:
    """The scenario as a VEN that polls every 30 s would see it, each step served ``late_min[at_min]`` minutes
    late (default 0.5), every distribution answered 6 s after it was served. At speed 60 one wall second is one
    simulated minute, so wall time reads as minutes after the origin."""
    late_min = late_min or {}
    clock = VenClock.reading(ORIGIN, 0.0, 60.0)
    vtn = ScriptedVtn(lambda: ORIGIN)
    script = _Script(vtn, ORIGIN)
    distributions, log, edges = [], [], {}
    for step in STEPS:
        wall = step.at_min + late_min.get(step.at_min, 0.5)
        if step.action in (Action.REFUSE, Action.ACCEPT, Action.CANCEL_REGISTRATION):
            edges[step.action] = step.at_min
            continue
        asyncio.run(script.apply(step, clock.at(wall)))
        if vtn._queued is not None:
            request_id = f"dist-{len(distributions) + 1}"
            events = tuple(vtn._queued)
            distributions.append(Distribution(wall, request_id, tuple(
                Expected(e.event_id, e.modification_number, e.opt_type, e.rule, e.code) for e in events), events))
            log.append(Message(wall + 0.1, "oadrCreatedEvent", {"event_responses": [
                {"request_id": request_id, "event_id": e.event_id, "modification_number": e.modification_number,
                 "opt_type": e.opt_type, "response_code": e.code} for e in events]}))
            vtn._queued = None
    log += [Message(w / 2, "oadrPoll", {}) for w in range(0, 2 * int(END_MIN))
            if not edges[Action.REFUSE] <= w / 2 <= edges[Action.ACCEPT]]
    return Run(origin=ORIGIN, clock=clock, end=clock.at(END_MIN), log=tuple(sorted(log, key=lambda m: m.wall)),
               distributions=tuple(distributions), received=Received(), poll_freq=timedelta(seconds=30),
               poll_freq_is_wall=False, down_wall=edges[Action.REFUSE], up_wall=edges[Action.ACCEPT])


def _owed(run: Run) -> dict[int, list[float]]:
    changes = conforming_changes(run, answers_to(run))
    return {k: sorted({held.import_limit_kw(run.interval(k)) for held, _ in possible(
        changes, run.interval(k), run.interval(k + 1))}) for k in JUDGED}


def test_each_judged_interval_owes_the_limit_the_scenario_table_gives() -> None:
    """Served on time, every judged interval owes exactly one limit: the one ven_scenario's table gives."""
    assert _owed(_played()) == {1: [5.0], 2: [5.0], 3: [5.0], 4: [5.0], 5: [2.0], 6: [2.0], 7: [2.0], 8: [1.2],
                                10: [1.0], 11: [1.0], 13: [3.0]}
    assert {r for r in JUDGED.values()} <= {r.rule_id for r in rules_for(Side.VEN)}
    assert all(r.severity is Severity.MUST for r in rules_for(Side.VEN) if r.rule_id in JUDGED.values())


def test_a_change_served_too_late_makes_its_interval_inconclusive_not_a_pass() -> None:
    """The modification for interval 5 (minute 67) reaching the VEN only at minute 76, under load: a VEN still at
    3 kW there may be late or wrong, so the judge says inconclusive; below 2 kW passes, above 3 kW fails."""
    run = _played({67: 9.0, 71: 5.5})
    assert _owed(run)[5] == [2.0, 3.0]
    start = run.interval(5)
    for import_kw, outcome in ((2.0, Outcome.PASS), (3.0, Outcome.INCONCLUSIVE), (3.5, Outcome.FAIL)):
        rows = Telemetry(intervals=(TelemetryInterval(start=start, import_kw=import_kw, export_kw=0.0),))
        rec = Recorder(Side.VEN)
        judge_limits(rec, replace(run, received=Received(telemetry=[(80.0, None, rows)])),
                     conforming_changes(run, answers_to(run)))
        verdict = next(v for v in rec.verdicts() if v.rule.rule_id == "VEN-EVT-02")
        assert verdict.outcome is outcome, verdict.summary


def test_an_answer_the_ven_hung_up_on_is_not_served_and_a_cut_off_start_fails_nothing() -> None:
    """A VEN under faketime waits 1/120 of its timeout: when the suite answers later than that, what the answer
    carried was not served (the next poll brings it again), and a start-up request cut off makes failures
    inconclusive instead of failing the product for the suite's delay."""
    vtn = ScriptedVtn(lambda: ORIGIN)
    script = _Script(vtn, ORIGIN)
    asyncio.run(script.apply(STEPS[0], ORIGIN))
    vtn._answer("oadrPoll", {})
    vtn._lost("oadrPoll", "oadrDistributeEvent")
    assert vtn.distributions[-1].delivered is False
    kind, _ = vtn._answer("oadrPoll", {})
    assert kind == "oadrDistributeEvent" and vtn.distributions[-1].delivered
    run = replace(_played(), hung_up=((1.0, "oadrCreatePartyRegistration"),))
    rec = Recorder(Side.VEN)
    rec.check("VEN-REG-02", False, "no oadrRequestEvent after registration")
    judge_fairness(rec, run)
    verdict = next(v for v in rec.verdicts() if v.rule.rule_id == "VEN-REG-02")
    assert verdict.outcome is Outcome.INCONCLUSIVE and "gave up waiting" in verdict.summary


def test_the_vens_clock_is_read_from_its_timestamps() -> None:
    prior = VenClock.reading(ORIGIN, 100.0, 120.0)
    # The VEN started its clock 3 wall s after the suite launched it, and its messages took 0.05 s to arrive.
    stamps = [(110.0 + i, ORIGIN + timedelta(seconds=(10.0 + i - 3.0 - 0.05) * 120)) for i in range(5)]
    clock, note = estimate_clock(prior, stamps)
    assert abs((clock.at(113.0) - (ORIGIN + timedelta(seconds=10 * 120))).total_seconds()) < 7
    assert "from 5 of its timestamps" in note
    assert estimate_clock(prior, [(110.0, ORIGIN + timedelta(days=1))])[0] == prior


def test_the_scenario_starts_on_an_evening_before_now_and_when_the_ven_registered() -> None:
    now = datetime(2030, 1, 14, 8, 30, tzinfo=UTC)
    assert scenario_start(now) == datetime(2030, 1, 13, 19, tzinfo=UTC)
    assert scenario_start(datetime(2030, 1, 14, 19, 5, tzinfo=UTC)) == datetime(2030, 1, 14, 19, tzinfo=UTC)
    # However long the VEN took to start, interval 1 starts at least 5 minutes after it registered.
    assert scenario_origin(datetime(2030, 1, 14, 19, 9, tzinfo=UTC)) == datetime(2030, 1, 14, 19, tzinfo=UTC)
    assert scenario_origin(datetime(2030, 1, 14, 19, 41, tzinfo=UTC)) == datetime(2030, 1, 14, 19, 45, tzinfo=UTC)


def test_the_clock_modes_follow_the_command_and_faketime_gets_the_start_in_local_time(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ven", "--ven-cmd", "run {vtn_url}", "--clock", "wall"]) == 2
    assert "needs --speed 1" in capsys.readouterr().err
    start = datetime(2027, 1, 13, 19, tzinfo=UTC)
    assert faketime_prefix(start, 120.0) == ["faketime", "-f",
                                             f"@{start.astimezone():%Y-%m-%d %H:%M:%S} x120"]


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
