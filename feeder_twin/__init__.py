"""The LV feeder study: how many electrified homes a real LV feeder hosts under each control strategy.

A runnable scenario, like ``examples/``: it may import everything. It drives households with the live HEMS code
(``hems_client.control.controller.Controller`` with its guard, the convex optimiser and the signal book) and
the DSO with the live allocation code (``dso_server.capacity.planner`` over a ``DsoStore``), in process on
simulated clocks, and solves the grid with power-grid-model every household sub-step.

Why a top-level package and not a folder of ``examples/``: the study is several modules (scenario, owner
behaviour, strategies, runner, parallel backends, KPIs, hosting capacity, report) whose shard class must be
importable by name in worker processes and on Dask workers of other machines; it is neither DSO nor HEMS
code, so it may not live in ``dso_server`` or ``hems_client`` (which import only ``protocol``). Why
``feeder_twin``: it is a digital twin of one LV feeder (homes, DSO and grid together) that the study runs; the
name ``feeder_study`` belongs to the command (``feeder-study``, ``examples/feeder_study.py``), and a package of
that name would be shadowed by the example script when it runs.

Modules:
  scenario    household specs (diversity), electrification shares, weather weeks, tariffs
  owner       the owner-behaviour planner of the uncontrolled baseline
  strategies  the strategy interface and the strategies compared
  homes       the HEMS side: simulated homes under the live controller, grouped in shards
  dso         the DSO side: the live planner over a DsoStore, and the in-process "wire" to the homes
  backends    where the shards run: in process, local processes, a Dask cluster
  runner      the simulation loop: homes, DSO, power flow per sub-step
  series      the per-step time series in SQLite
  kpi         the KPI table per strategy
  hosting     the hosting-capacity search
  report      table, plots
  cli         ``feeder-study`` / ``examples/feeder_study.py``
"""
