"""Writes verdicts as JSON (with evidence), JUnit XML (for CI) and a one-page HTML report."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from conformance.rules import Severity
from conformance.verdicts import Outcome, Verdict, failed_ids


def summary(side: str, target: str, verdicts: list[Verdict]) -> dict[str, Any]:
    counts = {o.value: sum(v.outcome is o for v in verdicts) for o in Outcome}
    must_failed = sorted(failed_ids(verdicts, Severity.MUST))
    must_inconclusive = sorted(failed_ids(verdicts, Severity.MUST, Outcome.INCONCLUSIVE))
    return {"side": side, "target": target, "generated": datetime.now(UTC).isoformat(), "counts": counts,
            "must_failed": must_failed, "must_inconclusive": must_inconclusive,
            "conforms": not must_failed and not must_inconclusive}


def to_json(side: str, target: str, verdicts: list[Verdict]) -> str:
    return json.dumps({**summary(side, target, verdicts), "verdicts": [v.as_json() for v in verdicts]}, indent=2)


def to_junit(side: str, verdicts: list[Verdict]) -> str:
    suite = ET.Element("testsuite", name=f"hems-conformance-{side}", tests=str(len(verdicts)),
                       failures=str(sum(v.outcome is Outcome.FAIL for v in verdicts)),
                       skipped=str(sum(v.outcome in (Outcome.NOT_RUN, Outcome.INCONCLUSIVE) for v in verdicts)))
    for verdict in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"conformance.{side}", name=verdict.rule.rule_id)
        if verdict.outcome is Outcome.FAIL:
            ET.SubElement(case, "failure", message=verdict.summary).text = json.dumps(verdict.evidence, indent=1)
        elif verdict.outcome in (Outcome.NOT_RUN, Outcome.INCONCLUSIVE):
            ET.SubElement(case, "skipped", message=f"{verdict.outcome.value}: {verdict.summary}")
        ET.SubElement(case, "system-out").text = f"[{verdict.rule.severity}] {verdict.rule.requirement}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


_COLOUR = {Outcome.PASS: "#d7f5d7", Outcome.FAIL: "#fbd0d0", Outcome.INCONCLUSIVE: "#fdf0c4",
           Outcome.NOT_RUN: "#eeeeee"}
_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}
.cert{border:6px double %s;padding:1em 1.5em;margin-bottom:1.5em}
.cert h1{margin:0 0 .3em}.cert .verdict{font-size:1.6em;font-weight:bold;color:%s}
table{border-collapse:collapse;width:100%%;font-size:.9em}td,th{border:1px solid #bbb;padding:3px 6px;
vertical-align:top;text-align:left}td.id{white-space:nowrap;font-family:monospace}small{color:#555}"""


def to_html(side: str, target: str, verdicts: list[Verdict]) -> str:
    """A one-page certificate: the verdict, what was tested and when, then one row per rule."""
    head = summary(side, target, verdicts)
    conforms = head["conforms"]
    colour = "#1a7f37" if conforms else "#b42318"
    role = "HEMS (VEN)" if side == "ven" else "DSO server (VTN)"
    verdict = ("CONFORMS: every automated must-rule passed" if conforms else
               "DOES NOT CONFORM: failed " + ", ".join(head["must_failed"]) if head["must_failed"] else
               "NOT DECIDED: could not judge " + ", ".join(head["must_inconclusive"]) + " fairly; run again")
    musts = [v for v in verdicts if v.rule.severity is Severity.MUST]
    shoulds = [v for v in verdicts if v.rule.severity is Severity.SHOULD]

    def tally(group: list[Verdict]) -> str:
        return ", ".join(f"{sum(v.outcome is o for v in group)} {o.value}" for o in Outcome)

    rows = "".join(
        f"<tr style='background:{_COLOUR[v.outcome]}'><td class=id>{v.rule.rule_id}</td><td>{v.rule.severity}</td>"
        f"<td><b>{v.outcome}</b></td><td>{html.escape(v.rule.requirement)}<br><small>{html.escape(v.rule.source)}"
        f"</small></td><td><small>{html.escape(v.summary)}</small></td></tr>" for v in verdicts)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>HEMS–DSO conformance: {role}</title>"
            f"<style>{_STYLE % (colour, colour)}</style></head><body>"
            f"<div class=cert><h1>HEMS–DSO capacity profile of OpenADR 2.0b: conformance of a {role}</h1>"
            f"<div class=verdict>{html.escape(verdict)}</div>"
            f"<p>Under test: <code>{html.escape(target)}</code><br>Tested: {head['generated']} by hems-conformance "
            f"{side}<br>Must-rules: {tally(musts)}. Should-rules: {tally(shoulds)}.</p>"
            f"<p><small>A product conforms when it passes every must-rule that applies; 'not run' is not a pass. "
            f"The evidence for every verdict (messages, timestamps, measured values) is in report.json; "
            f"conformance/README.md explains each scenario.</small></p></div>"
            f"<table><tr><th>rule</th><th>severity</th><th>verdict</th><th>requirement</th><th>what was seen</th>"
            f"</tr>{rows}</table></body></html>")


def write_reports(out: Path, side: str, target: str, verdicts: list[Verdict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(to_json(side, target, verdicts), encoding="utf-8")
    (out / "junit.xml").write_text(to_junit(side, verdicts), encoding="utf-8")
    (out / "report.html").write_text(to_html(side, target, verdicts), encoding="utf-8")
