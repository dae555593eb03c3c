"""The VEN suite passes our hems_client and fails faulty VENs on exactly the rules they break."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from conformance.rules import Severity
from conformance.ven_suite import run_ven_suite
from conformance.verdicts import Outcome, failed_ids

FAULTY = Path(__file__).parent / "faulty" / "ven_script.py"
HEMS = (f"{sys.executable} -m hems_client.cli run --vtn-url {{vtn_url}} --contract {{contract}} --speed {{speed}} "
        "--start {start} --duration-h 24 --poll-interval-s 0.2 --failsafe-after-s 600")


def _faulty(mode: str) -> str:
    return f"{sys.executable} {FAULTY} {mode} {{vtn_url}} {{ean}} {{start}} {{speed}}"


async def test_our_hems_client_passes_every_automated_ven_must_rule() -> None:
    verdicts = await run_ven_suite(HEMS, speed=600, timeout_s=45)
    assert failed_ids(verdicts) == set(), [v.as_json() for v in verdicts if v.outcome is Outcome.FAIL]
    automated_musts = {v.rule.rule_id for v in verdicts if v.rule.automated and v.rule.severity is Severity.MUST}
    assert {v.rule.rule_id for v in verdicts if v.outcome is Outcome.PASS} == automated_musts


async def test_faulty_vens_fail_exactly_the_rules_they_break() -> None:
    greedy, silent, forgetful = await asyncio.gather(*(run_ven_suite(_faulty(mode), speed=600, timeout_s=45)
                                                       for mode in ("greedy", "silent", "forgetful")))
    # Rejects the out-of-profile event correctly but then drops the last valid limit.
    assert failed_ids(forgetful) == {"VEN-LIM-02"}
    # Opts in to a negative limit and imports 4 kW under a 2.5 kW limit.
    assert failed_ids(greedy) == {"VEN-EVT-01", "VEN-LIM-01", "VEN-LIM-02"}
    # Never asks for events, never answers, never reports; its limits cannot be judged without telemetry.
    assert failed_ids(silent) == {"VEN-REG-02", "VEN-ANS-01", "VEN-EVT-01", "VEN-RPT-01", "VEN-RPT-02"}
    by_id = {v.rule.rule_id: v for v in silent}
    assert by_id["VEN-LIM-01"].outcome is Outcome.NOT_RUN
    lim = next(v for v in greedy if v.rule.rule_id == "VEN-LIM-01")
    assert any(e.get("import_kw") == 4.0 for e in lim.evidence)
