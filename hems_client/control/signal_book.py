"""The HEMS's book of active DSO signals (capacity bandwidths and ToU tariffs), keyed by event id.

Pure: decoded events and the time come in, the active signals go out. The rules (PROFILE.md, 'Modification
and cancellation'; OpenADR 2.0b event lifecycle):

| incoming event                                   | book                                             |
| ------------------------------------------------ | ------------------------------------------------ |
| unknown id, not cancelled/completed/expired/test | added                                            |
| known id, higher modificationNumber              | replaces the stored version                      |
| known id, higher modificationNumber, cancelled   | removed                                          |
| known id, equal or lower modificationNumber      | ignored (a repeat or a stale copy)               |
| known id absent from a later distribution        | removed (implied cancel)                         |
| event whose last interval has ended by the clock | not stored; removed by ``expire(now)``           |
| test event (testEvent not false)                 | not stored: 2.0b test events are not acted upon  |

Completed events drop out by the HEMS's clock, not by the eventStatus field: 2.0b leaves eventStatus out of
the modificationNumber rule (it is informational), and openleadr's VTN rewrites it from the wall clock on every
oadrRequestEvent, which disagrees with an injected simulation clock. An event cannot be ended early by its
status; the DSO modifies or cancels it.

An event that fails to decode is not given to the book at all; the transport passes its id in ``present_ids``
so that it is not taken for an implied cancel and the last valid version stays in force.

For the failsafe (``hems_client.control.failsafe``) the book remembers when the DSO last changed a capacity bandwidth
(``limits_changed_at``: added, modified, cancelled or implicitly cancelled; expiry by the clock does not count):
"fresh limits" are a change after contact with the VTN was lost. ``snapshot()`` / ``from_snapshot()`` carry
everything the book knows to the local store (``hems_client.store``) and back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from protocol.contract import HouseholdContract
from protocol.effective import EffectiveLimit, effective_limits
from protocol.limits import check_price_eur_per_kwh
from protocol.oadr20b.events import DecodedEvent, EventStatus
from protocol.signals import CapacityBandwidth, TariffInterval, TouTariff
from protocol.timebase import INTERVAL, floor_to_interval


@dataclass(frozen=True)
class ActiveSignal:
    event_id: str
    modification_number: int
    payload: CapacityBandwidth | TouTariff
    sequence: int = 0
    """Book version at which this version was stored: orders overlapping tariffs (the latest wins)."""


@dataclass(frozen=True)
class BookSnapshot:
    """Everything a :class:`SignalBook` knows, for the local store: the active signals, the highest
    modificationNumber seen per event id (so a stale copy stays ignored after a restart), and the counters."""

    signals: tuple[ActiveSignal, ...]
    known_modifications: dict[str, int]
    version: int
    limits_changed_at: datetime | None

    def validate(self) -> list[str]:
        """Every rule this snapshot breaks (empty when valid): what a damaged store could hold."""
        errors = []
        for signal in self.signals:
            if not isinstance(signal.payload, CapacityBandwidth | TouTariff):
                errors.append(f"signal {signal.event_id!r}: payload is {type(signal.payload).__name__}, not a "
                              "capacity bandwidth or tariff")
            if not isinstance(signal.modification_number, int) or signal.modification_number < 0:
                errors.append(f"signal {signal.event_id!r}: modification_number must be an integer >= 0, not "
                              f"{signal.modification_number!r}")
        for event_id, number in self.known_modifications.items():
            if not isinstance(number, int) or number < 0:
                errors.append(f"known modification of {event_id!r} must be an integer >= 0, not {number!r}")
        if not isinstance(self.version, int) or self.version < 0:
            errors.append(f"version must be an integer >= 0, not {self.version!r}")
        if self.limits_changed_at is not None and self.limits_changed_at.tzinfo is None:
            errors.append(f"limits_changed_at must be timezone-aware, not {self.limits_changed_at!r}")
        return errors


@dataclass(frozen=True)
class DefaultPrices:
    """Prices the HEMS assumes where no ToU tariff is in force."""

    import_price_eur_per_kwh: float = 0.30
    export_price_eur_per_kwh: float = 0.05

    def __post_init__(self) -> None:
        # Checked here, not when a tariff is built from them inside the control loop (a NaN used to stop it).
        for name in ("import_price_eur_per_kwh", "export_price_eur_per_kwh"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"DefaultPrices.{name} must be a number of EUR/kWh, not {value!r}")
            try:
                check_price_eur_per_kwh(float(value))
            except ValueError as error:
                raise ValueError(f"DefaultPrices.{name}: {error}") from None


DEFAULT_PRICES = DefaultPrices()


class SignalBook:
    def __init__(self, *, default_prices: DefaultPrices = DEFAULT_PRICES) -> None:
        """``default_prices``: the prices :meth:`tariff` assumes where no ToU tariff is in force."""
        if not isinstance(default_prices, DefaultPrices):
            raise TypeError(f"default_prices must be DefaultPrices, not {type(default_prices).__name__}")
        self.default_prices = default_prices
        self._signals: dict[str, ActiveSignal] = {}
        self._known_modification: dict[str, int] = {}
        self.version = 0
        """Incremented on every change of the active signals."""
        self.revision = 0
        """Incremented on every change of anything ``snapshot()`` holds (the store saves when it moves)."""
        self.limits_changed_at: datetime | None = None
        """Clock time of the last capacity-bandwidth change the DSO made (not expiry)."""

    @classmethod
    def from_snapshot(cls, snapshot: BookSnapshot, *, default_prices: DefaultPrices = DEFAULT_PRICES) -> SignalBook:
        errors = snapshot.validate()
        if errors:
            raise ValueError("signal book snapshot: " + "; ".join(errors))
        book = cls(default_prices=default_prices)
        book._signals = {signal.event_id: signal for signal in snapshot.signals}
        book._known_modification = dict(snapshot.known_modifications)
        for signal in snapshot.signals:  # a snapshot from an older writer may lack the stored versions
            known = book._known_modification.get(signal.event_id, -1)
            book._known_modification[signal.event_id] = max(known, signal.modification_number)
        book.version = snapshot.version
        book.limits_changed_at = snapshot.limits_changed_at
        return book

    def snapshot(self) -> BookSnapshot:
        return BookSnapshot(signals=tuple(sorted(self._signals.values(), key=lambda s: s.sequence)),
                            known_modifications=dict(self._known_modification), version=self.version,
                            limits_changed_at=self.limits_changed_at)

    # ------------------------------------------------------------------------------------------ updates

    def apply(self, event: DecodedEvent, *, now: datetime) -> bool:
        """Apply one decoded event by the rules above; True when the active signals changed."""
        meta = event.meta
        known = self._known_modification.get(meta.event_id)
        if known is not None and meta.modification_number <= known:
            return False
        self._known_modification[meta.event_id] = meta.modification_number
        self.revision += 1
        if meta.status is EventStatus.CANCELLED or meta.test_event or event.payload.end <= now:
            return self._remove(meta.event_id, now=now)
        self.version += 1
        previous = self._signals.get(meta.event_id)
        self._signals[meta.event_id] = ActiveSignal(meta.event_id, meta.modification_number, event.payload,
                                                    self.version)
        if isinstance(event.payload, CapacityBandwidth) or (
                previous is not None and isinstance(previous.payload, CapacityBandwidth)):
            self.limits_changed_at = now
        return True

    def cancel(self, event_id: str, modification_number: int, *, now: datetime | None = None) -> bool:
        """Honour a cancellation of ``event_id`` that could not be decoded in full (only its id and version).
        ``now`` (clock time) dates the change for the failsafe's "fresh limits"."""
        known = self._known_modification.get(event_id)
        if known is None or modification_number <= known:
            return False
        self._known_modification[event_id] = modification_number
        self.revision += 1
        return self._remove(event_id, now=now)

    def apply_distribution(
        self, events: Iterable[DecodedEvent], *, present_ids: Collection[str], now: datetime
    ) -> bool:
        """Apply a whole oadrDistributeEvent: each decoded event, then the implied cancel of every active event
        whose id is not in ``present_ids`` (the ids of all events in the message, decodable or not)."""
        changed = False
        for event in events:
            changed |= self.apply(event, now=now)
        for event_id in [i for i in self._signals if i not in present_ids]:
            changed |= self._remove(event_id, now=now)
        return changed

    def expire(self, now: datetime) -> bool:
        """Drop signals whose last interval has ended by ``now``."""
        changed = False
        for event_id in [i for i, s in self._signals.items() if s.payload.end <= now]:
            changed |= self._remove(event_id)
        return changed

    def _remove(self, event_id: str, *, now: datetime | None = None) -> bool:
        """Drop ``event_id``; ``now`` is given when the DSO removed it (a cancel), None when the clock did."""
        removed = self._signals.pop(event_id, None)
        if removed is None:
            return False
        self.version += 1
        self.revision += 1
        if now is not None and isinstance(removed.payload, CapacityBandwidth):
            self.limits_changed_at = now
        return True

    # ------------------------------------------------------------------------------------------ queries

    @property
    def signals(self) -> dict[str, ActiveSignal]:
        return dict(self._signals)

    def bandwidths(self) -> list[CapacityBandwidth]:
        return [s.payload for s in self._signals.values() if isinstance(s.payload, CapacityBandwidth)]

    def tariffs(self) -> list[TouTariff]:
        return [s.payload for s in self._signals.values() if isinstance(s.payload, TouTariff)]

    def effective_limits(self, contract: HouseholdContract, *, start: datetime, count: int) -> list[EffectiveLimit]:
        return effective_limits(contract, self.bandwidths(), start=start, count=count)

    def tariff(self, *, start: datetime, count: int, default: DefaultPrices | None = None) -> TouTariff:
        """Prices for ``count`` intervals from the one holding ``start``: from the tariff event in force (the one
        stored last wins where two overlap), ``default`` (else the book's default prices) where none is."""
        if default is None:
            default = self.default_prices
        first = floor_to_interval(start)
        prices: dict[datetime, TariffInterval] = {}
        for signal in sorted(self._signals.values(), key=lambda s: s.sequence):
            if isinstance(signal.payload, TouTariff):
                for interval in signal.payload.intervals:
                    prices[interval.start] = interval
        intervals = []
        for index in range(count):
            moment = first + index * INTERVAL
            known = prices.get(moment)
            intervals.append(known if known is not None else TariffInterval(
                start=moment, import_price_eur_per_kwh=default.import_price_eur_per_kwh,
                export_price_eur_per_kwh=default.export_price_eur_per_kwh))
        return TouTariff(intervals=tuple(intervals))
