"""Compliance: telemetry against the effective limit, violations as runs, and households gone silent.

An interval violates when its mean import or export exceeds the limit it is judged against (PROFILE.md §5.2.1: the
effective limit, not below the household's declared non-flexible load) by more than the profile's tolerance
(§5.2.2); how far it went over is counted from the limit itself."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from protocol.contract import HouseholdContract
from protocol.effective import binding_limits_kw, effective_limits
from protocol.limits import exceeds_limit
from protocol.reports import TelemetryInterval
from protocol.signals import CapacityBandwidth
from protocol.timebase import INTERVAL


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
        import_kw, export_kw = binding_limits_kw(contract, lim.import_limit_kw, lim.export_limit_kw)
        violated = exceeds_limit(row.import_kw, import_kw) or exceeds_limit(row.export_kw, export_kw)
        over = max(row.import_kw - import_kw, row.export_kw - export_kw, 0.0)
        if violated and (not run or row.start - run[-1][0] == INTERVAL):
            run.append((row.start, over))
        else:
            close()
            if violated:
                run.append((row.start, over))
    close()
    return result


def silent_households(last_report: dict[str, datetime | None], *, now: datetime, max_intervals: int) -> list[str]:
    """Connection points with no telemetry for more than ``max_intervals`` quarter-hours until ``now``."""
    limit = max_intervals * INTERVAL
    return sorted(cp for cp, last in last_report.items() if last is None or now - last > limit)
