"""How firm and non-firm bandwidths and the contract combine into the limit a HEMS must keep.

Per 15-minute interval (PROFILE.md, 'Effective limit'):
- firm part: the lowest firm limit among active firm bandwidths covering the interval, or the contracted
  maximum when none covers it;
- non-firm part: the lowest non-firm limit among active non-firm bandwidths covering it, or 0;
- effective limit = min(firm + non-firm, contracted maximum), for import and export separately.
A DSO loosens a limit by modifying or cancelling the event that holds it, never by sending a second one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from protocol.contract import HouseholdContract
from protocol.signals import CapacityBandwidth, Firmness
from protocol.timebase import INTERVAL, floor_to_interval


def binding_limits_kw(contract: HouseholdContract, import_limit_kw: float,
                      export_limit_kw: float) -> tuple[float, float]:
    """The (import, export) limits an interval's mean import and export are judged against (PROFILE.md §5.2.1):
    the limit in force (effective or failsafe), but never below the household's declared non-flexible load."""
    return (max(import_limit_kw, contract.non_flexible_import_kw),
            max(export_limit_kw, contract.non_flexible_export_kw))


@dataclass(frozen=True)
class EffectiveLimit:
    start: datetime
    import_limit_kw: float
    export_limit_kw: float
    constrained_by_dso: bool
    """True when a bandwidth, not only the contract, set this interval's limit."""


def lowest_limits(bandwidths: Iterable[CapacityBandwidth], firmness: Firmness) -> dict[datetime, tuple[float, float]]:
    """Per interval start, the lowest (import, export) limits among the bandwidths of ``firmness`` covering it."""
    lowest: dict[datetime, tuple[float, float]] = {}
    for bandwidth in bandwidths:
        if bandwidth.firmness is not firmness:
            continue
        for interval in bandwidth.intervals:
            known = lowest.get(interval.start)
            pair = (interval.import_limit_kw, interval.export_limit_kw)
            lowest[interval.start] = pair if known is None else (min(known[0], pair[0]), min(known[1], pair[1]))
    return lowest


def effective_limits(
    contract: HouseholdContract,
    bandwidths: Iterable[CapacityBandwidth],
    *,
    start: datetime,
    count: int,
) -> list[EffectiveLimit]:
    """The effective limits for ``count`` intervals from the interval holding ``start``."""
    bandwidths = list(bandwidths)
    firm = lowest_limits(bandwidths, Firmness.FIRM)
    non_firm = lowest_limits(bandwidths, Firmness.NON_FIRM)
    first = floor_to_interval(start)
    result: list[EffectiveLimit] = []
    for index in range(count):
        moment = first + index * INTERVAL
        firm_import, firm_export = firm.get(
            moment, (contract.contracted_max_import_kw, contract.contracted_max_export_kw)
        )
        extra_import, extra_export = non_firm.get(moment, (0.0, 0.0))
        result.append(
            EffectiveLimit(
                start=moment,
                import_limit_kw=min(firm_import + extra_import, contract.contracted_max_import_kw),
                export_limit_kw=min(firm_export + extra_export, contract.contracted_max_export_kw),
                constrained_by_dso=moment in firm or moment in non_firm,
            )
        )
    return result
