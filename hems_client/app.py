"""One household's HEMS: the VEN transport and the controller loop wired together on one clock.

Usable from the CLI, from the demo (many ``HemsApp`` in the same event loop as the DSO server) and from tests::

    app = HemsApp(contract, household, clock, vtn_url)
    await app.start(until=end)      # VEN registers; the controller runs in the background
    await app.finished()            # the controller reached ``until``
    await app.stop()                # flush the outbox, stop polling, close the HTTP session
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from hems_client.controller import Controller
from hems_client.devices.household import Household
from hems_client.kpi import KpiTracker
from hems_client.planning import Planner
from hems_client.signal_book import DEFAULT_PRICES, DefaultPrices, SignalBook
from hems_client.ven import HemsVen
from protocol.clock import Clock
from protocol.contract import HouseholdContract
from protocol.timebase import INTERVALS_PER_DAY


@dataclass(frozen=True)
class VenSecurity:
    """TLS and XML-signature material for the VEN (all optional; plain HTTP without them)."""

    cert: str | None = None
    key: str | None = None
    passphrase: str | None = None
    vtn_fingerprint: str | None = None
    ca_file: str | None = None
    check_hostname: bool = True


_NO_SECURITY = VenSecurity()


class HemsApp:
    def __init__(
        self,
        contract: HouseholdContract,
        household: Household,
        clock: Clock,
        vtn_url: str,
        planner: Planner | None = None,
        *,
        substep_s: float = 60.0,
        poll_interval_s: float | None = None,
        horizon_intervals: int = INTERVALS_PER_DAY,
        default_prices: DefaultPrices = DEFAULT_PRICES,
        security: VenSecurity = _NO_SECURITY,
    ) -> None:
        self.contract = contract
        self.household = household
        self.clock = clock
        self.signal_book = SignalBook()
        self.controller = Controller(
            contract=contract, household=household, clock=clock, signal_book=self.signal_book, planner=planner,
            kpi=KpiTracker(timezone=contract.comfort.timezone), substep_s=substep_s,
            horizon_intervals=horizon_intervals, default_prices=default_prices,
        )
        self.ven = HemsVen(
            contract=contract, vtn_url=vtn_url, clock=clock, signal_book=self.signal_book,
            on_signals_changed=self.controller.signals_changed, poll_interval_s=poll_interval_s,
            cert=security.cert, key=security.key, passphrase=security.passphrase,
            vtn_fingerprint=security.vtn_fingerprint, ca_file=security.ca_file,
            check_hostname=security.check_hostname,
        )
        self.controller.reporter = self.ven
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

    async def __aenter__(self) -> HemsApp:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.stop()
