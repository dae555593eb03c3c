"""A logical dump of a SQLite store, for "the store is unchanged" checks.

"Unchanged" here means: every table holds the same rows with the same values (``sqlite3``'s ``iterdump``, read
through a separate read-only connection while the server keeps running). That is the store's observable state;
the file's bytes also depend on WAL checkpoints and free pages, which say nothing about what was stored.

One column is left out: each VEN's ``last_seen_at``. The VTN writes liveness in batches
(``dso_server.transport.ven_cache.Liveness``, issue 10: no write per poll), seconds after the request that earned it,
so the liveness of an earlier accepted request can land while a later, refused one is being answered.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def logical_dump(db_path: str | Path) -> list[str]:
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    copy = sqlite3.connect(":memory:")
    try:
        source.backup(copy)
        if copy.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'vens'").fetchone():
            copy.execute("UPDATE vens SET last_seen_at = NULL")
        return list(copy.iterdump())
    finally:
        source.close()
        copy.close()
