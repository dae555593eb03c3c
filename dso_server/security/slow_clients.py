"""Slow clients (slowloris): a connection that sends no request, or only part of one, must not be held forever.

aiohttp 3.14 closes an idle keep-alive connection after its keep-alive timeout only once a request was answered
on it: a connection that never completes a request head (nothing sent, or a header line every minute) stays open
indefinitely, each holding a file descriptor, until the process runs out of them and stops accepting VENs and
operators alike. Two bounds, on both servers (VTN and operator API):

* ``SlowClientGuard``: a connection must complete a request head within ``timeout_s`` of connecting and of its
  previous answer, else it is closed. A middleware marks when each connection's requests start and end; a sweep
  (every quarter of the timeout) closes the connections idle for longer. A VEN polling on a keep-alive
  connection every few seconds is never idle that long; a quieter one reconnects, as after aiohttp's own
  keep-alive timeout.
* ``read_body``: a request body must arrive within ``timeout_s`` (``RequestTimedOut``, answered 408).

aiohttp's ``Server.connections`` and ``RequestHandler.force_close`` (public, but the connection list is the
runner's) are used only here.
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
    """Closes connections that do not complete a request head within ``timeout_s`` (module docstring). Add
    ``middleware`` to the application before it starts, then ``start(runner)`` once the runner is set up."""

    def __init__(self, name: str, *, timeout_s: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        self._monotonic = monotonic
        self._idle_since: dict[Any, float] = {}
        """Per connection (its aiohttp protocol, which takes no weak reference) outside a request: since when.
        Entries of connections gone are dropped at the next sweep."""
        self._busy: dict[Any, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.closed = 0

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        connection = request.protocol
        self._busy[connection] = self._busy.get(connection, 0) + 1
        try:
            return await handler(request)
        finally:
            self._busy[connection] -= 1
            self._idle_since[connection] = self._monotonic()

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
        """Close the connections idle (outside a request) for longer than the timeout; how many."""
        now = self._monotonic()
        closed = 0
        connections = list(connections)
        alive = set(connections)
        for gone in [c for c in self._idle_since if c not in alive]:
            del self._idle_since[gone]
        for gone in [c for c, count in self._busy.items() if count <= 0 and c not in alive]:
            del self._busy[gone]
        for connection in connections:
            if self._busy.get(connection, 0) > 0:
                continue
            since = self._idle_since.setdefault(connection, now)  # first seen: its clock starts
            if now - since > self.timeout_s:
                peer = connection.transport.get_extra_info("peername") if connection.transport else None
                logger.warning("%s: closed a connection from %s that sent no complete request for %.0f s",
                               self.name, peer, now - since)
                connection.force_close()
                closed += 1
        self.closed += closed
        return closed
