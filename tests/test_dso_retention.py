"""The retention rule (dso_server.retention): calendar months back from today, local midnight."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from dso_server.retention import months_before, retention_cutoff


def test_months_before_clips_to_shorter_months() -> None:
    assert months_before(date(2027, 3, 31), 1) == date(2027, 2, 28)
    assert months_before(date(2028, 3, 31), 1) == date(2028, 2, 29)
    assert months_before(date(2027, 1, 15), 13) == date(2025, 12, 15)
    assert months_before(date(2027, 12, 31), 12) == date(2026, 12, 31)


def test_cutoff_is_local_midnight_thirteen_months_back() -> None:
    now = datetime(2027, 2, 14, 23, 30, tzinfo=UTC)  # 00:30 on 15 February in Amsterdam
    assert retention_cutoff(now, months=13, timezone="Europe/Amsterdam") == datetime(2026, 1, 14, 23, tzinfo=UTC)
    with pytest.raises(ValueError, match="at least one month"):
        retention_cutoff(now, months=0, timezone="UTC")
