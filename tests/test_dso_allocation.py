from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dso_server.capacity.allocation import allocate_envelopes, allocate_non_firm_envelopes, baselines_kw, share_fairly


def test_minimum_first_then_proportional_to_room() -> None:
    # 20 kW available; minimums 4.2 + 4.2; rooms 10 - 4.2 = 5.8 and 17 - 4.2 = 12.8 share the 11.6 kW left.
    a = share_fairly(
        available_kw=np.array([[20.0]]),
        group=np.array([0, 0]),
        min_kw=np.array([4.2, 4.2]),
        max_kw=np.array([10.0, 17.0]),
    )
    left = 20.0 - 8.4
    np.testing.assert_allclose(a.import_kw[:, 0], [4.2 + 5.8 * left / 18.6, 4.2 + 12.8 * left / 18.6])
    assert not a.minimums_forced.any()


def test_capped_at_contract_max_when_plenty() -> None:
    a = share_fairly(
        available_kw=np.array([[100.0]]), group=np.array([0, 0]), min_kw=np.array([1.0, 2.0]), max_kw=np.array([5, 9.0])
    )
    np.testing.assert_allclose(a.import_kw[:, 0], [5.0, 9.0])


def test_minimums_scaled_down_and_flagged() -> None:
    a = share_fairly(
        available_kw=np.array([[6.0]]), group=np.array([0, 0]), min_kw=np.array([4.2, 8.4]), max_kw=np.array([10, 10.0])
    )
    np.testing.assert_allclose(a.import_kw[:, 0], [2.0, 4.0])
    assert a.minimums_forced[0, 0]


@st.composite
def _regions(draw: st.DrawFn) -> tuple:
    n_t = draw(st.integers(1, 3))
    n_h = draw(st.integers(1, 12))
    n_i = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    group = rng.integers(0, n_t, n_h).astype(np.intp)
    cap = rng.uniform(0, 200, n_t)
    margin = rng.uniform(0, 0.5, n_t)
    p90 = rng.uniform(0, 250, (n_t, n_i))
    lo = rng.choice([0.0, 4.2, 8.4, 12.6], n_h)
    hi = lo + rng.uniform(0, 20, n_h)
    measured = rng.uniform(0, 250, (n_t, n_i))
    return group, cap, margin, p90, lo, hi, measured


@settings(max_examples=60, deadline=None)
@given(_regions())
def test_envelope_invariants_hold(region: tuple) -> None:
    group, cap, margin, p90, lo, hi, measured = region
    limit = cap * (1 - margin)
    lo = np.minimum(lo, hi)
    base = baselines_kw(transformer_kw=p90, group=group, weight=np.linspace(1, 2, len(group)))
    firm = allocate_envelopes(limit_kw=limit, group=group, baseline_kw=base, min_kw=lo, max_kw=hi)
    f = firm.import_kw
    sums = np.zeros((len(cap), f.shape[1]))
    np.add.at(sums, group, f)
    assert np.all(sums <= limit[:, None] + 1e-6)  # however the forecast errs, firm never exceeds the limit
    assert np.all(f <= hi[:, None] + 1e-6)
    ok = ~firm.minimums_forced[group]
    assert np.all((f >= lo[:, None] - 1e-6)[ok])
    nf = allocate_non_firm_envelopes(limit_kw=limit, capacity_kw=cap, expected_kw=measured, firm_kw=f,
                                     baseline_kw=base, group=group, max_kw=hi).import_kw
    assert np.all(nf >= 0) and np.all(f + nf <= hi[:, None] + 1e-6)
    promised = np.zeros_like(sums)
    np.add.at(promised, group, f - np.minimum(base, f))
    released = np.zeros_like(sums)
    np.add.at(released, group, nf)
    # What measurement says flows + flexible firm already promised + non-firm released never exceeds the limit,
    assert np.all((released <= 1e-9) | (measured + promised + released <= limit[:, None] + 1e-6))
    # and even if every household used all it was given, firm + non-firm never exceeds the transformer's rating.
    assert np.all(sums + released <= cap[:, None] + 1e-6)


def test_envelope_gives_baseline_before_sharing_the_rest() -> None:
    # 20 kW limit; A expects 8 kW, B 2 kW, neither has a guarantee: baselines first, the 10 kW left by room.
    a = allocate_envelopes(limit_kw=np.array([20.0]), group=np.array([0, 0]), baseline_kw=np.array([[8.0], [2.0]]),
                           min_kw=np.zeros(2), max_kw=np.array([17.0, 17.0]))
    np.testing.assert_allclose(a.import_kw[:, 0], [8 + 10 * 9 / 24, 2 + 10 * 15 / 24])
