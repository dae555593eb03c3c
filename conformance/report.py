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
    return {"side": side, "target": target, "generated": datetime.now(UTC).isoformat(), "counts": counts,
            "must_failed": must_failed, "conforms": not must_failed}


def to_json(side: str, target: str, verdicts: list[Verdict]) -> str:
    return json.dumps({**summary(side, target, verdicts), "verdicts": [v.as_json() for v in verdicts]}, indent=2)


def to_junit(side: str, verdicts: list[Verdict]) -> str:
    suite = ET.Element("testsuite", name=f"hems-conformance-{side}", tests=str(len(verdicts)),
                       failures=str(sum(v.outcome is Outcome.FAIL for v in verdicts)),
                       skipped=str(sum(v.outcome is Outcome.NOT_RUN for v in verdicts)))
    for verdict in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"conformance.{side}", name=verdict.rule.rule_id)
        if verdict.outcome is Outcome.FAIL:
            ET.SubElement(case, "failure", message=verdict.summary).text = json.dumps(verdict.evidence, indent=1)
        elif verdict.outcome is Outcome.NOT_RUN:
            ET.SubElement(case, "skipped", message=verdict.summary)
        ET.SubElement(case, "system-out").text = f"[{verdict.rule.severity}] {verdict.rule.requirement}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def to_html(side: str, target: str, verdicts: list[Verdict]) -> str:
    head = summary(side, target, verdicts)
    colour = {Outcome.PASS: "#cfc", Outcome.FAIL: "#fcc", Outcome.NOT_RUN: "#eee"}
    rows = "".join(
        f"<tr style='background:{colour[v.outcome]}'><td>{v.rule.rule_id}</td><td>{v.rule.severity}</td>"
        f"<td>{v.outcome}</td><td>{html.escape(v.rule.requirement)}<br><small>{html.escape(v.rule.source)}"
        f"</small></td><td><small>{html.escape(v.summary)}</small></td></tr>" for v in verdicts)
    verdict = "CONFORMS (every automated must-rule passed)" if head["conforms"] else (
        "DOES NOT CONFORM: failed " + ", ".join(head["must_failed"]))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>HEMS–DSO conformance {side}</title></head>"
            f"<body style='font-family:sans-serif'><h1>HEMS–DSO profile conformance: {side.upper()}</h1>"
            f"<p>Target: {html.escape(target)}<br>Generated: {head['generated']}<br>Counts: {head['counts']}</p>"
            f"<h2>{verdict}</h2><table border=1 cellpadding=3 style='border-collapse:collapse'>"
            f"<tr><th>rule</th><th>severity</th><th>verdict</th><th>requirement</th><th>what was seen</th></tr>"
            f"{rows}</table><p>Full evidence: report.json</p></body></html>")


def write_reports(out: Path, side: str, target: str, verdicts: list[Verdict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(to_json(side, target, verdicts), encoding="utf-8")
    (out / "junit.xml").write_text(to_junit(side, verdicts), encoding="utf-8")
    (out / "report.html").write_text(to_html(side, target, verdicts), encoding="utf-8")
