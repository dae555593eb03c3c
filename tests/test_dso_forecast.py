"""Transformer load forecast: learned quantiles beat seasonal-naive on a hold-out; H25 cold start; DST days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from dso_server.capacity.forecast import (
    cold_start,
    day_intervals,
    forecast_quantiles,
    h25_day_kw,
    history_matrix,
    intraday,
    local_slots,
    mean_pinball,
    seasonal_naive,
)


def _synthetic(n_tr: int = 5, n_days: int = 43, seed: int = 1) -> tuple[np.ndarray, list[date]]:
    """Transformer loads: 100 households following H25, weekend uplift, a day level and 15-min noise."""
    rng = np.random.default_rng(seed)
    days = [date(2030, 1, 7) + timedelta(days=i) for i in range(n_days)]
    base = np.stack([h25_day_kw(d, 100 * 3500.0) for d in days])  # (days, 96)
    weekend = np.array([1.15 if d.weekday() >= 5 else 1.0 for d in days])
    level = rng.normal(1.0, 0.08, (n_tr, n_days, 1))
    noise = rng.normal(1.0, 0.12, (n_tr, n_days, 96))
    return base[None] * weekend[None, :, None] * level * noise, days


def test_quantile_model_beats_seasonal_naive_on_holdout() -> None:
    load, days = _synthetic()
    scores: dict[str, list[float]] = {"pinball_q": [], "pinball_n": [], "mae_q": [], "mae_n": []}
    for t in range(28, len(days)):  # two-week hold-out, one-step-ahead days
        fc = forecast_quantiles(history_kw=load[:, :t], history_days=days[:t], target_day=days[t])
        naive = seasonal_naive(load[:, :t])
        assert np.all(fc.p10_kw <= fc.p50_kw) and np.all(fc.p50_kw <= fc.p90_kw)
        scores["pinball_q"].append(mean_pinball(load[:, t], fc))
        scores["pinball_n"].append(mean_pinball(load[:, t], naive))
        scores["mae_q"].append(float(np.mean(np.abs(load[:, t] - fc.p50_kw))))
        scores["mae_n"].append(float(np.mean(np.abs(load[:, t] - naive.p50_kw))))
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    print(f"hold-out 15 days x 5 transformers: pinball quantile={mean['pinball_q']:.3f} "
          f"naive={mean['pinball_n']:.3f} kW, MAE quantile={mean['mae_q']:.3f} naive={mean['mae_n']:.3f} kW")
    assert mean["pinball_q"] < 0.8 * mean["pinball_n"]
    assert mean["mae_q"] < mean["mae_n"]
    fc = forecast_quantiles(history_kw=load[:, :-1], history_days=days[:-1], target_day=days[-1])
    assert 0.75 <= np.mean(load[:, -1] <= fc.p90_kw) <= 0.99  # p90 covers roughly 90 %


def test_intraday_correction_beats_day_ahead_after_a_level_shift() -> None:
    load, days = _synthetic(n_tr=3)
    load[:, -1] *= 1.3  # a cold snap: the whole last day runs 30 % above the usual
    fc = forecast_quantiles(history_kw=load[:, :-1], history_days=days[:-1], target_day=days[-1])
    now = 48  # noon: the morning is measured
    ahead = fc.take(np.arange(now, now + 8))
    corrected = intraday(ahead, recent_measured_kw=load[:, -1, now - 4:now], recent_p50_kw=fc.p50_kw[:, now - 4:now],
                         horizon_intervals=8)
    actual = load[:, -1, now:now + 8]
    assert mean_pinball(actual, corrected) < mean_pinball(actual, ahead)


def test_cold_start_follows_h25_and_narrows_with_more_households() -> None:
    winter, summer = date(2030, 1, 15), date(2030, 7, 15)
    fc = cold_start(day=winter, annual_kwh=np.array([3500.0, 350_000.0]), households=np.array([1.0, 100.0]))
    assert np.all(fc.p10_kw <= fc.p50_kw) and np.all(fc.p50_kw <= fc.p90_kw)
    np.testing.assert_allclose(fc.p50_kw[1], 100 * fc.p50_kw[0])
    spread = (fc.p90_kw - fc.p50_kw) / fc.p50_kw
    assert spread[0, 0] == pytest.approx(10 * spread[1, 0])
    # H25 is dynamised over the year: a winter day uses more than a summer day, the evening peak exceeds the night.
    assert h25_day_kw(winter, 3500).sum() > 1.2 * h25_day_kw(summer, 3500).sum()
    day = h25_day_kw(winter, 3500)
    assert day[72:84].mean() > 2 * day[12:20].mean()
    # Energy over the day is about annual / 365 (within the seasonal swing).
    assert 0.7 * 3500 / 365 < day.sum() / 4 < 1.5 * 3500 / 365


def test_missing_telemetry_ignored() -> None:
    load, days = _synthetic(n_tr=1, n_days=10)
    load[:, 3, :] = np.nan
    fc = forecast_quantiles(history_kw=load, history_days=days, target_day=days[-1] + timedelta(days=1))
    assert np.all(np.isfinite(fc.p90_kw))


def test_dst_days_map_to_local_slots() -> None:
    autumn = day_intervals(date(2030, 10, 27), "Europe/Amsterdam")
    spring = day_intervals(date(2030, 3, 31), "Europe/Amsterdam")
    assert (len(autumn), len(spring)) == (100, 92)
    slots = local_slots(autumn, "Europe/Amsterdam")
    assert slots[0] == 0 and slots[-1] == 95 and list(slots[8:16]) == [8, 9, 10, 11, 8, 9, 10, 11]
    assert 8 not in local_slots(spring, "Europe/Amsterdam")
    # The repeated hour's two measurements are averaged into their slot.
    values = {s: float(i) for i, s in enumerate(autumn)}
    matrix = history_matrix(values, [date(2030, 10, 27)], "Europe/Amsterdam")
    assert matrix[0, 8] == pytest.approx((8 + 12) / 2) and matrix[0, 95] == 99
    assert history_matrix({datetime(2030, 1, 1, tzinfo=UTC): 1.0}, [date(2030, 1, 2)], "Europe/Amsterdam").shape == (
        1, 96)
