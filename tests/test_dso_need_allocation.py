"""Firm allocation for performance contracts (dso_server.capacity.need_allocation): needs first, then the fair rule;
scaled by a documented rule when the transformer cannot carry them, with the shortfall recorded; today's rule for
households without a need. Invariants checked in code and again here by hypothesis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dso_server.capacity.allocation import AllocationInvariantError, allocate_envelopes
from dso_server.capacity.need_allocation import (
    NeedAllocation,
    allocate_for_needs,
    check_need_invariants,
)

NAN = np.nan


def one_transformer(limit: float, need: list[list[float]], *, baseline: list[float] | None = None,
                    minimum: list[float] | None = None, maximum: list[float] | None = None,
                    rule: str = "proportional") -> NeedAllocation:
    n = len(need)
    return allocate_for_needs(
        limit_kw=np.array([limit]), group=np.zeros(n, dtype=np.intp), need_kw=np.array(need, dtype=float),
        baseline_kw=np.array([[b] * len(need[0]) for b in (baseline or [0.0] * n)]),
        min_kw=np.array(minimum or [0.0] * n), max_kw=np.array(maximum or [17.0] * n), rule=rule,  # type: ignore[arg-type]
        household_ids=[f"h{i}" for i in range(n)], group_ids=["T1"])


def test_needs_first_then_baselines_then_the_rest_by_room() -> None:
    # 20 kW: needs 5 and 3; a third household without need has baseline 4; 8 kW left go by room to 17 kW.
    a = one_transformer(20.0, [[5.0], [3.0], [NAN]], baseline=[0.0, 0.0, 4.0])
    rooms = np.array([17 - 5, 17 - 3, 17 - 4.0])
    np.testing.assert_allclose(a.import_kw[:, 0], [5, 3, 4] + rooms * 8 / rooms.sum())
    assert not a.needs_scaled.any() and not a.minimums_forced.any() and not a.not_honoured.any()


def test_without_needs_it_is_todays_rule() -> None:
    rng = np.random.default_rng(3)
    group = rng.integers(0, 2, 9).astype(np.intp)
    kwargs = {"limit_kw": np.array([20.0, 9.0]), "group": group, "baseline_kw": rng.uniform(0, 8, (9, 5)),
              "min_kw": rng.choice([0.0, 4.2], 9), "max_kw": np.full(9, 17.0)}
    today = allocate_envelopes(**kwargs)
    needless = allocate_for_needs(**kwargs, need_kw=np.full((9, 5), NAN))
    np.testing.assert_allclose(needless.import_kw, today.import_kw, atol=1e-9)
    np.testing.assert_array_equal(needless.minimums_forced, today.minimums_forced)


def test_scarce_needs_are_scaled_proportionally_and_the_shortfall_recorded() -> None:
    # 6 kW for needs of 4 and 8: both scaled by 6 / 12; a third household's 2 kW minimum comes after the needs.
    a = one_transformer(6.0, [[4.0], [8.0], [NAN]], minimum=[0.0, 0.0, 2.0])
    np.testing.assert_allclose(a.import_kw[:, 0], [2.0, 4.0, 0.0])
    assert a.needs_scaled[0, 0] and a.minimums_forced[0, 0]
    np.testing.assert_allclose(a.shortfall_kw[:, 0], [2.0, 4.0, 0.0])


def test_needs_the_transformer_carries_come_before_the_minimums_of_others() -> None:
    # 10 kW: needs 5 and 1 fit; the minimums (4.2 each, beyond what the needs gave) share the 4 kW left.
    a = one_transformer(10.0, [[5.0], [1.0], [NAN]], minimum=[4.2, 4.2, 4.2])
    rests = np.array([0.0, 3.2, 4.2])
    np.testing.assert_allclose(a.import_kw[:, 0], np.array([5.0, 1.0, 0.0]) + rests * 4.0 / rests.sum())
    assert not a.needs_scaled.any() and a.minimums_forced[0, 0] and not a.not_honoured.any()


def test_scarce_needs_under_equal_cap_meet_small_needs_in_full() -> None:
    # 6 kW for needs 1, 4 and 8: 1 in full, the others capped at 2.5 each.
    a = one_transformer(6.0, [[1.0], [4.0], [8.0]], rule="equal_cap")
    np.testing.assert_allclose(a.import_kw[:, 0], [1.0, 2.5, 2.5])
    np.testing.assert_allclose(a.shortfall_kw[:, 0], [0.0, 1.5, 5.5])


def test_a_need_above_the_contract_is_capped_and_counts_as_not_honoured() -> None:
    a = one_transformer(100.0, [[20.0]], maximum=[17.0])
    assert a.import_kw[0, 0] == pytest.approx(17.0)
    assert a.shortfall_kw[0, 0] == pytest.approx(3.0)


def test_a_broken_allocation_is_named_by_ean() -> None:
    a = one_transformer(10.0, [[4.0], [3.0]])
    broken = NeedAllocation(import_kw=a.import_kw * np.array([[1.0], [0.5]]), need_kw=a.need_kw,
                            guarantee_kw=a.guarantee_kw, shortfall_kw=a.shortfall_kw, needs_scaled=a.needs_scaled,
                            minimums_forced=a.minimums_forced, rule="proportional")
    with pytest.raises(AllocationInvariantError, match=r"connection_point 'h1' interval 0: allocated_kw: .* below its "
                                                       r"need's proportional share 3\.000 kW"):
        check_need_invariants(broken, limit_kw=np.array([[10.0]]), group=np.zeros(2, dtype=np.intp),
                              min_kw=np.zeros((2, 1)), max_kw=np.full((2, 1), 17.0), household_ids=["h0", "h1"])
    with pytest.raises(ValueError, match="rule must be one of"):
        one_transformer(10.0, [[1.0]], rule="lottery")


@st.composite
def _regions(draw: st.DrawFn) -> tuple:
    n_t = draw(st.integers(1, 3))
    n_h = draw(st.integers(1, 12))
    n_i = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    group = rng.integers(0, n_t, n_h).astype(np.intp)
    limit = rng.uniform(0, 60, n_t)
    lo = rng.choice([0.0, 4.2, 8.4], n_h)
    hi = lo + rng.uniform(0, 20, n_h)
    need = np.where(rng.random((n_h, n_i)) < 0.6, rng.uniform(0, 25, (n_h, n_i)), NAN)
    base = rng.uniform(0, 10, (n_h, n_i))
    return group, limit, lo, hi, need, base, draw(st.sampled_from(["proportional", "equal_cap"]))


@settings(max_examples=80, deadline=None)
@given(_regions())
def test_need_allocation_invariants_hold(region: tuple) -> None:
    group, limit, lo, hi, need, base, rule = region
    a = allocate_for_needs(limit_kw=limit, group=group, need_kw=need, baseline_kw=base, min_kw=lo, max_kw=hi,
                           rule=rule)
    f = a.import_kw
    n_t, n_i = len(limit), f.shape[1]
    sums = np.zeros((n_t, n_i))
    np.add.at(sums, group, f)
    assert np.all(sums <= limit[:, None] + 1e-6)  # firm under a transformer <= rating x (1 - margin)
    assert np.all(f <= hi[:, None] + 1e-6) and np.all(f >= -1e-9)
    capped = np.where(np.isfinite(need), np.minimum(np.nan_to_num(need), hi[:, None]), 0.0)
    needs = np.zeros((n_t, n_i))
    np.add.at(needs, group, capped)
    # Every need the transformer can carry is met in full (before anyone's minimum) ...
    carried = (needs <= limit[:, None] + 1e-6)[group]
    assert np.all((f >= capped - 1e-6)[carried])
    # ... and where it cannot, the needs fill the limit (nothing is held back) and the shortfall is recorded.
    full = np.zeros((n_t, n_i))
    np.add.at(full, group, np.minimum(f, capped))
    tight = needs > limit[:, None] + 1e-6
    assert np.allclose(full[tight], np.broadcast_to(limit[:, None], (n_t, n_i))[tight], atol=1e-6)
    expected = np.where(np.isfinite(need) & (need - f > 1e-3), need - f, 0.0)
    np.testing.assert_allclose(a.shortfall_kw, expected, atol=1e-9)
    # Where needs and minimums fit together, everyone has both.
    guarantees = np.zeros((n_t, n_i))
    np.add.at(guarantees, group, np.maximum(capped, np.minimum(lo, hi)[:, None]))
    fits = (guarantees <= limit[:, None] + 1e-6)[group]
    assert np.all((f >= np.maximum(capped, np.minimum(lo, hi)[:, None]) - 1e-6)[fits])
    if rule == "equal_cap":  # nobody cut below a level that someone with a larger need exceeds
        for t in np.flatnonzero(tight.any(axis=1)):
            rows = np.flatnonzero(group == t)
            for i in np.flatnonzero(tight[t]):
                got, want = np.minimum(f[rows, i], capped[rows, i]), capped[rows, i]
                cut = got < want - 1e-6
                if cut.any():
                    assert np.all(got[cut] >= got.max() - 1e-6)
