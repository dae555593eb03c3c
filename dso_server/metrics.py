"""What operators see of a running DSO server: Prometheus metrics (``GET /metrics`` on the operator API).

Counted where it happens (these module-level metrics are per process; with ``serve --workers N`` every worker
writes them to the supervisor's ``PROMETHEUS_MULTIPROC_DIR`` and a scrape of any worker reports all):

=============================================  ==================================================================
``dso_vtn_polls_total``                        oadrPoll messages answered (rate: polls per second)
``dso_vtn_distributions_total``                oadrDistributeEvent sent in answer to a poll
``dso_vtn_messages_total{message_type}``       every 2.0b message answered, by type
``dso_vtn_event_responses_total{code,opt}``    eventResponses received, by responseCode and optType
``dso_vtn_store_reads_total{reason}``          VEN state read from the store (``load``) and change-log reads
``dso_planner_runs_total{kind,status}``        allocation runs (firm/non_firm; ok/failed)
``dso_planner_run_seconds{kind}``              how long a run took (histogram)
``dso_planner_active``                         1 in the server that holds the planner lock
``dso_store_seconds{operation}``               time in the store per call: read, write, commit (histogram)
=============================================  ==================================================================

Read from the store at each scrape (so they agree across workers): ``dso_vens_registered`` and
``dso_vens_silent`` (registered VENs not heard from for ``silent_after_s``, three poll periods by default; the
VTN writes liveness in batches, at most ``Liveness.flush_interval_s`` late).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from dso_server.store.sqlite import DsoStore

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SILENT_AFTER_S = 120.0
"""A registered VEN not heard from for this long counts as silent: two minutes without a poll is when a HEMS
falls back to its failsafe limits (EEBus LPC, PROFILE section 2.7); well above the liveness resolution."""
CONTENT_TYPE = CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's metrics (not prometheus_client's global registry, so tests and libraries stay apart)."""


def _create() -> dict[str, Any]:
    # prometheus_client picks file-backed values when PROMETHEUS_MULTIPROC_DIR is set *when it is imported*; the
    # supervisor of ``serve --workers`` sets it later, before the first metric is used, so look again here.
    values.ValueClass = values.get_value_class()
    store_seconds = Histogram(
        "dso_store_seconds", "time spent in one store call", ["operation"], registry=REGISTRY,
        buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
    return {
        "POLLS": Counter("dso_vtn_polls", "oadrPoll messages answered", registry=REGISTRY),
        "DISTRIBUTIONS": Counter("dso_vtn_distributions", "oadrDistributeEvent sent in answer to an oadrPoll",
                                 registry=REGISTRY),
        "MESSAGES": Counter("dso_vtn_messages", "OpenADR 2.0b messages answered, by type", ["message_type"],
                            registry=REGISTRY),
        "EVENT_RESPONSES": Counter("dso_vtn_event_responses", "eventResponses received in oadrCreatedEvent",
                                   ["response_code", "opt_type"], registry=REGISTRY),
        "STORE_READS": Counter("dso_vtn_store_reads", "reads of the store on the VTN's path: VEN state loaded, "
                               "event payloads, change log read", ["reason"], registry=REGISTRY),
        "PLANNER_RUNS": Counter("dso_planner_runs", "capacity allocation runs", ["kind", "status"],
                                registry=REGISTRY),
        "PLANNER_SECONDS": Histogram("dso_planner_run_seconds", "duration of a capacity allocation run", ["kind"],
                                     buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
                                     registry=REGISTRY),
        "PLANNER_ACTIVE": Gauge("dso_planner_active", "1 in the server that holds the planner lock and runs the "
                                "allocation", registry=REGISTRY, multiprocess_mode="livesum"),
        "STORE_SECONDS": store_seconds,
        "_STORE": {operation: store_seconds.labels(operation) for operation in ("read", "write", "commit")},
    }


def __getattr__(name: str) -> Any:
    """The metrics are made on first use (see ``_create``) and then are plain module attributes."""
    if name in _NAMES:
        globals().update(_create())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NAMES = frozenset({"POLLS", "DISTRIBUTIONS", "MESSAGES", "EVENT_RESPONSES", "STORE_READS", "PLANNER_RUNS",
                    "PLANNER_SECONDS", "PLANNER_ACTIVE", "STORE_SECONDS", "_STORE"})


@contextmanager
def timed_store(operation: str) -> Iterator[None]:
    """Observe the duration of one store call (``read``, ``write`` or ``commit``)."""
    histogram = (globals().get("_STORE") or __getattr__("_STORE"))[operation]
    began = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - began)


class StoreCollector(Collector):
    """Registered and silent VENs, counted in the store at scrape time."""

    def __init__(self, store: DsoStore, now: datetime, silent_after_s: float) -> None:
        self.store = store
        self.now = now
        self.silent_after_s = silent_after_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from dso_server.store.sqlite import to_text

        cutoff = to_text(self.now - timedelta(seconds=self.silent_after_s))
        row = self.store.db.query(
            "SELECT COUNT(*) AS registered, COALESCE(SUM(CASE WHEN last_seen_at IS NULL OR last_seen_at < ? "
            "THEN 1 ELSE 0 END), 0) AS silent FROM vens WHERE registration_id IS NOT NULL", [cutoff])[0]
        yield GaugeMetricFamily("dso_vens_registered", "VENs with a registration", value=int(row["registered"]))
        yield GaugeMetricFamily("dso_vens_silent", f"registered VENs not heard from for {self.silent_after_s:g} s",
                                value=int(row["silent"]))


def exposition(store: DsoStore, now: datetime, silent_after_s: float) -> bytes:
    """The text a scrape gets: this process's metrics (all workers' under ``serve --workers``) and the store's."""
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=directory)
        output = generate_latest(registry)
    else:
        output = generate_latest(REGISTRY)
    store_registry = CollectorRegistry()
    store_registry.register(StoreCollector(store, now, silent_after_s))
    return output + generate_latest(store_registry)
