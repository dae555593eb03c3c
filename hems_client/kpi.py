"""Per-household, per-day key figures: grid limit, comfort, EV readiness and cost. Pure accumulation.

Days are local calendar days in the contract's time zone. An interval counts as over the limit when its mean
import exceeds the import limit in force (the effective limit, or the failsafe limit; the one in force at the
end of the interval when it changed) by more than ``tolerance_kw``. Every interval counted over carries the
reason the controller attributed to it (``hems_client.control.over_limit``), ``unattributed`` if a caller
gave none.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date, datetime
from zoneinfo import ZoneInfo

from hems_client.control.over_limit import OverLimitReason
from protocol.timebase import INTERVAL_S

_DT_H = INTERVAL_S / 3600


@dataclass(frozen=True)
class OverLimitInterval:
    """One interval over its limit and why."""

    start: datetime
    import_kw: float
    import_limit_kw: float
    reason: OverLimitReason
    detail: str


@dataclass
class DailyKpi:
    day: date
    intervals: int = 0
    peak_import_kw: float = 0.0
    limit_at_peak_kw: float | None = None
    """Effective import limit in the interval of the peak."""
    min_import_limit_kw: float | None = None
    intervals_over_limit: int = 0
    energy_over_limit_kwh: float = 0.0
    import_kwh: float = 0.0
    export_kwh: float = 0.0
    cost_eur: float = 0.0
    """Import cost minus export revenue under the tariff in force (ToU, or the HEMS's default prices)."""
    degree_hours_outside_band: float = 0.0
    ev_range_at_departure_km: float | None = None
    ev_required_range_km: float | None = None
    failsafe_h: float = 0.0
    """Hours under the contract's failsafe limits (no contact with the VTN, see ``hems_client.control.failsafe``)."""
    over_limit: list[OverLimitInterval] = field(default_factory=list)
    """Every interval counted in ``intervals_over_limit``, with its reason."""

    @property
    def over_limit_reasons(self) -> dict[str, int]:
        """How many intervals over the limit each reason explains."""
        counts: dict[str, int] = {}
        for interval in self.over_limit:
            counts[interval.reason.value] = counts.get(interval.reason.value, 0) + 1
        return counts

    @property
    def ev_ready(self) -> bool | None:
        if self.ev_range_at_departure_km is None or self.ev_required_range_km is None:
            return None
        return self.ev_range_at_departure_km >= self.ev_required_range_km - 0.5

    def as_row(self) -> dict[str, object]:
        row: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "over_limit"}
        row["ev_ready"] = self.ev_ready
        row["over_limit_reasons"] = self.over_limit_reasons
        return row


class KpiTracker:
    def __init__(self, *, timezone: str = "Europe/Amsterdam", tolerance_kw: float = 0.01) -> None:
        self._zone = ZoneInfo(timezone)
        self.tolerance_kw = tolerance_kw
        self._days: dict[date, DailyKpi] = {}

    def _day(self, moment: datetime) -> DailyKpi:
        day = moment.astimezone(self._zone).date()
        if day not in self._days:
            self._days[day] = DailyKpi(day=day)
        return self._days[day]

    def record_interval(
        self,
        *,
        start: datetime,
        import_kw: float,
        export_kw: float,
        import_limit_kw: float,
        import_price_eur_per_kwh: float,
        export_price_eur_per_kwh: float,
        over_reason: OverLimitReason | None = None,
        over_detail: str = "",
    ) -> None:
        """One 15-minute interval's measured mean import and export, with the limit and prices in force, and why
        it went over the limit where it did."""
        kpi = self._day(start)
        kpi.intervals += 1
        if kpi.limit_at_peak_kw is None or import_kw > kpi.peak_import_kw:
            kpi.peak_import_kw, kpi.limit_at_peak_kw = import_kw, import_limit_kw
        if kpi.min_import_limit_kw is None or import_limit_kw < kpi.min_import_limit_kw:
            kpi.min_import_limit_kw = import_limit_kw
        if import_kw > import_limit_kw + self.tolerance_kw:
            kpi.intervals_over_limit += 1
            kpi.energy_over_limit_kwh += (import_kw - import_limit_kw) * _DT_H
            kpi.over_limit.append(OverLimitInterval(
                start=start, import_kw=import_kw, import_limit_kw=import_limit_kw,
                reason=over_reason if over_reason is not None else OverLimitReason.UNATTRIBUTED,
                detail=over_detail or "no reason given"))
        kpi.import_kwh += import_kw * _DT_H
        kpi.export_kwh += export_kw * _DT_H
        kpi.cost_eur += (import_kw * import_price_eur_per_kwh - export_kw * export_price_eur_per_kwh) * _DT_H

    def record_comfort(self, *, at: datetime, dt_s: float, indoor_temp_c: float, comfort_min_c: float,
                       comfort_max_c: float) -> None:
        """Indoor temperature held for ``dt_s`` seconds from ``at``."""
        outside = max(comfort_min_c - indoor_temp_c, indoor_temp_c - comfort_max_c, 0.0)
        self._day(at).degree_hours_outside_band += outside * dt_s / 3600

    def record_failsafe(self, *, at: datetime, dt_s: float) -> None:
        """``dt_s`` seconds from ``at`` spent under the failsafe limits."""
        self._day(at).failsafe_h += dt_s / 3600

    def record_departure(self, *, at: datetime, range_km: float, required_range_km: float) -> None:
        kpi = self._day(at)
        kpi.ev_range_at_departure_km = range_km
        kpi.ev_required_range_km = required_range_km

    def days(self) -> list[DailyKpi]:
        return [self._days[day] for day in sorted(self._days)]


_COLUMNS = (
    ("day", "day", "{}"),
    ("peak kW", "peak_import_kw", "{:.2f}"),
    ("limit@peak", "limit_at_peak_kw", "{:.2f}"),
    ("min limit", "min_import_limit_kw", "{:.2f}"),
    ("over #", "intervals_over_limit", "{}"),
    ("over kWh", "energy_over_limit_kwh", "{:.2f}"),
    ("K·h out", "degree_hours_outside_band", "{:.2f}"),
    ("EV km", "ev_range_at_departure_km", "{:.0f}"),
    ("need km", "ev_required_range_km", "{:.0f}"),
    ("cost EUR", "cost_eur", "{:.2f}"),
    ("failsafe h", "failsafe_h", "{:.2f}"),
    ("over: why", "over_limit_reasons", "{}"),
)


def format_kpi_table(rows: list[tuple[str, DailyKpi]]) -> str:
    """A plain-text table of (label, daily KPIs) rows, for the CLI and the demo."""
    header = ["household", *(title for title, _, _ in _COLUMNS)]
    lines = [header]
    for label, kpi in rows:
        cells = [label]
        for _, attribute, pattern in _COLUMNS:
            value = getattr(kpi, attribute)
            if isinstance(value, dict):
                value = ", ".join(f"{reason} {count}" for reason, count in sorted(value.items())) or None
            cells.append("-" if value is None else pattern.format(value))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
                     for line in lines)
