"""Where the shards run: in this process, in local worker processes, or on a Dask cluster.

Homes are independent within an interval, so the runner splits them into shards and advances every shard one
interval per round; the DSO, the power flow and the bookkeeping stay in the runner's process. Each backend keeps
its shards alive (they hold the homes' state) and answers ``advance`` with one ``IntervalOutput`` per shard, in
shard order. The result is the same for every backend and shard count (each home's computation depends only
on its own inputs); ``tests/test_feeder_study.py`` checks it for the process pool and a Dask local cluster.

* :class:`InProcess` (``--workers 1``): no parallelism, no start-up cost.
* :class:`ProcessPool` (``--workers N``): N local processes (``multiprocessing``, spawn), a shard each, driven
  over pipes.
* :class:`DaskCluster` (``--dask local`` or ``--dask tcp://scheduler:8786``): one Dask actor per shard, one
  shard per worker thread of the cluster; with ``local`` a ``LocalCluster`` of ``--workers`` processes is
  started and stopped here. Dask distributed (not Ray) because it is a light pure-Python install and its actors
  are exactly "an object with state on a worker". Workers on other machines need this project installed
  (``pip install -e '.[study]'``) at the same version.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Mapping, Sequence
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any, Protocol

from feeder_twin.homes import HomeSummary, IntervalOutput, Shard, ShardSetup
from feeder_twin.scenario import HouseholdSpec
from protocol.oadr20b.events import DecodedEvent

Deliveries = Mapping[str, Sequence[DecodedEvent]]


class BackendError(RuntimeError):
    """A shard failed in a worker; the message carries the worker's traceback."""


class Backend(Protocol):
    """Lifecycle: ``start`` builds a run's shards (replacing the last run's), ``advance`` and ``summaries`` drive
    them, ``finish`` drops them; the workers themselves live until ``close``, so that a study of several runs
    starts its processes or cluster once."""

    name: str

    @property
    def parallelism(self) -> int: ...

    def start(self, shards: Sequence[Sequence[HouseholdSpec]], setup: ShardSetup) -> None: ...

    def advance(self, until: datetime, deliveries: Sequence[Deliveries]) -> list[IntervalOutput]: ...

    def summaries(self) -> list[HomeSummary]: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


class InProcess:
    name = "in-process"

    def __init__(self) -> None:
        self._shards: list[Shard] = []

    @property
    def parallelism(self) -> int:
        return 1

    def start(self, shards: Sequence[Sequence[HouseholdSpec]], setup: ShardSetup) -> None:
        self._shards = [Shard(specs, setup) for specs in shards]

    def advance(self, until: datetime, deliveries: Sequence[Deliveries]) -> list[IntervalOutput]:
        return [shard.advance(until, d) for shard, d in zip(self._shards, deliveries, strict=True)]

    def summaries(self) -> list[HomeSummary]:
        return [summary for shard in self._shards for summary in shard.summaries()]

    def finish(self) -> None:
        for shard in self._shards:
            shard.close()
        self._shards = []

    def close(self) -> None:
        self.finish()


def _serve(connection: Connection) -> None:
    """A worker process: one shard, commands over the pipe, errors sent back with their traceback."""
    shard: Shard | None = None
    while True:
        try:
            command, args = connection.recv()
        except EOFError:
            return
        try:
            if command == "start":
                shard = Shard(*args)
                answer: Any = None
            elif command == "advance":
                assert shard is not None
                answer = shard.advance(*args)
            elif command == "summaries":
                assert shard is not None
                answer = shard.summaries()
            elif command == "finish":
                if shard is not None:
                    shard.close()
                shard = None
                answer = None
            elif command == "close":
                connection.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown command {command!r}")
            connection.send(("ok", answer))
        except Exception:
            connection.send(("error", traceback.format_exc()))


class ProcessPool:
    name = "processes"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, not {workers}")
        self.workers = workers
        self._connections: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []

    @property
    def parallelism(self) -> int:
        return self.workers

    def _ask_all(self, messages: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        for connection, message in zip(self._connections, messages, strict=True):
            connection.send(message)
        answers = []
        for connection, process in zip(self._connections, self._processes, strict=True):
            try:
                status, answer = connection.recv()
            except EOFError:
                raise BackendError(f"worker process {process.pid} died (exit code {process.exitcode})") from None
            if status != "ok":
                raise BackendError(f"a shard failed in worker process {process.pid}:\n{answer}")
            answers.append(answer)
        return answers

    def start(self, shards: Sequence[Sequence[HouseholdSpec]], setup: ShardSetup) -> None:
        if len(shards) != self.workers:
            raise ValueError(f"need one shard per worker ({self.workers}), not {len(shards)}")
        if not self._processes:
            context = multiprocessing.get_context("spawn")
            for _ in shards:
                ours, theirs = context.Pipe()
                process = context.Process(target=_serve, args=(theirs,), daemon=True, name="feeder-study-shard")
                process.start()
                theirs.close()
                self._connections.append(ours)
                self._processes.append(process)
        self._ask_all([("start", (list(specs), setup)) for specs in shards])

    def advance(self, until: datetime, deliveries: Sequence[Deliveries]) -> list[IntervalOutput]:
        return self._ask_all([("advance", (until, dict(d))) for d in deliveries])

    def summaries(self) -> list[HomeSummary]:
        return [summary for part in self._ask_all([("summaries", ())] * self.workers) for summary in part]

    def finish(self) -> None:
        if self._processes:
            self._ask_all([("finish", ())] * self.workers)

    def close(self) -> None:
        for connection in self._connections:
            try:
                connection.send(("close", ()))
                connection.recv()
            except (EOFError, BrokenPipeError, OSError):
                pass
            connection.close()
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        self._connections, self._processes = [], []


class DaskCluster:
    name = "dask"

    def __init__(self, address: str, *, local_workers: int = 2) -> None:
        """``address``: ``local`` (start a LocalCluster of ``local_workers`` processes) or a scheduler address."""
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as error:
            raise RuntimeError("--dask needs Dask distributed: pip install -e '.[study]'") from error
        self._cluster = None
        if address == "local":
            self._cluster = LocalCluster(n_workers=local_workers, threads_per_worker=1, processes=True,
                                         dashboard_address=":0", silence_logs=40)
            self.client = Client(self._cluster)
        else:
            self.client = Client(address, timeout="30s")
        self.address = address
        self._actors: list[Any] = []

    @property
    def parallelism(self) -> int:
        """Worker threads in the cluster: one shard each."""
        workers = self.client.scheduler_info()["workers"]
        return sum(int(info.get("nthreads", 1)) for info in workers.values()) or 1

    def start(self, shards: Sequence[Sequence[HouseholdSpec]], setup: ShardSetup) -> None:
        workers = list(self.client.scheduler_info()["workers"])
        futures = [self.client.submit(Shard, list(specs), setup, actor=True, workers=[workers[i % len(workers)]],
                                      pure=False)
                   for i, specs in enumerate(shards)]
        self._actors = [future.result() for future in futures]

    def advance(self, until: datetime, deliveries: Sequence[Deliveries]) -> list[IntervalOutput]:
        calls = [actor.advance(until, dict(d)) for actor, d in zip(self._actors, deliveries, strict=True)]
        try:
            return [call.result() for call in calls]
        except Exception as error:
            raise BackendError(f"a shard failed on the Dask cluster: {error!r}") from error

    def summaries(self) -> list[HomeSummary]:
        calls = [actor.summaries() for actor in self._actors]
        return [summary for call in calls for summary in call.result()]

    def finish(self) -> None:
        for call in [actor.close() for actor in self._actors]:
            call.result()
        self._actors = []  # the last reference: Dask deletes the actors

    def close(self) -> None:
        self._actors = []
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()
