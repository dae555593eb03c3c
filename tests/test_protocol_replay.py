"""``protocol.oadr20b.replay.ReplayGuard``: timestamp window and nonces of signed 2.0b messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from protocol.oadr20b.replay import Replayed, ReplayGuard

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
S = timedelta(seconds=1)


def test_a_fresh_message_passes_once() -> None:
    guard = ReplayGuard(max_age_s=30, max_skew_s=5)
    guard.check(signer="a", timestamp=NOW - 29 * S, nonce="n1", now=NOW)
    with pytest.raises(Replayed, match="already used"):
        guard.check(signer="a", timestamp=NOW - 29 * S, nonce="n1", now=NOW + S)
    guard.check(signer="b", timestamp=NOW, nonce="n1", now=NOW)  # another signer's nonce space


def test_old_and_future_timestamps_are_refused() -> None:
    guard = ReplayGuard(max_age_s=30, max_skew_s=5)
    with pytest.raises(Replayed, match="more than 30 s before"):
        guard.check(signer="a", timestamp=NOW - 31 * S, nonce="n", now=NOW)
    with pytest.raises(Replayed, match="signer's clock runs ahead"):
        guard.check(signer="a", timestamp=NOW + 6 * S, nonce="n", now=NOW)
    guard.check(signer="a", timestamp=NOW + 5 * S, nonce="n", now=NOW)
    with pytest.raises(Replayed, match="no UTC offset"):
        guard.check(signer="a", timestamp=datetime(2030, 1, 1), nonce="m", now=NOW)
    assert len(guard) == 1  # refused messages leave nothing behind


def test_nonces_are_forgotten_once_their_message_is_too_old_to_replay() -> None:
    guard = ReplayGuard(max_age_s=30, max_skew_s=5)
    for i in range(100):
        guard.check(signer="a", timestamp=NOW + i * S, nonce=f"n{i}", now=NOW + i * S)
    assert len(guard) == 31  # the last 30 s
    guard.check(signer="a", timestamp=NOW + 200 * S, nonce="n0", now=NOW + 200 * S)  # n0 long expired
    assert len(guard) == 1


def test_memory_is_bounded() -> None:
    guard = ReplayGuard(max_age_s=30, max_skew_s=5, max_nonces=3)
    for nonce in ("a", "b", "c"):
        guard.check(signer="s", timestamp=NOW, nonce=nonce, now=NOW)
    with pytest.raises(Replayed, match="more than 3 signed messages"):
        guard.check(signer="s", timestamp=NOW, nonce="d", now=NOW)
    guard.check(signer="s", timestamp=NOW + 31 * S, nonce="d", now=NOW + 31 * S)
