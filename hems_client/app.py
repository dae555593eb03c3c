"""One household's HEMS: the VEN transport and the controller loop wired together on one clock.

Usable from the CLI, from the demo (many ``HemsApp`` in the same event loop as the DSO server) and from tests::

    app = HemsApp(contract, household, clock, vtn_url, store="hems.db")
    await app.start(until=end)      # VEN registers; the controller runs in the background
    await app.finished()            # the controller reached ``until``
    await app.stop()                # flush the outbox, stop polling, close the HTTP session and the store

Planner: the convex optimiser (``OptimiserPlanner``) unless another is given.

Failsafe and polling: the VEN polls on wall time while the controller and the failsafe run on the clock, which
may be accelerated. ``failsafe_after_s`` (clock seconds, default 120) must exceed the poll period in clock time,
or every gap between two polls looks like a lost link: at speed 600 a 0.1 s wall poll is 60 clock seconds.
An explicit ``poll_interval_s`` that breaks this is refused (for a ``WallClock`` or an ``AcceleratedClock``);
without one, the VTN's requested poll frequency is capped at a third of ``failsafe_after_s`` in clock time.
A loop kept busy (many households planning in one process) delays polls by many clock seconds; the failsafe
counts silence only once an attempt since the last contact has failed, so that is not taken for a lost VTN,
and then engages exactly ``failsafe_after_s`` after the last contact (``hems_client.control.failsafe``).
``failsafe_after_s=None`` runs without failsafe.

Store: a path (or ':memory:') or a ``HemsStore``; a restarted app on the same store resumes with the stored
signals and failsafe state, so the limits in force before the restart hold before any new contact.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from hems_client.control.controller import DEFAULT_SETTINGS, Controller
from hems_client.control.planning import Planner
from hems_client.control.signal_book import SignalBook
from hems_client.devices.household import Household
from hems_client.kpi import KpiTracker
from hems_client.settings import ControllerSettings, check_poll_against_failsafe
from hems_client.store import HemsStore
from hems_client.transport.oadr20b.openleadr_adapter import VenTls
from hems_client.transport.oadr20b.ven import HemsVen
from protocol.clock import AcceleratedClock, Clock, WallClock
from protocol.contract import HouseholdContract

__all__ = ["HemsApp", "VenSecurity", "check_poll_against_failsafe", "clock_speed"]


@dataclass(frozen=True)
class VenSecurity:
    """The VEN's certificate and key, the CA the VTN's certificate must chain to, and XML-signature options.
    Secure by default: without cert, key and ca_file the VEN refuses to run unless ``insecure`` (plain HTTP to a
    VTN on loopback)."""

    cert: str | None = None
    key: str | None = None
    passphrase: str | None = None
    vtn_fingerprint: str | None = None
    """OpenADR fingerprint of the VTN's signing certificate: every answer must then be signed by it."""
    ca_file: str | None = None
    check_hostname: bool = True
    insecure: bool = False
    sign_messages: bool = False
    """Sign outgoing messages with cert/key (XML signatures, ReplayProtect)."""

    def tls(self) -> VenTls | None:
        given = [name for name in ("cert", "key", "ca_file") if getattr(self, name)]
        if not given:
            return None
        if len(given) < 3:
            missing = [name for name in ("cert", "key", "ca_file") if name not in given]
            raise ValueError(f"TLS needs cert, key and ca_file together; {', '.join(missing)} missing")
        assert self.cert and self.key and self.ca_file
        return VenTls(cert=Path(self.cert), key=Path(self.key), ca_file=Path(self.ca_file),
                      passphrase=self.passphrase, check_hostname=self.check_hostname)


_SECURE = VenSecurity()


def clock_speed(clock: Clock) -> float | None:
    """Clock seconds per wall second, where the clock says (None for a manual clock)."""
    if isinstance(clock, AcceleratedClock):
        return clock.speed
    if isinstance(clock, WallClock):
        return 1.0
    return None


class HemsApp:
    def __init__(
        self,
        contract: HouseholdContract,
        household: Household,
        clock: Clock,
        vtn_url: str,
        planner: Planner | None = None,
        *,
        settings: ControllerSettings = DEFAULT_SETTINGS,
        poll_interval_s: float | None = None,
        security: VenSecurity = _SECURE,
        store: HemsStore | str | Path | None = None,
    ) -> None:
        """``settings``: how the controller runs (a ``HemsSettings`` is one); ``poll_interval_s``: wall seconds
        between polls (None: the VTN's requested frequency, capped as above)."""
        failsafe_after_s = settings.failsafe_after_s
        speed = clock_speed(clock)
        max_poll_s = None
        if failsafe_after_s is not None and speed is not None:
            if poll_interval_s is not None:
                check_poll_against_failsafe(poll_interval_s=poll_interval_s, speed=speed,
                                            failsafe_after_s=failsafe_after_s)
            max_poll_s = failsafe_after_s / (3 * speed)
        self.contract = contract
        self.household = household
        self.clock = clock
        self._owns_store = store is not None and not isinstance(store, HemsStore)
        self.store = HemsStore(store) if store is not None and not isinstance(store, HemsStore) else store
        try:
            self.controller = Controller(
                contract=contract, household=household, clock=clock, planner=planner, store=self.store,
                kpi=KpiTracker(timezone=contract.comfort.timezone), settings=settings,
            )
            self.signal_book: SignalBook = self.controller.signal_book
            self.ven = HemsVen(
                contract=contract, vtn_url=vtn_url, clock=clock, signal_book=self.signal_book,
                on_signals_changed=self.controller.signals_changed, poll_interval_s=poll_interval_s,
                max_poll_interval_s=max_poll_s, tls=security.tls(), insecure=security.insecure,
                sign_messages=security.sign_messages, vtn_fingerprint=security.vtn_fingerprint,
                sent_log=self._log_sent if self.store is not None else None,
            )
        except Exception:
            self._close_store()
            raise
        self.controller.reporter = self.ven
        # The failsafe watches the VEN's contact; wired after construction, before the loop reads it.
        self.controller.link = self.ven
        self._task: asyncio.Task[None] | None = None

    @property
    def kpi(self) -> KpiTracker:
        return self.controller.kpi

    async def start(self, until: datetime | None = None) -> None:
        """Register at the VTN (one attempt; polling keeps retrying) and run the controller until ``until``
        (clock time) or until ``stop()``."""
        if self._task is not None:
            raise RuntimeError("HemsApp already started")
        await self.ven.run()
        self._task = asyncio.get_running_loop().create_task(self.controller.run(until=until))

    async def finished(self) -> None:
        """Wait until the controller has reached ``until``; re-raises what stopped it early."""
        if self._task is None:
            raise RuntimeError("HemsApp not started")
        await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Deliver what is queued (a few wall seconds at most), then stop the controller and the VEN."""
        if self._task is not None:
            if not self._task.done():
                await self.controller.flush()
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.ven.stop()
        self._close_store()

    def _log_sent(self, sent_at: datetime, service: str, message_type: str, answered: bool, xml: str) -> None:
        """What the VEN sent, into the store (``hems-client data export`` reads it back)."""
        if self.store is not None:
            self.store.log_message(sent_at=sent_at, service=service, message_type=message_type, delivered=answered,
                                   xml=xml)

    def _close_store(self) -> None:
        if self._owns_store and self.store is not None:
            self.store.close()
            self.store = None

    async def __aenter__(self) -> HemsApp:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.stop()
