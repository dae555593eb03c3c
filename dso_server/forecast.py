"""Day-ahead p10/p50/p90 load forecast per transformer at 15 minutes.

Model (simple, honest): for each quarter-hour of the next day, the empirical 10/50/90 % quantiles of the load at
the same quarter-hour over the last ``window_days`` days of history. With at least ``min_days_per_daytype`` days of
the same day type (weekday vs weekend), only those days are used, because household load differs by day type.
Cold start (no history): a fixed residential shape scaled so that the day's energy equals annual kWh / 365,
with a +/-40 % band for p90/p10 -- wide on purpose, since nothing has been measured yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
INTERVALS_PER_DAY = 96


@dataclass(frozen=True)
class QuantileForecast:
    """Arrays of shape (series, 96), kW; p10 <= p50 <= p90 element-wise."""

    p10_kw: FloatArray
    p50_kw: FloatArray
    p90_kw: FloatArray


def standard_shape() -> FloatArray:
    """Normalised residential day shape (mean 1): night trough, morning bump, evening peak around 18:30."""
    h = (np.arange(INTERVALS_PER_DAY) + 0.5) / 4.0
    shape = 0.45 + 0.35 * np.exp(-(((h - 7.5) / 1.5) ** 2)) + 0.25 * np.exp(-(((h - 13) / 2.5) ** 2))
    shape += 0.9 * np.exp(-(((h - 18.5) / 2.0) ** 2))
    return shape / shape.mean()


def cold_start(annual_kwh: FloatArray) -> QuantileForecast:
    """Forecast from annual consumption per series before any telemetry exists."""
    mean_kw = np.asarray(annual_kwh, dtype=np.float64)[:, None] / (365 * 24)
    p50 = mean_kw * standard_shape()[None, :]
    return QuantileForecast(p10_kw=0.6 * p50, p50_kw=p50, p90_kw=1.4 * p50)


def forecast_quantiles(
    *,
    history_kw: FloatArray,
    history_days: list[date],
    target_day: date,
    window_days: int = 28,
    min_days_per_daytype: int = 4,
) -> QuantileForecast:
    """``history_kw`` (series, days, 96) with one date per day, oldest first; NaN marks missing telemetry."""
    hist = np.asarray(history_kw, dtype=np.float64)[:, -window_days:, :]
    days = history_days[-window_days:]
    weekend = target_day.weekday() >= 5
    same = np.array([(d.weekday() >= 5) == weekend for d in days])
    if same.sum() >= min_days_per_daytype:
        hist = hist[:, same, :]
    q = np.nanquantile(hist, [0.1, 0.5, 0.9], axis=1)
    q = np.sort(q, axis=0)  # guards monotonicity against interpolation round-off
    return QuantileForecast(p10_kw=q[0], p50_kw=q[1], p90_kw=q[2])


def pinball_loss(actual: FloatArray, forecast: FloatArray, quantile: float) -> float:
    diff = np.asarray(actual) - np.asarray(forecast)
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1) * diff)))


def mean_pinball(actual: FloatArray, fc: QuantileForecast) -> float:
    """Average pinball loss over the three quantiles."""
    return float(
        np.mean([pinball_loss(actual, f, q) for q, f in ((0.1, fc.p10_kw), (0.5, fc.p50_kw), (0.9, fc.p90_kw))])
    )


def seasonal_naive(history_kw: FloatArray) -> QuantileForecast:
    """Baseline: yesterday's load repeated for every quantile (a point forecast has no band)."""
    last = np.asarray(history_kw, dtype=np.float64)[:, -1, :]
    return QuantileForecast(p10_kw=last, p50_kw=last, p90_kw=last)
