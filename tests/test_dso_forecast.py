from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from dso_server.forecast import cold_start, forecast_quantiles, mean_pinball, seasonal_naive, standard_shape


def _synthetic(n_tr: int = 5, n_days: int = 43, seed: int = 1) -> tuple[np.ndarray, list[date]]:
    """Transformer loads: 100 households of the standard shape, weekend uplift, lognormal-ish day and 15-min noise."""
    rng = np.random.default_rng(seed)
    days = [date(2026, 1, 5) + timedelta(days=i) for i in range(n_days)]
    base = 100 * 3500 / 8760 * standard_shape()
    weekend = np.array([1.15 if d.weekday() >= 5 else 1.0 for d in days])
    level = rng.normal(1.0, 0.08, (n_tr, n_days, 1))
    noise = rng.normal(1.0, 0.12, (n_tr, n_days, 96))
    return base[None, None, :] * weekend[None, :, None] * level * noise, days


def test_quantile_model_beats_seasonal_naive_on_holdout() -> None:
    load, days = _synthetic()
    losses_q, losses_n, mae_q, mae_n = [], [], [], []
    for t in range(28, len(days)):  # two-week hold-out, one-step-ahead days
        fc = forecast_quantiles(history_kw=load[:, :t], history_days=days[:t], target_day=days[t])
        naive = seasonal_naive(load[:, :t])
        assert np.all(fc.p10_kw <= fc.p50_kw) and np.all(fc.p50_kw <= fc.p90_kw)
        losses_q.append(mean_pinball(load[:, t], fc))
        losses_n.append(mean_pinball(load[:, t], naive))
        mae_q.append(np.mean(np.abs(load[:, t] - fc.p50_kw)))
        mae_n.append(np.mean(np.abs(load[:, t] - naive.p50_kw)))
    print(
        f"pinball quantile={np.mean(losses_q):.3f} naive={np.mean(losses_n):.3f} "
        f"MAE quantile={np.mean(mae_q):.3f} naive={np.mean(mae_n):.3f} kW"
    )
    assert np.mean(losses_q) <= np.mean(losses_n)
    assert np.mean(mae_q) <= np.mean(mae_n)
    # p90 should cover roughly 90 %: check it is between 75 and 99 % on the hold-out.
    fc = forecast_quantiles(history_kw=load[:, :-1], history_days=days[:-1], target_day=days[-1])
    assert 0.75 <= np.mean(load[:, -1] <= fc.p90_kw) <= 0.99


def test_cold_start_energy_and_order() -> None:
    fc = cold_start(np.array([3500.0, 7000.0]))
    np.testing.assert_allclose(fc.p50_kw.sum(axis=1) / 4, [3500 / 365, 7000 / 365])
    assert np.all(fc.p10_kw <= fc.p50_kw) and np.all(fc.p50_kw <= fc.p90_kw)


def test_missing_telemetry_ignored() -> None:
    load, days = _synthetic(n_tr=1, n_days=10)
    load[:, 3, :] = np.nan
    fc = forecast_quantiles(history_kw=load, history_days=days, target_day=days[-1] + timedelta(days=1))
    assert np.all(np.isfinite(fc.p90_kw))
