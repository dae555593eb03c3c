"""One row per operator API route: method, path, handler, the role it needs, its models. Pure data.

The same table registers the routes (``app.create_app``), enforces the roles (``auth``), names the audit action
of a change and generates ``/api/openapi.json`` (``openapi``), so the document, the validation and the access
rules cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dso_server.api.models import NoQuery
from dso_server.security.tokens import Role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    role: Role | None
    """None: no credential needed (health, the API document, the login page and the login itself)."""
    summary: str
    action: str | None = None
    """The audit log's action for a change; a refused attempt by an authenticated caller is logged under it too."""
    body: Any = None
    """The request body's model (a pydantic model or a union of them); None: the route takes no body."""
    query: type = NoQuery
    answers: Mapping[int, Any] = field(default_factory=dict)
    """Status -> response model, for the document."""
    page: bool = False
    """An HTML page: without a credential the browser is sent to the login page instead of a 401."""
    session_may_write: bool = False
    """The one change a session cookie may make: ending itself (logout)."""
    content_type: str = "application/json"
    """What a 200 answer is (errors are always JSON); not JSON: the document gives its schema as a string."""

    @property
    def documented(self) -> bool:
        return not self.page
