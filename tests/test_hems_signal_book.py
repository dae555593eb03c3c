"""SignalBook rules, as pure tests: modification, cancellation, implied cancel, completion, expiry, malformed
events keeping the last valid limits, and how bandwidths and tariffs combine for the planner."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hems_client.control.signal_book import DefaultPrices, SignalBook
from protocol import (
    INTERVAL,
    BandwidthInterval,
    CapacityBandwidth,
    Firmness,
    HouseholdContract,
    TariffInterval,
    TouTariff,
    make_ean18,
)
from protocol.oadr20b.events import DecodedEvent, EventMeta, EventStatus

T0 = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
NOW = T0 - timedelta(hours=1)
CONTRACT = HouseholdContract(
    connection_point_id=make_ean18("87168712000000001"), contracted_max_import_kw=17.0, contracted_max_export_kw=10.0,
    failsafe_import_kw=4.2, failsafe_export_kw=4.2, failsafe_duration_s=7200,
)


def bandwidth(limit: float, *, firmness: Firmness = Firmness.FIRM, start: datetime = T0, count: int = 4,
              export: float = 5.0) -> CapacityBandwidth:
    return CapacityBandwidth(firmness=firmness, intervals=tuple(
        BandwidthInterval(start=start + i * INTERVAL, import_limit_kw=limit, export_limit_kw=export)
        for i in range(count)))


def event(event_id: str, modification: int, payload: CapacityBandwidth | TouTariff,
          status: EventStatus = EventStatus.FAR, *, test: bool = False) -> DecodedEvent:
    return DecodedEvent(meta=EventMeta(event_id, modification, status, NOW, test_event=test), payload=payload)


def test_new_event_is_added_and_bumps_version() -> None:
    book = SignalBook()
    assert book.apply(event("a", 0, bandwidth(3.0)), now=NOW)
    assert book.signals["a"].payload == bandwidth(3.0) and book.version == 1
    assert book.bandwidths() == [bandwidth(3.0)] and book.tariffs() == []


def test_higher_modification_replaces_equal_or_lower_is_ignored() -> None:
    book = SignalBook()
    book.apply(event("a", 0, bandwidth(3.0)), now=NOW)
    assert book.apply(event("a", 2, bandwidth(2.0)), now=NOW)
    assert book.signals["a"].payload == bandwidth(2.0) and book.signals["a"].modification_number == 2
    version = book.version
    assert not book.apply(event("a", 2, bandwidth(9.0)), now=NOW)  # a repeat with other content
    assert not book.apply(event("a", 1, bandwidth(1.0)), now=NOW)  # a stale copy
    assert book.signals["a"].payload == bandwidth(2.0) and book.version == version


def test_cancellation_with_higher_modification_removes() -> None:
    book = SignalBook()
    book.apply(event("a", 0, bandwidth(3.0)), now=NOW)
    assert not book.apply(event("a", 0, bandwidth(3.0), EventStatus.CANCELLED), now=NOW)  # not incremented
    assert "a" in book.signals
    assert book.apply(event("a", 1, bandwidth(3.0), EventStatus.CANCELLED), now=NOW)
    assert book.signals == {}
    # A cancelled event never comes back with its old version.
    assert not book.apply(event("a", 1, bandwidth(3.0)), now=NOW)


def test_cancel_by_id_for_undecodable_cancellation() -> None:
    book = SignalBook()
    book.apply(event("a", 3, bandwidth(3.0)), now=NOW)
    assert not book.cancel("a", 3) and not book.cancel("unknown", 9)
    assert book.cancel("a", 4) and book.signals == {}


def test_completed_events_drop_out_by_the_clock_not_by_the_status_field() -> None:
    """eventStatus is informational (openleadr's VTN rewrites it from the wall clock): the HEMS's clock decides."""
    book = SignalBook()
    book.apply(event("a", 5, bandwidth(3.0, count=2)), now=NOW)
    assert not book.apply(event("a", 5, bandwidth(3.0, count=2), EventStatus.COMPLETED), now=NOW)
    assert "a" in book.signals
    assert book.expire(T0 + 2 * INTERVAL) and book.signals == {}
    # A completed version arriving when the clock agrees is not stored either.
    assert not book.apply(event("b", 0, bandwidth(3.0, count=2), EventStatus.COMPLETED), now=T0 + 2 * INTERVAL)


def test_event_missing_from_later_distribution_is_an_implied_cancel() -> None:
    book = SignalBook()
    book.apply_distribution([event("a", 0, bandwidth(3.0)), event("b", 0, bandwidth(4.0))], present_ids={"a", "b"},
                            now=NOW)
    assert book.apply_distribution([event("b", 0, bandwidth(4.0))], present_ids={"b"}, now=NOW)
    assert set(book.signals) == {"b"}
    assert book.apply_distribution([], present_ids=set(), now=NOW)
    assert book.signals == {}


def test_malformed_version_keeps_last_valid_limits() -> None:
    """The transport passes the undecodable event's id as present but no decoded version."""
    book = SignalBook()
    book.apply_distribution([event("a", 0, bandwidth(3.0))], present_ids={"a"}, now=NOW)
    version = book.version
    assert not book.apply_distribution([], present_ids={"a"}, now=NOW)
    assert book.signals["a"].payload == bandwidth(3.0) and book.version == version
    limits = book.effective_limits(CONTRACT, start=T0, count=1)
    assert limits[0].import_limit_kw == 3.0


def test_test_events_and_already_ended_events_are_not_stored() -> None:
    book = SignalBook()
    assert not book.apply(event("t", 0, bandwidth(1.0), test=True), now=NOW)
    assert not book.apply(event("old", 0, bandwidth(1.0, start=T0 - timedelta(days=1))), now=NOW)
    assert book.signals == {}


def test_expire_drops_signals_whose_last_interval_ended() -> None:
    book = SignalBook()
    book.apply(event("a", 0, bandwidth(3.0, count=2)), now=NOW)
    assert not book.expire(T0 + INTERVAL)
    assert book.expire(T0 + 2 * INTERVAL)
    assert book.signals == {}


def test_effective_limits_combine_firm_non_firm_and_contract() -> None:
    book = SignalBook()
    book.apply(event("firm", 0, bandwidth(3.0, count=2)), now=NOW)
    book.apply(event("extra", 0, bandwidth(1.5, firmness=Firmness.NON_FIRM, count=1)), now=NOW)
    limits = book.effective_limits(CONTRACT, start=T0, count=3)
    assert [limit.import_limit_kw for limit in limits] == [4.5, 3.0, 17.0]
    assert [limit.constrained_by_dso for limit in limits] == [True, True, False]


def test_tariff_fills_gaps_with_default_prices_and_latest_overlap_wins() -> None:
    book = SignalBook()
    first = TouTariff(intervals=tuple(TariffInterval(start=T0 + i * INTERVAL, import_price_eur_per_kwh=0.4,
                                                     export_price_eur_per_kwh=0.1) for i in range(2)))
    later = TouTariff(intervals=(TariffInterval(start=T0 + INTERVAL, import_price_eur_per_kwh=0.2,
                                                export_price_eur_per_kwh=0.0),))
    book.apply(event("t1", 0, first), now=NOW)
    book.apply(event("t2", 0, later), now=NOW)
    tariff = book.tariff(start=T0 - INTERVAL, count=4, default=DefaultPrices(0.3, 0.05))
    assert [i.import_price_eur_per_kwh for i in tariff.intervals] == [0.3, 0.4, 0.2, 0.3]
    assert tariff.start == T0 - INTERVAL and len(tariff.intervals) == 4


versions = st.lists(st.tuples(st.integers(0, 6), st.sampled_from([EventStatus.FAR, EventStatus.ACTIVE,
                                                                   EventStatus.CANCELLED]),
                              st.floats(0.0, 20.0)), max_size=12)


@given(versions)
def test_book_holds_the_newest_version_unless_it_was_cancelled(sequence: list) -> None:
    """Reference model: the highest modification number seen wins (first arrival of a number counts); the
    event is active iff that version is not a cancellation."""
    book = SignalBook()
    best: tuple[int, EventStatus, float] | None = None
    for modification, status, limit in sequence:
        book.apply(event("e", modification, bandwidth(limit), status), now=NOW)
        if best is None or modification > best[0]:
            best = (modification, status, limit)
    if best is None or best[1] is EventStatus.CANCELLED:
        assert "e" not in book.signals
    else:
        assert book.signals["e"].modification_number == best[0]
        assert book.signals["e"].payload == bandwidth(best[2])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("import_price_eur_per_kwh", float("nan"), "DefaultPrices.import_price_eur_per_kwh: price must be a finite"),
    ("export_price_eur_per_kwh", float("inf"), "DefaultPrices.export_price_eur_per_kwh: price must be a finite"),
    ("import_price_eur_per_kwh", 300.0, "beyond"),
    ("export_price_eur_per_kwh", "0.05", "must be a number of EUR/kWh, not '0.05'"),
])
def test_default_prices_are_validated_when_made(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        DefaultPrices(**{field: value})  # type: ignore[arg-type]


def test_the_book_uses_its_own_default_prices_and_refuses_a_damaged_snapshot() -> None:
    book = SignalBook(default_prices=DefaultPrices(0.25, -0.01))
    (only,) = book.tariff(start=T0, count=1).intervals
    assert (only.import_price_eur_per_kwh, only.export_price_eur_per_kwh) == (0.25, -0.01)
    with pytest.raises(TypeError, match="default_prices must be DefaultPrices"):
        SignalBook(default_prices=(0.3, 0.05))  # type: ignore[arg-type]
    damaged = replace(book.snapshot(), version=-1, limits_changed_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match=r"version must be an integer >= 0, not -1; limits_changed_at must be"):
        SignalBook.from_snapshot(damaged)
