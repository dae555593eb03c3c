"""The DSO server as one object: store, VTN and operator API, started in order and stopped in reverse.

Usable from tests and from the demo in the caller's event loop::

    async with DsoServer(DsoSettings(db_path="dso.sqlite", vtn_port=0, api_port=0), clock) as dso:
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from types import TracebackType

from aiohttp import web

from dso_server.api.app import create_app
from dso_server.capacity.grid import load_grid
from dso_server.capacity.planner import PlannerConfig, days_due, next_day_ahead_run, run_day_ahead, run_near_real_time
from dso_server.capacity.powerflow import FeederModel
from dso_server.contracts import load_contracts
from dso_server.errors import ConfigurationError
from dso_server.records import Publication, Signal, SignalPayload
from dso_server.settings import DsoSettings
from dso_server.store.engine import redact
from dso_server.store.grid_store import GridConflict, GridStore
from dso_server.store.sqlite import DsoStore
from dso_server.transport.oadr20b.vtn import DsoVtn
from protocol.clock import Clock, WallClock

logger = logging.getLogger(__name__)


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port with a runner of our own; returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host=host, port=port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    address = runner.addresses[0]
    return runner, int(address[1])


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class DsoServer:
    def __init__(self, settings: DsoSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock if clock is not None else WallClock()
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
        stack = AsyncExitStack()
        try:
            store = DsoStore(settings.db_path)
            stack.callback(store.close)
            if settings.contracts_file is not None:
                households = load_contracts(settings.contracts_file)
                store.put_households(households, now=self.clock.now())
                logger.info("Loaded %d household(s) from %s", len(households), settings.contracts_file)
            if settings.grid_path is not None:
                try:
                    saved = GridStore(store).save_grid(load_grid(settings.grid_path), now=self.clock.now(),
                                                       source=str(settings.grid_path))
                except (ValueError, GridConflict) as error:
                    raise ConfigurationError(f"grid {settings.grid_path}: {error}", field="grid_path") from None
                logger.info("Loaded grid %s: %s; %d new household(s)", settings.grid_path, saved.grid.summary(),
                            len(saved.created_households))
            vtn = DsoVtn(store=store, clock=self.clock, vtn_id=settings.vtn_id,
                         poll_interval_s=settings.poll_interval_s, http_path_prefix=settings.http_path_prefix,
                         cert=settings.cert, key=settings.key, passphrase=settings.passphrase)
            vtn_runner, self._vtn_port = await _serve(vtn.app, settings.vtn_host, settings.vtn_port)
            stack.push_async_callback(vtn_runner.cleanup)
            api_runner, self._api_port = await _serve(create_app(store, self.clock, settings.planner_config()),
                                                      settings.api_host, settings.api_port)
            stack.push_async_callback(api_runner.cleanup)
            if GridStore(store).grid() is not None:
                planning = asyncio.create_task(self._plan(store, settings.planner_config()), name="dso-planning")
                stack.push_async_callback(_cancel, planning)
        except BaseException:
            await stack.aclose()
            self._vtn_port = self._api_port = None
            raise
        self._store, self._vtn, self._stack = store, vtn, stack
        logger.info("DSO VTN %s at %s; operator API at %s; store %s", settings.vtn_id, self.vtn_url, self.api_url,
                    redact(settings.db_path))
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
        """Day-ahead and near-real-time allocation on the server's clock, while a grid is loaded."""
        next_nrt: datetime | None = None
        models: dict[str, FeederModel] = {}
        grid_key: object = None
        while True:
            now = self.clock.now()
            try:
                gstore = GridStore(store)
                grid = gstore.grid()
                if grid is not None:
                    if grid_key != gstore.grid_source() or grid_key is None:
                        models, grid_key = {}, gstore.grid_source()  # a new grid: rebuild the power-flow models
                    for day in days_due(now, config):
                        run_day_ahead(store, grid, day=day, now=now, config=config, models=models)
                    if next_nrt is None or now >= next_nrt:
                        run_near_real_time(store, grid, now=now, config=config, models=models)
                        next_nrt = now + timedelta(seconds=config.near_real_time_interval_s)
            except Exception:
                # A failed run must not stop the VTN serving; the next run starts from the store again.
                logger.exception("Capacity allocation run at %s failed", now.isoformat())
                next_nrt = now + timedelta(seconds=config.near_real_time_interval_s)
            wake = min(next_nrt or now + timedelta(seconds=config.near_real_time_interval_s),
                       next_day_ahead_run(now + timedelta(microseconds=1), config))
            await self.clock.sleep(max((wake - self.clock.now()).total_seconds(), 0.001))

    # ------------------------------------------------------------------- publishing from Python (the demo)

    def publish(self, payload: SignalPayload | Mapping[str, SignalPayload], *,
                connection_point_ids: Sequence[str] = (), group: str | None = None) -> Publication:
        """Publish one payload to households (by id or group), or a mapping of connection point id -> payload.
        The VENs receive it at their next poll. Dated by the server's clock."""
        if isinstance(payload, Mapping):
            if connection_point_ids or group is not None:
                raise ValueError("a payload per connection point names its households already")
            payloads = dict(payload)
        else:
            if bool(connection_point_ids) == (group is not None):
                raise ValueError("name the households: connection_point_ids or group, not both")
            ids = self.store.group_members(group) if group is not None else list(connection_point_ids)
            payloads = dict.fromkeys(ids, payload)
        return self.store.publish(payloads, now=self.clock.now())

    def modify(self, event_id: str, payload: SignalPayload) -> Signal:
        """Replace what an event says (modification number + 1)."""
        return self.store.modify_signal(event_id, payload, now=self.clock.now())

    def cancel(self, event_id: str) -> Signal:
        """Cancel an event (modification number + 1)."""
        return self.store.cancel_signal(event_id, now=self.clock.now())

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
        """What a VEN uses as ``vtn_url``, e.g. http://127.0.0.1:8080/OpenADR2/Simple/2.0b."""
        _, vtn, port, _ = self._running()
        return _url(self.settings.vtn_host, port) + vtn.http_path_prefix

    @property
    def api_url(self) -> str:
        """Base of the operator API, e.g. http://127.0.0.1:8081 (endpoints under /api/)."""
        return _url(self.settings.api_host, self._running()[3])
