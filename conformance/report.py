"""Writes a run's report as JSON (with evidence), JUnit XML (for CI) and a one-page HTML certificate."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from conformance.rules import Severity
from conformance.verdicts import Outcome, Report, Verdict, failed_ids

_FACTS = (("command", "Product under test"), ("url", "Product under test"), ("product", "Product says it is"),
          ("clock", "Clock"), ("speed", "Speed (simulated s per wall s)"), ("scenario_origin", "Scenario origin"),
          ("suite_version", "hems-conformance version"), ("profile_version", "Profile version"))


def summary(side: str, report: Report) -> dict[str, Any]:
    verdicts = report.verdicts
    counts = {o.value: sum(v.outcome is o for v in verdicts) for o in Outcome}
    must_failed = sorted(failed_ids(verdicts, Severity.MUST))
    must_inconclusive = sorted(failed_ids(verdicts, Severity.MUST, Outcome.INCONCLUSIVE))
    return {"side": side, "generated": datetime.now(UTC).isoformat(), **report.facts, "counts": counts,
            "must_failed": must_failed, "must_inconclusive": must_inconclusive,
            "conforms": not must_failed and not must_inconclusive,
            "findings": [f.as_json() for f in report.findings]}


def to_json(side: str, report: Report) -> str:
    return json.dumps({**summary(side, report), "verdicts": [v.as_json() for v in report.verdicts]}, indent=2)


def to_junit(side: str, report: Report) -> str:
    verdicts = report.verdicts
    suite = ET.Element("testsuite", name=f"hems-conformance-{side}", tests=str(len(verdicts)),
                       failures=str(sum(v.outcome is Outcome.FAIL for v in verdicts)),
                       skipped=str(sum(v.outcome in (Outcome.NOT_RUN, Outcome.INCONCLUSIVE) for v in verdicts)))
    properties = ET.SubElement(suite, "properties")
    for key, value in report.facts.items():
        if value is not None:
            ET.SubElement(properties, "property", name=key, value=str(value))
    for finding in report.findings:
        ET.SubElement(properties, "property", name="finding", value=f"{finding.title}: {finding.detail}")
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
.facts td{border:none;padding:1px 12px 1px 0}.findings{background:#fff4e5;border-left:5px solid #e8a33d;
padding:.5em 1em;margin-bottom:1.5em}
table.rules{border-collapse:collapse;width:100%%;font-size:.9em}table.rules td,table.rules th{border:1px solid #bbb;
padding:3px 6px;vertical-align:top;text-align:left}td.id{white-space:nowrap;font-family:monospace}small{color:#555}"""


def to_html(side: str, report: Report) -> str:
    """A one-page certificate: the verdict, what was tested with what and when, the findings, one row per rule."""
    head = summary(side, report)
    verdicts = report.verdicts
    conforms = head["conforms"]
    colour = "#1a7f37" if conforms else "#b42318"
    role = "HEMS (VEN)" if side == "ven" else "DSO server (VTN)"
    if conforms:
        verdict = "CONFORMS: every automated must-rule passed"
    elif head["must_failed"]:
        verdict = "DOES NOT CONFORM: failed " + ", ".join(head["must_failed"])
    else:
        verdict = "NOT DECIDED: could not judge " + ", ".join(head["must_inconclusive"]) + " fairly; run again"
    musts = [v for v in verdicts if v.rule.severity is Severity.MUST]
    shoulds = [v for v in verdicts if v.rule.severity is Severity.SHOULD]

    def tally(group: list[Verdict]) -> str:
        return ", ".join(f"{sum(v.outcome is o for v in group)} {o.value}" for o in Outcome)

    facts = "".join(f"<tr><td>{label}</td><td><code>{html.escape(str(report.facts[key]))}</code></td></tr>"
                    for key, label in _FACTS if report.facts.get(key) is not None)
    findings = "".join(f"<p><b>{html.escape(f.title)}</b> — {html.escape(f.detail)}<br><small>explains "
                       f"{', '.join(f.explains)}</small></p>" for f in report.findings)
    rows = "".join(
        f"<tr style='background:{_COLOUR[v.outcome]}'><td class=id>{v.rule.rule_id}</td><td>{v.rule.severity}</td>"
        f"<td><b>{v.outcome}</b></td><td>{html.escape(v.rule.requirement)}<br><small>{html.escape(v.rule.source)}"
        f"</small></td><td><small>{html.escape(v.summary)}</small></td></tr>" for v in verdicts)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>HEMS–DSO conformance: {role}</title>"
            f"<style>{_STYLE % (colour, colour)}</style></head><body>"
            f"<div class=cert><h1>HEMS–DSO capacity profile of OpenADR 2.0b: conformance of a {role}</h1>"
            f"<div class=verdict>{html.escape(verdict)}</div>"
            f"<table class=facts>{facts}<tr><td>Tested</td><td>{head['generated']} by hems-conformance {side}</td>"
            f"</tr></table><p>Must-rules: {tally(musts)}. Should-rules: {tally(shoulds)}.</p>"
            f"<p><small>A product conforms when it passes every must-rule that applies; 'not run' and 'inconclusive' "
            f"are not a pass. The evidence for every verdict (messages, timestamps, measured values) is in "
            f"report.json; conformance/README.md explains each scenario.</small></p></div>"
            + (f"<div class=findings><h2>Findings: read these first</h2>{findings}</div>" if findings else "")
            + f"<table class=rules><tr><th>rule</th><th>severity</th><th>verdict</th><th>requirement</th>"
              f"<th>what was seen</th></tr>{rows}</table></body></html>")


def write_reports(out: Path, side: str, report: Report) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(to_json(side, report), encoding="utf-8")
    (out / "junit.xml").write_text(to_junit(side, report), encoding="utf-8")
    (out / "report.html").write_text(to_html(side, report), encoding="utf-8")
