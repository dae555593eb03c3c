"""Firm allocation for performance contracts: each performance household at least the capacity need its HEMS
reported, then the fair rule for the rest. Pure, vectorised over households x intervals.

The rule, per transformer and interval (``allocate_for_needs``):

0. **Needs.** A household with a need (a performance contract whose HEMS reported one for the interval) gets its
   need, capped at its contract maximum. When the transformer's limit (capacity x (1 - margin)) cannot carry all
   needs, they are scaled by ``rule`` and each household whose need was not met is recorded with its shortfall
   (``NeedAllocation.shortfall_kw``):

   * ``"proportional"`` (default): every need times the same factor, limit / sum of needs. Every contract is
     honoured to the same share of its need, the way section 14a minimums have always been scaled.
   * ``"equal_cap"`` (max-min fair, water-filling): every need capped at one level L, with the capped needs
     summing to the limit. Needs below L are met in full; the largest are cut, and cut most.

1. **Guaranteed minimums** (section 14a) of every household, as far as tier 0 did not already give them, scaled
   down proportionally when what the needs left cannot carry them all.
2. **Baselines** of the households without a need: up to their share of the transformer's forecast load, scaled
   down proportionally when the limit left cannot carry them. A household with a need has no baseline: its own
   need replaces the DSO's estimate of its load.
3. **The rest** of the limit, shared by all in proportion to their room up to the contract maximum.

Tiers 1-3 are today's fair rule (``allocation.allocate_envelopes``) applied to what the needs left, so without any
need this is exactly today's rule: households without a need report fall back to it. Invariants, checked on every
run (``need_invariant_errors``): the firm limits under a transformer sum to at most its limit; none exceeds its
contract maximum; every need a transformer can carry (capped at the contract) is met, and where it cannot, each
household gets at least its share under the rule; every minimum is met where needs and minimums fit together; the
recorded shortfall is exactly the need minus the allocation where that is positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from dso_server.capacity.allocation import (
    AllocationInvariantError,
    FloatArray,
    _per_row,
    share_fairly,
)
from dso_server.capacity.errors import CapacityError

ScalingRule = Literal["proportional", "equal_cap"]
SCALING_RULES: tuple[ScalingRule, ...] = ("proportional", "equal_cap")
NEED_TOLERANCE_KW = 0.001
"""A need counts as met when the allocation is short of it by at most 1 W (limits are published in W)."""
_TOL_KW = 1e-6


@dataclass(frozen=True)
class NeedAllocation:
    """Firm import allocation (households x intervals) with what it did for the needs."""

    import_kw: FloatArray
    need_kw: FloatArray
    """The needs as reported (households x intervals), NaN where a household has none."""
    guarantee_kw: FloatArray
    """What tiers 0 and 1 promise before scaling: the need (capped at the contract) and the minimum, the larger."""
    shortfall_kw: FloatArray
    """Need minus allocation where positive (beyond 1 W), else 0: how far each need was not honoured."""
    needs_scaled: NDArray[np.bool_]
    """Per transformer and interval: the limit could not carry every need; they were scaled by the rule."""
    minimums_forced: NDArray[np.bool_]
    """Per transformer and interval: needs and guaranteed minimums together did not fit; the minimums (and where
    ``needs_scaled``, the needs) were scaled."""
    rule: ScalingRule

    @property
    def has_need(self) -> NDArray[np.bool_]:
        return np.isfinite(self.need_kw)

    @property
    def not_honoured(self) -> NDArray[np.bool_]:
        """Households x intervals where a need was not met."""
        return self.shortfall_kw > 0.0


def _equal_cap(guarantee: FloatArray, group: NDArray[np.intp], available: FloatArray) -> FloatArray:
    """Per transformer and interval the level L with sum(min(g, L)) = available (where the guarantees exceed it);
    +inf where they fit. Water-filling by sorting each transformer's guarantees."""
    n_t, n_i = available.shape
    level = np.full((n_t, n_i), np.inf)
    for t in range(n_t):
        rows = np.flatnonzero(group == t)
        if rows.size == 0:
            continue
        g = np.sort(guarantee[rows], axis=0)  # ascending per interval
        k = np.arange(rows.size)[:, None]
        before = np.vstack([np.zeros((1, n_i)), np.cumsum(g, axis=0)[:-1]])
        # With the smallest k guarantees met in full, the others share what is left equally.
        candidate = (available[t] - before) / (rows.size - k)
        fits = candidate <= g  # the first k where the level falls within the k-th guarantee
        first = np.argmax(fits, axis=0)
        exceeds = g.sum(axis=0) > available[t] + _TOL_KW
        level[t] = np.where(exceeds, candidate[first, np.arange(n_i)], np.inf)
    return np.maximum(level, 0.0)


def allocate_for_needs(
    *,
    limit_kw: FloatArray,
    group: NDArray[np.intp],
    need_kw: FloatArray,
    baseline_kw: FloatArray,
    min_kw: FloatArray,
    max_kw: FloatArray,
    rule: ScalingRule = "proportional",
    household_ids: Sequence[str] | None = None,
    group_ids: Sequence[str] | None = None,
) -> NeedAllocation:
    """Firm envelopes (households x intervals) for needs: needs, minimums, baselines, then the rest by room.

    ``limit_kw`` per transformer (what may be allocated firm); ``group[h]`` the transformer row of household h;
    ``need_kw`` (households x intervals) the reported needs, NaN for none; ``baseline_kw`` (households x
    intervals) the forecast shares; ``min_kw`` / ``max_kw`` per household, (households,) or (households,
    intervals). ``household_ids`` (EANs) and ``group_ids`` (transformer ids) name them in errors."""
    if rule not in SCALING_RULES:
        raise ValueError(f"rule must be one of {SCALING_RULES}, not {rule!r}")
    ids = {"household_ids": household_ids, "group_ids": group_ids}
    need = np.asarray(need_kw, dtype=np.float64)
    n_h, n_i = need.shape
    limit = np.broadcast_to(np.asarray(limit_kw, dtype=np.float64)[:, None], (np.asarray(limit_kw).shape[0], n_i))
    limit = np.maximum(np.ascontiguousarray(limit), 0.0)
    hi = np.broadcast_to(np.asarray(max_kw, dtype=np.float64).reshape(n_h, -1), (n_h, n_i))
    lo = np.minimum(np.broadcast_to(np.asarray(min_kw, dtype=np.float64).reshape(n_h, -1), (n_h, n_i)), hi)
    if np.any(need < 0) or np.any(np.isinf(need)):
        raise ValueError("needs must be >= 0 and finite (NaN for none)")
    has_need = np.isfinite(need)
    capped = np.where(has_need, np.minimum(np.nan_to_num(need), hi), 0.0)

    # Tier 0: needs, scaled by the rule where they exceed the limit.
    total = np.zeros_like(limit)
    np.add.at(total, group, capped)
    scaled = total > limit + _TOL_KW
    if rule == "proportional":
        factor = np.where(scaled, limit / np.where(total > 0, total, 1.0), 1.0)
        alloc = capped * factor[group]
    else:
        alloc = np.minimum(capped, _equal_cap(capped, group, limit)[group])
    used = np.zeros_like(limit)
    np.add.at(used, group, alloc)

    # Tiers 1-3, today's fair rule on what the needs left: minimums (as far as not given), baselines of the
    # households without a need, the rest by room.
    rest_of_min = np.maximum(lo - alloc, 0.0)
    tier1 = share_fairly(available_kw=np.maximum(limit - used, 0.0), group=group, min_kw=rest_of_min,
                         max_kw=rest_of_min, **ids)
    alloc = alloc + tier1.import_kw
    np.add.at(used, group, tier1.import_kw)
    wish = np.where(has_need, alloc, np.clip(np.maximum(np.asarray(baseline_kw, dtype=np.float64), lo), lo, hi))
    tier2 = share_fairly(available_kw=np.maximum(limit - used, 0.0), group=group, min_kw=np.zeros_like(hi),
                         max_kw=np.maximum(wish - alloc, 0.0), **ids).import_kw
    alloc = alloc + tier2
    np.add.at(used, group, tier2)
    tier3 = share_fairly(available_kw=np.maximum(limit - used, 0.0), group=group, min_kw=np.zeros_like(hi),
                         max_kw=np.maximum(hi - alloc, 0.0), **ids).import_kw
    alloc = alloc + tier3
    result = NeedAllocation(import_kw=alloc, need_kw=need, guarantee_kw=np.maximum(capped, lo),
                            shortfall_kw=shortfall_kw(need, alloc), needs_scaled=scaled,
                            minimums_forced=scaled | tier1.minimums_forced, rule=rule)
    check_need_invariants(result, limit_kw=limit, group=group, min_kw=lo, max_kw=hi, **ids)
    return result


def shortfall_kw(need_kw: FloatArray, allocated_kw: FloatArray) -> FloatArray:
    """Need minus allocation where that exceeds 1 W, else 0 (also where there is no need)."""
    gap = np.nan_to_num(np.asarray(need_kw, dtype=np.float64) - allocated_kw, nan=0.0)
    return np.where(gap > NEED_TOLERANCE_KW, gap, 0.0)


def need_invariant_errors(
    allocation: NeedAllocation, *, limit_kw: FloatArray, group: NDArray[np.intp], min_kw: FloatArray,
    max_kw: FloatArray, household_ids: Sequence[str] | None = None, group_ids: Sequence[str] | None = None,
) -> list[CapacityError]:
    """Every invariant of ``allocate_for_needs`` the allocation breaks; empty when none."""
    alloc = allocation.import_kw
    invalid = ~np.isfinite(alloc) | (alloc < -_TOL_KW)
    if invalid.any():
        return _per_row(invalid, "connection_point", household_ids,
                        lambda h, t: f"{alloc[h, t]!r} kW: an allocation must be finite and >= 0")
    limit = np.asarray(limit_kw, dtype=np.float64)
    total = np.zeros_like(limit)
    np.add.at(total, group, alloc)
    over = total > limit + _TOL_KW * max(1, alloc.shape[0])
    above = alloc > max_kw + _TOL_KW
    capped = np.where(allocation.has_need, np.minimum(np.nan_to_num(allocation.need_kw), max_kw), 0.0)
    if allocation.rule == "proportional":
        needed = np.zeros_like(limit)
        np.add.at(needed, group, capped)
        share = capped * np.minimum(1.0, limit / np.where(needed > 0, needed, 1.0))[group]
    else:
        share = np.minimum(capped, _equal_cap(capped, group, limit)[group])
    short = alloc < share - _TOL_KW
    below_min = (alloc < allocation.guarantee_kw - _TOL_KW) & ~allocation.minimums_forced[group]
    recorded = np.abs(allocation.shortfall_kw - shortfall_kw(allocation.need_kw, alloc)) > _TOL_KW
    if not (over.any() or above.any() or short.any() or below_min.any() or recorded.any()):
        return []
    return [
        *_per_row(over, "transformer", group_ids,
                  lambda g, t: f"{total[g, t]:.3f} kW firm in sum > its limit {limit[g, t]:.3f} kW"),
        *_per_row(above, "connection_point", household_ids,
                  lambda h, t: f"{alloc[h, t]:.3f} kW above its contract max {max_kw[h, t]:.3f} kW"),
        *_per_row(short, "connection_point", household_ids,
                  lambda h, t: f"{alloc[h, t]:.3f} kW below its need's {allocation.rule} share {share[h, t]:.3f} kW"),
        *_per_row(below_min, "connection_point", household_ids,
                  lambda h, t: f"{alloc[h, t]:.3f} kW below its guarantee {allocation.guarantee_kw[h, t]:.3f} kW"),
        *_per_row(recorded, "connection_point", household_ids,
                  lambda h, t: f"shortfall recorded as {allocation.shortfall_kw[h, t]:.3f} kW, not need - "
                               "allocation"),
    ]


def check_need_invariants(
    allocation: NeedAllocation, *, limit_kw: FloatArray, group: NDArray[np.intp], min_kw: FloatArray,
    max_kw: FloatArray, household_ids: Sequence[str] | None = None, group_ids: Sequence[str] | None = None,
) -> None:
    """Raise AllocationInvariantError naming the first broken invariant (``need_invariant_errors``)."""
    errors = need_invariant_errors(allocation, limit_kw=limit_kw, group=group, min_kw=min_kw, max_kw=max_kw,
                                   household_ids=household_ids, group_ids=group_ids)
    if errors:
        raise AllocationInvariantError(errors[0])
