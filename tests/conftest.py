"""Fixtures shared by several test modules: a real PostgreSQL server for the store's second backend.

``postgres_server`` starts one private PostgreSQL cluster per test session (``dso_server.store.pgtemp``: a Unix
socket in a temporary directory, no TCP port) and stops it at the end; ``postgres_url`` is a fresh, empty
database on it for one test; ``db_location`` parametrises a test over both store backends (a SQLite file and a
PostgreSQL database). Without PostgreSQL binaries the PostgreSQL cases are skipped, unless
``DSO_REQUIRE_POSTGRES=1`` (set by ``.ci/run``, which installs Debian's postgresql) turns the skip into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dso_server.store.pgtemp import PostgresNotFound, TemporaryPostgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryPostgres]:
    try:
        server = TemporaryPostgres()
        server.start()
    except PostgresNotFound as error:
        if os.environ.get("DSO_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"DSO_REQUIRE_POSTGRES=1 but {error}")
        pytest.skip(str(error))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: TemporaryPostgres) -> str:
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives, once per backend: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "dso.sqlite")
    return str(request.getfixturevalue("postgres_url"))
