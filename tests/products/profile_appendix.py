"""The VEN of PROFILE.md's Appendix A: its Python code blocks, in order, make one program (nothing else added)."""

from __future__ import annotations

import re
from pathlib import Path

import protocol

PROFILE = Path(protocol.__file__).parent / "PROFILE.md"


def appendix_program(text: str | None = None) -> str:
    """The code blocks of Appendix A, one after the other."""
    text = PROFILE.read_text(encoding="utf-8") if text is None else text
    appendix = text[text.index("## Appendix A"):text.index("## Appendix B")]
    blocks = re.findall(r"^```python\n(.*?)^```$", appendix, flags=re.MULTILINE | re.DOTALL)
    return "\n\n".join(block.rstrip("\n") for block in blocks) + "\n"


def write_appendix_program(directory: Path) -> Path:
    path = directory / "ven.py"
    path.write_text(appendix_program(), encoding="utf-8")
    return path
