"""The operator's JSON API (aiohttp): households, publishing and changing signals, reading what came back.

Each handler decodes the request (``api_codec``), calls the store, and encodes the answer. Errors become
``{"error": "<sentence>", "field": "...", "detail": [...]}`` with 400 (bad input), 404 (unknown household,
group, event or publication) or 409 (the event's state forbids the change); nothing is stored then.

Endpoints::

    GET    /api/health
    GET    /api/households                      POST /api/households (201 new, 200 replaced)
    POST   /api/bandwidths                      POST /api/tariffs
    GET    /api/signals?connection_point_id=&publication_id=&include_ended=
    PUT    /api/signals/{event_id}              DELETE /api/signals/{event_id}
    PUT    /api/publications/{publication_id}   DELETE /api/publications/{publication_id}
    GET    /api/responses?event_id=&connection_point_id=
    GET    /api/telemetry?connection_point_id=&since=&until=
    GET    /api/plans?connection_point_id=      GET /api/comfort?connection_point_id=
    GET    /api/transformers                    GET /api/transformers/{id}?day=YYYY-MM-DD
    GET    /api/households/{ean}/violations?since=&until=

The transformer endpoints read the grid from the store (``dso-server grid load`` or settings ``grid_path``);
without a grid, ``/api/transformers`` lists none. ``day`` is a local day of the DSO's time zone (settings
``timezone``, Europe/Amsterdam by default), today by the server clock when left out; see ``dso_server.api.views``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

from aiohttp import web

from dso_server.api import codec, views
from dso_server.api.web import add_web_routes
from dso_server.capacity.forecast import local_day
from dso_server.capacity.planner import PlannerConfig
from dso_server.errors import DsoError, NotFound
from dso_server.records import SignalKind
from dso_server.store.grid_store import GridStore
from dso_server.store.sqlite import DsoStore
from protocol.clock import Clock

logger = logging.getLogger(__name__)

STORE = web.AppKey("store", DsoStore)
CLOCK = web.AppKey("clock", Clock)
PLANNER = web.AppKey("planner", PlannerConfig)

MAX_BODY_BYTES = 4 * 1024 * 1024


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda value: json.dumps(value, allow_nan=False))


def _error(status: int, message: str, *, field: str | None = None) -> web.Response:
    return _json({"error": message, "field": field, "detail": []}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    try:
        return await handler(request)
    except DsoError as error:
        return _json(codec.error_body(error), status=error.http_status)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        if error.status == 404:
            return _error(404, f"There is no endpoint {request.method} {request.path}.", field="path")
        if error.status == 405:
            return _error(405, f"{request.path} does not answer {request.method}.", field="method")
        if error.status == 413:
            return _error(413, f"The request body is larger than {MAX_BODY_BYTES} bytes.", field="body")
        return _error(error.status, error.reason, field=None)
    except Exception:
        logger.exception("Operator API: %s %s failed", request.method, request.path)
        return _error(500, "The server failed to handle this request; its log says why.")


async def _body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        raise codec.ApiError(400, f"The request body is not valid JSON: {error.msg} at line {error.lineno} column "
                                  f"{error.colno}.", field="body") from None
    return codec.require_object(body)


def _store(request: web.Request) -> DsoStore:
    return request.app[STORE]


def _now(request: web.Request) -> datetime:
    return request.app[CLOCK].now()


# ------------------------------------------------------------------------------------------------ handlers


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok", "now": codec.instant(_now(request))})


async def list_households(request: web.Request) -> web.Response:
    store = _store(request)
    return _json({"households": [
        codec.household_json(household, store.ven_for(household.connection_point_id),
                             store.last_telemetry_start(household.connection_point_id))
        for household in store.households()
    ]})


async def put_household(request: web.Request) -> web.Response:
    store = _store(request)
    household = codec.parse_household(await _body(request))
    created = store.put_household(household.contract, group=household.group, now=_now(request))
    return _json(codec.household_json(household, store.ven_for(household.connection_point_id),
                                      store.last_telemetry_start(household.connection_point_id)),
                 status=201 if created else 200)


async def _publish(request: web.Request, kind: SignalKind) -> web.Response:
    store, now = _store(request), _now(request)
    ids, group, rest = codec.split_targets(await _body(request))
    payload = codec.parse_payload(kind, rest)
    codec.check_not_over(payload, now)
    if group is not None:
        ids = store.group_members(group)
    else:
        assert ids is not None
        store.check_households(ids)
    publication = store.publish(dict.fromkeys(ids, payload), now=now)
    logger.info("Published %s %s to %d household(s)", kind.value, publication.publication_id, len(ids))
    return _json(codec.publication_json(publication, now), status=201)


async def publish_bandwidth(request: web.Request) -> web.Response:
    return await _publish(request, SignalKind.BANDWIDTH)


async def publish_tariff(request: web.Request) -> web.Response:
    return await _publish(request, SignalKind.TARIFF)


async def list_signals(request: web.Request) -> web.Response:
    store, now = _store(request), _now(request)
    connection_point_id = request.query.get("connection_point_id") or None
    if connection_point_id is not None:
        store.household(connection_point_id)
    include_ended = codec.parse_flag(request.query, "include_ended")
    signals = store.signals(connection_point_id=connection_point_id,
                            publication_id=request.query.get("publication_id") or None,
                            ending_after=None if include_ended else now)
    return _json({"signals": [codec.signal_json(signal, now) for signal in signals]})


async def modify_signal(request: web.Request) -> web.Response:
    store, now = _store(request), _now(request)
    signal = store.signal(request.match_info["event_id"])
    payload = codec.parse_payload(signal.kind, await _body(request))
    codec.check_not_over(payload, now)
    changed = store.modify_signal(signal.event_id, payload, now=now)
    return _json(codec.signal_json(changed, now))


async def cancel_signal(request: web.Request) -> web.Response:
    store, now = _store(request), _now(request)
    return _json(codec.signal_json(store.cancel_signal(request.match_info["event_id"], now=now), now))


async def modify_publication(request: web.Request) -> web.Response:
    store, now = _store(request), _now(request)
    publication = store.publication(request.match_info["publication_id"])
    payload = codec.parse_payload(publication.signals[0].kind, await _body(request))
    codec.check_not_over(payload, now)
    changed, skipped = store.modify_publication(publication.publication_id, payload, now=now)
    return _json(codec.publication_json(changed, now, skipped))


async def cancel_publication(request: web.Request) -> web.Response:
    store, now = _store(request), _now(request)
    changed, skipped = store.cancel_publication(request.match_info["publication_id"], now=now)
    return _json(codec.publication_json(changed, now, skipped))


async def list_responses(request: web.Request) -> web.Response:
    store = _store(request)
    event_id = request.query.get("event_id") or None
    connection_point_id = request.query.get("connection_point_id") or None
    if event_id is not None:
        store.signal(event_id)
    if connection_point_id is not None:
        store.household(connection_point_id)
    responses = store.responses(event_id=event_id, connection_point_id=connection_point_id)
    return _json({"responses": [codec.response_json(response) for response in responses]})


async def telemetry(request: web.Request) -> web.Response:
    store = _store(request)
    connection_point_id = codec.require_query(request.query, "connection_point_id")
    since, until = codec.parse_instant(request.query, "since"), codec.parse_instant(request.query, "until")
    if since is not None and until is not None and until <= since:
        raise codec.ApiError(400, "until must be later than since.", field="until")
    rows = store.telemetry(connection_point_id, since=since, until=until)
    return _json({"connection_point_id": connection_point_id,
                  "intervals": [codec.telemetry_json(row) for row in rows]})


async def plans(request: web.Request) -> web.Response:
    connection_point_id = codec.require_query(request.query, "connection_point_id")
    return _json(codec.plan_json(connection_point_id, _store(request).latest_plan(connection_point_id)))


async def comfort(request: web.Request) -> web.Response:
    connection_point_id = codec.require_query(request.query, "connection_point_id")
    return _json(codec.comfort_json(connection_point_id, _store(request).latest_comfort(connection_point_id)))


# ------------------------------------------------------------------------------------- capacity management


async def list_transformers(request: web.Request) -> web.Response:
    grid = GridStore(_store(request)).grid()
    return _json(views.transformers_json(grid) if grid is not None else {"transformers": []})


async def transformer_day(request: web.Request) -> web.Response:
    store, now, config = _store(request), _now(request), request.app[PLANNER]
    transformer_id = request.match_info["transformer_id"]
    grid = GridStore(store).grid()
    if grid is None or transformer_id not in {t.id for t in grid.transformers}:
        raise NotFound(f"No transformer has id {transformer_id!r}" + (" (no grid is loaded)." if grid is None
                                                                     else "."), field="transformer_id")
    text = request.query.get("day") or None
    if text is None:
        day = local_day(now, config.timezone)
    else:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise codec.ApiError(400, f"day={text!r} is not a date such as 2030-01-31.", field="day") from None
    return _json(views.transformer_day_json(store, grid, transformer_id, day=day, now=now, config=config))


async def household_violations(request: web.Request) -> web.Response:
    store, now = _store(request), _now(request)
    ean = request.match_info["connection_point_id"]
    since_default, until_default = views.default_window(now)
    since = codec.parse_instant(request.query, "since") or since_default
    until = codec.parse_instant(request.query, "until") or until_default
    if until <= since:
        raise codec.ApiError(400, "until must be later than since.", field="until")
    found = views.household_violations(store, ean, since=since, until=until)
    return _json({"connection_point_id": ean, "since": codec.instant(since), "until": codec.instant(until),
                  "violations": [views.violation_json(v) for v in found]})


def create_app(store: DsoStore, clock: Clock, config: PlannerConfig | None = None) -> web.Application:
    """The operator API over ``store``; ``clock`` dates every change and decides what is past; ``config``
    gives the time zone and thresholds of the capacity-management views (defaults when None)."""
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app[STORE] = store
    app[CLOCK] = clock
    app[PLANNER] = config if config is not None else PlannerConfig()
    app.add_routes([
        web.get("/api/health", health),
        web.get("/api/households", list_households),
        web.post("/api/households", put_household),
        web.post("/api/bandwidths", publish_bandwidth),
        web.post("/api/tariffs", publish_tariff),
        web.get("/api/signals", list_signals),
        web.put("/api/signals/{event_id}", modify_signal),
        web.delete("/api/signals/{event_id}", cancel_signal),
        web.put("/api/publications/{publication_id}", modify_publication),
        web.delete("/api/publications/{publication_id}", cancel_publication),
        web.get("/api/responses", list_responses),
        web.get("/api/telemetry", telemetry),
        web.get("/api/plans", plans),
        web.get("/api/comfort", comfort),
        web.get("/api/transformers", list_transformers),
        web.get("/api/transformers/{transformer_id}", transformer_day),
        web.get("/api/households/{connection_point_id}/violations", household_violations),
    ])
    add_web_routes(app)  # the operator's pages (dso_server/api/web.py) on the same app
    return app
