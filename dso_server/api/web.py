"""The operator's web pages: a list of transformers and one page per transformer.

The pages are static HTML with vanilla JavaScript and SVG (no CDN, no build step) shipped as package data in
``dso_server/pages/``; they draw what the JSON API (``/api/transformers``...) answers, so the page and a script
reading the API always see the same numbers. A transformer page is served for any id: whether the id exists is
the API's answer, which the page shows as a readable message.

Routes::

    GET /                                  the transformers, with links
    GET /transformers/{transformer_id}     load, forecast band, allocation and rating in one plot; households
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web

_PAGES = files("dso_server") / "pages"
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # Everything the pages need comes from this server; inline script and style are the pages themselves.
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:",
}


def _page(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    # Read once, at route registration: a page missing from the installed package fails the start, not a request.
    html = (_PAGES / name).read_text(encoding="utf-8")

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html", charset="utf-8", headers=_HEADERS)

    return handler


def add_web_routes(app: web.Application) -> None:
    """Register the operator's pages on the API's aiohttp app."""
    app.add_routes([
        web.get("/", _page("index.html")),
        web.get("/transformers/{transformer_id}", _page("transformer.html")),
    ])
