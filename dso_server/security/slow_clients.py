"""Slow clients (slowloris): a connection that sends no request, or only part of one, must not be held forever.

aiohttp 3.14 closes a keep-alive connection that stays idle, or sends only part of its next request, for its
keep-alive timeout (75 s) only once a request was answered on it: a connection that never completes its first
request head (nothing sent, or a header line now and then) stays open indefinitely, each holding a file
descriptor, until the process runs out of them and stops accepting VENs and operators alike. Two bounds, on both
servers (VTN and operator API):

* ``SlowClientGuard``: a connection must complete its first request head within ``timeout_s`` of connecting,
  else it is closed. A sweep (every quarter of the timeout) looks at the server's connections and closes those
  older than that whose parser has not yet produced a request. From its first request on, a connection is
  aiohttp's keep-alive's business again, so a VEN polling every minute on its keep-alive connection keeps it.
  Nothing is done per request (a middleware would cost every poll a few microseconds).
* ``read_body``: a request body must arrive within ``timeout_s`` (``RequestTimedOut``, answered 408).
* ``BoundedTCPSite``/``BoundedSockSite``: under TLS, the handshake must end within ``TIMEOUT_S`` too. aiohttp's
  sites leave it to the event loop's default (60 s), and until the handshake ends the connection is not among the
  server's connections, so the guard cannot see it.

aiohttp's ``Server.connections``, ``RequestHandler.force_close`` and its request counter
(``RequestHandler._request_count``, private: checked when the guard starts), and the attributes its sites keep
for ``start`` (``_runner``, ``_host``, ``_port``, ``_sock``, ``_ssl_context``, ``_backlog``, ``_reuse_*``, ``_server``,
``_bound_port``: a missing one stops the server from starting) are used only here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

logger = logging.getLogger(__name__)

TIMEOUT_S = 30.0
"""How long a connection may take to send a request head, and a request its body (wall seconds)."""


class RequestTimedOut(Exception):
    """The request body did not arrive in time."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"the request body did not arrive within {timeout_s:g} s")


async def read_body(request: web.Request, timeout_s: float | None = None) -> bytes:
    """The request's body, or ``RequestTimedOut`` when it takes longer than ``timeout_s`` (``TIMEOUT_S``)."""
    if request.content.is_eof():  # the whole body came with the head (a poll nearly always): no waiting, no timer
        return await request.read()
    limit = TIMEOUT_S if timeout_s is None else timeout_s
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise RequestTimedOut(limit) from None


async def _bounded_server(site: web.BaseSite, **where: Any) -> asyncio.Server:
    """What aiohttp 3.14's ``TCPSite.start``/``SockSite.start`` do (register the site with its runner, serve the
    runner's server at ``where``), with the TLS handshake bounded by ``TIMEOUT_S``."""
    await web.BaseSite.start(site)
    server = site._runner.server
    assert server is not None
    return await asyncio.get_running_loop().create_server(
        server, ssl=site._ssl_context, backlog=site._backlog,
        ssl_handshake_timeout=TIMEOUT_S if site._ssl_context is not None else None, **where)


class BoundedTCPSite(web.TCPSite):
    """aiohttp's TCPSite, its TLS handshake bounded by ``TIMEOUT_S``."""

    async def start(self) -> None:
        self._server = await _bounded_server(self, host=self._host, port=self._port,
                                             reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


class BoundedSockSite(web.SockSite):
    """aiohttp's SockSite (a listening socket shared by workers), its TLS handshake bounded by ``TIMEOUT_S``."""

    async def start(self) -> None:
        self._server = await _bounded_server(self, sock=self._sock)


class SlowClientGuard:
    """Closes connections that do not complete a first request head within ``timeout_s`` (module docstring);
    ``start(runner)`` once the runner is set up."""

    def __init__(self, name: str, *, timeout_s: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        self._monotonic = monotonic
        self._first_seen: dict[Any, float] = {}
        """Connections (aiohttp protocols, which take no weak reference) without a request yet: since when."""
        self._task: asyncio.Task[None] | None = None
        self.closed = 0

    def start(self, runner: web.BaseRunner) -> None:
        server = runner.server
        if server is None:
            raise RuntimeError("start the guard after runner.setup()")
        if not hasattr(RequestHandler, "_request_count"):
            raise RuntimeError("aiohttp's RequestHandler no longer counts requests (_request_count); review "
                               f"{__name__} for this aiohttp version")
        self._task = asyncio.create_task(self._sweep(server), name=f"slow-clients-{self.name}")

    def cancel(self) -> None:
        """Stop sweeping (the task ends at the event loop's next turn)."""
        if self._task is not None:
            self._task.cancel()

    async def _sweep(self, server: Any) -> None:
        while True:
            await asyncio.sleep(self.timeout_s / 4)
            try:
                self.sweep(server.connections)
            except Exception:  # never let the guard die: log and sweep again next time
                logger.exception("%s: the slow-client sweep failed", self.name)

    def sweep(self, connections: list[Any]) -> int:
        """Close the connections older than the timeout that have not completed a request head; how many."""
        now = self._monotonic()
        waiting = [c for c in connections if not getattr(c, "_request_count", 1)]
        self._first_seen = {c: self._first_seen.get(c, now) for c in waiting}  # a clock starts when first seen
        closed = 0
        for connection, since in list(self._first_seen.items()):
            if now - since > self.timeout_s:
                peer = connection.transport.get_extra_info("peername") if connection.transport else None
                logger.warning("%s: closed a connection from %s that sent no complete request in %.0f s",
                               self.name, peer, now - since)
                connection.force_close()
                del self._first_seen[connection]
                closed += 1
        self.closed += closed
        return closed
