"""The local guard: keeps measured net power inside the effective limits between two plans.

The planner works with forecasts; the plant does not follow them exactly. Every sub-step the controller asks
the guard to correct the planned setpoints against the last measured uncontrollable load, shedding flexible
devices in a fixed, documented order:

Import above the limit (lower setpoints, each down to the lowest power the device can run at now):
  1. PV: undo any curtailment (priority 0),
  2. home battery: stop charging, then discharge (priority 10),
  3. EV: charge less, down to 0 (priority 20),
  4. heat pump: down to 0 (priority 30) - the grid limit ranks above comfort; a short pause costs
     little comfort, and the next plan restores it within the limit where it can.
Export above the limit (raise setpoints): first the battery charges, then PV is curtailed.
What remains after all of this is load the household cannot shed; it is reported, not hidden.

The DSO judges the mean import of each 15-minute interval, and the guard sees the load one sub-step late, so a
rising load overshoots for a sub-step. :func:`interval_budget_kw` turns the energy already taken in the interval
into the limit for the rest of it: overshoot is taken back later in the same interval, never the other way
(the guard never allows more than the limit itself).

The guard aims ``margin_kw`` below the import limit (and above the export limit). At a limit (or budget) of
0 kW that aim is a small export: the import register only counts up, so import drawn while the guard catches
up with a rising load can never be taken back, and base-load noise around a net-zero aim would leave the
interval's mean import above 0 whenever the devices could have held it there. Only where the import and
export margins cannot both be kept (both limits near 0) does it aim between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hems_client.devices.base import Device, DeviceKind, clip

_EXPORT_ORDER = (DeviceKind.BATTERY, DeviceKind.PV)


def interval_budget_kw(*, limit_kw: float, used_kws: float, used_s: float, remaining_s: float) -> float:
    """The highest mean power for the ``remaining_s`` seconds left that keeps the mean over ``used_s +
    remaining_s`` within ``limit_kw``, given ``used_kws`` (kW·s) already taken; never above ``limit_kw``.
    May be negative (then nothing flexible may draw)."""
    if remaining_s <= 0:
        return limit_kw
    return min(limit_kw, (limit_kw * (used_s + remaining_s) - used_kws) / remaining_s)


def guard_aims_kw(*, import_limit_kw: float, export_limit_kw: float, margin_kw: float,
                  export_margin_kw: float | None = None) -> tuple[float, float]:
    """The highest and lowest net import (kW, import-positive) the guard lets through: a margin inside each
    limit (a budget below 0 counts as 0: no import is the most the rest of an interval can do). Where both
    margins do not fit between the limits, both aims meet halfway."""
    highest = max(import_limit_kw, 0.0) - margin_kw
    lowest = (margin_kw if export_margin_kw is None else export_margin_kw) - max(export_limit_kw, 0.0)
    if highest < lowest:
        highest = lowest = (max(import_limit_kw, 0.0) - max(export_limit_kw, 0.0)) / 2
    return highest, lowest


@dataclass(frozen=True)
class GuardResult:
    setpoints: dict[str, float | None]
    expected_net_import_kw: float
    shed_kw: float
    """How much the guard lowered (import) or raised (export) the flexible devices."""
    unresolved_kw: float
    """Excess import (> 0) or export (< 0) left that no flexible device could take away."""


def guard_setpoints(
    *,
    devices: Sequence[Device],
    setpoints: Mapping[str, float | None],
    ranges: Mapping[str, tuple[float, float]],
    uncontrolled_kw: float,
    import_limit_kw: float,
    export_limit_kw: float,
    margin_kw: float = 0.05,
    export_margin_kw: float | None = None,
) -> GuardResult:
    """Correct ``setpoints`` so that ``uncontrolled_kw`` + flexible powers stays within the limits (less the
    margins; ``export_margin_kw`` None: ``margin_kw`` for both). ``ranges`` holds each flexible device's
    (lowest, highest) power right now."""
    flexible = [device for device in devices if device.flexible]
    powers: dict[str, float] = {}
    for device in flexible:
        low, high = ranges[device.name]
        wanted = setpoints.get(device.name)
        if wanted is None:
            wanted = low if device.kind is DeviceKind.PV else clip(0.0, low, high)
        powers[device.name] = clip(wanted, low, high)
    net = uncontrolled_kw + sum(powers.values())
    shed = 0.0
    import_aim, export_aim = guard_aims_kw(import_limit_kw=import_limit_kw, export_limit_kw=export_limit_kw,
                                           margin_kw=margin_kw, export_margin_kw=export_margin_kw)
    excess = net - import_aim
    if excess > 0:
        for device in sorted(flexible, key=lambda d: d.priority):
            low = ranges[device.name][0]
            cut = min(excess, powers[device.name] - low)
            if cut > 0:
                powers[device.name] -= cut
                excess -= cut
                shed += cut
        unresolved = max(excess, 0.0)
    else:
        deficit = export_aim - net
        for kind in _EXPORT_ORDER:
            for device in (d for d in flexible if d.kind is kind):
                high = ranges[device.name][1]
                rise = min(max(deficit, 0.0), high - powers[device.name])
                if rise > 0:
                    powers[device.name] += rise
                    deficit -= rise
                    shed += rise
        unresolved = -max(deficit, 0.0)
    result: dict[str, float | None] = dict(setpoints)
    for device in flexible:
        # PV left at full production stays "no instruction", so the device tracks the sun by itself.
        at_full_pv = device.kind is DeviceKind.PV and powers[device.name] <= ranges[device.name][0] + 1e-9
        result[device.name] = None if at_full_pv else powers[device.name]
    return GuardResult(setpoints=result, expected_net_import_kw=uncontrolled_kw + sum(powers.values()),
                       shed_kw=shed, unresolved_kw=unresolved)
