"""A logical dump of a SQLite store, for "the store is unchanged" checks.

"Unchanged" here means: every table holds the same rows with the same values (``sqlite3``'s ``iterdump``, read
through a separate read-only connection while the server keeps running). That is the store's observable state;
the file's bytes also depend on WAL checkpoints and free pages, which say nothing about what was stored.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def logical_dump(db_path: str | Path) -> list[str]:
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()
