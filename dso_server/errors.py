"""Errors of the DSO: each says what was asked, what is known and which rule refused it.

The operator API maps them to HTTP statuses (``http_status``); the CLI prints their message.
"""

from __future__ import annotations


class DsoError(Exception):
    """Base of every error the DSO raises on purpose. ``field`` names the part of the request at fault."""

    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(message)


class NotFound(DsoError):
    http_status = 404


class UnknownHousehold(NotFound):
    def __init__(self, connection_point_id: str, *, field: str | None = "connection_point_id") -> None:
        self.connection_point_id = connection_point_id
        super().__init__(f"No household has connection point id {connection_point_id!r}.", field=field)


class UnknownGroup(NotFound):
    def __init__(self, group: str) -> None:
        self.group = group
        super().__init__(f"No household belongs to group {group!r}.", field="group")


class UnknownEvent(NotFound):
    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        super().__init__(f"No signal has event id {event_id!r}.", field="event_id")


class UnknownPublication(NotFound):
    def __init__(self, publication_id: str) -> None:
        self.publication_id = publication_id
        super().__init__(f"No publication has id {publication_id!r}.", field="publication_id")


class UnknownVen(NotFound):
    def __init__(self, ven_id: str) -> None:
        self.ven_id = ven_id
        super().__init__(f"No VEN is registered with ven id {ven_id!r}.", field="ven_id")


class Conflict(DsoError):
    """The request is well formed but the current state forbids it."""

    http_status = 409


class IllegalSignalChange(Conflict):
    """A modification or cancellation the event's state does not allow (see ``lifecycle.SIGNAL_MOVES``)."""

    def __init__(self, event_id: str, state: str, action: str, rule: str) -> None:
        self.event_id = event_id
        self.state = state
        self.action = action
        super().__init__(f"Cannot {action} event {event_id!r}: it is {state}; {rule}.", field="event_id")


class WrongSignalKind(Conflict):
    def __init__(self, event_id: str, kind: str, offered: str) -> None:
        super().__init__(
            f"Event {event_id!r} carries a {kind}; a {offered} cannot replace it (publish a new signal instead).",
            field="body",
        )


class ConfigurationError(DsoError):
    """A setting that validates but does not work (e.g. a key that cannot sign)."""


class SchemaError(DsoError):
    """The database file was written by a newer, incompatible version of this server."""

    http_status = 500


class StoreError(DsoError):
    """The database failed in a way the request cannot fix (the driver's error, translated)."""

    http_status = 500


class StoreIntegrityError(StoreError):
    """The database refused a write that breaks one of its constraints; nothing of the transaction was kept."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or used (missing driver, bad URL, server down, file unwritable)."""

    http_status = 503
