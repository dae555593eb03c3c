"""The DSO server's settings: one frozen model, validated once at start and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    api_port: int = Field(default=8081, ge=0, le=65535)
    vtn_id: str = Field(default="DSO-VTN", min_length=1, max_length=128)
    poll_interval_s: float = Field(default=DEFAULT_POLL_INTERVAL_S, ge=1, le=60)
    """The oadrRequestedOadrPollFreq the VTN gives every VEN at registration, in whole seconds; at most 60 so
    that a lost link is noticed well inside the 120 s failsafe window (PROFILE §2.7)."""
    http_path_prefix: str = DEFAULT_PATH_PREFIX
    contracts_file: Path | None = None
    """TOML with the households (see ``dso_server.contracts``); loaded into the store at every start."""
    cert: Path | None = None
    """PEM certificate to sign outgoing OpenADR messages with (XML signatures); off when None."""
    key: Path | None = None
    passphrase: str | None = None

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

    @field_validator("contracts_file", "cert", "key")
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

    @model_validator(mode="after")
    def _signing_pair(self) -> DsoSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: give both to sign messages, or neither")
        return self
