"""The suite's verdicts on its own test subjects, written out for CI to compare an idle run with a loaded one.

When ``HEMS_CONFORMANCE_VERDICTS`` names a file, each conformance test module adds ``{subject: {rule: outcome}}``
to it (``.ci/run`` runs the conformance tests once idle and once beside ``stress-ng`` and requires the two files
to be identical: ``python tests/verdict_log.py IDLE.json LOADED.json``). When ``HEMS_CONFORMANCE_REPORTS`` names a
directory, the full reports (with evidence) go there too, one directory per subject, to see why two runs differ.

``HEMS_CONFORMANCE_UNDER_LOAD=1`` (the loaded pass) leaves out the products run under faketime: at speed 120 their
own 5 s and 10 s network timeouts are 42 and 83 ms of wall time, so a CPU-starved product gives up on its own
requests - its behaviour changes, not the suite's judgement. They are recorded as skipped, with that reason, and
the comparison names them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from conformance.report import write_reports
from conformance.verdicts import Report, Verdict

SKIPPED = "_skipped"
UNDER_LOAD_SKIP = ("under load the faketime products are left out: their own network timeouts shrink to tens of "
                   "milliseconds at speed 120")


def under_load() -> bool:
    return os.environ.get("HEMS_CONFORMANCE_UNDER_LOAD") == "1"


def record_verdicts(group: str, verdicts: dict[str, list[Verdict]], *, skipped: dict[str, str] | None = None) -> None:
    target = os.environ.get("HEMS_CONFORMANCE_VERDICTS")
    if not target:
        return
    path = Path(target)
    known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    for subject, each in verdicts.items():
        known[f"{group}/{subject}"] = {v.rule.rule_id: v.outcome.value for v in each}
    for subject, reason in (skipped or {}).items():
        known.setdefault(SKIPPED, {})[f"{group}/{subject}"] = reason
    path.write_text(json.dumps(known, indent=1, sort_keys=True), encoding="utf-8")


def compare(idle: dict[str, dict[str, str]], loaded: dict[str, dict[str, str]]) -> list[str]:
    """Every difference between two verdict files: a subject judged otherwise, or one missing without a reason."""
    skipped = loaded.get(SKIPPED, {})
    problems = []
    for subject in sorted((set(idle) | set(loaded)) - {SKIPPED}):
        if subject in skipped and subject not in loaded:
            continue
        before, after = idle.get(subject), loaded.get(subject)
        if before is None or after is None:
            problems.append(f"{subject}: only in the {'loaded' if before is None else 'idle'} run")
            continue
        problems += [f"{subject} {rule}: {before.get(rule)} idle, {after.get(rule)} under load"
                     for rule in sorted(set(before) | set(after)) if before.get(rule) != after.get(rule)]
    return problems


def keep_reports(group: str, reports: dict[str, Report]) -> None:
    target = os.environ.get("HEMS_CONFORMANCE_REPORTS")
    if target:
        for subject, report in reports.items():
            write_reports(Path(target) / group / subject, group, report)


if __name__ == "__main__":
    idle_file, loaded_file = sys.argv[1:]
    idle, loaded = (json.loads(Path(name).read_text(encoding="utf-8")) for name in (idle_file, loaded_file))
    differences = compare(idle, loaded)
    for line in differences:
        print(line)
    for subject, reason in sorted(loaded.get(SKIPPED, {}).items()):
        print(f"{subject}: not compared ({reason})")
    judged = len(set(loaded) - {SKIPPED})
    print(f"{'DIFFERENT' if differences else 'identical'}: {judged} subjects judged under load")
    sys.exit(1 if differences else 0)
