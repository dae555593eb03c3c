"""The VEN scenario as data: what the scripted VTN sends when, and which interval is judged for which rule.

Times are simulated minutes on the VEN's clock after the scenario's origin S, a quarter-hour the suite picks once
the VEN has registered (conformance.ven_suite); interval k is [S + 15k, S + 15k + 15). What a conforming VEN owes
in each interval is not taken from this table but derived from what the scripted VTN actually served and when
(conformance.ven_judge): a step served late under load shifts the owed limit with it, never the verdict.

Every step that changes a conforming VEN's limits changes only intervals that start at least 8 simulated minutes
later, and no judged interval holds a change a conforming VEN makes (the refusal, the return of the VTN and the
fresh limits fall into intervals 9 and 12, which are not judged). A step that a faulty VEN could take the wrong
way at once (the out-of-profile events) comes early in the interval it is judged in. The tariff makes load worth
having from interval 2 on (negative, rising prices), so a price-aware VEN presses against every limit and a VEN
that keeps a wrong limit shows it in its telemetry.

    k   what the VTN did before interval k                    limit a conforming VEN keeps   judged for
    1   firm F1 3 kW, non-firm N1 +2 kW (k = 0-4), tariff     5.0 (firm + non-firm, §6)      VEN-LIM-01, VEN-TOU-01
    2   -                                                      5.0                            VEN-LIM-01
    3   out-of-profile events (46): a negative limit (454),   5.0 (last valid limits)        VEN-LIM-02, VEN-EVT-01
        one for another venID (462)
    4   -                                                      5.0                            VEN-LIM-02
    5   F1 modified to 2 kW from k = 5 (67), stale F1#0 (71)  2.0                            VEN-EVT-02
    6   non-firm N2 +2 kW for k = 6 (67), cancelled with an   2.0                            VEN-EVT-03
        out-of-profile body (82): still optIn 200 (§7.3.2)
    7   non-firm N3 +2.5 kW for k = 7 (67), left out (97)     2.0 (implied cancel)           VEN-EVT-04
    8   firm F2 1.2 kW for k = 8, eventStatus a lie (112)     1.2                            VEN-EVT-05
    9   the VTN refuses from minute 136: oadrRequestReregistration to every request, 463 to every registration
        (§10.1: no contact), failsafe from ~138                - (changes inside)             -
    10  the VTN accepts again at 152; a firm event for later  failsafe 1.0 (held: an event   VEN-FS-01
        (F3, k = 20-23) at 153 is no fresh limits (§10.3)     for later releases nothing)
    11  -                                                      failsafe 1.0 (held)            VEN-FS-01
    12  F1 modified: 3 kW from k = 12 (fresh limits, 187)     - (changes inside)             -
    13  reregistration request (198), an event with            3.0, and above the failsafe    VEN-FS-02
        oadrResponseRequired never (201)
    -   oadrCancelPartyRegistration (212), after interval 13's telemetry: the VEN must not register again

While the VTN refuses, a VEN must wait at least 60 s (less 20 % jitter) after each refused registration, doubling
(VEN-REG-06); the telemetry it could not deliver it sends once the VTN accepts again (VEN-RPT-03).

The contract is a performance contract without consent to raw comfort readings, in the time zone Asia/Dubai
(UTC+4, no daylight saving): the scenario starts at about 23:00 local (19:00 UTC on the VEN's clock), so the VEN
owes its capacity needs for the rest of that day and the next at once (VEN-NEED-01), the local day ends about
minute 60 and its performance report is owed 30 minutes later (VEN-PERF-01), and no message may carry an indoor
temperature or an EV range (VEN-PRIV-01).

The contract's failsafe import limit (1.0 kW) is deliberately below every limit of the scenario, so that a VEN
that ignores the failsafe shows it; a real contract keeps 4.2 kW per controllable device (§11).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
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

EAN = make_ean18("87168712999990077")
TIMEZONE = "Asia/Dubai"
TERMS = PerformanceTerms()
CONTRACT = HouseholdContract(connection_point_id=EAN, contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
                             failsafe_import_kw=1.0, failsafe_export_kw=1.0, failsafe_duration_s=7200,
                             comfort=ComfortTerms(timezone=TIMEZONE), performance=TERMS)
PLAIN_CONTRACT = CONTRACT.model_copy(update={"performance": None})
"""The same household without performance terms (``hems-conformance ven --contract plain``): for a product that
offers no performance contract; the rules of §9.5/§9.6 are then not run."""
PERFORMANCE_RULES = ("VEN-NEED-01", "VEN-PERF-01")
"""The rules that apply only under a performance contract."""

HOURS = 4
"""Length of the bandwidth event F1 (16 intervals: the scenario's 15 and one more). Events no longer than the
scenario needs keep the scripted VTN's rendering cheap: it serves two dozen VENs at once in the suite's tests."""
TARIFF_INTERVALS = 16
"""The tariff covers the scenario's intervals (after it, a VEN's default prices apply)."""
EXPORT_KW = 10.0
EXPENSIVE_EUR_PER_KWH = 0.60
END_MIN = 224.0
"""Interval 13 ends at minute 210; the cancellation (212) leaves the VEN 12 minutes to show that it does not
register again."""
REPORTS_DUE_UNTIL_MIN = 210.0
"""Telemetry is owed for every interval that ends by this minute (VEN-RPT-02), all before the cancellation."""



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
    FOREIGN = "foreign"
    """A new valid event targeting another VEN's venID: it must be answered optOut 462 and not applied."""
    CANCEL_BAD = "cancel_bad"
    """Cancel events with an out-of-profile body: still a valid cancellation (optIn 200, honoured)."""
    REREGISTER = "reregister"
    REFUSE = "refuse"
    """From now the VTN refuses: oadrRequestReregistration to every request, 463 to every registration."""
    ACCEPT = "accept"
    CANCEL_REGISTRATION = "cancel_registration"
    """The next poll gets oadrCancelPartyRegistration: the VEN must answer and never register again."""


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
        export_price_eur_per_kwh=0.0) for k in range(TARIFF_INTERVALS)))


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
        "conf-foreign": [_bandwidth(start, Firmness.FIRM, 0, n, 0.5)],
        "conf-firm-3": [_bandwidth(start, Firmness.FIRM, 20, 4, 1.5)],
        "conf-unanswered": [_bandwidth(start, Firmness.FIRM, 18, 4, CONTRACT.contracted_max_import_kw)],
    }


STEPS: tuple[Step, ...] = (
    Step(0, Action.PUBLISH, ("conf-tariff", "conf-firm-1", "conf-nonfirm-1")),
    Step(46, Action.BAD, ("conf-bad-1",), answer_rule="VEN-EVT-01"),
    Step(46, Action.FOREIGN, ("conf-foreign",), answer_rule="VEN-EVT-01"),
    Step(67, Action.PUBLISH, ("conf-firm-1", "conf-nonfirm-2", "conf-nonfirm-3"), answer_rule="VEN-EVT-02"),
    Step(71, Action.STALE, ("conf-firm-1",), answer_rule="VEN-EVT-02"),
    Step(82, Action.CANCEL_BAD, ("conf-nonfirm-2",), answer_rule="VEN-EVT-03"),
    Step(97, Action.DROP, ("conf-nonfirm-3", "conf-nonfirm-1", "conf-bad-1", "conf-foreign")),
    Step(112, Action.LIE, ("conf-firm-2",), answer_rule="VEN-EVT-05"),
    Step(136, Action.REFUSE),
    Step(152, Action.ACCEPT),
    Step(153, Action.PUBLISH, ("conf-firm-3",)),
    Step(187, Action.PUBLISH, ("conf-firm-1",)),
    Step(198, Action.REREGISTER),
    Step(201, Action.PUBLISH, ("conf-unanswered",), answer_rule="VEN-ANS-02", response_required="never"),
    Step(212, Action.CANCEL_REGISTRATION),
)
JUDGED: dict[int, str] = {1: "VEN-LIM-01", 2: "VEN-LIM-01", 3: "VEN-LIM-02", 4: "VEN-LIM-02", 5: "VEN-EVT-02",
                          6: "VEN-EVT-03", 7: "VEN-EVT-04", 8: "VEN-EVT-05", 10: "VEN-FS-01", 11: "VEN-FS-01",
                          13: "VEN-FS-02"}
"""Interval k -> the rule its telemetry is judged for (the table above)."""
RESUMED = 13
"""After the fresh limits a VEN that had load above the failsafe limit before must show it again here."""
EXPENSIVE = (1,)
CHEAP = (2, 3)
"""Intervals compared for VEN-TOU-01."""


def contract_toml(contract: HouseholdContract = CONTRACT) -> str:
    """The contract as the ``{contract}`` file the VEN under test reads: PROFILE.md §11's ``[[household]]`` form."""
    comfort = contract.comfort
    return f"""# The conformance suite's contract for connection point {contract.connection_point_id} (PROFILE.md §11).
[[household]]
connection_point_id = "{contract.connection_point_id}"
contracted_max_import_kw = {contract.contracted_max_import_kw}
contracted_max_export_kw = {contract.contracted_max_export_kw}
failsafe_import_kw = {contract.failsafe_import_kw}
failsafe_export_kw = {contract.failsafe_export_kw}
failsafe_duration_s = {contract.failsafe_duration_s}
non_flexible_import_kw = {contract.non_flexible_import_kw}
non_flexible_export_kw = {contract.non_flexible_export_kw}
raw_data_consent = {str(contract.raw_data_consent).lower()}

[household.comfort]
indoor_setpoint_c = {comfort.indoor_setpoint_c}
temperature_band_k = {comfort.temperature_band_k}
ev_departure_local = {comfort.ev_departure_local.isoformat()}
ev_required_range_km = {comfort.ev_required_range_km}
timezone = "{comfort.timezone}"
""" + (_performance_toml(contract.performance) if contract.performance is not None else "")


def _performance_toml(terms: PerformanceTerms) -> str:
    return f"""
[household.performance]
monthly_discount_eur = {terms.monthly_discount_eur}
compensation_eur_per_degree_hour = {terms.compensation_eur_per_degree_hour}
compensation_eur_per_missed_departure = {terms.compensation_eur_per_missed_departure}
need_deadline_local = {terms.need_deadline_local.isoformat()}
"""
