"""The DSO side: an OpenADR 2.0b VTN that publishes capacity bandwidths and ToU tariffs, with a SQLite store.

Modules (import what you need; this package imports nothing on its own, so the pure parts stay light):

- ``dso_server.records``: the typed records the store returns (``Household``, ``Ven``, ``Signal``, ...).
- ``dso_server.lifecycle``: the pure rules: how a signal may change (``SIGNAL_MOVES``) and what a VEN is sent.
- ``dso_server.store.sqlite``: ``DsoStore``, the source of truth (SQLite, or PostgreSQL for a region: the engines
  in ``dso_server.store.engine`` and ``.postgres``, the schema and its migrations in ``dso_server.store.schema``).
- ``dso_server.transport.oadr20b.vtn``: ``DsoVtn``, the VTN (its four 2.0b endpoints on aiohttp, its per-VEN state
  in memory and true to the store: ``dso_server.transport.ven_cache``); ``openleadr_adapter`` beside it holds all
  it takes from openleadr.
- ``dso_server.api.app`` / ``dso_server.api.codec``: the operator JSON API (``create_app(store, clock)``); its
  route table (``api.routes``), models (``api.models``), OpenAPI document (``api.openapi``) and guard
  (``api.auth``: tokens, roles, the pages' read-only session).
- ``dso_server.security``: the lab CA behind ``dso-server pki`` (``pki``) and the VTN's mutual TLS (``tls``);
  API tokens and roles (``tokens``) and audit entries (``audit``), pure; their tables in
  ``dso_server.store.security_store``; ``dso_server.store.certificates``: which certificate speaks for which
  household; ``dso_server.store.audited``: every operator change with its audit entry.
- ``dso_server.contracts``: the households TOML file; ``dso_server.settings``: ``DsoSettings``.
- ``dso_server.service``: ``DsoServer``, start-up and ordered shut-down of store, VTN and API.
- ``dso_server.cli``: the ``dso-server`` command.
- ``dso_server.errors``: the errors, each with the HTTP status the API answers with.
"""
