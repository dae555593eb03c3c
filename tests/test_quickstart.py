"""The README's demo runs end to end (shortened) and shows its table and plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_prints_table_and_writes_plot(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--hours", "3", "--speed", "900",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "household (EAN)" in line)
    assert "peak kW" in header and "over #" in header and "cost EUR" in header and "K·h outside band" in header
    rows = [line for line in lines if line.strip().startswith("8716871200000")]
    assert len(rows) == 3, result.stdout
    assert any(line.strip().startswith("feeder (all)") for line in lines)
    picture = tmp_path / "feeder.png"
    assert picture.stat().st_size > 10_000
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "dso.sqlite").stat().st_size > 0


def test_quickstart_rejects_bad_arguments() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--speed", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--speed must be between" in result.stderr
