"""Slow clients (slowloris): a connection that sends no request, or only part of one, must not be held forever.

aiohttp 3.14 closes a keep-alive connection that stays idle, or sends only part of its next request, for its
keep-alive timeout (75 s) only once a request was answered on it: a connection that never completes its first
request head (nothing sent, or a header line now and then) stays open indefinitely, each holding a file
descriptor, until the process runs out of them and stops accepting VENs and operators alike. Two bounds, on both
servers (VTN and operator API):

* ``SlowClientGuard``: a connection must complete its first request head within ``timeout_s`` of connecting,
  else it is closed. A middleware marks the connections that got as far as a request; a sweep (every quarter of
  the timeout) closes the others once they are older than that. From its first request on, a connection is
  aiohttp's keep-alive's business again, so a VEN polling every minute on its keep-alive connection keeps it.
* ``read_body``: a request body must arrive within ``timeout_s`` (``RequestTimedOut``, answered 408).

aiohttp's ``Server.connections`` and ``RequestHandler.force_close`` are used only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

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
    limit = TIMEOUT_S if timeout_s is None else timeout_s
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise RequestTimedOut(limit) from None


class SlowClientGuard:
    """Closes connections that do not complete a first request head within ``timeout_s`` (module docstring). Add
    ``middleware`` to the application before it starts, then ``start(runner)`` once the runner is set up."""

    def __init__(self, name: str, *, timeout_s: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        self._monotonic = monotonic
        self._served: set[Any] = set()
        """The connections (aiohttp protocols, which take no weak reference) that got as far as a request; those
        gone are dropped at the next sweep."""
        self._first_seen: dict[Any, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.closed = 0

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        self._served.add(request.protocol)
        return await handler(request)

    def start(self, runner: web.BaseRunner) -> None:
        server = runner.server
        if server is None:
            raise RuntimeError("start the guard after runner.setup()")
        self._task = asyncio.create_task(self._sweep(server), name=f"slow-clients-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sweep(self, server: Any) -> None:
        while True:
            await asyncio.sleep(self.timeout_s / 4)
            try:
                self.sweep(server.connections)
            except Exception:  # never let the guard die: log and sweep again next time
                logger.exception("%s: the slow-client sweep failed", self.name)

    def sweep(self, connections: list[Any]) -> int:
        """Close the connections older than the timeout that never got as far as a request; how many."""
        now = self._monotonic()
        alive = set(connections)
        self._served &= alive
        self._first_seen = {c: since for c, since in self._first_seen.items() if c in alive}
        closed = 0
        for connection in alive - self._served:
            since = self._first_seen.setdefault(connection, now)  # its clock starts when first seen
            if now - since > self.timeout_s:
                peer = connection.transport.get_extra_info("peername") if connection.transport else None
                logger.warning("%s: closed a connection from %s that sent no complete request in %.0f s",
                               self.name, peer, now - since)
                connection.force_close()
                closed += 1
        self.closed += closed
        return closed
