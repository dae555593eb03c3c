"""The DSO server as one object: store, VTN and operator API, started in order and stopped in reverse.

Usable from tests and from the demo in the caller's event loop::

    settings = DsoSettings(db_path="dso.sqlite", vtn_port=0, api_port=0, cert=Path("pki/vtn.crt"),
                           key=Path("pki/vtn.key"), ca_file=Path("pki/ca.crt"))  # or insecure=True on loopback
    async with DsoServer(settings, clock) as dso:
        print(dso.vtn_url, dso.api_url)   # port 0 = a free port, read back from the bound socket
        ...

Start-up: open the store, load the contracts file and the grid file into it, serve the VTN, serve the API,
start the planning loop. Shut-down: the planning loop, the API, then the VTN (no new messages reach the store),
then the store. When start-up fails half-way, what was already started is stopped again.

The planning loop (``dso_server.capacity.planner``) runs on the server's clock: the day-ahead firm allocation at
``day_ahead_time`` for the next local day (and at once for a day that has none), the non-firm allocation every
``near_real_time_interval_s``. It starts only when the store holds a grid at start-up (settings ``grid_path``,
or ``dso-server grid load`` before ``serve``); without one the server only relays what the operator publishes,
as before. A grid loaded again while the server runs replaces the old one at the next run.

Where the planner runs: in a worker thread with a store connection of its own, so forecasts, allocations and
power flows never hold up the event loop that answers the VENs. Several servers may share one database (VTN
workers on PostgreSQL): the planner runs only in the one that holds the store's ``planner`` lock (a PostgreSQL
advisory lock on the planner's connection, a file lock beside a SQLite file), which the database releases when
that server dies; the others try again every ``PLANNER_LOCK_RETRY_S``. A run that fails is recorded in the store
as a failed allocation run (``GET /api/allocation-runs``) with the error, and the loop carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import socket
import ssl
import time
from collections.abc import Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from dso_server import metrics
from dso_server.api.app import create_app
from dso_server.capacity.forecast import day_intervals
from dso_server.capacity.grid import load_grid
from dso_server.capacity.planner import (
    FIRM,
    NON_FIRM,
    PlannerConfig,
    days_due,
    next_day_ahead_run,
    run_day_ahead,
    run_near_real_time,
)
from dso_server.capacity.powerflow import FeederModel
from dso_server.contracts import load_contracts
from dso_server.errors import ConfigurationError, StoreError
from dso_server.records import Publication, Signal, SignalPayload
from dso_server.retention import RETENTION_CHECK_S, retention_cutoff
from dso_server.security.audit import local_actor
from dso_server.security.slow_clients import BoundedSockSite, BoundedTCPSite, SlowClientGuard
from dso_server.security.tls import VtnTls
from dso_server.security.tokens import Role
from dso_server.settings import DsoSettings, is_loopback
from dso_server.store import audited
from dso_server.store.engine import redact
from dso_server.store.grid_store import GridConflict, GridStore
from dso_server.store.performance_store import PerformanceStore
from dso_server.store.security_store import SecurityStore
from dso_server.store.sqlite import DsoStore
from dso_server.transport.oadr20b.vtn import DsoVtn
from protocol.clock import Clock, WallClock, speed_of
from protocol.timebase import INTERVAL, floor_to_interval

logger = logging.getLogger(__name__)

NEED_POLL_S = 60.0
"""While a catch-up firm run waits for needs, the planner looks again this often (server clock seconds)."""


_T = TypeVar("_T")
PLANNER_LOCK = "planner"
PLANNER_LOCK_RETRY_S = 60.0
"""How often (server clock seconds, at most the non-firm interval) a server without the planner lock tries again."""
_servers = itertools.count(1)


@dataclass(frozen=True)
class Listeners:
    """Bound, listening sockets to serve on instead of binding ``vtn_host:vtn_port`` and ``api_host:api_port``:
    the VTN workers of ``dso-server serve --workers N`` share the sockets their supervisor opened."""

    vtn: socket.socket
    api: socket.socket


async def _serve(app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
                 sock: socket.socket | None = None, *, name: str) -> tuple[web.AppRunner, int, SlowClientGuard]:
    """Serve ``app`` on host:port (or on ``sock``) with a runner of our own, connections that send no complete
    request closed after a while (``SlowClientGuard``); returns the runner, the port and the guard (to cancel)."""
    guard = SlowClientGuard(name)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site: web.BaseSite = (BoundedSockSite(runner, sock, ssl_context=ssl_context) if sock is not None
                              else BoundedTCPSite(runner, host=host, port=port, ssl_context=ssl_context))
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    guard.start(runner)
    address = runner.addresses[0]
    return runner, int(address[1]), guard


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _BadRequestsInOneLine(logging.Filter):
    """aiohttp logs a traceback for every malformed HTTP request it answers with 400 (a NUL in a header, a broken
    request line): one line is enough, and a hostile client cannot fill the log with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            error = record.exc_info[1]
            record.msg = "Refused a malformed HTTP request (%s %s)"
            record.args = (error.code, str(error.message).splitlines()[0] if error.message else "")
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


_BAD_REQUESTS = _BadRequestsInOneLine()


def _url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def api_ssl_context(settings: DsoSettings) -> ssl.SSLContext | None:
    """TLS 1.2+ for the operator API when it has a certificate; client certificates optional (``api_client_ca``):
    the guard accepts one only when it is registered as a credential, and falls back to bearer tokens."""
    if settings.api_cert is None or settings.api_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.api_cert, settings.api_key)
        if settings.api_client_ca is not None:
            context.load_verify_locations(cafile=settings.api_client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL
    except (ssl.SSLError, OSError, ValueError) as error:
        raise ConfigurationError(f"Cannot serve the operator API over TLS with {settings.api_cert} and "
                                 f"{settings.api_key}: {error}", field="api_cert") from None
    return context


def run_event_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run``, on uvloop where it is installed (Linux, macOS): the same asyncio API on libuv, with a
    faster TLS layer and I/O loop, which the VTN's throughput per core gains from (``bench/vtn_load.py``).

    What was loaded before (modules, openleadr's templates, pydantic's validators: hundreds of thousands of
    objects that live as long as the process) is moved out of the cyclic garbage collector's view
    (``gc.freeze``): a profile of the VTN at 2,000 VENs polling showed about a tenth of its time in full
    collections scanning them again and again. Reference counting still frees everything; only the scans of
    objects that cannot become garbage are saved. For the same reason the youngest generation is collected
    after 50,000 net allocations instead of 700: a request allocates hundreds of short-lived containers, so the
    default ran a collection every few requests and promoted live request state towards the full collections
    (at 2,000 VENs: 20-25 % less CPU per poll; garbage cycles wait a little longer, a few MB at most)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def prepare_store(store: DsoStore, settings: DsoSettings, now: datetime) -> None:
    """Load the contracts file and the grid file of ``settings`` into the store (once per start, before serving),
    audited as the local user who started the server."""
    starter = local_actor("serve")
    if settings.contracts_file is not None:
        households = load_contracts(settings.contracts_file)
        audited.put_households(store, households, now=now, actor=starter)
        logger.info("Loaded %d household(s) from %s", len(households), settings.contracts_file)
    if settings.grid_path is not None:
        try:
            saved = audited.save_grid(store, load_grid(settings.grid_path), now=now, source=str(settings.grid_path),
                                      actor=starter)
        except (ValueError, GridConflict) as error:
            raise ConfigurationError(f"grid {settings.grid_path}: {error}", field="grid_path") from None
        logger.info("Loaded grid %s: %s; %d new household(s)", settings.grid_path, saved.grid.summary(),
                    len(saved.created_households))


@dataclass
class _PlannerState:
    """What the planning loop keeps between runs (only ever touched by the planner's thread)."""

    next_nrt: datetime | None = None
    models: dict[str, FeederModel] = field(default_factory=dict)
    grid_key: Any = None
    grace_until: datetime | None = None
    """Until then a firm run that catches up after a start waits for the performance households' capacity needs."""


class DsoServer:
    def __init__(self, settings: DsoSettings, clock: Clock | None = None, *, listeners: Listeners | None = None,
                 load_files: bool = True) -> None:
        """``listeners``: serve on these sockets (a worker of a supervisor); ``load_files``: load the settings'
        contracts and grid files at start (a supervisor does that once for its workers instead)."""
        self.settings = settings
        self.clock: Clock = clock if clock is not None else WallClock()
        self.listeners = listeners
        self.load_files = load_files
        self.origin = f"{socket.gethostname()}:{os.getpid()}/{next(_servers)}"
        """This server as a writer of the store (allocation runs, change log): host:pid/instance."""
        self.planner_active = False
        """Whether this server holds the planner lock (and so runs the allocation)."""
        self._store: DsoStore | None = None
        self._vtn: DsoVtn | None = None
        self._vtn_port: int | None = None
        self._api_port: int | None = None
        self._stack: AsyncExitStack | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._stack is not None:
            raise RuntimeError("this DsoServer is already running")
        settings = self.settings
        logging.getLogger("aiohttp.server").addFilter(_BAD_REQUESTS)  # once: the same filter object is kept once
        stack = AsyncExitStack()
        try:
            store = DsoStore(settings.db_path, origin=self.origin)
            stack.callback(store.close)
            if self.load_files:
                prepare_store(store, settings, self.clock.now())
            tls = None
            if not settings.insecure:
                assert settings.cert is not None and settings.key is not None and settings.ca_file is not None
                tls = VtnTls(cert=settings.cert, key=settings.key, ca_file=settings.ca_file,
                             passphrase=settings.key_passphrase_text).server_context()
            vtn = DsoVtn(store=store, clock=self.clock, vtn_id=settings.vtn_id,
                         poll_interval_s=settings.poll_interval_s, http_path_prefix=settings.http_path_prefix,
                         cert=settings.cert if settings.sign_messages else None,
                         key=settings.key if settings.sign_messages else None, passphrase=settings.key_passphrase_text,
                         max_message_bytes=settings.max_message_bytes, client_certificates=tls is not None,
                         require_signatures=settings.sign_messages)
            if vtn.batcher.store.db is not store.db:
                stack.callback(vtn.batcher.store.close)
            stack.push_async_callback(vtn.batcher.close)  # what the VTN submitted is written before the close
            liveness = asyncio.create_task(vtn.liveness.run(), name="dso-liveness")
            stack.push_async_callback(_cancel, liveness)  # after the VTN stopped serving: a last flush
            listeners = self.listeners
            vtn_runner, self._vtn_port, vtn_guard = await _serve(
                vtn.app, settings.vtn_host, settings.vtn_port, tls, sock=listeners.vtn if listeners else None,
                name="VTN")
            stack.callback(vtn_guard.cancel)  # after the runner's cleanup; no await of its own in the shutdown
            stack.push_async_callback(vtn_runner.cleanup)
            api_app = create_app(store, self.clock, settings.planner_config(),
                                 session_ttl=timedelta(seconds=settings.api_session_ttl_s),
                                 secure_cookie=settings.api_tls)
            api_runner, self._api_port, api_guard = await _serve(api_app, settings.api_host, settings.api_port,
                                                                 api_ssl_context(settings),
                                                                 sock=listeners.api if listeners else None,
                                                                 name="Operator API")
            stack.callback(api_guard.cancel)
            stack.push_async_callback(api_runner.cleanup)
            if GridStore(store).grid() is not None:
                # Non-firm changes keep one VEN poll period of lead time (in the server clock's seconds) unless
                # the operator set one.
                config = settings.planner_config()
                if config.lead_time_s is None:
                    config = config.model_copy(update={
                        "lead_time_s": settings.poll_interval_s * speed_of(self.clock)})
                planning = asyncio.create_task(self._plan(store, config), name="dso-planning")
                stack.push_async_callback(_cancel, planning)
            housekeeping = asyncio.create_task(self._keep(store), name="dso-retention")
            stack.push_async_callback(_cancel, housekeeping)
        except BaseException:
            await stack.aclose()
            self._vtn_port = self._api_port = None
            raise
        self._store, self._vtn, self._stack = store, vtn, stack
        if not settings.api_tls and not is_loopback(settings.api_host):
            logger.warning("INSECURE: the operator API listens on %s over plain HTTP; bearer tokens and session "
                           "cookies cross the network in clear text. Give it --api-cert/--api-key.", self.api_url)
        logger.info("DSO VTN %s at %s; operator API at %s; store %s", settings.vtn_id, self.vtn_url, self.api_url,
                    redact(settings.db_path))
        if settings.insecure:
            logger.warning("PLAIN HTTP: the VTN at %s has no TLS and no client certificates, so any process that "
                           "reaches it can act as any household. For a demo or tests on loopback only.", self.vtn_url)
        if vtn.fingerprint:
            logger.info("Outgoing OpenADR messages are signed; VTN certificate fingerprint %s", vtn.fingerprint)

    async def stop(self) -> None:
        """Stop the API, then the VTN, then close the store. Safe to call twice."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._store = self._vtn = None
        self._vtn_port = self._api_port = None

    async def __aenter__(self) -> DsoServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.stop()

    # ----------------------------------------------------------------------------------------- planning

    async def _plan(self, store: DsoStore, config: PlannerConfig) -> None:
        """Day-ahead and near-real-time allocation on the server's clock, while a grid is loaded and this server
        holds the planner lock. The runs themselves execute in a thread with the planner's own connection."""
        planner_store = store.reopen()
        state = _PlannerState(grace_until=self.clock.now() + timedelta(seconds=config.need_grace_s))
        retry_s = min(PLANNER_LOCK_RETRY_S, config.near_real_time_interval_s)
        try:
            while True:
                now = self.clock.now()
                if not self.planner_active:
                    try:
                        self.planner_active = await asyncio.to_thread(planner_store.db.try_lock, PLANNER_LOCK)
                    except StoreError as error:
                        logger.warning("Cannot take the planner lock: %s", error)
                    if self.planner_active:
                        metrics.PLANNER_ACTIVE.inc()
                        logger.info("This server (%s) runs the planner", self.origin)
                wake = now + timedelta(seconds=retry_s)
                if self.planner_active:
                    run = asyncio.ensure_future(asyncio.to_thread(self._plan_once, planner_store, config, state, now))
                    try:
                        wake = await asyncio.shield(run)
                    except asyncio.CancelledError:
                        # Stopping: let the run in its thread finish before its connection is closed.
                        with contextlib.suppress(Exception):
                            await run
                        raise
                    except StoreError as error:
                        # The connection (and with it a PostgreSQL lock) may be gone: take the lock anew.
                        logger.error("Planner lost the store: %s; it will try to take the planner lock again", error)
                        with contextlib.suppress(StoreError):
                            planner_store.db.unlock(PLANNER_LOCK)
                        self.planner_active = False
                        metrics.PLANNER_ACTIVE.dec()
                await self.clock.sleep(max((wake - self.clock.now()).total_seconds(), 0.001))
        finally:
            if self.planner_active:
                metrics.PLANNER_ACTIVE.dec()
            self.planner_active = False
            with contextlib.suppress(StoreError):
                planner_store.db.unlock(PLANNER_LOCK)
            if planner_store.db is not store.db:
                planner_store.close()

    def _plan_once(self, store: DsoStore, config: PlannerConfig, state: _PlannerState, now: datetime) -> datetime:
        """The runs due at ``now`` (in the planner's thread); when to look again."""
        gstore = GridStore(store)
        grid = gstore.grid()
        if grid is not None:
            source = gstore.grid_source()
            if state.grid_key != source or state.grid_key is None:
                state.models, state.grid_key = {}, source  # a new grid: rebuild the power-flow models
            waiting = False
            for day in days_due(now, config):
                run = self._guarded(gstore, FIRM, day, now, config, lambda d=day: run_day_ahead(
                    store, grid, day=d, now=now, config=config, models=state.models,
                    wait_for_needs_until=state.grace_until))
                waiting |= (run is None and state.grace_until is not None and now < state.grace_until
                            and not gstore.runs(kind=FIRM, day=day.isoformat(), status="ok", limit=1))
            if state.next_nrt is None or now >= state.next_nrt:
                self._guarded(gstore, NON_FIRM, None, now, config, lambda: run_near_real_time(
                    store, grid, now=now, config=config, models=state.models))
                state.next_nrt = now + timedelta(seconds=config.near_real_time_interval_s)
            if waiting and state.grace_until is not None:  # a catch-up run waits for needs: look again soon
                return min(state.next_nrt or now + timedelta(seconds=config.near_real_time_interval_s),
                           next_day_ahead_run(now + timedelta(microseconds=1), config),
                           now + timedelta(seconds=NEED_POLL_S), state.grace_until)
        next_nrt = state.next_nrt or now + timedelta(seconds=config.near_real_time_interval_s)
        return min(next_nrt, next_day_ahead_run(now + timedelta(microseconds=1), config))

    @staticmethod
    def _guarded(gstore: GridStore, kind: str, day: date | None, now: datetime, config: PlannerConfig,
                 run: Any) -> Any:
        """Run one allocation and return what it returned; a failure is recorded in the store as a failed run (and
        logged), never lost (None then)."""
        began = time.perf_counter()
        try:
            done = run()
        except StoreError:
            metrics.PLANNER_RUNS.labels(kind, "failed").inc()
            raise
        except Exception as error:
            metrics.PLANNER_RUNS.labels(kind, "failed").inc()
            metrics.PLANNER_SECONDS.labels(kind).observe(time.perf_counter() - began)
            logger.exception("Capacity allocation run (%s) at %s failed", kind, now.isoformat())
            if day is not None:
                starts = day_intervals(day, config.timezone)
                window = (starts[0], starts[-1] + INTERVAL)
            else:
                first = floor_to_interval(now) + INTERVAL
                window = (first, first + config.non_firm_horizon_intervals * INTERVAL)
            gstore.record_run(kind=kind, day=day.isoformat() if day else None, window_start=window[0],
                              window_end=window[1], publication_id=None, now=now, summary={},
                              error=f"{type(error).__name__}: {error}"[:2000])
            return None
        if done is not None:  # None: nothing was due (the day has its firm run already)
            metrics.PLANNER_RUNS.labels(kind, "ok").inc()
            metrics.PLANNER_SECONDS.labels(kind).observe(time.perf_counter() - began)
        return done

    async def _keep(self, store: DsoStore) -> None:
        """Retention on the server's clock: delete what households sent that is past ``retention_months``."""
        while True:
            now = self.clock.now()
            try:
                cutoff = retention_cutoff(now, months=self.settings.retention_months, timezone=self.settings.timezone)
                deleted = PerformanceStore(store).delete_before(cutoff)
                if deleted:
                    logger.info("Retention: deleted what households sent before %s: %s", cutoff.isoformat(), deleted)
            except Exception:
                logger.exception("Retention run at %s failed", now.isoformat())
            # Waited on the wall clock scaled to the server's clock, not with clock.sleep: housekeeping must not move a
            # ManualClock (which moves when slept on) under the tests that drive it.
            await asyncio.sleep(RETENTION_CHECK_S / speed_of(self.clock))

    # ------------------------------------------------------------------- publishing from Python (the demo)

    def publish(self, payload: SignalPayload | Mapping[str, SignalPayload], *,
                connection_point_ids: Sequence[str] = (), group: str | None = None,
                actor: str | None = None) -> Publication:
        """Publish one payload to households (by id or group), or a mapping of connection point id -> payload.
        The VENs receive it at their next poll. Dated by the server's clock; audited as ``actor`` (by default
        ``local:<os user>``: whoever runs this program)."""
        if isinstance(payload, Mapping):
            if connection_point_ids or group is not None:
                raise ValueError("a payload per connection point names its households already")
            payloads = dict(payload)
        else:
            if bool(connection_point_ids) == (group is not None):
                raise ValueError("name the households: connection_point_ids or group, not both")
            ids = self.store.group_members(group) if group is not None else list(connection_point_ids)
            payloads = dict.fromkeys(ids, payload)
        return audited.publish(self.store, payloads, now=self.clock.now(), actor=actor or local_actor(),
                               group=group)

    def modify(self, event_id: str, payload: SignalPayload, *, actor: str | None = None) -> Signal:
        """Replace what an event says (modification number + 1)."""
        return audited.modify_signal(self.store, event_id, payload, now=self.clock.now(),
                                     actor=actor or local_actor())

    def cancel(self, event_id: str, *, actor: str | None = None) -> Signal:
        """Cancel an event (modification number + 1)."""
        return audited.cancel_signal(self.store, event_id, now=self.clock.now(), actor=actor or local_actor())

    # ------------------------------------------------------------------------------------------ accessors

    def _running(self) -> tuple[DsoStore, DsoVtn, int, int]:
        if self._store is None or self._vtn is None or self._vtn_port is None or self._api_port is None:
            raise RuntimeError("the DsoServer is not running; use 'async with DsoServer(...)' or await start()")
        return self._store, self._vtn, self._vtn_port, self._api_port

    @property
    def store(self) -> DsoStore:
        return self._running()[0]

    @property
    def vtn(self) -> DsoVtn:
        return self._running()[1]

    @property
    def vtn_port(self) -> int:
        """The port the VTN listens on (the one picked when the settings said 0)."""
        return self._running()[2]

    @property
    def api_port(self) -> int:
        return self._running()[3]

    @property
    def vtn_url(self) -> str:
        """What a VEN uses as ``vtn_url``, e.g. https://127.0.0.1:8080/OpenADR2/Simple/2.0b (http:// when insecure)."""
        _, vtn, port, _ = self._running()
        scheme = "http" if self.settings.insecure else "https"
        return _url(self.settings.vtn_host, port, scheme) + vtn.http_path_prefix

    @property
    def api_url(self) -> str:
        """Base of the operator API, e.g. http://127.0.0.1:8081 (endpoints under /api/; https with api_cert)."""
        return _url(self.settings.api_host, self._running()[3], "https" if self.settings.api_tls else "http")

    def create_token(self, name: str, role: Role = Role.OPERATE, *, actor: str | None = None) -> str:
        """A new API token of ``role`` (what ``dso-server token create`` does), for the demo and the tests."""
        _, secret = SecurityStore(self.store).create_token(name, role, now=self.clock.now(),
                                                           actor=actor or local_actor())
        assert secret is not None
        return secret
