"""Which VEN certificate speaks for which household: enrolments in the DSO's store (table ``ven_certificates``).

A certificate is bound to one household by the full SHA-256 of its DER encoding when the operator enrols it
(``dso-server pki issue-ven`` does so for the certificates its CA issues, ``dso-server pki enrol`` for a
certificate from elsewhere, e.g. the OpenADR Alliance PKI). The VTN serves a TLS client only while its
certificate is enrolled and not revoked, and only for that household (PROFILE §12.2). Several certificates may be
enrolled for one household (a renewal overlapping the old one); a fingerprint belongs to exactly one household.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dso_server.errors import Conflict, NotFound
from dso_server.store.changes import CERTIFICATE, record_changes
from dso_server.store.sqlite import DsoStore, from_text, to_text, where_clause


@dataclass(frozen=True)
class Enrolment:
    fingerprint_sha256: str
    connection_point_id: str
    subject: str
    serial: str
    not_after: datetime
    enrolled_at: datetime
    revoked_at: datetime | None = None
    revocation_reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class UnknownCertificate(NotFound):
    def __init__(self, fingerprint_sha256: str) -> None:
        self.fingerprint_sha256 = fingerprint_sha256
        super().__init__(f"No certificate with SHA-256 fingerprint {fingerprint_sha256} is enrolled.",
                         field="fingerprint_sha256")


class CertificateStore:
    """Enrolments over a ``DsoStore`` (plain SQL with ``?`` parameters)."""

    def __init__(self, store: DsoStore) -> None:
        self.store = store

    def enrol(self, enrolment: Enrolment) -> bool:
        """Bind a certificate to a household. True when new; False when this exact binding exists already.
        Refuses (``Conflict``) a certificate enrolled for another household or revoked."""
        known = self.enrolment(enrolment.fingerprint_sha256)
        if known is not None:
            if known.connection_point_id != enrolment.connection_point_id:
                raise Conflict(f"Certificate {enrolment.fingerprint_sha256} is enrolled for household "
                               f"{known.connection_point_id}, not {enrolment.connection_point_id}; one certificate "
                               "speaks for one household.", field="connection_point_id")
            if known.revoked:
                raise Conflict(f"Certificate {enrolment.fingerprint_sha256} was revoked at "
                               f"{known.revoked_at.isoformat() if known.revoked_at else '?'}; issue a new one.",
                               field="fingerprint_sha256")
            return False
        with self.store.transaction():
            self.store.db.execute(
                "INSERT INTO ven_certificates (fingerprint_sha256, connection_point_id, subject, serial, not_after, "
                "enrolled_at) VALUES (?, ?, ?, ?, ?, ?)",
                [enrolment.fingerprint_sha256, enrolment.connection_point_id, enrolment.subject, enrolment.serial,
                 to_text(enrolment.not_after), to_text(enrolment.enrolled_at)])
            record_changes(self.store.db, CERTIFICATE, [enrolment.connection_point_id], origin=self.store.origin)
        return True

    def enrolment(self, fingerprint_sha256: str) -> Enrolment | None:
        rows = self.store._rows("SELECT * FROM ven_certificates WHERE fingerprint_sha256 = ?", [fingerprint_sha256])
        return _enrolment(rows[0]) if rows else None

    def enrolments(self, connection_point_id: str | None = None) -> list[Enrolment]:
        where, params = where_clause(("connection_point_id = ?", connection_point_id))
        return [_enrolment(row) for row in self.store._rows(
            f"SELECT * FROM ven_certificates{where} ORDER BY connection_point_id, enrolled_at", params)]

    def revoke(self, fingerprint_sha256: str, *, reason: str, now: datetime) -> Enrolment:
        """Mark a certificate revoked (the VTN refuses it from its next message on). Idempotent."""
        known = self.enrolment(fingerprint_sha256)
        if known is None:
            raise UnknownCertificate(fingerprint_sha256)
        if not known.revoked:
            with self.store.transaction():
                self.store.db.execute("UPDATE ven_certificates SET revoked_at = ?, revocation_reason = ? "
                                      "WHERE fingerprint_sha256 = ?", [to_text(now), reason, fingerprint_sha256])
                # Running VTNs drop the enrolment they cached: the revocation holds from the next message on.
                record_changes(self.store.db, CERTIFICATE, [known.connection_point_id], origin=self.store.origin)
        revoked = self.enrolment(fingerprint_sha256)
        assert revoked is not None
        return revoked


def _enrolment(row: dict[str, Any]) -> Enrolment:
    return Enrolment(
        fingerprint_sha256=row["fingerprint_sha256"], connection_point_id=row["connection_point_id"],
        subject=row["subject"], serial=row["serial"], not_after=from_text(row["not_after"]),
        enrolled_at=from_text(row["enrolled_at"]),
        revoked_at=from_text(row["revoked_at"]) if row["revoked_at"] else None,
        revocation_reason=row["revocation_reason"],
    )
