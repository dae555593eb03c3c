from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dso_server.capacity.compliance import find_violations, silent_households
from protocol.contract import HouseholdContract, make_ean18
from protocol.reports import TelemetryInterval
from protocol.signals import BandwidthInterval, CapacityBandwidth, Firmness
from protocol.timebase import INTERVAL

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)
EAN = make_ean18("87123456789000001")


def _contract() -> HouseholdContract:
    return HouseholdContract(
        connection_point_id=EAN,
        contracted_max_import_kw=17,
        contracted_max_export_kw=10,
        failsafe_import_kw=4.2,
        failsafe_export_kw=4.2,
        failsafe_duration_s=7200,
    )


def test_runs_found_with_size_and_duration() -> None:
    bw = CapacityBandwidth(
        firmness=Firmness.FIRM,
        intervals=tuple(
            BandwidthInterval(start=T0 + i * INTERVAL, import_limit_kw=5.0, export_limit_kw=5.0) for i in range(8)
        ),
    )
    imports = [4, 6, 8, 5, 4, 7, 4, 12]  # runs: [1,2] over 1 and 3; [5] over 2; [7] over 7 (firm 5)
    tele = [TelemetryInterval(start=T0 + i * INTERVAL, import_kw=v, export_kw=0) for i, v in enumerate(imports)]
    v = find_violations(_contract(), [bw], tele)
    assert [(x.start, x.intervals) for x in v] == [(T0 + INTERVAL, 2), (T0 + 5 * INTERVAL, 1), (T0 + 7 * INTERVAL, 1)]
    assert v[0].max_over_kw == pytest.approx(3.0)
    assert v[0].energy_over_kwh == pytest.approx((1 + 3) * 0.25)
    assert v[0].duration == 2 * INTERVAL


def test_without_bandwidth_contract_max_applies_and_gaps_split_runs() -> None:
    tele = [TelemetryInterval(start=T0 + i * INTERVAL, import_kw=18, export_kw=0) for i in (0, 1, 3)]
    v = find_violations(_contract(), [], tele)
    assert [x.intervals for x in v] == [2, 1]


def test_silent_households() -> None:
    now = T0 + 10 * INTERVAL
    last = {"a": T0 + 9 * INTERVAL, "b": T0, "c": None}
    assert silent_households(last, now=now, max_intervals=4) == ["b", "c"]


def test_the_profile_tolerance_and_the_declared_non_flexible_load_decide_a_violation() -> None:
    """PROFILE §5.2.1/§5.2.2: 0.1 kW or 2 % over the limit is within it; a limit below the household's declared
    non-flexible load binds only down to that load."""
    bw = CapacityBandwidth(firmness=Firmness.FIRM, intervals=tuple(
        BandwidthInterval(start=T0 + i * INTERVAL, import_limit_kw=v, export_limit_kw=5.0)
        for i, v in enumerate([2.0, 2.0, 10.0, 10.0, 0.5, 0.5])))
    imports = [2.1, 2.11, 10.2, 10.21, 0.8, 0.95]
    tele = [TelemetryInterval(start=T0 + i * INTERVAL, import_kw=v, export_kw=0) for i, v in enumerate(imports)]
    declared = _contract().model_copy(update={"non_flexible_import_kw": 0.8})
    assert [(x.start, x.intervals) for x in find_violations(declared, [bw], tele)] == [
        (T0 + INTERVAL, 1), (T0 + 3 * INTERVAL, 1), (T0 + 5 * INTERVAL, 1)]
    assert [x.intervals for x in find_violations(_contract(), [bw], tele)] == [1, 3]
    with pytest.raises(ValueError, match="could not meet its own failsafe limit"):
        HouseholdContract.model_validate({**_contract().model_dump(), "non_flexible_import_kw": 5.0})
