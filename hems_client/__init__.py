"""The household side: a HEMS that keeps a home inside the DSO's capacity bandwidth.

Modules (import what you need; this package imports nothing on its own, so the pure parts stay light):

- ``hems_client.devices``: the ``Device`` driver interface and simulated devices, ``Household``, ``Weather``.
- ``hems_client.control.signal_book``: ``SignalBook``, the active bandwidths and tariffs (pure).
- ``hems_client.control.planning``: ``Planner`` protocol, ``HouseholdState``, ``ControlDecision`` (pure data).
- ``hems_client.optimiser``: ``HouseholdOptimiser``, the convex LP (pure, compiled once per household);
  ``hems_client.control.optimiser_planner``: ``OptimiserPlanner``, the default planner on top of it;
  ``hems_client.control.rule_planner``: ``RulePlanner`` (pure), the rule-based alternative.
- ``hems_client.control.guard``: the local guard's shedding order, aims and interval budget (pure).
- ``hems_client.control.over_limit``: why an interval went over its limit, one reason each (pure).
- ``hems_client.control.failsafe``: ``Failsafe``, the communication-loss state machine (EEBus LPC semantics, pure).
- ``hems_client.control.controller``: ``Controller``, the loop on the injected clock.
- ``hems_client.store``: ``HemsStore``, contract, active signals and failsafe state in SQLite.
- ``hems_client.kpi``: per-day KPIs (pure).
- ``hems_client.transport.oadr20b.ven``: ``HemsVen``, the OpenADR 2.0b transport; ``openleadr_adapter`` beside
  it holds all it takes from openleadr (mutual TLS, the XML guard, signatures).
- ``hems_client.settings``: ``ControllerSettings`` / ``HemsSettings``, the one validated settings object.
- ``hems_client.app``: ``HemsApp``, VEN + controller; ``hems_client.cli``: the ``hems-client`` command.

Sign convention: device and net powers are consumption-positive kW; telemetry carries import and export as
separate magnitudes, the plan the signed net import (protocol/PROFILE.md).
"""
