"""One line for a test that talks to the operator API: a fresh token in the store, as an Authorization header.

    headers = bearer(store)                       # operate role, against a DsoStore
    headers = bearer(dso, Role.READ)              # against a running DsoServer
    TestClient(TestServer(create_app(store, clock)), headers=bearer(store))
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from dso_server.security.tokens import Role
from dso_server.service import DsoServer
from dso_server.store.security_store import SecurityStore
from dso_server.store.sqlite import DsoStore

_names = itertools.count(1)
TOKEN_CREATED_AT = datetime(2000, 1, 1, tzinfo=UTC)
"""Before any test's clock, so a token is valid whatever simulated time the test runs at."""


def token(target: DsoStore | DsoServer, role: Role = Role.OPERATE, *, name: str | None = None) -> str:
    name = name or f"test-{role.value}-{next(_names)}"
    if isinstance(target, DsoServer):
        return target.create_token(name, role, actor="test")
    _, secret = SecurityStore(target).create_token(name, role, now=TOKEN_CREATED_AT, actor="test")
    assert secret is not None
    return secret


def bearer(target: DsoStore | DsoServer, role: Role = Role.OPERATE, *, name: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(target, role, name=name)}"}
