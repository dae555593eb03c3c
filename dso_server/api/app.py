"""The operator's JSON API (aiohttp): households, publishing and changing signals, reading what came back.

Each handler decodes the request (``codec``, against the models of ``models``), calls the store, and encodes the
answer. Every route but the health check, the API document and the login needs a credential (``auth``): ``read``
for GETs, ``operate`` for changes. Errors become ``{"error": "<sentence>", "field": "...", "detail": [...]}``
with 400 (bad input), 401 (no valid credential), 403 (the wrong role), 404 (unknown household, group, event or
publication), 409 (the event's state forbids the change), 413 (body over ``MAX_BODY_BYTES``) or 415 (a body not
sent as application/json); nothing is stored then. Every change is written to the audit log in the same
transaction, with who made it.

The routes, their roles and models are the table ``ROUTES`` at the end (also served as ``/api/openapi.json``)::

    GET    /api/health                          (no credential)   GET /api/openapi.json (no credential)
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
    GET    /api/households/{ean}/needs?since=&until=     GET /api/households/{ean}/performance?since=&until=
    GET    /api/settlement?month=&connection_point_id=   GET /api/settlement.csv?month=&connection_point_id=
    GET    /api/audit?since=&until=&actor=&action=&outcome=&limit=
    GET    /api/session                         POST /api/session (log in)   DELETE /api/session (log out)

The transformer endpoints read the grid from the store (``dso-server grid load`` or settings ``grid_path``);
without a grid, ``/api/transformers`` lists none. ``day`` is a local day of the DSO's time zone (settings
``timezone``, Europe/Amsterdam by default), today by the server clock when left out; see ``dso_server.api.views``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from dso_server import metrics
from dso_server.api import auth, codec, models, performance_views, views
from dso_server.api.routes import Route
from dso_server.api.web import page_routes
from dso_server.capacity.forecast import day_intervals, local_day
from dso_server.capacity.planner import PlannerConfig
from dso_server.errors import DsoError, NotFound
from dso_server.records import Household, SignalKind
from dso_server.security.slow_clients import RequestTimedOut, read_body
from dso_server.security.tokens import Identity, Role
from dso_server.store import audited
from dso_server.store.grid_store import GridStore
from dso_server.store.security_store import SecurityStore
from dso_server.store.sqlite import DsoStore
from protocol.clock import Clock

logger = logging.getLogger(__name__)

STORE = web.AppKey("store", DsoStore)
CLOCK = web.AppKey("clock", Clock)
PLANNER = web.AppKey("planner", PlannerConfig)
DOCUMENT = web.AppKey("document", dict)

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Room for a publication to 100,000 households by id; larger bodies are refused with 413 before parsing."""
_Query = TypeVar("_Query", bound=BaseModel)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda value: json.dumps(value, allow_nan=False))


def _error(status: int, message: str, *, field: str | None = None) -> web.Response:
    return _json({"error": message, "field": field, "detail": []}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    try:
        codec.check_no_nul(request.path, request.query)  # before the guard: it writes refusals to the audit log
        return await handler(request)
    except DsoError as error:
        response = _json(codec.error_body(error), status=error.http_status)
        if error.http_status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="dso-operator-api"'
        return response
    except RequestTimedOut as error:
        return _error(408, f"The request body did not arrive within {error.timeout_s:g} s.", field="body")
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


async def _text(request: web.Request) -> str:
    """The body as JSON text: application/json, UTF-8, syntactically valid, shallow, an object."""
    raw = await read_body(request)
    return codec.decode_body(raw, request.content_type if request.headers.get("Content-Type") else "",
                             request.charset)


def _query(request: web.Request, model: type[_Query]) -> _Query:
    return codec.validate_query(model, request.query, [key for key, _ in request.query.items()])


def _store(request: web.Request) -> DsoStore:
    return request.app[STORE]


def _now(request: web.Request) -> datetime:
    return request.app[CLOCK].now()


def _identity(request: web.Request) -> Identity:
    return request[auth.IDENTITY]


def _actor(request: web.Request) -> str:
    return _identity(request).actor


# ------------------------------------------------------------------------------------------------ handlers


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok", "now": codec.instant(_now(request))})


async def openapi_document(request: web.Request) -> web.Response:
    return _json(request.app[DOCUMENT])


def _household_json(store: DsoStore, household: Household) -> dict[str, Any]:
    return codec.household_json(household, store.ven_for(household.connection_point_id),
                                store.last_telemetry_start(household.connection_point_id))


async def list_households(request: web.Request) -> web.Response:
    query = _query(request, models.HouseholdsQuery)
    store = _store(request)
    # A page at a time (a region has millions), three statements per page (not two per household).
    households = store.households_page(limit=query.limit + 1, after=query.after)
    page, more = households[:query.limit], len(households) > query.limit
    ids = [h.connection_point_id for h in page]
    vens = {ven.connection_point_id: ven for ven in store.vens(ids)}
    last = store.last_telemetry_starts(ids)
    return _json({"households": [
        codec.household_json(h, vens.get(h.connection_point_id), last.get(h.connection_point_id)) for h in page],
        "next_after": page[-1].connection_point_id if more else None})


async def put_household(request: web.Request) -> web.Response:
    _query(request, models.NoQuery)
    store = _store(request)
    household = codec.household_of(await _text(request))
    created = audited.put_household(store, household, now=_now(request), actor=_actor(request))
    return _json(_household_json(store, household), status=201 if created else 200)


async def _publish(request: web.Request, kind: SignalKind) -> web.Response:
    _query(request, models.NoQuery)
    store, now = _store(request), _now(request)
    text = await _text(request)
    body: models.BandwidthPublication | models.TariffPublication = (
        codec.validate(models.BandwidthPublication, text, what="bandwidth") if kind is SignalKind.BANDWIDTH
        else codec.validate(models.TariffPublication, text, what="tariff"))
    payload = body.payload()
    codec.check_not_over(payload, now)
    if body.group is not None:
        ids = store.group_members(body.group)
    else:
        assert body.connection_point_ids is not None
        ids = list(body.connection_point_ids)
        store.check_households(ids)
    publication = audited.publish(store, dict.fromkeys(ids, payload), now=now, actor=_actor(request),
                                  group=body.group)
    logger.info("%s published %s %s to %d household(s)", _actor(request), kind.value, publication.publication_id,
                len(ids))
    return _json(codec.publication_json(publication, now), status=201)


async def publish_bandwidth(request: web.Request) -> web.Response:
    return await _publish(request, SignalKind.BANDWIDTH)


async def publish_tariff(request: web.Request) -> web.Response:
    return await _publish(request, SignalKind.TARIFF)


async def list_signals(request: web.Request) -> web.Response:
    query = _query(request, models.SignalsQuery)
    store, now = _store(request), _now(request)
    if query.connection_point_id is not None:
        store.household(query.connection_point_id)
    signals = store.signals(connection_point_id=query.connection_point_id, publication_id=query.publication_id,
                            ending_after=None if query.include_ended else now)
    return _json({"signals": [codec.signal_json(signal, now) for signal in signals]})


async def modify_signal(request: web.Request) -> web.Response:
    _query(request, models.NoQuery)
    store, now = _store(request), _now(request)
    signal = store.signal(request.match_info["event_id"])
    payload = codec.change_of(signal.kind, await _text(request))
    codec.check_not_over(payload, now)
    changed = audited.modify_signal(store, signal.event_id, payload, now=now, actor=_actor(request))
    return _json(codec.signal_json(changed, now))


async def cancel_signal(request: web.Request) -> web.Response:
    _query(request, models.NoQuery)
    store, now = _store(request), _now(request)
    changed = audited.cancel_signal(store, request.match_info["event_id"], now=now, actor=_actor(request))
    return _json(codec.signal_json(changed, now))


async def modify_publication(request: web.Request) -> web.Response:
    _query(request, models.NoQuery)
    store, now = _store(request), _now(request)
    publication = store.publication(request.match_info["publication_id"])
    payload = codec.change_of(publication.signals[0].kind, await _text(request))
    codec.check_not_over(payload, now)
    changed, skipped = audited.modify_publication(store, publication.publication_id, payload, now=now,
                                                  actor=_actor(request))
    return _json(codec.publication_json(changed, now, skipped))


async def cancel_publication(request: web.Request) -> web.Response:
    _query(request, models.NoQuery)
    store, now = _store(request), _now(request)
    changed, skipped = audited.cancel_publication(store, request.match_info["publication_id"], now=now,
                                                  actor=_actor(request))
    return _json(codec.publication_json(changed, now, skipped))


async def list_responses(request: web.Request) -> web.Response:
    query = _query(request, models.ResponsesQuery)
    store = _store(request)
    if query.event_id is not None:
        store.signal(query.event_id)
    if query.connection_point_id is not None:
        store.household(query.connection_point_id)
    responses = store.responses(event_id=query.event_id, connection_point_id=query.connection_point_id)
    return _json({"responses": [codec.response_json(response) for response in responses]})


async def telemetry(request: web.Request) -> web.Response:
    query = _query(request, models.TelemetryQuery)
    rows = _store(request).telemetry(query.connection_point_id, since=query.since, until=query.until)
    return _json({"connection_point_id": query.connection_point_id,
                  "intervals": [codec.telemetry_json(row) for row in rows]})


async def plans(request: web.Request) -> web.Response:
    ean = _query(request, models.HouseholdQuery).connection_point_id
    return _json(codec.plan_json(ean, _store(request).latest_plan(ean)))


async def comfort(request: web.Request) -> web.Response:
    ean = _query(request, models.HouseholdQuery).connection_point_id
    return _json(codec.comfort_json(ean, _store(request).latest_comfort(ean)))


# ------------------------------------------------------------------------------------- capacity management


async def list_transformers(request: web.Request) -> web.Response:
    _query(request, models.NoQuery)
    grid = GridStore(_store(request)).grid()
    return _json(views.transformers_json(grid) if grid is not None else {"transformers": []})


async def transformer_day(request: web.Request) -> web.Response:
    query = _query(request, models.DayQuery)
    store, now, config = _store(request), _now(request), request.app[PLANNER]
    transformer_id = request.match_info["transformer_id"]
    grid = GridStore(store).grid()
    if grid is None or transformer_id not in {t.id for t in grid.transformers}:
        raise NotFound(f"No transformer has id {transformer_id!r}" + (" (no grid is loaded)." if grid is None
                                                                     else "."), field="transformer_id")
    day = query.day if query.day is not None else local_day(now, config.timezone)
    # Forecasts and a day of telemetry: computed in a thread, so the VTN on this event loop keeps answering.
    return _json(await asyncio.to_thread(views.transformer_day_json, store, grid, transformer_id, day=day, now=now,
                                         config=config))


async def household_violations(request: web.Request) -> web.Response:
    query = _query(request, models.WindowQuery)
    store, now = _store(request), _now(request)
    ean = request.match_info["connection_point_id"]
    since_default, until_default = views.default_window(now)
    since = query.since or since_default
    until = query.until or until_default
    if until <= since:
        raise codec.ApiError(400, "until must be later than since.", field="until")
    found = await asyncio.to_thread(views.household_violations, store, ean, since=since, until=until)
    return _json({"connection_point_id": ean, "since": codec.instant(since), "until": codec.instant(until),
                  "violations": [views.violation_json(v) for v in found]})


# ------------------------------------------------------------------------------------ performance contracts


def _window(request: web.Request, query: models.WindowQuery, default: tuple[datetime, datetime]
            ) -> tuple[datetime, datetime]:
    since, until = query.since or default[0], query.until or default[1]
    if until <= since:
        raise codec.ApiError(400, "until must be later than since.", field="until")
    return since, until


async def household_needs(request: web.Request) -> web.Response:
    query = _query(request, models.WindowQuery)
    store, now, config = _store(request), _now(request), request.app[PLANNER]
    ean = request.match_info["connection_point_id"]
    store.household(ean)
    today = local_day(now, config.timezone)
    default = (day_intervals(today, config.timezone)[0], day_intervals(today + timedelta(days=2), config.timezone)[0])
    since, until = _window(request, query, default)
    if until - since > performance_views.MAX_WINDOW:
        raise codec.ApiError(400, f"The window may span at most {performance_views.MAX_WINDOW.days} days; it spans "
                                  f"{(until - since).days} days.", field="until")
    return _json(performance_views.needs_json(store, ean, since=since, until=until, timezone=config.timezone))


async def household_performance(request: web.Request) -> web.Response:
    query = _query(request, models.WindowQuery)
    store, now = _store(request), _now(request)
    since, until = _window(request, query, views.default_window(now))
    return _json(performance_views.performance_json(store, request.match_info["connection_point_id"], since=since,
                                                    until=until))


def _settlement_rows(request: web.Request) -> tuple[Any, list[Any]]:
    query = _query(request, models.SettlementQuery)
    store, now, config = _store(request), _now(request), request.app[PLANNER]
    month = query.month if query.month is not None else local_day(now, config.timezone)
    if query.connection_point_id is not None:
        household = store.household(query.connection_point_id)
        if household.contract.performance is None:
            raise NotFound(f"{query.connection_point_id} has no performance contract to settle.",
                           field="connection_point_id")
    ids = None if query.connection_point_id is None else [query.connection_point_id]
    return month, performance_views.settlement(store, month, ids)


async def settlement(request: web.Request) -> web.Response:
    month, rows = _settlement_rows(request)
    return _json(performance_views.settlement_json(month, rows))


async def settlement_csv(request: web.Request) -> web.Response:
    month, rows = _settlement_rows(request)
    return web.Response(text=performance_views.settlement_csv(rows), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="settlement-{month:%Y-%m}.csv"'})


# ------------------------------------------------------------------------------------------ audit, session


async def audit_log(request: web.Request) -> web.Response:
    query = _query(request, models.AuditQuery)
    entries = SecurityStore(_store(request)).audit(since=query.since, until=query.until, actor=query.actor,
                                                   action=query.action, outcome=query.outcome, limit=query.limit)
    return _json({"entries": [codec.audit_json(entry) for entry in entries]})


async def allocation_runs(request: web.Request) -> web.Response:
    query = _query(request, models.AllocationRunsQuery)
    runs = GridStore(_store(request)).runs(kind=query.kind, day=query.day.isoformat() if query.day else None,
                                          status=query.status, limit=query.limit)
    return _json({"runs": [codec.run_json(run) for run in runs]})


async def metrics_text(request: web.Request) -> web.Response:
    """Prometheus text exposition (``dso_server.metrics``), for a scraper with a read token."""
    _query(request, models.NoQuery)
    body = metrics.exposition(_store(request), _now(request), metrics.SILENT_AFTER_S)
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


async def who_am_i(request: web.Request) -> web.Response:
    _query(request, models.NoQuery)
    identity = _identity(request)
    expires_at = None
    if identity.via == "session":
        found = _session_of(request)
        expires_at = found[1] if found else None
    return _json({**identity.to_json(), "expires_at": codec.instant(expires_at)})


def _session_of(request: web.Request) -> Any:
    for name in (auth.SECURE_COOKIE_NAME, auth.COOKIE):
        secret = request.cookies.get(name)
        if secret is not None:
            found = SecurityStore(_store(request)).session(secret, now=_now(request))
            if found is not None:
                return found
    return None


async def log_in(request: web.Request) -> web.Response:
    """Exchange a token for the pages' session cookie (read-only, see ``auth``)."""
    _query(request, models.NoQuery)
    body = codec.validate(models.LoginRequest, await _text(request), what="login")
    security, now = SecurityStore(_store(request)), _now(request)
    token = security.authenticate(body.token, now=now)
    if token is None:
        logger.warning("Operator API: refused a login from %s: invalid, expired or revoked token", request.remote)
        raise auth.Unauthorized("This is not a valid token (or it expired, or was revoked).")
    secret, expires_at = security.create_session(token, now=now, ttl=request.app[auth.SESSION_TTL])
    secure = request.app[auth.SECURE_COOKIE]
    response = _json({"actor": f"token:{token.name}", "role": token.role.value, "token_id": token.token_id,
                      "via": "session", "expires_at": codec.instant(expires_at)})
    response.set_cookie(auth.cookie_name(secure), secret, path="/", httponly=True, samesite="Strict", secure=secure,
                        max_age=max(1, int((expires_at - now).total_seconds())))
    return response


async def log_out(request: web.Request) -> web.Response:
    _query(request, models.NoQuery)
    identity = _identity(request)
    for name in (auth.SECURE_COOKIE_NAME, auth.COOKIE):
        secret = request.cookies.get(name)
        if secret is not None:
            SecurityStore(_store(request)).end_session(secret, now=_now(request), actor=identity.actor)
    response = _json({**identity.to_json(), "expires_at": codec.instant(_now(request))})
    secure = request.app[auth.SECURE_COOKIE]
    response.del_cookie(auth.cookie_name(secure), path="/", secure=secure, httponly=True, samesite="Strict")
    return response


# ------------------------------------------------------------------------------------------------- the table

_ERRORS = {400: models.ErrorAnswer, 401: models.ErrorAnswer, 403: models.ErrorAnswer, 404: models.ErrorAnswer}
_CHANGE_ERRORS = {**_ERRORS, 409: models.ErrorAnswer, 413: models.ErrorAnswer, 415: models.ErrorAnswer}
READ, OPERATE = Role.READ, Role.OPERATE

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/health", health, None, "Liveness: the server answers and its clock", answers={
        200: models.HealthAnswer}),
    Route("GET", "/api/openapi.json", openapi_document, None, "This API as an OpenAPI 3.1 document"),
    Route("GET", "/api/households", list_households, READ, "Households with their VEN and last telemetry, a page "
          "at a time", query=models.HouseholdsQuery, answers={200: models.HouseholdsAnswer, **_ERRORS}),
    Route("POST", "/api/households", put_household, OPERATE, "Add a household or replace its contract and group",
          action="household.put", body=models.HouseholdRequest,
          answers={200: models.HouseholdAnswer, 201: models.HouseholdAnswer, **_CHANGE_ERRORS}),
    Route("POST", "/api/bandwidths", publish_bandwidth, OPERATE, "Publish a capacity bandwidth to households",
          action="signal.publish", body=models.BandwidthPublication,
          answers={201: models.PublicationAnswer, **_CHANGE_ERRORS}),
    Route("POST", "/api/tariffs", publish_tariff, OPERATE, "Publish a time-of-use tariff to households",
          action="signal.publish", body=models.TariffPublication,
          answers={201: models.PublicationAnswer, **_CHANGE_ERRORS}),
    Route("GET", "/api/signals", list_signals, READ, "Signals that have not ended (or all, include_ended)",
          query=models.SignalsQuery, answers={200: models.SignalsAnswer, **_ERRORS}),
    Route("PUT", "/api/signals/{event_id}", modify_signal, OPERATE,
          "Replace what an event says (modification number + 1)", action="signal.modify", body=models.SignalChange,
          answers={200: models.SignalAnswer, **_CHANGE_ERRORS}),
    Route("DELETE", "/api/signals/{event_id}", cancel_signal, OPERATE, "Cancel an event (modification number + 1)",
          action="signal.cancel", answers={200: models.SignalAnswer, **_CHANGE_ERRORS}),
    Route("PUT", "/api/publications/{publication_id}", modify_publication, OPERATE,
          "Modify every open event of a publication", action="publication.modify", body=models.SignalChange,
          answers={200: models.PublicationAnswer, **_CHANGE_ERRORS}),
    Route("DELETE", "/api/publications/{publication_id}", cancel_publication, OPERATE,
          "Cancel every open event of a publication", action="publication.cancel",
          answers={200: models.PublicationAnswer, **_CHANGE_ERRORS}),
    Route("GET", "/api/responses", list_responses, READ, "What the VENs answered to events",
          query=models.ResponsesQuery, answers={200: models.ResponsesAnswer, **_ERRORS}),
    Route("GET", "/api/telemetry", telemetry, READ, "A household's measured import and export per 15 minutes",
          query=models.TelemetryQuery, answers={200: models.TelemetryAnswer, **_ERRORS}),
    Route("GET", "/api/plans", plans, READ, "A household's latest plan", query=models.HouseholdQuery,
          answers={200: models.PlanAnswer, **_ERRORS}),
    Route("GET", "/api/comfort", comfort, READ, "A household's latest comfort status", query=models.HouseholdQuery,
          answers={200: models.ComfortAnswer, **_ERRORS}),
    Route("GET", "/api/transformers", list_transformers, READ, "The grid's transformers",
          answers={200: models.TransformersAnswer, **_ERRORS}),
    Route("GET", "/api/transformers/{transformer_id}", transformer_day, READ,
          "A transformer's local day: load, forecast band, allocation, households", query=models.DayQuery,
          answers={200: models.TransformerDayAnswer, **_ERRORS}),
    Route("GET", "/api/households/{connection_point_id}/violations", household_violations, READ,
          "A household's runs over its effective limit", query=models.WindowQuery,
          answers={200: models.ViolationsAnswer, **_ERRORS}),
    Route("GET", "/api/households/{connection_point_id}/needs", household_needs, READ,
          "A household's capacity needs in force against its firm limits", query=models.WindowQuery,
          answers={200: models.NeedsAnswer, **_ERRORS}),
    Route("GET", "/api/households/{connection_point_id}/performance", household_performance, READ,
          "A household's daily performance reports", query=models.WindowQuery,
          answers={200: models.PerformanceAnswer, **_ERRORS}),
    Route("GET", "/api/settlement", settlement, READ,
          "Performance contracts' monthly settlement: guarantee honoured, comfort delivered, discount due",
          query=models.SettlementQuery, answers={200: models.SettlementAnswer, **_ERRORS}),
    Route("GET", "/api/settlement.csv", settlement_csv, READ, "The monthly settlement as CSV",
          query=models.SettlementQuery, answers={200: models.SettlementAnswer, **_ERRORS}, content_type="text/csv"),
    Route("GET", "/api/audit", audit_log, READ, "The audit log: who changed what, when",
          query=models.AuditQuery, answers={200: models.AuditAnswer, **_ERRORS}),
    Route("GET", "/api/allocation-runs", allocation_runs, READ,
          "The planner's allocation runs, newest first; a failed run with its error",
          query=models.AllocationRunsQuery, answers={200: models.AllocationRunsAnswer, **_ERRORS}),
    Route("GET", "/metrics", metrics_text, READ, "Prometheus metrics: polls, VENs registered and silent, event "
          "responses, planner runs, store latency (text exposition format)", content_type=metrics.CONTENT_TYPE,
          answers=_ERRORS),
    Route("GET", "/api/session", who_am_i, READ, "Who the credential of this request is",
          answers={200: models.SessionAnswer, **_ERRORS}),
    Route("POST", "/api/session", log_in, None, "Log in to the web pages: a token for a read-only session cookie",
          body=models.LoginRequest, answers={200: models.SessionAnswer, **_CHANGE_ERRORS}),
    Route("DELETE", "/api/session", log_out, READ, "Log out: end this web session", session_may_write=True,
          answers={200: models.SessionAnswer, **_ERRORS}),
)


def create_app(store: DsoStore, clock: Clock, config: PlannerConfig | None = None, *,
               session_ttl: timedelta = timedelta(hours=8), secure_cookie: bool = False) -> web.Application:
    """The operator API over ``store``; ``clock`` dates every change and decides what is past; ``config``
    gives the time zone and thresholds of the capacity-management views (defaults when None).
    ``secure_cookie``: the API runs TLS, so the session cookie is Secure (and __Host- prefixed)."""
    from dso_server.api.openapi import build_document

    app = web.Application(middlewares=[_errors, auth.create_guard(store, clock)], client_max_size=MAX_BODY_BYTES)
    app[STORE] = store
    app[CLOCK] = clock
    app[PLANNER] = config if config is not None else PlannerConfig()
    app[auth.SESSION_TTL] = session_ttl
    app[auth.SECURE_COOKIE] = secure_cookie
    routes = (*ROUTES, *page_routes())
    app[auth.ROUTES] = {(route.method, route.path): route for route in routes}
    app[DOCUMENT] = build_document(ROUTES)
    app.add_routes([web.get(route.path, route.handler) if route.method == "GET"
                    else web.route(route.method, route.path, route.handler) for route in routes])
    return app
