"""``dso-server serve --workers N``: N VTN worker processes on one machine, sharing one store and two sockets.

The supervisor (this process) opens the store once (creating or migrating it) and loads the contracts and grid
files into it, binds the VTN and operator API sockets, and forks N workers. Each worker is a full ``DsoServer``
(VTN, operator API, a planning loop) serving on the inherited sockets with a store connection of its own; the
kernel hands each new connection to one of them. What the workers share lives in the store: registrations,
events, deliveries and responses; each worker learns of changes made elsewhere from the store's change log before
it answers a poll; only the worker holding the store's planner lock runs the allocation (``service``).

Any number of ``dso-server serve`` processes on several machines can share one PostgreSQL database the same way,
behind a load balancer; ``--workers`` is the one-machine form of it.

A worker that dies (killed, out of memory) is started again after ``RESTART_DELAY_S``; whatever it had
acknowledged is in the store, and its VENs' next requests are served by the others meanwhile. SIGTERM or SIGINT
to the supervisor stops the workers (SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``) and then itself; a worker
whose supervisor dies gets SIGTERM from the kernel (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from dso_server import metrics
from dso_server.service import DsoServer, Listeners, prepare_store, run_event_loop
from dso_server.settings import DsoSettings
from dso_server.store.sqlite import DsoStore
from protocol.clock import WallClock

logger = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=4096)
    sock.setblocking(False)
    return sock


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _worker(settings: DsoSettings, listeners: Listeners, index: int) -> None:
    """One worker process: a DsoServer on the supervisor's sockets until SIGTERM."""
    _die_with_parent()
    logger.info("VTN worker %d (pid %d) starting", index, os.getpid())

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with DsoServer(settings, listeners=listeners, load_files=False):
            await stop.wait()

    run_event_loop(run())


class Supervisor:
    """Starts, watches and stops the workers. ``serve()`` blocks until SIGTERM/SIGINT."""

    def __init__(self, settings: DsoSettings, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers {workers} must be at least 1")
        self.settings = settings
        self.workers = workers
        self._context = mp.get_context("fork")  # workers inherit the bound sockets
        self._processes: dict[int, BaseProcess] = {}
        self._own_metrics_dir: str | None = None
        self.listeners: Listeners | None = None

    def open(self) -> Listeners:
        """Migrate the store, load the files, bind the sockets (before any worker exists)."""
        self._metrics_directory()
        with DsoStore(self.settings.db_path) as store:
            prepare_store(store, self.settings, WallClock().now())
        vtn = _listen(self.settings.vtn_host, self.settings.vtn_port)
        try:
            api = _listen(self.settings.api_host, self.settings.api_port)
        except BaseException:
            vtn.close()
            raise
        self.listeners = Listeners(vtn=vtn, api=api)
        return self.listeners

    def _metrics_directory(self) -> None:
        """Where the workers' metrics go so that a scrape of any worker reports all (``dso_server.metrics``):
        $PROMETHEUS_MULTIPROC_DIR when set, else a directory of this supervisor's, removed at the end."""
        if os.environ.get(metrics.MULTIPROC_ENV):
            return
        if "POLLS" in vars(metrics):
            logger.warning("Metrics were in use before the workers started; each worker reports only its own")
            return
        self._own_metrics_dir = tempfile.mkdtemp(prefix="dso-metrics-")
        os.environ[metrics.MULTIPROC_ENV] = self._own_metrics_dir

    @property
    def pids(self) -> dict[int, int | None]:
        """Worker index -> pid of its current process."""
        return {index: process.pid for index, process in self._processes.items()}

    def _start(self, index: int) -> None:
        assert self.listeners is not None
        process = self._context.Process(target=_worker, args=(self.settings, self.listeners, index),
                                        name=f"dso-worker-{index}", daemon=False)
        process.start()
        self._processes[index] = process

    def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        if self.listeners is None:
            self.open()
        stop = {"requested": False}

        def request_stop(signum: int, frame: object) -> None:
            stop["requested"] = True

        previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            for index in range(self.workers):
                self._start(index)
            if on_ready is not None:
                on_ready()
            while not stop["requested"]:
                for index, process in list(self._processes.items()):
                    if not process.is_alive() and not stop["requested"]:
                        logger.error("VTN worker %d (pid %s) exited with %s; starting it again", index, process.pid,
                                     process.exitcode)
                        process.join()
                        self._forget_metrics(process.pid)
                        time.sleep(RESTART_DELAY_S)
                        if not stop["requested"]:
                            self._start(index)
                time.sleep(0.2)
        finally:
            self._stop_workers()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.close()

    def _stop_workers(self) -> None:
        for process in self._processes.values():
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self._processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()

    @staticmethod
    def _forget_metrics(pid: int | None) -> None:
        directory = os.environ.get(metrics.MULTIPROC_ENV)
        if directory and pid is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, directory)

    def close(self) -> None:
        if self._own_metrics_dir is not None:
            shutil.rmtree(self._own_metrics_dir, ignore_errors=True)
            os.environ.pop(metrics.MULTIPROC_ENV, None)
            self._own_metrics_dir = None
        if self.listeners is not None:
            self.listeners.vtn.close()
            self.listeners.api.close()
            self.listeners = None
