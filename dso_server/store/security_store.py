"""Operator API credentials, web sessions and the audit log in the DSO's store (tables of schema 3).

Only hashes of secrets are stored (``dso_server.security.tokens``). A token's name is unique among its active
tokens (a revoked or expired name may be given again; the audit log keeps the token id beside the name). Every
token and session change writes its audit entry in the same transaction, so neither exists without the other.
The server looks tokens up on every request, so a revocation by ``dso-server token revoke`` (another process on
the same file) takes effect at the next request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from dso_server.errors import Conflict, NotFound
from dso_server.security.audit import AuditEntry
from dso_server.security.tokens import ApiToken, Role, check_name, new_token, token_hash
from dso_server.store.sqlite import DsoStore, from_text, new_id, to_text, where_clause


class UnknownToken(NotFound):
    def __init__(self, which: str) -> None:
        super().__init__(f"No token has the name or id {which!r} ('dso-server token list' shows them).",
                         field="token")


class SecurityStore:
    """Tokens, sessions and audit entries over one ``DsoStore``."""

    def __init__(self, store: DsoStore) -> None:
        self.store = store

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self.store.db.query(sql, params))

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.store.db.execute(sql, params)

    # ------------------------------------------------------------------------------------------------ tokens

    def create_token(self, name: str, role: Role, *, now: datetime, actor: str, expires_at: datetime | None = None,
                     cert_sha256: str | None = None) -> tuple[ApiToken, str | None]:
        """A new credential and, for a bearer token, its secret (shown once, never stored). With ``cert_sha256``
        the credential is that client certificate (hex SHA-256 of its DER form) and there is no secret."""
        check_name(name)
        if expires_at is not None and expires_at <= now:
            raise Conflict(f"The token would expire at {expires_at.isoformat()}, before now.", field="expires_at")
        secret = None if cert_sha256 else new_token()
        with self.store.transaction():
            if any(token.usable_at(now) for token in self.tokens() if token.name == name):
                raise Conflict(f"An active token is already named {name!r}; revoke it first or pick another name.",
                               field="name")
            if cert_sha256 and self._rows("SELECT 1 FROM api_tokens WHERE cert_sha256 = ?", [cert_sha256]):
                raise Conflict("This certificate is already a credential (see 'dso-server token list').",
                               field="cert")
            token_id = new_id("tok")
            self._execute(
                "INSERT INTO api_tokens (token_id, name, role, secret_sha256, cert_sha256, created_at, created_by, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [token_id, name, role.value, token_hash(secret) if secret else None, cert_sha256, to_text(now),
                 actor, to_text(expires_at) if expires_at else None])
            token = self.token(token_id)
            self.record(AuditEntry(at=now, actor=actor, action="token.create", target=token_id, detail={
                "name": name, "role": role.value, "kind": token.kind,
                "expires_at": to_text(expires_at) if expires_at else None}))
        return token, secret

    def tokens(self) -> list[ApiToken]:
        return [_token(row) for row in self._rows("SELECT * FROM api_tokens ORDER BY created_at, token_id")]

    def token(self, which: str) -> ApiToken:
        """A token by id, or by name (the active one, else the latest with that name)."""
        rows = self._rows("SELECT * FROM api_tokens WHERE token_id = ?", [which])
        if not rows:
            rows = self._rows("SELECT * FROM api_tokens WHERE name = ? ORDER BY revoked_at IS NOT NULL, "
                              "created_at DESC", [which])
        if not rows:
            raise UnknownToken(which)
        return _token(rows[0])

    def revoke_token(self, which: str, *, now: datetime, actor: str) -> ApiToken:
        """Revoke a token (by name or id) and end its web sessions; revoking twice is refused."""
        token = self.token(which)
        if token.revoked_at is not None:
            raise Conflict(f"Token {token.name!r} ({token.token_id}) was revoked at {token.revoked_at.isoformat()} "
                           f"by {token.revoked_by}.", field="token")
        with self.store.transaction():
            self._execute("UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE token_id = ?",
                          [to_text(now), actor, token.token_id])
            self._execute("DELETE FROM api_sessions WHERE token_id = ?", [token.token_id])
            self.record(AuditEntry(at=now, actor=actor, action="token.revoke", target=token.token_id,
                                   detail={"name": token.name, "role": token.role.value}))
        return self.token(token.token_id)

    def authenticate(self, secret: str, *, now: datetime) -> ApiToken | None:
        """The usable token whose secret this is; None for an unknown, revoked or expired one."""
        rows = self._rows("SELECT * FROM api_tokens WHERE secret_sha256 = ?", [token_hash(secret)])
        token = _token(rows[0]) if rows else None
        return token if token is not None and token.usable_at(now) else None

    def authenticate_certificate(self, cert_sha256: str, *, now: datetime) -> ApiToken | None:
        rows = self._rows("SELECT * FROM api_tokens WHERE cert_sha256 = ?", [cert_sha256])
        token = _token(rows[0]) if rows else None
        return token if token is not None and token.usable_at(now) else None

    # ---------------------------------------------------------------------------------------------- sessions

    def create_session(self, token: ApiToken, *, now: datetime, ttl: timedelta) -> tuple[str, datetime]:
        """A web session for ``token`` (secret, expiry); the session ends with the token or at expiry."""
        secret = new_token()
        expires_at = now + ttl
        if token.expires_at is not None:
            expires_at = min(expires_at, token.expires_at)
        with self.store.transaction():
            self._execute("DELETE FROM api_sessions WHERE expires_at <= ?", [to_text(now)])
            self._execute("INSERT INTO api_sessions (session_sha256, token_id, created_at, expires_at) "
                          "VALUES (?, ?, ?, ?)",
                          [token_hash(secret), token.token_id, to_text(now), to_text(expires_at)])
            self.record(AuditEntry(at=now, actor=f"token:{token.name}", action="session.login",
                                   target=token.token_id, detail={"expires_at": to_text(expires_at)}))
        return secret, expires_at

    def session(self, secret: str, *, now: datetime) -> tuple[ApiToken, datetime] | None:
        """The token behind a live session and the session's expiry; None when unknown or over."""
        rows = self._rows("SELECT t.*, s.expires_at AS session_expires_at FROM api_sessions s "
                          "JOIN api_tokens t ON t.token_id = s.token_id WHERE s.session_sha256 = ?",
                          [token_hash(secret)])
        if not rows:
            return None
        expires_at = from_text(rows[0]["session_expires_at"])
        token = _token(rows[0])
        if now >= expires_at or not token.usable_at(now):
            return None
        return token, expires_at

    def end_session(self, secret: str, *, now: datetime, actor: str) -> bool:
        rows = self._rows("SELECT token_id FROM api_sessions WHERE session_sha256 = ?", [token_hash(secret)])
        if not rows:
            return False
        with self.store.transaction():
            self._execute("DELETE FROM api_sessions WHERE session_sha256 = ?", [token_hash(secret)])
            self.record(AuditEntry(at=now, actor=actor, action="session.logout", target=rows[0]["token_id"]))
        return True

    # ------------------------------------------------------------------------------------------------- audit

    def record(self, entry: AuditEntry) -> None:
        """Append one entry (inside the caller's transaction when there is one)."""
        self._execute("INSERT INTO audit_log (at, actor, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
                      [to_text(entry.at), entry.actor, entry.action, entry.target, entry.outcome,
                       json.dumps(dict(entry.detail), sort_keys=True, default=str)])

    def audit(self, *, since: datetime | None = None, until: datetime | None = None, actor: str | None = None,
              action: str | None = None, outcome: str | None = None, limit: int = 1000) -> list[AuditEntry]:
        """Entries with ``since <= at < until``, oldest first; the newest ``limit`` of them when there are more.
        ``action`` matches a whole action or a family (``signal`` matches ``signal.publish`` ...)."""
        where, params = where_clause(
            ("at >= ?", to_text(since) if since is not None else None),
            ("at < ?", to_text(until) if until is not None else None),
            ("actor = ?", actor), ("outcome = ?", outcome),
            ("(action = ? OR substr(action, 1, ?) = ?)", action))
        if action is not None:  # the family: 'signal' matches 'signal.publish'
            params[-1:] = [action, len(action) + 1, action + "."]
        rows = self._rows(f"SELECT * FROM audit_log{where} ORDER BY id DESC LIMIT ?", [*params, limit])
        return [_entry(row) for row in reversed(rows)]


def _maybe(text: str | None) -> datetime | None:
    return None if text is None else from_text(text)


def _token(row: Mapping[str, Any]) -> ApiToken:
    return ApiToken(token_id=row["token_id"], name=row["name"], role=Role(row["role"]),
                    created_at=from_text(row["created_at"]), created_by=row["created_by"],
                    expires_at=_maybe(row["expires_at"]), revoked_at=_maybe(row["revoked_at"]),
                    revoked_by=row["revoked_by"], cert_sha256=row["cert_sha256"])


def _entry(row: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(at=from_text(row["at"]), actor=row["actor"], action=row["action"], target=row["target"],
                      outcome=row["outcome"], detail=json.loads(row["detail"]), entry_id=row["id"])
