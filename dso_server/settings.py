"""The DSO server's settings: one frozen model, validated once at start and passed down.

:class:`DsoSettings` is everything ``dso-server serve`` (and ``DsoServer`` in Python) takes. Its fields are
declared once, each with its default, its rules and a description that is its ``--help`` text, in four parts it
inherits: :class:`ServerSettings` (the store and what is loaded into it), :class:`VtnSettings` (the OpenADR VTN
and its security), :class:`ApiSettings` (the operator API) and ``PlannerConfig`` (the capacity planning, declared
beside the planner, which gets it back from :meth:`DsoSettings.planner_config`). ``protocol.settings`` makes from
them the ``serve`` options (``--vtn-port``), the ``DSO_*`` environment variables (``DSO_VTN_PORT``) and the keys
of a ``--config`` TOML file (``vtn_port``), in rising order of precedence file < environment < command line. A new
setting is one field in one of the parts; its option, variable and key follow.

The security rules (TLS with client certificates unless ``insecure``, plain HTTP on loopback only, an API on
another address only over TLS or with ``api_insecure``) are model validators, so they hold however the settings
were made: options, environment, file or Python.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from dso_server.capacity.planner import PlannerConfig
from dso_server.retention import DEFAULT_RETENTION_MONTHS
from dso_server.security.tls import is_loopback
from protocol.oadr20b.xml_guard import MAX_MESSAGE_BYTES

__all__ = ["ENV_PREFIX", "ApiSettings", "DsoSettings", "PlannerConfig", "ServerSettings", "VtnSettings", "is_loopback"]

ENV_PREFIX = "DSO_"
"""Environment variables: DSO_ + the setting's name in upper case (``DSO_VTN_PORT``)."""
DEFAULT_PATH_PREFIX = "/OpenADR2/Simple/2.0b"
"""Where openleadr serves the 2.0b endpoints (EiEvent, EiReport, EiRegisterParty, OadrPoll)."""
DEFAULT_POLL_INTERVAL_S = 10.0
PKI_FILES = {"cert": "vtn.crt", "key": "vtn.key", "ca_file": "ca.crt"}
"""What ``pki DIR`` stands for: the files ``dso-server pki init`` and ``pki issue-vtn`` write into DIR."""

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
# The parts' validators need names unique across all four: DsoSettings inherits them by name, and one part's
# validator would silently replace another's of the same name (tests/test_dso_settings.py checks).


def _readable_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError("is not a readable file")
    return value


class VtnSettings(BaseModel):
    """The OpenADR 2.0b VTN and its transport security (a part of :class:`DsoSettings`)."""

    model_config = _FROZEN

    vtn_host: str = Field("127.0.0.1", min_length=1, description=(
        "address the OpenADR VTN listens on; plain HTTP (--insecure) only on a loopback address"))
    vtn_port: int = Field(8080, ge=0, le=65535, description="TCP port of the OpenADR VTN (0 picks a free one)")
    vtn_id: str = Field("DSO-VTN", min_length=1, max_length=128, description=(
        "the vtnID sent in every OpenADR message (not all lowercase: openleadr VENs refuse such ids)"))
    poll_interval_s: float = Field(DEFAULT_POLL_INTERVAL_S, ge=1, le=60, description=(
        "poll interval the VTN asks every VEN for at registration (oadrRequestedOadrPollFreq), in whole seconds; "
        "at most 60 so that a lost link is noticed well inside the 120 s failsafe window (PROFILE 2.7)"))
    http_path_prefix: str = Field(DEFAULT_PATH_PREFIX, description=(
        "URL path under which the VTN serves the OpenADR 2.0b endpoints (EiEvent, EiReport, OadrPoll, ...)"))
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, ge=16 * 1024, le=64 * 1024 * 1024, description=(
        "largest OpenADR message the VTN reads; a larger one is answered 413 before it is parsed"))
    pki: Path | None = Field(None, description=(
        "PKI directory as written by 'dso-server pki': serve TLS with DIR/vtn.crt and DIR/vtn.key and check VEN "
        "certificates against DIR/ca.crt (instead of --cert, --key and --ca-file)"))
    cert: Path | None = Field(None, description=(
        "the VTN's PEM certificate: served over TLS, and the XML-signature certificate with --sign-messages"))
    key: Path | None = Field(None, description=(
        "PEM private key of --cert (keep it readable by the server's account only)"))
    key_passphrase: SecretStr | None = Field(None, description=(
        "passphrase of an encrypted --key; prefer the environment variable, since arguments show in 'ps'"))
    ca_file: Path | None = Field(None, description=(
        "PEM bundle of the CAs the VENs' client certificates must chain to; which household a certificate speaks "
        "for is its enrolment in the store ('dso-server pki issue-ven' / 'pki enrol')"))
    insecure: bool = Field(False, description=(
        "serve the VTN over plain HTTP without client certificates; refused unless --vtn-host is a loopback "
        "address, where any local process can act as any household (a demo or tests only)"))
    sign_messages: bool = Field(False, description=(
        "sign outgoing OpenADR messages with --cert/--key and require every incoming one to be signed by the "
        "certificate of its TLS connection (XML signature verified, ReplayProtect checked)"))

    @model_validator(mode="before")
    @classmethod
    def _pki_directory(cls, data: Any) -> Any:
        """``pki`` DIR stands for cert, key and ca_file in DIR; one given beside it must be that same file.
        Only files that exist are filled in: the ``pki`` field names those that do not."""
        pki = data.get("pki") if isinstance(data, dict) else None
        if not isinstance(pki, str | Path) or not str(pki):
            return data
        filled = dict(data)
        for name, file_name in PKI_FILES.items():
            implied, given = Path(pki) / file_name, data.get(name)
            if given is None:
                if implied.is_file():
                    filled[name] = implied
            elif isinstance(given, str | Path) and Path(given) != implied:
                raise ValueError(f"pki {str(pki)!r} stands for {name} {str(implied)!r}, but {name} {str(given)!r} "
                                 "is given too: give pki, or cert, key and ca_file, not both")
        return filled

    @field_validator("pki")
    @classmethod
    def _pki_complete(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        missing = [str(value / name) for name in PKI_FILES.values() if not (value / name).is_file()]
        if missing:
            verb = "is not a readable file" if len(missing) == 1 else "are not readable files"
            raise ValueError(f"{', '.join(missing)} {verb} (written by 'dso-server pki init' and 'pki issue-vtn')")
        return value

    @field_validator("vtn_id")
    @classmethod
    def _vtn_id(cls, value: str) -> str:
        # openleadr's VEN flags an all-lowercase vtnID as invalid and then answers every event with 452.
        if value.islower():
            raise ValueError(f"is all lowercase; openleadr VENs reject such vtnIDs, use e.g. {value.upper()!r}")
        if any(character.isspace() for character in value):
            raise ValueError("contains white space")
        return value

    @field_validator("poll_interval_s")
    @classmethod
    def _whole_seconds(cls, value: float) -> float:
        # oadrRequestedOadrPollFreq is an RFC 5545 duration; openleadr renders whole seconds only (0.5 s -> PT0S).
        if value != int(value):
            raise ValueError("must be a whole number of seconds (OpenADR durations carry whole seconds)")
        return value

    @field_validator("http_path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value.rstrip("/")

    @field_validator("cert", "key", "ca_file")
    @classmethod
    def _vtn_files_exist(cls, value: Path | None) -> Path | None:
        return _readable_file(value)

    @model_validator(mode="after")
    def _secure_by_default(self) -> Self:
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
    def key_passphrase_text(self) -> str | None:
        return self.key_passphrase.get_secret_value() if self.key_passphrase is not None else None


class ApiSettings(BaseModel):
    """The operator JSON API and its pages (a part of :class:`DsoSettings`)."""

    model_config = _FROZEN

    api_host: str = Field("127.0.0.1", min_length=1, description=(
        "address the operator API and its pages listen on, independent of --vtn-host; a non-loopback address "
        "needs --api-cert/--api-key (or --api-insecure)"))
    api_port: int = Field(8081, ge=0, le=65535, description="TCP port of the operator API (0 picks a free one)")
    api_cert: Path | None = Field(None, description=(
        "PEM server certificate (chain) of the operator API; with --api-key the API serves HTTPS (TLS 1.2+)"))
    api_key: Path | None = Field(None, description=(
        "PEM private key of --api-cert (unencrypted; keep it readable by the server's account only)"))
    api_client_ca: Path | None = Field(None, description=(
        "accept client certificates signed by this PEM CA as API credentials, each once registered with "
        "'dso-server token create --cert'; needs --api-cert"))
    api_insecure: bool = Field(False, description=(
        "allow the API on a non-loopback --api-host over plain HTTP: tokens cross the network in clear text (a "
        "trusted lab network only; the server warns at every start)"))
    api_session_ttl_s: float = Field(8 * 3600.0, ge=60, le=7 * 86400, description=(
        "how long a web page login lasts, in server-clock seconds; it also ends when its token is revoked"))

    @field_validator("api_cert", "api_key", "api_client_ca")
    @classmethod
    def _api_files_exist(cls, value: Path | None) -> Path | None:
        return _readable_file(value)

    @property
    def api_tls(self) -> bool:
        return self.api_cert is not None

    @model_validator(mode="after")
    def _api_exposure(self) -> Self:
        if (self.api_cert is None) != (self.api_key is None):
            raise ValueError("api_cert and api_key go together: give both to serve the API over TLS, or neither")
        if self.api_client_ca is not None and self.api_cert is None:
            raise ValueError("api_client_ca needs api_cert and api_key: client certificates only exist under TLS")
        if not is_loopback(self.api_host) and not self.api_tls and not self.api_insecure:
            raise ValueError(f"api_host {self.api_host!r} is not a loopback address: serve the API over TLS "
                             "(api_cert and api_key; serve --api-cert/--api-key) or, on a lab network you trust, "
                             "allow plain HTTP explicitly with api_insecure (serve --api-insecure)")
        return self


class ServerSettings(BaseModel):
    """The server process: its store, what it loads into the store at start, its log (a part of
    :class:`DsoSettings`)."""

    model_config = _FROZEN

    db_path: str = Field("dso.sqlite", min_length=1, description=(
        "the store holding households, registrations, signals and reports: a SQLite file, created when missing "
        "(':memory:' keeps nothing), or a PostgreSQL URL such as postgresql://dso@db.example/dso (a region's "
        "database shared by several VTN workers; needs pip install -e '.[postgres]')"))
    workers: int = Field(1, ge=1, le=64, description=(
        "VTN worker processes sharing the sockets and the store; each serves the VTN and the operator API, one of "
        "them runs the planner; more than one is meant for a PostgreSQL --db"))
    contracts_file: Path | None = Field(None, description=(
        "households file (TOML, [[household]] tables: connection_point_id, group, contract fields, "
        "[household.comfort], [household.performance]; see dso_server/contracts.py), added to or updated in the "
        "store at every start"))
    grid_path: Path | None = Field(None, description=(
        "grid file (.toml or .csv: transformers, feeders, connection points; see 'dso-server grid --help') loaded "
        "into the store at every start; with a grid in the store the server allocates firm capacity day-ahead and "
        "non-firm capacity every few minutes, without one it only relays what the operator publishes"))
    retention_months: int = Field(DEFAULT_RETENTION_MONTHS, ge=1, le=120, description=(
        "calendar months the store keeps what households sent (telemetry, plans, capacity needs, performance "
        "reports, consented comfort readings); older data is deleted (dso_server/retention.py)"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description=(
        "how much 'dso-server serve' logs to stderr (a program that runs DsoServer itself sets up its own logging)"))

    @field_validator("contracts_file", "grid_path")
    @classmethod
    def _input_file_exists(cls, value: Path | None) -> Path | None:
        return _readable_file(value)


class DsoSettings(PlannerConfig, ApiSettings, VtnSettings, ServerSettings):
    """Everything the DSO server takes, made of its four parts (their fields in this order: server, VTN, API,
    planning). Built from options, ``DSO_*`` variables and a config file by ``dso-server serve``; in Python by
    keyword, e.g. ``DsoSettings(db_path=":memory:", vtn_port=0, api_port=0, insecure=True)``."""

    model_config = _FROZEN

    def planner_config(self) -> PlannerConfig:
        """The planning part, as the planner and the API take it (its values; no second set of defaults)."""
        return PlannerConfig(**{name: getattr(self, name) for name in PlannerConfig.model_fields})
