"""The DSO server's settings: one frozen model, validated once at start and passed down."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dso_server.capacity.need_allocation import ScalingRule
from dso_server.capacity.planner import PlannerConfig
from dso_server.retention import DEFAULT_RETENTION_MONTHS
from dso_server.security.tls import is_loopback
from protocol.oadr20b.xml_guard import MAX_MESSAGE_BYTES

DEFAULT_PATH_PREFIX = "/OpenADR2/Simple/2.0b"
"""Where openleadr serves the 2.0b endpoints (EiEvent, EiReport, EiRegisterParty, OadrPoll)."""
DEFAULT_POLL_INTERVAL_S = 10.0


class DsoSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    db_path: str = "dso.sqlite"
    """SQLite file (created when missing), or ":memory:" for a store that lives as long as the process."""
    vtn_host: str = "127.0.0.1"
    vtn_port: int = Field(default=8080, ge=0, le=65535)
    """0 picks a free port; ``DsoServer.vtn_url`` tells which."""
    api_host: str = "127.0.0.1"
    """Address of the operator API (and its pages), independent of ``vtn_host``: loopback unless it runs TLS
    (``api_cert``/``api_key``) or ``api_insecure`` is set."""
    api_port: int = Field(default=8081, ge=0, le=65535)
    api_cert: Path | None = None
    """PEM server certificate (chain) of the operator API; with ``api_key`` the API serves HTTPS (TLS 1.2+)."""
    api_key: Path | None = None
    """PEM private key of ``api_cert`` (unencrypted; keep it readable by the server's account only)."""
    api_client_ca: Path | None = None
    """PEM CA certificate(s): clients may present a certificate signed by it instead of a bearer token; the
    certificate counts only once registered with ``dso-server token create --cert``. Needs ``api_cert``."""
    api_insecure: bool = False
    """Serve the API over plain HTTP on a non-loopback address. Tokens then cross the network in clear text:
    only for a lab network you trust; the server warns at every start."""
    api_session_ttl_s: float = Field(default=8 * 3600, ge=60, le=7 * 86400)
    """How long a web page login lasts (server clock seconds); it also ends when its token is revoked."""
    vtn_id: str = Field(default="DSO-VTN", min_length=1, max_length=128)
    poll_interval_s: float = Field(default=DEFAULT_POLL_INTERVAL_S, ge=1, le=60)
    """The oadrRequestedOadrPollFreq the VTN gives every VEN at registration, in whole seconds; at most 60 so
    that a lost link is noticed well inside the 120 s failsafe window (PROFILE §2.7)."""
    http_path_prefix: str = DEFAULT_PATH_PREFIX
    contracts_file: Path | None = None
    """TOML with the households (see ``dso_server.contracts``); loaded into the store at every start."""
    grid_path: Path | None = None
    """Grid file (.toml or .csv, see ``dso_server.capacity.grid``) loaded into the store at every start. With a
    grid (from this file or stored by ``dso-server grid load``) the server runs the day-ahead and near-real-time
    allocation jobs; without one it only relays what the operator publishes."""
    timezone: str = "Europe/Amsterdam"
    """The DSO's local time: days of the forecast, the allocation and the operator API, and day_ahead_time."""
    day_ahead_time: time = time(14, 0)
    """Local time at which the firm allocation of the next day is released."""
    near_real_time_interval_s: float = Field(default=300.0, ge=1, le=3600)
    """How often (server clock seconds) the non-firm allocation is recomputed from measured headroom."""
    non_firm_horizon_intervals: int = Field(default=8, ge=1, le=96)
    """How many quarter-hours ahead each near-real-time run releases non-firm capacity."""
    forecast_window_days: int = Field(default=28, ge=1, le=365)
    min_history_days: int = Field(default=7, ge=1, le=365)
    """Days of telemetry a transformer needs before its learned forecast replaces the H25 cold start."""
    silent_after_intervals: int = Field(default=4, ge=1, le=96)
    """A household whose last telemetry is older than this many quarter-hours counts as silent (offline)."""
    min_voltage_pu: float = Field(default=0.9, gt=0.5, lt=1.0)
    """Lowest node voltage the allocation may cause where a grid model is loaded (EN 50160: -10 %)."""
    max_voltage_pu: float = Field(default=1.1, gt=1.0, lt=1.5)
    """Highest node voltage export may cause (EN 50160: +10 %)."""
    need_scaling_rule: ScalingRule = "proportional"
    """How the firm allocation scales the capacity needs of performance contracts that a transformer cannot carry:
    "proportional" (every need to the same share) or "equal_cap" (small needs in full, the largest cut most); see
    ``dso_server.capacity.need_allocation``."""
    need_grace_s: float = Field(default=900.0, ge=0, le=86400)
    """How long (server clock seconds) a firm run that catches up after a start waits for the capacity needs of the
    performance households under the grid (each HEMS sends one right after it registers)."""
    retention_months: int = Field(default=DEFAULT_RETENTION_MONTHS, ge=1, le=120)
    """Calendar months the store keeps what households sent (telemetry, plans, needs, performance reports,
    consented comfort readings); older data is deleted (``dso_server.retention``)."""
    max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, ge=16 * 1024, le=64 * 1024 * 1024)
    """Largest OpenADR message the VTN reads; a larger one is answered 413 before it is parsed."""
    cert: Path | None = None
    """The VTN's PEM certificate: served over TLS, and the XML-signature certificate with ``sign_messages``
    (``dso-server pki issue-vtn`` writes one)."""
    key: Path | None = None
    passphrase: str | None = None
    ca_file: Path | None = None
    """PEM bundle of the CAs the VENs' client certificates must chain to (the PKI's ca.crt). Which household a
    certificate speaks for is its enrolment in the store (``dso-server pki issue-ven`` / ``pki enrol``)."""
    insecure: bool = False
    """Serve the VTN over plain HTTP without client certificates. Only on a loopback address (a demo, tests):
    any local process can then act as any household."""
    sign_messages: bool = False
    """Sign outgoing OpenADR messages with cert/key, and require every incoming message to be signed by the
    certificate of its TLS connection (XML signature verified, ReplayProtect checked)."""

    @field_validator("vtn_id")
    @classmethod
    def _vtn_id(cls, value: str) -> str:
        # openleadr's VEN flags an all-lowercase vtnID as invalid and then answers every event with 452.
        if value.islower():
            raise ValueError(f"vtn_id {value!r} is all lowercase; openleadr VENs reject such vtnIDs, use e.g. "
                             f"{value.upper()!r}")
        if any(character.isspace() for character in value):
            raise ValueError(f"vtn_id {value!r} contains white space")
        return value

    @field_validator("poll_interval_s")
    @classmethod
    def _whole_seconds(cls, value: float) -> float:
        # oadrRequestedOadrPollFreq is an RFC 5545 duration; openleadr renders whole seconds only (0.5 s -> PT0S).
        if value != int(value):
            raise ValueError(f"poll_interval_s {value} must be a whole number of seconds (OpenADR durations carry "
                             "whole seconds)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}, e.g. Europe/Amsterdam") from None
        return value

    @field_validator("contracts_file", "grid_path", "cert", "key", "ca_file", "api_cert", "api_key", "api_client_ca")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("http_path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"http_path_prefix {value!r} must start with '/'")
        return value.rstrip("/")

    def planner_config(self) -> PlannerConfig:
        return PlannerConfig(
            timezone=self.timezone, day_ahead_time=self.day_ahead_time,
            near_real_time_interval_s=self.near_real_time_interval_s,
            non_firm_horizon_intervals=self.non_firm_horizon_intervals,
            forecast_window_days=self.forecast_window_days, min_history_days=self.min_history_days,
            silent_after_intervals=self.silent_after_intervals, min_voltage_pu=self.min_voltage_pu,
            max_voltage_pu=self.max_voltage_pu, need_scaling_rule=self.need_scaling_rule,
            need_grace_s=self.need_grace_s,
        )

    @model_validator(mode="after")
    def _secure_by_default(self) -> DsoSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: give both, or neither")
        if self.insecure:
            if not is_loopback(self.vtn_host):
                raise ValueError(f"insecure (plain HTTP) is refused on vtn_host {self.vtn_host!r}: only on a loopback "
                                 "address such as 127.0.0.1; serve TLS with cert, key and ca_file anywhere else")
            if self.ca_file is not None:
                raise ValueError("ca_file has no use with insecure: plain HTTP carries no client certificates")
        else:
            missing = [name for name in ("cert", "key", "ca_file") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"the VTN serves TLS with client certificates: {', '.join(missing)} missing (create "
                                 "them with 'dso-server pki'), or set insecure for plain HTTP on a loopback address")
        if self.sign_messages and self.cert is None:
            raise ValueError("sign_messages needs cert and key")
        return self

    @property
    def api_tls(self) -> bool:
        return self.api_cert is not None

    @model_validator(mode="after")
    def _api_exposure(self) -> DsoSettings:
        if (self.api_cert is None) != (self.api_key is None):
            raise ValueError("api_cert and api_key go together: give both to serve the API over TLS, or neither")
        if self.api_client_ca is not None and self.api_cert is None:
            raise ValueError("api_client_ca needs api_cert and api_key: client certificates only exist under TLS")
        if not is_loopback(self.api_host) and not self.api_tls and not self.api_insecure:
            raise ValueError(f"api_host {self.api_host!r} is not a loopback address: serve the API over TLS "
                             "(api_cert and api_key; serve --api-cert/--api-key) or, on a lab network you trust, "
                             "allow plain HTTP explicitly with api_insecure (serve --api-insecure)")
        return self

