"""Plausibility bounds shared by the models (a value past these is a typo or a unit error, not data), and the
tolerance by which an interval's mean import or export is judged against its limit (PROFILE.md §5.2.2)."""

from __future__ import annotations

import math

MAX_POWER_KW = 250.0
"""No household connection carries more; a larger value is usually W sent where kW was meant."""

MAX_EVENTS_PER_VEN = 32
"""PROFILE.md §1.5: the most relevant events a VTN holds for one VEN."""
MAX_VEN_MESSAGE_BYTES = 1024 * 1024
"""PROFILE.md §1.5: the largest message a VEN sends; a VTN accepts up to this (and may refuse more with 413)."""
MAX_VTN_MESSAGE_BYTES = 16 * 1024 * 1024
"""PROFILE.md §1.5: the largest message a VTN sends (32 week-long events fit); a VEN accepts up to this."""

MAX_ABS_PRICE_EUR_PER_KWH = 10.0
"""EU day-ahead prices are capped at +4 and -0.5 EUR/kWh; beyond 10 it is EUR/MWh sent as EUR/kWh."""


def check_name(text: str, *, what: str = "the name") -> str:
    """An id or name a person writes (a transformer, a feeder, a household's group): printable, no control
    character - U+0000 among them, which PostgreSQL's text cannot store, so one store would refuse what the other
    keeps."""
    bad = next((char for char in text if ord(char) < 0x20 or ord(char) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"{what} holds the control character U+{ord(bad):04X}; ids and names are printable text")
    return text


def check_power_kw(value: float, *, allow_negative: bool = False, what: str = "power") -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of kW, not {value!r}")
    if value < 0 and not allow_negative:
        raise ValueError(
            f"{what} {value} kW is negative; limits and meter registers are magnitudes >= 0 "
            "(import and export travel in separate fields, see PROFILE.md 'Sign conventions')"
        )
    if abs(value) > MAX_POWER_KW:
        raise ValueError(f"{what} {value} kW exceeds the plausible {MAX_POWER_KW} kW (W sent as kW?)")
    return value


def check_price_eur_per_kwh(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"price must be a finite number of EUR/kWh, not {value!r}")
    if abs(value) > MAX_ABS_PRICE_EUR_PER_KWH:
        raise ValueError(
            f"price {value} EUR/kWh is beyond +-{MAX_ABS_PRICE_EUR_PER_KWH} EUR/kWh (EUR/MWh sent as EUR/kWh?)"
        )
    return value


LIMIT_TOLERANCE_KW = 0.1
LIMIT_TOLERANCE_FRACTION = 0.02
"""PROFILE.md §5.2.2: an interval's mean import (export) complies when it is at most the limit plus 0.1 kW or 2 %
of the limit, whichever is larger (meter accuracy class A/B and sub-minute control, see the rationale there)."""


def limit_tolerance_kw(limit_kw: float) -> float:
    """The tolerance on ``limit_kw`` (PROFILE.md §5.2.2)."""
    return max(LIMIT_TOLERANCE_KW, LIMIT_TOLERANCE_FRACTION * limit_kw)


def exceeds_limit(mean_kw: float, limit_kw: float) -> bool:
    """True when an interval's mean import (export) ``mean_kw`` breaks ``limit_kw`` (PROFILE.md §5.2.1, §5.2.2)."""
    return mean_kw > limit_kw + limit_tolerance_kw(limit_kw)
