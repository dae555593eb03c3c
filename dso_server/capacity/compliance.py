"""Compliance: telemetry against the effective limit, violations as runs, and households gone silent."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from protocol.contract import HouseholdContract
from protocol.effective import effective_limits
from protocol.reports import TelemetryInterval
from protocol.signals import CapacityBandwidth
from protocol.timebase import INTERVAL

_TOL_KW = 1e-9


@dataclass(frozen=True)
class Violation:
    """A run of consecutive intervals where import or export exceeded the effective limit."""

    connection_point_id: str
    start: datetime
    intervals: int
    max_over_kw: float
    energy_over_kwh: float

    @property
    def duration(self) -> timedelta:
        return self.intervals * INTERVAL


def find_violations(
    contract: HouseholdContract,
    bandwidths: Iterable[CapacityBandwidth],
    telemetry: Iterable[TelemetryInterval],
) -> list[Violation]:
    """Runs of over-limit intervals; a gap in telemetry ends a run (we do not guess unmeasured intervals)."""
    rows = sorted(telemetry, key=lambda r: r.start)
    if not rows:
        return []
    first = rows[0].start
    count = int((rows[-1].start - first) / INTERVAL) + 1
    limits = {lim.start: lim for lim in effective_limits(contract, list(bandwidths), start=first, count=count)}
    result: list[Violation] = []
    run: list[tuple[datetime, float]] = []

    def close() -> None:
        if run:
            result.append(
                Violation(
                    contract.connection_point_id,
                    run[0][0],
                    len(run),
                    max(o for _, o in run),
                    sum(o for _, o in run) * INTERVAL.total_seconds() / 3600,
                )
            )
            run.clear()

    for row in rows:
        lim = limits[row.start]
        over = max(row.import_kw - lim.import_limit_kw, row.export_kw - lim.export_limit_kw, 0.0)
        if over > _TOL_KW and (not run or row.start - run[-1][0] == INTERVAL):
            run.append((row.start, over))
        else:
            close()
            if over > _TOL_KW:
                run.append((row.start, over))
    close()
    return result


def silent_households(last_report: dict[str, datetime | None], *, now: datetime, max_intervals: int) -> list[str]:
    """Connection points with no telemetry for more than ``max_intervals`` quarter-hours until ``now``."""
    limit = max_intervals * INTERVAL
    return sorted(cp for cp, last in last_report.items() if last is None or now - last > limit)
