"""Verdicts: one per rule, with the evidence (messages, timestamps, measured values) that led to it, and the
findings that name a root cause behind several of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from importlib import metadata
from typing import Any

from conformance.rules import BY_ID, Rule, Severity, Side, rules_for
from protocol import PROFILE_VERSION


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    """The run reached the rule but could not judge it fairly (e.g. a change reached the VEN too late to be owed
    in the interval judged); the evidence says why. Not a pass: run the suite again."""
    NOT_RUN = "not run"


@dataclass
class Verdict:
    rule: Rule
    outcome: Outcome
    summary: str
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"rule_id": self.rule.rule_id, "requirement": self.rule.requirement, "source": self.rule.source,
                "severity": self.rule.severity.value, "outcome": self.outcome.value, "summary": self.summary,
                "evidence": self.evidence}


@dataclass(frozen=True)
class Finding:
    """One cause that explains several verdicts (a constant offset over every limit, W sent as kW, a clock offset):
    the first thing a vendor should read."""

    title: str
    detail: str
    explains: tuple[str, ...]
    """The rule ids whose verdicts it explains."""

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "detail": self.detail, "explains": list(self.explains)}


@dataclass
class Report:
    """What one run of the suite found: the verdicts, the findings, and the facts of the run (the product under
    test, its clock, the suite's and the profile's versions)."""

    verdicts: list[Verdict]
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """Collects checks. A rule fails when any of its checks fails; is not run when a check it cannot do without
    could not be made (``not_judged``); is inconclusive when a check could not be judged fairly; passes when at
    least one check passed and nothing else was recorded against it."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.started = datetime.now(UTC)
        self._fails: dict[str, list[str]] = {}
        self._passes: dict[str, list[str]] = {}
        self._unclear: dict[str, list[str]] = {}
        self._missing: dict[str, str] = {}
        self._skips: dict[str, str] = {}
        self._evidence: dict[str, list[dict[str, Any]]] = {}
        self.findings: list[Finding] = []

    def evidence(self, rule_id: str, what: str, **data: Any) -> None:
        self._evidence.setdefault(rule_id, []).append(
            {"at": datetime.now(UTC).isoformat(), "what": what, **{k: _jsonable(v) for k, v in data.items()}})

    def check(self, rule_id: str, ok: bool, message: str, **data: Any) -> bool:
        assert rule_id in BY_ID, rule_id
        (self._passes if ok else self._fails).setdefault(rule_id, []).append(message)
        self.evidence(rule_id, ("ok: " if ok else "FAILED: ") + message, **data)
        return ok

    def inconclusive(self, rule_id: str, message: str, **data: Any) -> None:
        """A check the run reached but cannot decide (the evidence says why)."""
        assert rule_id in BY_ID, rule_id
        self._unclear.setdefault(rule_id, []).append(message)
        self.evidence(rule_id, "INCONCLUSIVE: " + message, **data)

    def not_judged(self, rule_id: str, reason: str) -> None:
        """A check the rule cannot do without could not be made (e.g. no valid telemetry): unless another check
        failed, the rule is not run, whatever else passed."""
        assert rule_id in BY_ID, rule_id
        self._missing.setdefault(rule_id, reason)
        self.evidence(rule_id, reason)

    def finding(self, finding: Finding) -> None:
        self.findings.append(finding)

    def doubt_failures(self, reason: str) -> None:
        """The run was unfair to the product (the suite's own delays cut it off): nothing may fail it. Every failed
        check becomes inconclusive, saying ``reason``."""
        for rule_id, fails in self._fails.items():
            self._unclear.setdefault(rule_id, []).extend(f"{message} ({reason})" for message in fails)
            self.evidence(rule_id, "INCONCLUSIVE: " + reason)
        self._fails.clear()

    def skip(self, rule_id: str, reason: str) -> None:
        self._skips.setdefault(rule_id, reason)

    def verdicts(self) -> list[Verdict]:
        causes = {rule_id: f for f in self.findings for rule_id in f.explains}
        result = []
        for rule in rules_for(self.side):
            rid = rule.rule_id
            evidence = self._evidence.get(rid, [])
            fails, passes = self._fails.get(rid, []), self._passes.get(rid, [])
            unclear = self._unclear.get(rid, [])
            cause = f"{causes[rid].title} (root cause, see findings): " if rid in causes else ""
            if fails:
                total = len(fails) + len(passes) + len(unclear)
                head = f"{len(fails)} of {total} checks failed: " if len(fails) > 1 else ""
                result.append(Verdict(rule, Outcome.FAIL, cause + head + _summary(fails), evidence))
            elif rid in self._missing:
                done = f" ({len(passes)} other check{'s' if len(passes) > 1 else ''} passed)" if passes else ""
                result.append(Verdict(rule, Outcome.NOT_RUN, cause + self._missing[rid] + done, evidence))
            elif unclear:
                head = f"{len(unclear)} of {len(unclear) + len(passes)} checks could not be judged: "
                result.append(Verdict(rule, Outcome.INCONCLUSIVE, head + _summary(unclear), evidence))
            elif passes:
                head = f"{len(passes)} checks passed, e.g. " if len(passes) > 2 else ""
                result.append(Verdict(rule, Outcome.PASS, head + _summary(passes, shown=1 if head else 2), evidence))
            else:
                default = "not automated yet" if not rule.automated else "scenario did not reach it"
                reason = self._skips.get(rid, default)
                result.append(Verdict(rule, Outcome.NOT_RUN, reason, evidence))
        return result

    def report(self, **facts: Any) -> Report:
        return Report(self.verdicts(), list(self.findings), facts)


def suite_facts() -> dict[str, str]:
    """The versions a certificate names: the suite's (this package's) and the profile's it judges by."""
    try:
        suite = metadata.version("hems-dso-interface")
    except metadata.PackageNotFoundError:
        suite = "unknown (not installed)"
    return {"suite_version": suite, "profile_version": PROFILE_VERSION}


def _summary(messages: list[str], shown: int = 3) -> str:
    """The first few messages; the evidence holds them all."""
    text = "; ".join(messages[:shown])
    return text if len(messages) <= shown else f"{text}; … (all {len(messages)} in the evidence)"


def failed_ids(verdicts: list[Verdict], severity: Severity | None = None,
               outcome: Outcome = Outcome.FAIL) -> set[str]:
    return {v.rule.rule_id for v in verdicts
            if v.outcome is outcome and (severity is None or v.rule.severity is severity)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
