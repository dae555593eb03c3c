"""Replay protection for signed 2.0b messages (the ReplayProtect timestamp and nonce of the XML signature).

A signed message is accepted when its timestamp lies within ``max_age_s`` before and ``max_skew_s`` after the
receiver's clock and its (signer, nonce) pair was not seen while that timestamp is in the window. openleadr's own
check accepts any future timestamp (so a message signed with a clock set ahead could be replayed for as long as
that lead lasts) and keeps one nonce set for the whole process; this guard is one object per receiver, bounded
in memory, and pure: the caller passes ``now``.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta

DEFAULT_MAX_AGE_S = 30.0
"""How old a signature may be. openleadr allows 5 s; 30 s tolerates NTP-synchronised clocks and slow links."""
DEFAULT_MAX_SKEW_S = 5.0
"""How far a signature may lie in the receiver's future (the sender's clock running ahead)."""
DEFAULT_MAX_NONCES = 1_000_000


class Replayed(ValueError):
    """The message is refused; ``reason`` names the timestamp or nonce rule it broke."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ReplayGuard:
    def __init__(self, *, max_age_s: float = DEFAULT_MAX_AGE_S, max_skew_s: float = DEFAULT_MAX_SKEW_S,
                 max_nonces: int = DEFAULT_MAX_NONCES) -> None:
        if max_age_s <= 0 or max_skew_s < 0 or max_nonces < 1:
            raise ValueError(f"max_age_s {max_age_s} must be > 0, max_skew_s {max_skew_s} >= 0, max_nonces "
                             f"{max_nonces} >= 1")
        self.max_age = timedelta(seconds=max_age_s)
        self.max_skew = timedelta(seconds=max_skew_s)
        self.max_nonces = max_nonces
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[datetime, str, str]] = []  # heap of (timestamp, signer, nonce)

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, *, signer: str, timestamp: datetime, nonce: str, now: datetime) -> None:
        """Accept and remember the pair, or raise ``Replayed``. Nothing is remembered for a refused message."""
        if timestamp.tzinfo is None:
            raise Replayed(f"ReplayProtect timestamp {timestamp.isoformat()} has no UTC offset")
        self._forget_before(now - self.max_age)
        if timestamp < now - self.max_age:
            raise Replayed(f"signed at {timestamp.isoformat()}, more than {self.max_age.total_seconds():g} s before "
                           f"{now.isoformat()}")
        if timestamp > now + self.max_skew:
            raise Replayed(f"signed at {timestamp.isoformat()}, more than {self.max_skew.total_seconds():g} s after "
                           f"{now.isoformat()} (the signer's clock runs ahead)")
        if (signer, nonce) in self._seen:
            raise Replayed(f"nonce {nonce[:64]!r} was already used by this signer (a replayed message)")
        if len(self._seen) >= self.max_nonces:
            raise Replayed(f"more than {self.max_nonces} signed messages within {self.max_age.total_seconds():g} s; "
                           "refused until older ones expire")
        self._seen.add((signer, nonce))
        heapq.heappush(self._expiry, (timestamp, signer, nonce))

    def _forget_before(self, oldest: datetime) -> None:
        while self._expiry and self._expiry[0][0] < oldest:
            _, signer, nonce = heapq.heappop(self._expiry)
            self._seen.discard((signer, nonce))
