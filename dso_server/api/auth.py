"""Who may call the operator API, and the web pages' login. The guard is an aiohttp middleware.

Credentials, checked in this order:

1. ``Authorization: Bearer <token>`` (``dso-server token create``). A header that is present but not a valid,
   active token is a 401 - the guard never falls back to another credential then.
2. A client certificate, when the API runs TLS with ``api_client_ca``: the certificate's SHA-256 fingerprint
   registered with ``dso-server token create --cert``.
3. The web pages' session cookie, for **reads only** (GET and HEAD). A browser attaches cookies to cross-site
   requests too; a bearer header it never attaches on its own. So everything that changes state needs the
   header, and a forged cross-site request (CSRF) can at most read - which the same-origin policy keeps from the
   forger. The cookie is also HttpOnly (no script reads it), SameSite=Strict (no cross-site request carries it)
   and Secure under TLS, and it names a random session, stored hashed, that ends with its token or after
   ``api_session_ttl_s``. The one write it allows is ``DELETE /api/session`` (log out: end that very session).

No credential: 401 with ``WWW-Authenticate: Bearer`` (pages redirect to ``/login``). The wrong role: 403. A
refused change by an authenticated caller is written to the audit log with the action it attempted.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from dso_server.api.codec import ApiError
from dso_server.api.routes import Route
from dso_server.errors import DsoError
from dso_server.security.audit import AuditEntry
from dso_server.security.tokens import ApiToken, Identity, actor_of, parse_bearer
from dso_server.store.security_store import SecurityStore
from dso_server.store.sqlite import DsoStore
from protocol.clock import Clock

logger = logging.getLogger(__name__)

ROUTES = web.AppKey("routes", dict)
"""(method, path template) -> Route."""
SESSION_TTL = web.AppKey("session_ttl", timedelta)
SECURE_COOKIE = web.AppKey("secure_cookie", bool)
IDENTITY: Any = web.RequestKey("identity", Identity) if hasattr(web, "RequestKey") else "identity"
"""Request key of the caller's ``Identity`` (absent on public routes); aiohttp < 3.13 has no RequestKey."""
SAFE_METHODS = frozenset({"GET", "HEAD"})
COOKIE = "dso_session"
SECURE_COOKIE_NAME = "__Host-dso_session"
"""Under TLS: the __Host- prefix makes the browser refuse the cookie unless Secure, Path=/ and no Domain."""


class Unauthorized(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(401, message, field="Authorization")


class Forbidden(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(403, message, field="Authorization")


def cookie_name(secure: bool) -> str:
    return SECURE_COOKIE_NAME if secure else COOKIE


def route_of(request: web.Request) -> Route | None:
    info = request.match_info
    if info.http_exception is not None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return request.app[ROUTES].get((method, info.route.resource.canonical if info.route.resource else ""))


def peer_certificate_sha256(request: web.Request) -> str | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def _identity(token: ApiToken, via: str) -> Identity:
    return Identity(actor=actor_of(token), role=token.role, token_id=token.token_id, via=via)


def identify(request: web.Request, security: SecurityStore, clock: Clock) -> Identity | None:
    """The caller, or None when no credential came; raises Unauthorized for a credential that is not valid."""
    now = clock.now()
    header = request.headers.get("Authorization")
    if header is not None:
        secret = parse_bearer(header)
        token = security.authenticate(secret, now=now) if secret else None
        if token is None:
            logger.warning("Operator API: refused %s %s from %s: invalid, expired or revoked token", request.method,
                           request.path, request.remote)
            raise Unauthorized("The Authorization header does not carry a valid token: send 'Authorization: Bearer "
                               "<token>' with a token from 'dso-server token create' that is neither expired nor "
                               "revoked.")
        return _identity(token, "bearer")
    fingerprint = peer_certificate_sha256(request)
    if fingerprint is not None:
        token = security.authenticate_certificate(fingerprint, now=now)
        if token is not None:
            return _identity(token, "certificate")
    for name in (SECURE_COOKIE_NAME, COOKIE):
        secret = request.cookies.get(name)
        if secret is not None:
            found = security.session(secret, now=now)
            if found is not None:
                return _identity(found[0], "session")
    return None


def _target(request: web.Request) -> str | None:
    return next(iter(request.match_info.values()), None)


def create_guard(store: DsoStore, clock: Clock) -> Callable[..., Awaitable[web.StreamResponse]]:
    security = SecurityStore(store)

    def refuse(identity: Identity, route: Route, request: web.Request, error: DsoError) -> None:
        if route.action is None or request.method in SAFE_METHODS:
            return
        security.record(AuditEntry(at=clock.now(), actor=identity.actor, action=route.action, target=_target(request),
                                   outcome="refused", detail={"status": error.http_status, "error": error.message,
                                                              "field": error.field}))

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        route = route_of(request)
        if route is None or route.role is None:
            return await handler(request)
        identity = identify(request, security, clock)
        if identity is None:
            if route.page:
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")
            raise Unauthorized("This endpoint needs a credential: send 'Authorization: Bearer <token>' (create one "
                               "with 'dso-server token create --name NAME --role read|operate').")
        if identity.via == "session" and request.method not in SAFE_METHODS and not route.session_may_write:
            error: DsoError = Forbidden("The web session only reads; changes need 'Authorization: Bearer <token>' "
                                        "(so no other site can make a browser change anything).")
            refuse(identity, route, request, error)
            raise error
        assert route.role is not None
        if not identity.role.allows(route.role):
            error = Forbidden(f"{identity.actor} has the role {identity.role.value}; {request.method} "
                              f"{route.path} needs {route.role.value}.")
            refuse(identity, route, request, error)
            raise error
        request[IDENTITY] = identity
        try:
            return await handler(request)
        except DsoError as error:
            if error.http_status < 500:
                refuse(identity, route, request, error)
            raise

    return guard
