"""Short-term p10/p50/p90 forecasts of each transformer's net load at 15 minutes, day-ahead and intra-day. Pure.

Household load follows local clock time, so everything is indexed by the *local quarter-hour slot* (0..95 of the
local day, ``local_slots``): a DST day has 92 or 100 intervals whose slots repeat or skip, and the forecast for
an interval is the forecast of its slot.

Day-ahead model (``forecast_quantiles``): for each slot of the target day, the empirical 10/50/90 % quantiles of
the load in that slot over the last ``window_days`` days of history. With at least ``min_days_per_daytype`` days
of the same day type (weekday vs weekend) only those are used. NaN marks missing telemetry and is skipped.

Intra-day model (``intraday``): the day-ahead quantiles shifted by the recent bias (measured minus p50, mean of
the last ``recent_intervals`` measured intervals), the shift decaying with the horizon (half-life
``half_life_intervals``): the last hour says more about the next hour than about the evening.

Cold start (``cold_start``, before ``min_history_days`` days of telemetry exist): the BDEW H25 standard load
profile (demandlib; 2025 revision, per month and day type, dynamised over the year) for the local date, scaled to
the households' annual consumption. H25 is the mean of many households; n independent households with a
coefficient of variation ``cv`` per quarter-hour (about 1 for one household) spread around it with
cv / sqrt(n), so p90/p10 = p50 x (1 +/- 1.2816 cv / sqrt(n)). It knows no heat pump, EV or PV: the first week
under-forecasts electrified streets, which the safety margin and the learned model take over from.

Scores: ``pinball_loss`` / ``mean_pinball`` and the seasonal-naive baseline (yesterday's load) that
``tests/test_dso_forecast.py`` compares on a hold-out.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
INTERVALS_PER_DAY = 96
Z90 = 1.2815515655446004
"""Standard normal 90 % quantile."""
H25_ANNUAL_KWH = 1_000_000.0
"""demandlib returns BDEW profiles in kW for 1 GWh per year."""


@dataclass(frozen=True)
class QuantileForecast:
    """Arrays of the same shape, kW; p10 <= p50 <= p90 element-wise."""

    p10_kw: FloatArray
    p50_kw: FloatArray
    p90_kw: FloatArray

    def take(self, index: NDArray[np.intp]) -> QuantileForecast:
        """Select along the last axis (slots -> intervals)."""
        return QuantileForecast(self.p10_kw[..., index], self.p50_kw[..., index], self.p90_kw[..., index])


@contextmanager
def _all_nan_quiet() -> Iterator[None]:
    """numpy warns on all-NaN slices; an unmeasured slot is expected here and stays NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# ------------------------------------------------------------------------------------------------ time base


def day_intervals(day: date, timezone: str) -> list[datetime]:
    """UTC starts of the 15-minute intervals of a local day (92, 96 or 100 of them)."""
    zone = ZoneInfo(timezone)
    start = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(ZoneInfo("UTC"))
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(ZoneInfo("UTC"))
    count = int((end - start) / timedelta(minutes=15))
    return [start + i * timedelta(minutes=15) for i in range(count)]


def local_day(moment: datetime, timezone: str) -> date:
    return moment.astimezone(ZoneInfo(timezone)).date()


def local_slots(starts: Sequence[datetime], timezone: str) -> NDArray[np.intp]:
    """The local quarter-hour slot (0..95) of each UTC interval start."""
    zone = ZoneInfo(timezone)
    return np.array([(m.hour * 60 + m.minute) // 15 for m in (s.astimezone(zone) for s in starts)], dtype=np.intp)


def history_matrix(load_kw: Mapping[datetime, float], days: Sequence[date], timezone: str) -> FloatArray:
    """(days, 96) of load by local day and slot; NaN where nothing was measured; a repeated slot is averaged."""
    out = np.full((len(days), INTERVALS_PER_DAY), np.nan)
    if not load_kw:
        return out
    row = {d: i for i, d in enumerate(days)}
    zone = ZoneInfo(timezone)
    total = np.zeros_like(out)
    count = np.zeros_like(out)
    for start, value in load_kw.items():
        local = start.astimezone(zone)
        i = row.get(local.date())
        if i is None or not np.isfinite(value):
            continue
        slot = (local.hour * 60 + local.minute) // 15
        total[i, slot] += value
        count[i, slot] += 1
    filled = count > 0
    out[filled] = total[filled] / count[filled]
    return out


# ------------------------------------------------------------------------------------------------ cold start


@lru_cache(maxsize=64)
def _h25_day_kw(day: date) -> tuple[float, ...]:
    import pandas as pd
    from demandlib.bdew import H25

    index = pd.date_range(datetime(day.year, day.month, day.day), periods=INTERVALS_PER_DAY, freq="15min")
    return tuple(float(v) for v in np.asarray(H25(index), dtype=float))


def h25_day_kw(day: date, annual_kwh: float) -> FloatArray:
    """BDEW H25 for one local date, 96 slots, kW for ``annual_kwh`` per year."""
    return np.asarray(_h25_day_kw(day)) * annual_kwh / H25_ANNUAL_KWH


def cold_start(*, day: date, annual_kwh: FloatArray, households: FloatArray, cv: float = 1.0) -> QuantileForecast:
    """Slot forecast (series, 96) from the H25 profile for series of ``households`` households using
    ``annual_kwh`` in total per year, before any telemetry exists."""
    annual = np.asarray(annual_kwh, dtype=np.float64)
    n = np.maximum(np.asarray(households, dtype=np.float64), 1.0)
    p50 = annual[:, None] * h25_day_kw(day, 1.0)[None, :]
    spread = (Z90 * cv / np.sqrt(n))[:, None]
    return QuantileForecast(p10_kw=p50 * np.maximum(1.0 - spread, 0.0), p50_kw=p50, p90_kw=p50 * (1.0 + spread))


# ------------------------------------------------------------------------------------------- learned models


def forecast_quantiles(
    *,
    history_kw: FloatArray,
    history_days: Sequence[date],
    target_day: date,
    window_days: int = 28,
    min_days_per_daytype: int = 4,
) -> QuantileForecast:
    """``history_kw`` (series, days, 96) with one date per day, oldest first; NaN marks missing telemetry.
    A slot never measured in the window falls back to the series' quantiles over all slots' neighbours (NaN
    stays NaN only when the series has no measurement at all)."""
    hist = np.asarray(history_kw, dtype=np.float64)[:, -window_days:, :]
    days = list(history_days)[-window_days:]
    weekend = target_day.weekday() >= 5
    same = np.array([(d.weekday() >= 5) == weekend for d in days], dtype=bool)
    measured = np.isfinite(hist).any(axis=2)  # (series, days)
    if (measured[:, same].sum(axis=1) >= min_days_per_daytype).all():
        hist = hist[:, same, :]
    with _all_nan_quiet():
        q = np.nanquantile(hist, [0.1, 0.5, 0.9], axis=1)
    q = np.sort(q, axis=0)  # guards monotonicity against interpolation round-off
    return QuantileForecast(p10_kw=q[0], p50_kw=q[1], p90_kw=q[2])


def measured_days(history_kw: FloatArray, *, min_coverage: float = 0.5) -> NDArray[np.int_]:
    """Per series: days with at least ``min_coverage`` of their slots measured."""
    hist = np.asarray(history_kw, dtype=np.float64)
    return (np.isfinite(hist).mean(axis=2) >= min_coverage).sum(axis=1)


def intraday(
    day_ahead: QuantileForecast,
    *,
    recent_measured_kw: FloatArray,
    recent_p50_kw: FloatArray,
    horizon_intervals: int,
    half_life_intervals: float = 8.0,
) -> QuantileForecast:
    """Shift ``day_ahead`` (series, horizon) by the recent bias, decaying over the horizon.

    ``recent_measured_kw`` and ``recent_p50_kw`` (series, k) are the last k measured intervals and what the
    day-ahead p50 said for them (NaN = not measured, ignored)."""
    err = np.asarray(recent_measured_kw, dtype=np.float64) - np.asarray(recent_p50_kw, dtype=np.float64)
    with _all_nan_quiet():
        bias = np.nanmean(err, axis=-1) if err.size else np.zeros(day_ahead.p50_kw.shape[0])
    bias = np.nan_to_num(bias, nan=0.0)
    decay = 0.5 ** (np.arange(horizon_intervals) / half_life_intervals)
    shift = bias[:, None] * decay[None, :]
    return QuantileForecast(day_ahead.p10_kw + shift, day_ahead.p50_kw + shift, day_ahead.p90_kw + shift)


# ------------------------------------------------------------------------------------------------------ scores


def pinball_loss(actual: FloatArray, forecast: FloatArray, quantile: float) -> float:
    diff = np.asarray(actual) - np.asarray(forecast)
    return float(np.nanmean(np.maximum(quantile * diff, (quantile - 1) * diff)))


def mean_pinball(actual: FloatArray, fc: QuantileForecast) -> float:
    """Average pinball loss over the three quantiles."""
    return float(
        np.mean([pinball_loss(actual, f, q) for q, f in ((0.1, fc.p10_kw), (0.5, fc.p50_kw), (0.9, fc.p90_kw))])
    )


def seasonal_naive(history_kw: FloatArray) -> QuantileForecast:
    """Baseline: yesterday's load repeated for every quantile (a point forecast has no band)."""
    last = np.asarray(history_kw, dtype=np.float64)[:, -1, :]
    return QuantileForecast(p10_kw=last, p50_kw=last, p90_kw=last)
