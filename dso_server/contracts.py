"""The DSO's households from a contract file (PROFILE.md §11, ``protocol.contract_file``), with errors that name
the file, the household and the field. One ``[[household]]`` table per connection point, holding the
``HouseholdContract`` fields, an optional ``group`` (the feeder or transformer it hangs under) and the comfort
terms as a ``[household.comfort]`` sub-table.
"""

from __future__ import annotations

from pathlib import Path

from dso_server.records import Household
from protocol.contract_file import read_contract_file


class ContractsFileError(ValueError):
    """One problem in a contracts file. ``index`` is the 0-based household table, ``field`` a dotted path."""

    def __init__(self, path: Path, reason: str, *, index: int | None = None, field: str | None = None) -> None:
        self.path = path
        self.index = index
        self.field = field
        self.reason = reason
        where = str(path)
        if index is not None:
            where += f": household[{index}]"
        if field:
            where += f".{field}"
        super().__init__(f"{where}: {reason}")


def parse_contracts(text: str, *, path: Path) -> list[Household]:
    """The households of a contracts file's ``text``; ``path`` only names the file in errors. Raises
    ContractsFileError for the first problem (saying how many more the same household has)."""
    entries, problems = read_contract_file(text)
    if problems:
        first = problems[0]
        more = sum(1 for p in problems[1:] if p.index is not None and p.index == first.index)
        reason = first.reason + (f" (and {more} more problem{'s' if more > 1 else ''} in this household)"
                                 if more else "")
        raise ContractsFileError(path, reason, index=first.index, field=first.field)
    return [Household(contract=entry.contract, group=entry.group) for entry in entries]


def load_contracts(path: Path) -> list[Household]:
    """Read and validate a contracts file; raise ContractsFileError naming the file, household and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ContractsFileError(path, f"cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ContractsFileError(path, "is not UTF-8 text") from None
    return parse_contracts(text, path=path)
