"""Operator API credentials: bearer tokens with a role, and what each role may do. Pure: no I/O, no clock.

A token is ``dso_`` followed by 43 URL-safe characters: 32 bytes (256 bits) from ``secrets``. The store keeps
only its SHA-256. A slow password hash (bcrypt, scrypt, Argon2) protects *guessable* secrets against an
attacker who stole the hashes; nobody guesses a 256-bit random value, so a plain SHA-256 loses nothing and keeps
every request's check at one hash and one indexed lookup. The prefix lets secret scanners and people recognise a
leaked token.

Roles are ordered: ``operate`` may do everything ``read`` may, plus publish, modify, cancel and change contracts.
Managing tokens is not a role: it needs the store itself (``dso-server token ... --db``), i.e. the server's
files, so no API credential can mint or revoke another.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

TOKEN_PREFIX = "dso_"
TOKEN_BYTES = 32
_TOKEN_SHAPE = re.compile(r"^dso_[A-Za-z0-9_-]{43}$")
_NAME_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class Role(StrEnum):
    READ = "read"
    """Every GET: households, signals, responses, telemetry, plans, comfort, transformers, audit."""
    OPERATE = "operate"
    """Also publish, modify and cancel signals and add or change households' contracts."""

    def allows(self, needed: Role) -> bool:
        return needed is Role.READ or self is Role.OPERATE


def new_token() -> str:
    """A fresh bearer token; show it once and store only ``token_hash(token)``."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def looks_like_token(text: str) -> bool:
    """True for the shape ``new_token`` makes (checked before hashing, so junk never reaches the store)."""
    return bool(_TOKEN_SHAPE.match(text))


def token_hash(token: str) -> str:
    """Hex SHA-256 of a token or session secret, the only form the store keeps."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str) -> str:
    """A token's name appears in the audit log as who did something: a short, printable identifier."""
    if not _NAME_SHAPE.match(name):
        raise ValueError(f"token name {name!r} must be 1-64 characters of letters, digits and . _ @ -, starting "
                         "with a letter or digit (e.g. 'alice', 'ci-publisher')")
    return name


def parse_bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for another scheme or a malformed value."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value if looks_like_token(value) else None


@dataclass(frozen=True)
class ApiToken:
    """A stored credential (never the secret itself)."""

    token_id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    cert_sha256: str | None = None
    """For a client-certificate credential: the certificate's SHA-256 fingerprint (hex); None for a bearer."""

    def usable_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def state_at(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    @property
    def kind(self) -> str:
        return "certificate" if self.cert_sha256 else "bearer"


@dataclass(frozen=True)
class Identity:
    """Who is calling the API, as the audit log names them."""

    actor: str
    """``token:<name>`` for an API credential."""
    role: Role
    token_id: str
    via: str
    """``bearer``, ``certificate`` or ``session`` (the web pages' cookie)."""

    def to_json(self) -> dict[str, str]:
        return {"actor": self.actor, "role": self.role.value, "token_id": self.token_id, "via": self.via}


def actor_of(token: ApiToken) -> str:
    return f"token:{token.name}"
