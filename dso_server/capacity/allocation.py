"""Capacity allocation: firm (day-ahead) and non-firm (near real time), vectorised over households x intervals.

Fair rule (documented, used for both firm and non-firm):
1. every household first gets its guaranteed minimum (e.g. section 14a EnWG: 4.2 kW per controllable device);
   if the minimums alone exceed what is available they are scaled down proportionally and the interval is flagged;
2. the remainder is shared in proportion to (contracted max - guaranteed minimum), so nobody exceeds its contract max.
Because step 2 is proportional to the headroom each household can still take, one pass suffices: no water-filling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dso_server.capacity.errors import CapacityError, CapacityInvariantError, labels

FloatArray = NDArray[np.float64]
_TOL_KW = 1e-6


class AllocationInvariantError(CapacityInvariantError):
    """An allocation broke one of its invariants; the error names the transformer or connection point (by id,
    where the caller gave ids), the interval and the invariant."""


@dataclass(frozen=True)
class Allocation:
    """Import allocation for the households of one or more transformers, shape (households, intervals)."""

    import_kw: FloatArray
    minimums_forced: NDArray[np.bool_]
    """Per transformer and interval (transformers, intervals): guaranteed minimums exceeded what was available."""


def share_fairly(
    *,
    available_kw: FloatArray,
    group: NDArray[np.intp],
    min_kw: FloatArray,
    max_kw: FloatArray,
    household_ids: Sequence[str] | None = None,
    group_ids: Sequence[str] | None = None,
) -> Allocation:
    """Share ``available_kw`` (groups x intervals) among households (``group[h]`` = row of its transformer).

    ``min_kw`` and ``max_kw`` are per household, shape (households,) or (households, intervals).
    ``household_ids`` (EANs) and ``group_ids`` (transformer ids) name them in errors.
    """
    available = np.maximum(np.asarray(available_kw, dtype=np.float64), 0.0)
    n_groups, n_int = available.shape
    n_h = group.shape[0]
    lo = np.broadcast_to(np.asarray(min_kw, dtype=np.float64).reshape(n_h, -1), (n_h, n_int))
    hi = np.broadcast_to(np.asarray(max_kw, dtype=np.float64).reshape(n_h, -1), (n_h, n_int))
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo >= 0) and np.all(hi >= lo)):
        raise ValueError("need finite 0 <= guaranteed minimum <= contracted max for every household")
    sum_min = np.zeros((n_groups, n_int))
    np.add.at(sum_min, group, lo)
    room = hi - lo
    sum_room = np.zeros((n_groups, n_int))
    np.add.at(sum_room, group, room)

    forced = sum_min > available + _TOL_KW
    # Step 1: minimums, scaled down where they cannot all be met.
    min_scale = np.where(forced, available / np.where(sum_min > 0, sum_min, 1.0), 1.0)
    alloc = lo * min_scale[group]
    # Step 2: remainder proportional to room, capped at 1 so nobody exceeds contract max.
    remainder = np.maximum(available - sum_min, 0.0)
    frac = np.minimum(np.divide(remainder, sum_room, out=np.zeros_like(remainder), where=sum_room > 0), 1.0)
    alloc = alloc + room * frac[group]
    result = Allocation(import_kw=alloc, minimums_forced=forced)
    check_invariants(result, available_kw=available, group=group, min_kw=lo, max_kw=hi,
                     household_ids=household_ids, group_ids=group_ids)
    return result


def invariant_errors(
    allocation: Allocation, *, available_kw: FloatArray, group: NDArray[np.intp], min_kw: FloatArray,
    max_kw: FloatArray, household_ids: Sequence[str] | None = None, group_ids: Sequence[str] | None = None,
) -> list[CapacityError]:
    """Every invariant the allocation breaks (at its first interval per component and rule); empty when none."""
    alloc = allocation.import_kw
    invalid = ~np.isfinite(alloc) | (alloc < -_TOL_KW)
    if invalid.any():
        return _per_row(invalid, "connection_point", household_ids,
                        lambda h, t: f"{alloc[h, t]!r} kW: an allocation must be finite and >= 0")
    total = np.zeros_like(available_kw)
    np.add.at(total, group, alloc)
    over = total > available_kw + _TOL_KW * max(1, alloc.shape[0])
    above = alloc > max_kw + _TOL_KW
    share_of_min = np.minimum(min_kw, available_kw[group])
    # A household gets its minimum unless the group's minimums were forced down (then proportionally less).
    short = (alloc < share_of_min - _TOL_KW) & ~allocation.minimums_forced[group]
    if not (over.any() or above.any() or short.any()):  # the common case: no ids looked up
        return []
    return [
        *_per_row(over, "transformer", group_ids,
                  lambda g, t: f"{total[g, t]:.3f} kW allocated in sum > {available_kw[g, t]:.3f} kW available"),
        *_per_row(above, "connection_point", household_ids,
                  lambda h, t: f"{alloc[h, t]:.3f} kW above its contract max {max_kw[h, t]:.3f} kW"),
        *_per_row(short, "connection_point", household_ids,
                  lambda h, t: f"{alloc[h, t]:.3f} kW below its guaranteed minimum {share_of_min[h, t]:.3f} kW"),
    ]


def _per_row(bad: NDArray[np.bool_], component: str, ids: Sequence[str] | None,
             message: Callable[[int, int], str]) -> list[CapacityError]:
    names = labels(ids, bad.shape[0], "household" if component == "connection_point" else component)
    return [CapacityError(component, "allocated_kw", (names[row],), message(row, t := int(np.argmax(bad[row]))), t)
            for row in np.flatnonzero(bad.any(axis=1)).tolist()]


def check_invariants(
    allocation: Allocation, *, available_kw: FloatArray, group: NDArray[np.intp], min_kw: FloatArray,
    max_kw: FloatArray, household_ids: Sequence[str] | None = None, group_ids: Sequence[str] | None = None,
) -> None:
    """Raise AllocationInvariantError naming the first broken invariant (``invariant_errors``)."""
    errors = invariant_errors(allocation, available_kw=available_kw, group=group, min_kw=min_kw, max_kw=max_kw,
                              household_ids=household_ids, group_ids=group_ids)
    if errors:
        raise AllocationInvariantError(errors[0])


# ------------------------------------------------------------------------------ envelopes (what the jobs use)
#
# The published limit caps a connection point's whole net import (or export), its own inflexible load
# included. So a household's firm limit is its *baseline* (its share of the transformer's forecast p90 load,
# for export of the forecast p10 feed-in) plus a fair share of what the forecast leaves, as for dynamic
# operating envelopes. Tiers, each the fair rule above:
#   1. the guaranteed minimum (section 14a), then up to the baseline -- scaled down proportionally when the
#      transformer cannot carry all baselines;
#   2. what is left of the limit, shared in proportion to the room up to the contract max.
# Hence the firm limits under a transformer sum to at most its limit (capacity x (1 - margin)) however the
# households use them: the firm invariant does not rest on the forecast being right.


def allocate_envelopes(
    *,
    limit_kw: FloatArray,
    group: NDArray[np.intp],
    baseline_kw: FloatArray,
    min_kw: FloatArray,
    max_kw: FloatArray,
    household_ids: Sequence[str] | None = None,
    group_ids: Sequence[str] | None = None,
) -> Allocation:
    """Firm envelopes (households x intervals): guaranteed minimum, then baseline, then the rest by room."""
    ids = {"household_ids": household_ids, "group_ids": group_ids}
    n_h, n_i = np.asarray(baseline_kw).shape
    limit = np.broadcast_to(np.asarray(limit_kw, dtype=np.float64)[:, None], (np.asarray(limit_kw).shape[0], n_i))
    hi = np.broadcast_to(np.asarray(max_kw, dtype=np.float64).reshape(n_h, -1), (n_h, n_i))
    lo = np.minimum(np.broadcast_to(np.asarray(min_kw, dtype=np.float64).reshape(n_h, -1), (n_h, n_i)), hi)
    wish = np.clip(np.maximum(np.asarray(baseline_kw, dtype=np.float64), lo), lo, hi)
    tier1 = share_fairly(available_kw=limit, group=group, min_kw=lo, max_kw=wish, **ids)
    used = np.zeros_like(limit)
    np.add.at(used, group, tier1.import_kw)
    rest = np.maximum(limit - used, 0.0)
    tier2 = share_fairly(available_kw=rest, group=group, min_kw=np.zeros_like(hi),
                         max_kw=np.maximum(hi - tier1.import_kw, 0.0), **ids)
    result = Allocation(import_kw=tier1.import_kw + tier2.import_kw, minimums_forced=tier1.minimums_forced)
    check_invariants(result, available_kw=np.ascontiguousarray(limit), group=group, min_kw=lo, max_kw=hi, **ids)
    return result


def non_firm_headroom_kw(
    *, limit_kw: FloatArray, capacity_kw: FloatArray, expected_kw: FloatArray, firm_kw: FloatArray,
    baseline_kw: FloatArray, group: NDArray[np.intp],
) -> FloatArray:
    """(transformers, intervals), >= 0: the smaller of

    * limit - expected load - the flexible part of the firm limits: ``expected_kw`` is what measurement and the
      intra-day forecast say the transformer carries (the larger of the last measured interval and the intra-day
      p90, for export their feed-in counterparts); the firm limits' flexible part (firm - baseline) is capacity
      already promised on top of the baseline load;
    * capacity - the firm limits: a limit caps a household's whole connection, so a household whose base load
      stays below its baseline may fill its firm limit with flexible load. Firm + non-firm under a transformer
      therefore never sums above its rating (without the day-ahead margin), even if every household uses every
      kW it was given; the day-ahead margin is what measurement may release."""
    firm = np.asarray(firm_kw, dtype=np.float64)
    flexible = np.maximum(firm - np.minimum(np.asarray(baseline_kw, dtype=np.float64), firm), 0.0)
    n_t = np.asarray(limit_kw).shape[0]
    promised = np.zeros((n_t, firm.shape[1]))
    np.add.at(promised, group, flexible)
    firm_sum = np.zeros((n_t, firm.shape[1]))
    np.add.at(firm_sum, group, firm)
    limit = np.asarray(limit_kw, dtype=np.float64)[:, None]
    measured_room = limit - np.maximum(np.asarray(expected_kw, dtype=np.float64), 0.0) - promised
    rating_room = np.asarray(capacity_kw, dtype=np.float64)[:, None] - firm_sum
    return np.maximum(np.minimum(measured_room, rating_room), 0.0)


def allocate_non_firm_envelopes(
    *, limit_kw: FloatArray, capacity_kw: FloatArray, expected_kw: FloatArray, firm_kw: FloatArray,
    baseline_kw: FloatArray, group: NDArray[np.intp], max_kw: FloatArray,
    household_ids: Sequence[str] | None = None, group_ids: Sequence[str] | None = None,
) -> Allocation:
    """Non-firm on top of firm: the headroom shared by the fair rule without minimum, each household capped at
    contract max - firm. Invariants (checked): non-firm under a transformer <= its headroom, so
    expected load + promised flexible firm + non-firm <= limit, and firm + non-firm <= capacity."""
    headroom = non_firm_headroom_kw(limit_kw=limit_kw, capacity_kw=capacity_kw, expected_kw=expected_kw,
                                    firm_kw=firm_kw, baseline_kw=baseline_kw, group=group)
    firm = np.asarray(firm_kw, dtype=np.float64)
    n_h = firm.shape[0]
    room = np.maximum(np.broadcast_to(np.asarray(max_kw, dtype=np.float64).reshape(n_h, -1), firm.shape) - firm, 0.0)
    return share_fairly(available_kw=headroom, group=group, min_kw=np.zeros_like(room), max_kw=room,
                        household_ids=household_ids, group_ids=group_ids)


def baselines_kw(*, transformer_kw: FloatArray, group: NDArray[np.intp], weight: FloatArray) -> FloatArray:
    """Household baselines (households x intervals): each household's weight (normalised per transformer) times
    its transformer's forecast (clipped at 0). ``transformer_kw`` is (transformers, intervals)."""
    w = np.asarray(weight, dtype=np.float64)
    total = np.zeros(np.asarray(transformer_kw).shape[0])
    np.add.at(total, group, w)
    share = np.divide(w, total[group], out=np.zeros_like(w), where=total[group] > 0)
    return share[:, None] * np.maximum(np.asarray(transformer_kw, dtype=np.float64), 0.0)[group]
