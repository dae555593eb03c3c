"""The rule catalogue: every rule the suite knows, as data, with the profile section it comes from.

A rule with ``automated=False`` is part of the catalogue but no scenario checks it yet; its verdict is "not run".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    MUST = "must"
    SHOULD = "should"


class Side(StrEnum):
    VEN = "ven"
    VTN = "vtn"


@dataclass(frozen=True)
class Rule:
    rule_id: str
    requirement: str
    source: str
    severity: Severity
    automated: bool

    @property
    def side(self) -> Side:
        return Side.VEN if self.rule_id.startswith("VEN-") else Side.VTN


M, S = Severity.MUST, Severity.SHOULD

RULES: tuple[Rule, ...] = (
    # ---------------------------------------------------------------- VTN (a DSO server under test)
    Rule("VTN-REG-01", "The VTN answers oadrCreatePartyRegistration of a known EAN with responseCode 200, a venID, "
         "a registrationID and a poll frequency of at most 60 s.", "PROFILE.md §2.4, §2.7", M, True),
    Rule("VTN-REG-02", "The VTN refuses a registration whose venName is not a served EAN18 with responseCode 463 "
         "and neither a venID nor a registrationID element.", "PROFILE.md §2.3", M, True),
    Rule("VTN-REG-03", "A VEN that registers again under the same venName gets the same venID.",
         "PROFILE.md §2.4", M, True),
    Rule("VTN-POLL-01", "The VTN answers oadrRequestEvent with an oadrDistributeEvent carrying all of the VEN's "
         "events, whatever its replyLimit.", "PROFILE.md §2.5, §7.4.1", M, True),
    Rule("VTN-POLL-02", "The VTN answers an oadrPoll from an unknown venID with oadrRequestReregistration.",
         "PROFILE.md §2.8, §15", M, True),
    Rule("VTN-POLL-03", "The VTN answers a malformed request with HTTP 4xx or an eiResponse error code.",
         "PROFILE.md §12; OpenADR 2.0b schema validation", M, True),
    Rule("VTN-POLL-04", "After an event is published, modified or cancelled the VEN's next oadrPoll is answered with "
         "an oadrDistributeEvent; a poll with nothing new is answered oadrResponse.", "PROFILE.md §7.4.3, §2.6", M,
         True),
    Rule("VTN-POLL-05", "The VTN sends a distribution again at the next poll while the VEN has not answered it.",
         "PROFILE.md §7.4.3", M, True),
    Rule("VTN-SHP-01", "Every timestamp in a delivered event is UTC.",
         "OpenADR 2.0b conformance rule 1; PROFILE.md §3.1", M, True),
    Rule("VTN-SHP-02", "Interval uids of every signal are 0, 1, 2, … in order.",
         "OpenADR 2.0b conformance rule 2; PROFILE.md §3.3", M, True),
    Rule("VTN-SHP-03", "Every interval lasts PT15M, the active period starts on the quarter-hour grid, and the "
         "interval durations add up to the active period's duration.",
         "OpenADR 2.0b conformance rule 8; PROFILE.md §3.2, §3.3", M, True),
    Rule("VTN-SHP-04", "A bandwidth event carries the capacity marketContext, the two signals x-IMPORT_CAPACITY_LIMIT "
         "and x-EXPORT_CAPACITY_LIMIT (setpoint) with itemBase powerReal in kW, and the published values.",
         "PROFILE.md §5.1, §5.2", M, True),
    Rule("VTN-SHP-05", "Every delivered event has oadrResponseRequired 'always'.", "PROFILE.md §5.1", M, True),
    Rule("VTN-SHP-06", "The event targets exactly the venID it is delivered to, has priority 0, testEvent false and "
         "no randomisation.", "PROFILE.md §5.1", S, True),
    Rule("VTN-EVT-01", "A new event has modificationNumber 0.", "OpenADR 2.0b conformance rule 4; PROFILE.md §7.1.1",
         M, True),
    Rule("VTN-EVT-02", "A modification keeps the eventID and increases modificationNumber by exactly 1.",
         "OpenADR 2.0b conformance rule 5; PROFILE.md §7.1.2, §7.3.1", M, True),
    Rule("VTN-EVT-03", "A cancellation keeps the eventID, increases modificationNumber by 1 and sets eventStatus "
         "cancelled.", "OpenADR 2.0b conformance rule 5; PROFILE.md §7.3.2", M, True),
    Rule("VTN-EVT-04", "currentValue is 0 unless the event is active, and while it is active the payload of the "
         "interval in progress.",
         "OpenADR 2.0b conformance rule 14; PROFILE.md §7.2.2", M, True),
    Rule("VTN-EVT-05", "eventStatus follows the VTN's clock: far before, active during, completed after the active "
         "period.", "PROFILE.md §7.2.1", M, True),
    Rule("VTN-EVT-06", "Every oadrDistributeEvent carries all of the VEN's relevant events.", "PROFILE.md §7.4", M,
         True),
    Rule("VTN-ANS-01", "The VTN accepts both optIn and optOut in oadrCreatedEvent, and a later optOut.",
         "OpenADR 2.0b conformance rules 16, 17; PROFILE.md §8", M, True),
    Rule("VTN-RPT-01", "The VTN answers oadrRegisterReport with oadrRegisteredReport requesting the offered reports.",
         "PROFILE.md §9.2", M, True),
    Rule("VTN-RPT-02", "The VTN answers a TELEMETRY_USAGE oadrUpdateReport with oadrUpdatedReport and responseCode "
         "200.", "PROFILE.md §9.2, §9.3", M, True),
    Rule("VTN-RPT-03", "The VTN answers a report that breaks the profile with oadrUpdatedReport responseCode 454 "
         "naming the report and the field, never a silent 200.", "PROFILE.md §9.2, §4.6, §15", M, True),
    Rule("VTN-CLK-01", "The VTN's clock is within 2 s of UTC: an event published now carries that moment as its "
         "createdDateTime and modificationDateTime.", "PROFILE.md §3.7, §5.1", M, True),
    Rule("VTN-PRIV-01", "The VTN requests from a household without consent to raw comfort readings no "
         "x-COMFORT_STATUS report, whatever the VEN offers.", "PROFILE.md §9.2, §14", M, True),
    Rule("VTN-SEC-01", "Over https the VTN accepts TLS 1.2 or later only, requires a client certificate, and "
         "offers the 2.0b suite TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256.", "PROFILE.md §12.1", M, True),
    Rule("VTN-SEC-02", "The VTN serves no client certificate it has not enrolled for a household: one from a CA it "
         "does not trust fails the TLS handshake, an unenrolled one is answered 463.", "PROFILE.md §12.2", M, True),
    Rule("VTN-SEC-03", "The VTN refuses with 463 a message whose certificate speaks for another household than the "
         "venName or venID it names, and changes nothing for that household.",
         "PROFILE.md §12.2; OpenADR 2.0b (463: the certificate does not match the venID)", M, True),
    # ---------------------------------------------------------------- VEN (a HEMS under test)
    Rule("VEN-REG-01", "The VEN registers with oadrCreatePartyRegistration whose venName is an EAN18 with a valid "
         "check digit.", "PROFILE.md §2.1, §2.2", M, True),
    Rule("VEN-REG-02", "After registration the VEN sends oadrRequestEvent.",
         "PROFILE.md §2.5; OpenADR 2.0b conformance rules", M, True),
    Rule("VEN-REG-03", "The VEN polls at least as often as the requested poll frequency.", "PROFILE.md §2.6", M, True),
    Rule("VEN-REG-04", "On oadrRequestReregistration the VEN registers again and then sends oadrRequestEvent.",
         "PROFILE.md §2.6, §2.8, §2.10", M, True),
    Rule("VEN-REG-05", "After the VTN's oadrCancelPartyRegistration the VEN answers oadrCanceledPartyRegistration "
         "and does not register again.", "PROFILE.md §2.12", M, True),
    Rule("VEN-REG-06", "After a refused registration the VEN waits at least 48 s (60 s less the jitter) before it "
         "registers again, and longer after each further refusal.", "PROFILE.md §2.11", M, True),
    Rule("VEN-ANS-01", "The VEN answers every oadrDistributeEvent with oadrCreatedEvent: optIn and responseCode 200 "
         "for each valid event, qualified by its eventID and the modificationNumber it received.",
         "PROFILE.md §8.1, §8.2; OpenADR 2.0b (oadrCreatedEvent when responseRequired always)", M, True),
    Rule("VEN-ANS-02", "The VEN sends no eventResponse for an event whose oadrResponseRequired is never.",
         "OpenADR 2.0b (oadrCreatedEvent exactly when responseRequired always); PROFILE.md §8.1", M, True),
    Rule("VEN-EVT-01", "The VEN answers an out-of-profile event with optOut, the responseCode §5.5 assigns (454 for a "
         "negative limit, 462 for another VEN's target) and a description starting with the field's path.",
         "PROFILE.md §5.5, §8.2", M, True),
    Rule("VEN-EVT-02", "The VEN applies a modification (higher modificationNumber), answers it, and ignores a stale "
         "copy with a lower modificationNumber.", "PROFILE.md §7.3.1, §7.3.4; OpenADR 2.0b conformance rule 5", M,
         True),
    Rule("VEN-EVT-03", "The VEN answers a cancellation optIn 200 with its modificationNumber, also one whose other "
         "fields are out of profile, and stops applying the cancelled event at once.", "PROFILE.md §7.3.2, §5.5, "
         "§8.2", M, True),
    Rule("VEN-EVT-04", "An event missing from a later oadrDistributeEvent is treated as cancelled.",
         "PROFILE.md §7.4.2; OpenADR 2.0b implied cancel", M, True),
    Rule("VEN-EVT-05", "The VEN judges start and end by its own clock against the active period, not eventStatus.",
         "PROFILE.md §7.2.3", M, True),
    Rule("VEN-LIM-01", "The VEN's telemetry stays at or below the effective import limit of the delivered "
         "bandwidths, firm plus non-firm, within the profile's tolerance.",
         "PROFILE.md §5.2.1, §5.2.2, §6", M, True),
    Rule("VEN-LIM-02", "After an out-of-profile event the VEN keeps respecting the last valid limit.",
         "PROFILE.md §5.5, §8.2", M, True),
    Rule("VEN-TOU-01", "The VEN shifts flexible load towards cheaper ToU intervals.", "PROFILE.md §5.3.1", S, True),
    Rule("VEN-RPT-01", "The VEN offers its reports with oadrRegisterReport including TELEMETRY_USAGE, whose rIDs have "
         "readingType Mean.", "PROFILE.md §9.1", M, True),
    Rule("VEN-RPT-02", "The VEN sends a TELEMETRY_USAGE oadrUpdateReport for every finished 15-minute interval, at "
         "most 96 intervals per report.", "PROFILE.md §9.3.1, §9.3.2", M, True),
    Rule("VEN-RPT-03", "When reports could not be delivered, the VEN sends the missed telemetry intervals once "
         "contact returns, the oldest first.", "PROFILE.md §9.3.3", M, True),
    Rule("VEN-RPT-04", "The VEN sends x-HEMS_PLAN reports of 96 to 192 contiguous intervals starting with the "
         "interval of planning, at most one per 15-minute interval.", "PROFILE.md §9.4", M, True),
    Rule("VEN-NEED-01", "Under a performance contract the VEN reports its capacity need (x-CAPACITY_NEED) within 15 "
         "minutes of registering: for the rest of its local day and, from an hour before the contract's need "
         "deadline on, for the next local day; every need contiguous on the grid, each value within the "
         "contracted maximum.", "PROFILE.md §9.5", M, True),
    Rule("VEN-PERF-01", "Under a performance contract the VEN sends a daily performance report (x-PERFORMANCE) for "
         "each local day that ended while it ran, within 30 minutes of the day's end: one local day of the "
         "contract's time zone, its degree-hours the sum of the intervals it lists, each listed interval naming "
         "the need the VEN had reported for it.", "PROFILE.md §9.6", M, True),
    Rule("VEN-PRIV-01", "Without the household's consent (the contract's raw_data_consent) no message of the VEN "
         "carries an indoor temperature or an EV range: no x-COMFORT_STATUS report, no rID indoor_temperature_c, "
         "ev_range_km or ev_range_at_departure_km (judged on the raw XML).", "PROFILE.md §14", M, True),
    Rule("VEN-FS-01", "Without a successful exchange for 120 s (a refusal or a request to re-register is none) the "
         "VEN applies the contract's failsafe limits, and keeps them after contact returns until fresh limits "
         "covering the present arrive (an event for later is none).", "PROFILE.md §10.1, §10.2, §10.3", M, True),
    Rule("VEN-FS-02", "When the VTN returns the VEN polls again and, once fresh limits arrive, returns to the "
         "delivered limits.", "PROFILE.md §10.3", M, True),
    Rule("VEN-CLK-01", "The VEN's clock is within 2 s of UTC: its reports' createdDateTime is the moment it sends "
         "them (judged in real time only, --clock wall).", "PROFILE.md §3.7", M, True),
    Rule("VEN-SEC-01", "The VEN verifies the VTN's TLS certificate against the CA it was given and sends nothing to "
         "a VTN it cannot verify.", "PROFILE.md §12.1", M, True),
)

BY_ID: dict[str, Rule] = {rule.rule_id: rule for rule in RULES}


def rules_for(side: Side) -> tuple[Rule, ...]:
    return tuple(rule for rule in RULES if rule.side is side)
