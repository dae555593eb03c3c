"""The suite's verdicts on its own test subjects, written out for CI to compare an idle run with a loaded one.

When ``HEMS_CONFORMANCE_VERDICTS`` names a file, each conformance test module adds ``{subject: {rule: outcome}}``
to it (``.ci/run`` runs the conformance tests once idle and once beside ``stress-ng`` and requires the two files
to be identical).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from conformance.verdicts import Verdict


def record_verdicts(group: str, verdicts: dict[str, list[Verdict]]) -> None:
    target = os.environ.get("HEMS_CONFORMANCE_VERDICTS")
    if not target:
        return
    path = Path(target)
    known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    for subject, each in verdicts.items():
        known[f"{group}/{subject}"] = {v.rule.rule_id: v.outcome.value for v in each}
    path.write_text(json.dumps(known, indent=1, sort_keys=True), encoding="utf-8")
