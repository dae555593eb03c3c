"""Security for tests. The DSO server and the HEMS are secure by default (mutual TLS); a test that is not about
security runs plain HTTP on loopback and says so with one import of this module (``plain_settings``,
``PLAIN_HTTP``). Tests about security build a lab PKI with ``LabPki``: the same CA code as ``dso-server pki``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from dso_server.security.pki import Pki, fingerprint_sha256
from dso_server.settings import DsoSettings
from dso_server.store.certificates import CertificateStore, Enrolment
from dso_server.store.sqlite import DsoStore
from hems_client.app import VenSecurity
from hems_client.transport.oadr20b.openleadr_adapter import VenTls

PLAIN_HTTP = VenSecurity(insecure=True)
"""The HEMS side of plain HTTP on loopback: no certificates, nothing verified."""


def plain_settings(**fields: Any) -> DsoSettings:
    """``DsoSettings`` for plain HTTP on loopback (``insecure=True``), otherwise as given."""
    return DsoSettings(insecure=True, **fields)


@dataclass
class LabPki:
    """A CA with the VTN's certificate (localhost, 127.0.0.1, ::1) and VEN certificates issued on demand."""

    pki: Pki

    @classmethod
    def create(cls, directory: Path) -> LabPki:
        pki = Pki(directory)
        pki.init(name="Test CA")
        pki.issue_vtn()
        return cls(pki)

    @property
    def ca_file(self) -> Path:
        return self.pki.ca_cert_path

    def settings(self, **fields: Any) -> DsoSettings:
        """``DsoSettings`` serving mutual TLS with this PKI, otherwise as given."""
        return DsoSettings(cert=self.pki.vtn_cert_path, key=self.pki.vtn_key_path, ca_file=self.ca_file, **fields)

    def issue_ven(self, ean: str) -> tuple[Path, Path]:
        """The VEN certificate and key of ``ean`` (issued once)."""
        cert_path, key_path = self.pki.ven_paths(ean)
        if not cert_path.exists():
            self.pki.issue_ven(ean=ean)
        return cert_path, key_path

    def ven_security(self, ean: str, **fields: Any) -> VenSecurity:
        cert_path, key_path = self.issue_ven(ean)
        return VenSecurity(cert=str(cert_path), key=str(key_path), ca_file=str(self.ca_file), **fields)

    def ven_tls(self, ean: str) -> VenTls:
        cert_path, key_path = self.issue_ven(ean)
        return VenTls(cert=cert_path, key=key_path, ca_file=self.ca_file)

    def enrol(self, store: DsoStore, ean: str, *, as_household: str | None = None) -> str:
        """Enrol ``ean``'s certificate in ``store`` (for ``as_household`` when given); its SHA-256 fingerprint."""
        return enrol_certificate(store, as_household or ean, self.issue_ven(ean)[0])


def enrol_certificate(store: DsoStore, ean: str, cert_path: Path) -> str:
    """Enrol the certificate at ``cert_path`` (any CA) for household ``ean``; its SHA-256 fingerprint."""
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    CertificateStore(store).enrol(Enrolment(
        fingerprint_sha256=fingerprint_sha256(certificate), connection_point_id=ean,
        subject=certificate.subject.rfc4514_string(), serial=f"{certificate.serial_number:x}",
        not_after=certificate.not_valid_after_utc, enrolled_at=datetime.now(UTC)))
    return fingerprint_sha256(certificate)
