"""A faulty VTN: our DSO's VTN behind a proxy that rewrites every answer with one fault.

``reuse_modification_numbers`` always sends modificationNumber 0 (breaks VTN-EVT-02, VTN-EVT-03);
``interval_gap`` stretches the first interval to PT30M so the intervals no longer tile the active period
(breaks VTN-SHP-03).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import aiohttp
from aiohttp import web


def reuse_modification_numbers(xml: str) -> str:
    return re.sub(r"(<ei:modificationNumber>)\d+(</ei:modificationNumber>)", r"\g<1>0\g<2>", xml)


def interval_gap(xml: str) -> str:
    pattern = (r"(<ei:interval>(?:<xcal:dtstart><xcal:date-time>[^<]*</xcal:date-time></xcal:dtstart>)?"
               r"<xcal:duration><xcal:duration>)PT15M")
    return re.sub(pattern, r"\g<1>PT30M", xml, count=1)


class FaultyVtnProxy:
    def __init__(self, upstream: str, fault: Callable[[str], str]) -> None:
        self.upstream = upstream.rstrip("/")
        self.fault = fault
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _forward(self, request: web.Request) -> web.Response:
        async with aiohttp.ClientSession() as http, http.post(
                f"{self.upstream}/{request.match_info['service']}", data=await request.read(),
                headers={"Content-Type": "application/xml"}) as reply:
            body = (await reply.read()).decode()
            return web.Response(status=reply.status, text=self.fault(body), content_type="application/xml")

    async def __aenter__(self) -> FaultyVtnProxy:
        app = web.Application()
        app.router.add_post("/OpenADR2/Simple/2.0b/{service}", self._forward)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
