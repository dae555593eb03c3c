"""The injected clock: the one place that reads time, so a simulated day runs in seconds.

It lives in ``protocol`` because the DSO, the HEMS and the conformance suite must share one time base
and ``protocol`` is the only package all of them may import. It is the single module of ``protocol``
that touches asyncio; the codecs and models never read the time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class WallClock:
    """Real time, for deployments."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class AcceleratedClock:
    """Simulated time that runs ``speed`` times faster than the wall, from ``start``.

    Waiting is real (scaled) waiting, so servers and clients on real sockets keep pace with it.
    """

    def __init__(self, start: datetime, speed: float) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, not {speed}")
        self.start = start.astimezone(UTC)
        self.speed = speed
        self._origin = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._origin) * self.speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class ManualClock:
    """Time that moves only when told to: for deterministic unit tests of loops.

    ``sleep`` advances the clock by the requested amount at once and yields to the event loop.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


async def sleep_until(clock: Clock, moment: datetime) -> None:
    """Wait until ``clock`` reaches ``moment`` (no-op when it already has)."""
    remaining = (moment - clock.now()).total_seconds()
    if remaining > 0:
        await clock.sleep(remaining)


def speed_of(clock: Clock) -> float:
    """Clock seconds per wall-clock second: an AcceleratedClock's ``speed``, else 1 (the wall clock, and a
    ManualClock, which moves only when told). Converts wall-clock periods such as a VEN's poll interval into the
    clock's time."""
    return float(getattr(clock, "speed", 1.0))
