"""The operator's web pages: a login, a list of transformers and one page per transformer.

The pages are static HTML with vanilla JavaScript and SVG (no CDN, no build step) shipped as package data in
``dso_server/pages/``; they draw what the JSON API (``/api/transformers``...) answers, so the page and a script
reading the API always see the same numbers. A transformer page is served for any id: whether the id exists is
the API's answer, which the page shows as a readable message.

The pages sit behind the API's authentication (``dso_server.api.auth``): without a credential a page redirects
to ``/login``, which exchanges a token (typed or pasted by the operator) for a read-only session cookie through
``POST /api/session`` and returns to the page asked for. The pages only read, so the session is all they need.

Routes::

    GET /login                             the login form (no credential needed)
    GET /                                  the transformers, with links
    GET /transformers/{transformer_id}     load, forecast band, allocation and rating in one plot; households
"""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from dso_server.api.routes import Handler, Route
from dso_server.security.tokens import Role

_PAGES = files("dso_server") / "pages"
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Everything the pages need comes from this server; inline script and style are the pages themselves.
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
}


def _page(name: str) -> Handler:
    # Read once, at route registration: a page missing from the installed package fails the start, not a request.
    html = (_PAGES / name).read_text(encoding="utf-8")

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html", charset="utf-8", headers=_HEADERS)

    return handler


def page_routes() -> tuple[Route, ...]:
    """The pages as routes of the API's table (``page=True``: a missing credential redirects to the login)."""
    return (
        Route("GET", "/login", _page("login.html"), None, "Log in", page=True),
        Route("GET", "/", _page("index.html"), Role.READ, "The transformers", page=True),
        Route("GET", "/transformers/{transformer_id}", _page("transformer.html"), Role.READ, "A transformer's day",
              page=True),
    )
