"""Checks for sequences of 15-minute intervals, shared by every message that carries a time series."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from protocol.timebase import INTERVAL


class _Timed(Protocol):
    @property
    def start(self) -> datetime: ...


def check_sorted_disjoint(intervals: Sequence[_Timed]) -> None:
    """Raise ValueError naming the first interval that is out of order or overlaps its predecessor."""
    for index in range(1, len(intervals)):
        previous, current = intervals[index - 1].start, intervals[index].start
        if current < previous:
            raise ValueError(
                f"intervals[{index}] starts {current.isoformat()}, before intervals[{index - 1}] "
                f"({previous.isoformat()}); intervals must be sorted by start"
            )
        if current < previous + INTERVAL:
            raise ValueError(
                f"intervals[{index}] starts {current.isoformat()} and overlaps intervals[{index - 1}] "
                f"({previous.isoformat()} + 15 min)"
            )


def check_contiguous(intervals: Sequence[_Timed]) -> None:
    """Sorted, disjoint and without gaps: every interval starts where the previous one ends."""
    check_sorted_disjoint(intervals)
    for index in range(1, len(intervals)):
        expected = intervals[index - 1].start + INTERVAL
        if intervals[index].start != expected:
            raise ValueError(
                f"intervals[{index}] starts {intervals[index].start.isoformat()}, leaving a gap after "
                f"{expected.isoformat()}; intervals must be contiguous"
            )
