"""The VEN scenario as data: what the scripted VTN sends when, and which import limit a conforming VEN keeps.

Times are simulated minutes after the start S (on the quarter-hour grid); interval k is [S + 15k, S + 15k + 15).
Each step changes only intervals that start at least 8 simulated minutes later (the failsafe excepted), so a VEN
that polls every 60 s has time to apply it, and no step touches the interval judged before it. The tariff makes
load worth having from interval 2 on (negative, rising prices), so a price-aware VEN presses against every limit
and a VEN that keeps a wrong limit shows it in its telemetry.

    k   what the VTN did before interval k                    limit a conforming VEN keeps   judged for
    1   firm F1 3 kW, non-firm N1 +2 kW (k = 0-4), tariff     5.0 (firm + non-firm, §6)      VEN-LIM-01, VEN-TOU-01
    2   -                                                      5.0                            VEN-LIM-01
    3   out-of-profile event (minute 46)                      5.0 (last valid limits)        VEN-LIM-02
    4   -                                                      5.0                            VEN-LIM-02
    5   F1 modified to 2 kW from k = 5 (67), stale F1#0 (71)  2.0                            VEN-EVT-02
    6   non-firm N2 +2 kW for k = 6 (67), cancelled (82)      2.0                            VEN-EVT-03
    7   non-firm N3 +2.5 kW for k = 7 (67), left out (97)     2.0 (implied cancel)           VEN-EVT-04
    8   firm F2 1.2 kW for k = 8, eventStatus a lie (112)     1.2                            VEN-EVT-05
    9   VTN unreachable from minute 125                       failsafe 1.0                   VEN-FS-01
    10  VTN back at minute 152, no fresh limits               failsafe 1.0 (held)            VEN-FS-01
    11  F1 modified: 3 kW from k = 12 (fresh limits, 172)     2.0                            VEN-FS-02
    12  -                                                      3.0, and above the failsafe    VEN-FS-02
    -   reregistration request (196), after the last judged interval, so a VEN that mishandles it spoils nothing
    -   an event with oadrResponseRequired never (199), which the VEN must not answer

The contract is a performance contract without consent to raw comfort readings, in the time zone Asia/Dubai
(UTC+4, no daylight saving): the scenario starts at 23:00 local, so the VEN owes its capacity needs for the rest of
that day and the next at once (VEN-NEED-01), the local day ends at minute 60 and its performance report is owed
by minute 90 (VEN-PERF-01), and no message may carry an indoor temperature or an EV range (VEN-PRIV-01).

A step that a faulty VEN could take the wrong way at once (the out-of-profile event, the outage) comes early in
the interval it is judged in, not in the one before. The contract's failsafe
import limit (1.0 kW) is deliberately below every limit of the scenario, so that a VEN that ignores the
failsafe shows it; a real contract keeps 4.2 kW per controllable device (§11).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    ComfortTerms,
    Firmness,
    HouseholdContract,
    PerformanceTerms,
    TariffInterval,
    TouTariff,
    make_ean18,
)
from protocol.effective import effective_limits

EAN = make_ean18("87168712999990077")
TIMEZONE = "Asia/Dubai"
TERMS = PerformanceTerms()
CONTRACT = HouseholdContract(connection_point_id=EAN, contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
                             failsafe_import_kw=1.0, failsafe_export_kw=1.0, failsafe_duration_s=7200,
                             comfort=ComfortTerms(timezone=TIMEZONE), performance=TERMS)
CONTRACT_TOML = f"""# The conformance suite's contract for connection point {EAN}.
connection_point_id = "{EAN}"
contracted_max_import_kw = {CONTRACT.contracted_max_import_kw}
contracted_max_export_kw = {CONTRACT.contracted_max_export_kw}
failsafe_import_kw = {CONTRACT.failsafe_import_kw}
failsafe_export_kw = {CONTRACT.failsafe_export_kw}
failsafe_duration_s = {CONTRACT.failsafe_duration_s}

[comfort]
indoor_setpoint_c = {CONTRACT.comfort.indoor_setpoint_c}
temperature_band_k = {CONTRACT.comfort.temperature_band_k}
timezone = "{TIMEZONE}"

[performance]
monthly_discount_eur = {TERMS.monthly_discount_eur}
"""

HOURS = 8
"""Length of the bandwidth event F1 (32 intervals)."""
EXPORT_KW = 10.0
EXPENSIVE_EUR_PER_KWH = 0.60
FAILSAFE_DETECT_MIN = 4.0
"""A conforming VEN applies the failsafe within 120 s of silence plus one poll (60 s); one minute of slack."""
END_MIN = 210.0
"""Interval 12 ends at minute 195; the last step, at 199, is owed an answer within 5 wall seconds."""


class Action(StrEnum):
    PUBLISH = "publish"
    """A new event, or a new version of one (modificationNumber + 1)."""
    CANCEL = "cancel"
    STALE = "stale"
    """Distribute once an older version (a lower modificationNumber) of an event the VEN holds."""
    DROP = "drop"
    """Leave events out of every later distribution (implied cancellation)."""
    BAD = "bad"
    """A new event that breaks the profile (a negative import limit); it must be answered optOut."""
    LIE = "lie"
    """A new valid event whose eventStatus contradicts its active period (says completed before it starts)."""
    REREGISTER = "reregister"
    VTN_DOWN = "vtn_down"
    VTN_UP = "vtn_up"


@dataclass(frozen=True)
class Step:
    at_min: float
    action: Action
    event_ids: tuple[str, ...] = ()
    answer_rule: str = "VEN-ANS-01"
    """The rule that judges the VEN's answer to what this step distributes."""
    response_required: str = "always"


def _bandwidth(start: datetime, firmness: Firmness, first: int, count: int, import_kw: float,
               overrides: Mapping[int, float] | None = None) -> CapacityBandwidth:
    """``count`` intervals from interval ``first``, importing ``import_kw`` except where ``overrides`` says."""
    overrides = overrides or {}
    return CapacityBandwidth(firmness=firmness, intervals=tuple(
        BandwidthInterval(start=start + k * INTERVAL, import_limit_kw=overrides.get(k, import_kw),
                          export_limit_kw=EXPORT_KW) for k in range(first, first + count)))


def tariff(start: datetime) -> TouTariff:
    """Expensive for intervals 0 and 1, then from -0.28 EUR/kWh rising by 0.01 per interval: earlier is cheaper."""
    return TouTariff(intervals=tuple(TariffInterval(
        start=start + k * INTERVAL,
        import_price_eur_per_kwh=EXPENSIVE_EUR_PER_KWH if k < 2 else round(-0.30 + 0.01 * k, 2),
        export_price_eur_per_kwh=0.0) for k in range(96)))


def payloads(start: datetime) -> dict[str, list[CapacityBandwidth | TouTariff]]:
    """Every version of every event (index = modificationNumber). BAD's payload is made invalid on the wire."""
    n = 4 * HOURS
    return {
        "conf-tariff": [tariff(start)],
        "conf-firm-1": [_bandwidth(start, Firmness.FIRM, 0, n, 3.0),
                        _bandwidth(start, Firmness.FIRM, 0, n, 2.0, dict.fromkeys(range(5), 3.0)),
                        _bandwidth(start, Firmness.FIRM, 0, n, 3.0, dict.fromkeys(range(5, 12), 2.0))],
        "conf-nonfirm-1": [_bandwidth(start, Firmness.NON_FIRM, 0, 5, 2.0)],
        "conf-bad-1": [_bandwidth(start, Firmness.FIRM, 0, n, 1.0)],
        "conf-nonfirm-2": [_bandwidth(start, Firmness.NON_FIRM, 6, 1, 2.0)],
        "conf-nonfirm-3": [_bandwidth(start, Firmness.NON_FIRM, 7, 1, 2.5)],
        "conf-firm-2": [_bandwidth(start, Firmness.FIRM, 8, 1, 1.2)],
        "conf-unanswered": [_bandwidth(start, Firmness.FIRM, 14, 4, CONTRACT.contracted_max_import_kw)],
    }


STEPS: tuple[Step, ...] = (
    Step(0, Action.PUBLISH, ("conf-tariff", "conf-firm-1", "conf-nonfirm-1")),
    Step(46, Action.BAD, ("conf-bad-1",), answer_rule="VEN-EVT-01"),
    Step(67, Action.PUBLISH, ("conf-firm-1", "conf-nonfirm-2", "conf-nonfirm-3"), answer_rule="VEN-EVT-02"),
    Step(71, Action.STALE, ("conf-firm-1",), answer_rule="VEN-EVT-02"),
    Step(82, Action.CANCEL, ("conf-nonfirm-2",), answer_rule="VEN-EVT-03"),
    Step(97, Action.DROP, ("conf-nonfirm-3", "conf-nonfirm-1", "conf-bad-1")),
    Step(112, Action.LIE, ("conf-firm-2",), answer_rule="VEN-EVT-05"),
    Step(125, Action.VTN_DOWN),
    Step(152, Action.VTN_UP),
    Step(172, Action.PUBLISH, ("conf-firm-1",)),
    Step(196, Action.REREGISTER),
    Step(199, Action.PUBLISH, ("conf-unanswered",), answer_rule="VEN-ANS-02", response_required="never"),
)
JUDGED: dict[int, str] = {1: "VEN-LIM-01", 2: "VEN-LIM-01", 3: "VEN-LIM-02", 4: "VEN-LIM-02", 5: "VEN-EVT-02",
                          6: "VEN-EVT-03", 7: "VEN-EVT-04", 8: "VEN-EVT-05", 9: "VEN-FS-01", 10: "VEN-FS-01",
                          11: "VEN-FS-02", 12: "VEN-FS-02"}
"""Interval k -> the rule its telemetry is judged for (the table above)."""
RESUMED = 12
"""After the fresh limits a VEN that had load above the failsafe limit before must show it again here."""
EXPENSIVE = (1,)
CHEAP = (2, 3)
"""Intervals compared for VEN-TOU-01."""


# ------------------------------------------------------------------------------ what a conforming VEN keeps


@dataclass(frozen=True)
class Snapshot:
    """From ``at`` (suite clock) on, a conforming VEN holds ``bandwidths``, or the failsafe limits."""

    at: datetime
    bandwidths: tuple[CapacityBandwidth, ...]
    failsafe: bool = False

    def import_limit_kw(self, interval_start: datetime, contract: HouseholdContract = CONTRACT) -> float:
        if self.failsafe:
            return contract.failsafe_import_kw
        return effective_limits(contract, self.bandwidths, start=interval_start, count=1)[0].import_limit_kw


def snapshots(start: datetime) -> list[Snapshot]:
    """The limit timeline of a conforming VEN, derived from ``STEPS``."""
    versions = payloads(start)
    held: dict[str, CapacityBandwidth | TouTariff] = {}
    modification: dict[str, int] = {}
    result = [Snapshot(at=start, bandwidths=())]

    def bandwidths() -> tuple[CapacityBandwidth, ...]:
        return tuple(p for p in held.values() if isinstance(p, CapacityBandwidth))

    for step in STEPS:
        at = start + timedelta(minutes=step.at_min)
        if step.action in (Action.PUBLISH, Action.LIE):
            for event_id in step.event_ids:
                modification[event_id] = modification.get(event_id, -1) + 1
                held[event_id] = versions[event_id][modification[event_id]]
        elif step.action in (Action.CANCEL, Action.DROP):
            for event_id in step.event_ids:
                held.pop(event_id, None)
        elif step.action is Action.VTN_DOWN:
            at += timedelta(minutes=FAILSAFE_DETECT_MIN)
            result.append(Snapshot(at=at, bandwidths=bandwidths(), failsafe=True))
            continue
        else:  # STALE, BAD, REREGISTER change nothing a conforming VEN keeps; after VTN_UP the failsafe holds
            continue
        result.append(Snapshot(at=at, bandwidths=bandwidths()))
    return result
