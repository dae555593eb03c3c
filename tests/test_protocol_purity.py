"""``protocol`` is sans-I/O: importing any of its modules pulls in no network, database, event loop or OpenADR
library. ``protocol/clock.py`` is the one documented exception: it touches asyncio (and nothing else here).

Each module is imported in a fresh interpreter, so one module cannot hide another's imports. pydantic itself
imports ``socket`` on Python 3.11 (its plugin loader reads ``importlib.metadata``, which imports ``email.utils``),
so the check compares against a baseline interpreter that has imported pydantic and built a model; what protocol
adds on top of that must contain none of the forbidden modules. A static scan of the sources backs this up for
modules already in the baseline.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import protocol

FORBIDDEN = ("aiohttp", "asyncio", "sqlite3", "openleadr", "socket")
ROOT = Path(protocol.__file__).parent
CLOCK = "protocol.clock"

MODULES = sorted(
    {"protocol"} | {info.name for info in pkgutil.walk_packages([str(ROOT)], prefix="protocol.")}
)

_PROBE = """
import importlib, json, sys
import pydantic

class _Baseline(pydantic.BaseModel):  # building a model loads pydantic's plugin machinery
    x: int

forbidden = {forbidden!r}
before = {{name for name in forbidden if name in sys.modules}}
importlib.import_module({module!r})
after = {{name for name in forbidden if name in sys.modules}}
print(json.dumps({{"baseline": sorted(before), "added": sorted(after - before)}}))
"""


def _probe(module: str) -> dict[str, list[str]]:
    result = subprocess.run([sys.executable, "-c", _PROBE.format(forbidden=FORBIDDEN, module=module)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_module_is_found() -> None:
    assert {"protocol.signals", "protocol.contract", "protocol.effective", "protocol.oadr20b.events",
            "protocol.oadr20b.reports", CLOCK} <= set(MODULES)


@pytest.mark.parametrize("module", [m for m in MODULES if m != CLOCK])
def test_import_pulls_in_no_io(module: str) -> None:
    probe = _probe(module)
    assert probe["added"] == [], f"importing {module} imports {probe['added']}"
    # Whatever the baseline already holds comes from pydantic, never from a protocol source (see the scan below).
    assert set(probe["baseline"]) <= {"socket"}


def test_clock_touches_asyncio_only() -> None:
    probe = _probe(CLOCK)
    assert probe["added"] == ["asyncio"]


def _imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_no_source_imports_a_forbidden_module(path: Path) -> None:
    allowed = {"asyncio"} if path == ROOT / "clock.py" else set()
    assert (_imported_names(path) & set(FORBIDDEN)) <= allowed
