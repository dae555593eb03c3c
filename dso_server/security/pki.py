"""A small certificate authority for labs and pilots: the DSO's CA, the VTN's server certificate and one client
certificate per household VEN (``dso-server pki ...``).

Layout of a PKI directory (mode 0700; every private key 0600, written exclusively, never overwritten)::

    ca.crt  ca.key            the CA (BasicConstraints CA, path length 0; signs certificates and CRLs)
    vtn.crt vtn.key           the VTN's TLS (and XML-signature) certificate: serverAuth, the host names/IPs given
    vens/<EAN>.crt .key       a household VEN's certificate: clientAuth, CN = the connection point's EAN
    issued.json               every certificate issued: serial, kind, subject, EAN, fingerprint, validity, revocation
    crl.pem                   the CA's certificate revocation list (rewritten by ``revoke``)

Keys are ECDSA P-256 by default (``key_type="rsa"``: RSA 2048), the two key types OpenADR 2.0b certifies, signed
with SHA-256. Which certificate speaks for which household is decided by the VTN's store (enrolment, PROFILE
§12), not by the subject name: ``issue_ven`` returns what to enrol, ``revoke`` what to mark revoked.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.contract import ean18_check_digit

KeyType = Literal["ec", "rsa"]
CA_DAYS = 3650
LEAF_DAYS = 825
"""Leaf certificates: at most 825 days, the CA/Browser Forum limit most TLS clients still enforce."""
DEFAULT_VTN_HOSTS = ("localhost", "127.0.0.1", "::1")
ORGANISATION = "HEMS-DSO interface lab PKI"


class PkiError(Exception):
    """A PKI operation that cannot be done; the message says what to do instead."""


@dataclass(frozen=True)
class Issued:
    """One certificate the CA issued (a row of issued.json)."""

    serial: str
    """Hex serial number."""
    kind: Literal["ca", "vtn", "ven"]
    subject: str
    ean: str | None
    fingerprint_sha256: str
    not_before: str
    not_after: str
    cert_path: str
    """Relative to the PKI directory."""
    revoked_at: str | None = None
    revocation_reason: str | None = None


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def openadr_fingerprint(certificate: x509.Certificate) -> str:
    """OpenADR's short form: the last 10 bytes of the SHA-256 of the DER certificate, colon-separated."""
    digest = certificate.fingerprint(hashes.SHA256())[-10:]
    return ":".join(f"{byte:02X}" for byte in digest)


def check_ean(ean: str) -> str:
    if len(ean) != 18 or not ean.isdigit():
        raise PkiError(f"--ean {ean!r} is not an 18-digit EAN (the household's connection point id)")
    if ean18_check_digit(ean[:17]) != ean[17]:
        raise PkiError(f"--ean {ean!r} has check digit {ean[17]}, expected {ean18_check_digit(ean[:17])}")
    return ean


# ---------------------------------------------------------------------------------------------- files


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never replacing a file); refuse if it exists."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PkiError(f"{path} exists; refusing to overwrite a private key") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


def _write_public(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.chmod(0o644)
    temporary.replace(path)


def _read_key(path: Path) -> Any:
    if not path.is_file():
        raise PkiError(f"{path} does not exist")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PkiError(f"{path} is readable by others (mode {mode:04o}); run 'chmod 600 {path}'")
    return serialization.load_pem_private_key(path.read_bytes(), None)


def _new_key(key_type: KeyType) -> Any:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise PkiError(f"key type {key_type!r} is not supported; use 'ec' (P-256) or 'rsa' (2048 bit)")


def _pem_key(key: Any) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class Pki:
    """A PKI directory. ``now`` dates certificates and revocations (injected in tests)."""

    def __init__(self, directory: str | Path, *, now: datetime | None = None) -> None:
        self.dir = Path(directory)
        self.now = now if now is not None else datetime.now(UTC)

    @property
    def ca_cert_path(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def vtn_cert_path(self) -> Path:
        return self.dir / "vtn.crt"

    @property
    def vtn_key_path(self) -> Path:
        return self.dir / "vtn.key"

    def ven_paths(self, ean: str) -> tuple[Path, Path]:
        return self.dir / "vens" / f"{ean}.crt", self.dir / "vens" / f"{ean}.key"

    # ------------------------------------------------------------------------------------------ index

    def issued(self) -> list[Issued]:
        path = self.dir / "issued.json"
        if not path.is_file():
            return []
        try:
            return [Issued(**row) for row in json.loads(path.read_text(encoding="utf-8"))]
        except (ValueError, TypeError) as error:
            raise PkiError(f"{path} is damaged: {error}") from None

    def _save_index(self, rows: list[Issued]) -> None:
        _write_public(self.dir / "issued.json",
                      json.dumps([asdict(row) for row in rows], indent=2).encode("utf-8") + b"\n")

    def _record(self, kind: Literal["ca", "vtn", "ven"], certificate: x509.Certificate, path: Path,
                ean: str | None = None) -> Issued:
        row = Issued(serial=f"{certificate.serial_number:x}", kind=kind,
                     subject=certificate.subject.rfc4514_string(), ean=ean,
                     fingerprint_sha256=fingerprint_sha256(certificate),
                     not_before=certificate.not_valid_before_utc.isoformat(),
                     not_after=certificate.not_valid_after_utc.isoformat(),
                     cert_path=str(path.relative_to(self.dir)))
        self._save_index([*self.issued(), row])
        return row

    # --------------------------------------------------------------------------------------------- CA

    def init(self, *, name: str = "DSO lab CA", key_type: KeyType = "ec", days: int = CA_DAYS) -> Issued:
        """Create the CA (key, self-signed certificate) and an empty CRL in a new or empty directory."""
        if (self.dir / "ca.key").exists() or self.ca_cert_path.exists():
            raise PkiError(f"{self.dir} already holds a CA (ca.crt/ca.key); use another --dir or the existing CA")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        key = _new_key(key_type)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - timedelta(minutes=5)).not_valid_after(self.now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.dir / "ca.key", _pem_key(key))
        _write_public(self.ca_cert_path, _pem(certificate))
        row = self._record("ca", certificate, self.ca_cert_path)
        self._write_crl(key, certificate)
        return row

    def _ca(self) -> tuple[Any, x509.Certificate]:
        if not self.ca_cert_path.is_file():
            raise PkiError(f"no CA in {self.dir}: run 'dso-server pki init --dir {self.dir}' first")
        key = _read_key(self.dir / "ca.key")
        return key, x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())

    # ---------------------------------------------------------------------------------------- leaves

    def _leaf(self, *, subject: x509.Name, usage: x509.ObjectIdentifier, key_type: KeyType, days: int,
              alt_names: list[x509.GeneralName]) -> tuple[Any, x509.Certificate]:
        ca_key, ca_cert = self._ca()
        if days < 1 or days > LEAF_DAYS:
            raise PkiError(f"--days {days} must be between 1 and {LEAF_DAYS}")
        key = _new_key(key_type)
        public = key.public_key()
        is_rsa = isinstance(key, rsa.RSAPrivateKey)
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - timedelta(minutes=5))
            .not_valid_after(min(self.now + timedelta(days=days), ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
                                         data_encipherment=False, key_agreement=not is_rsa, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    def issue_vtn(self, *, hosts: tuple[str, ...] = DEFAULT_VTN_HOSTS, key_type: KeyType = "ec",
                  days: int = LEAF_DAYS) -> Issued:
        """The VTN's server certificate for ``hosts`` (DNS names and IP addresses the VENs connect to)."""
        if not hosts:
            raise PkiError("give at least one --host the VENs use to reach the VTN")
        alt_names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                if not host or any(c.isspace() or c in "/:@" for c in host):
                    raise PkiError(f"--host {host!r} is neither an IP address nor a DNS name") from None
                alt_names.append(x509.DNSName(host))
        if self.vtn_cert_path.exists() or self.vtn_key_path.exists():
            raise PkiError(f"{self.vtn_cert_path} exists; revoke it ('dso-server pki revoke --vtn') to issue another")
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                             x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        key, certificate = self._leaf(subject=subject, usage=ExtendedKeyUsageOID.SERVER_AUTH, key_type=key_type,
                                      days=days, alt_names=alt_names)
        _write_private(self.vtn_key_path, _pem_key(key))
        _write_public(self.vtn_cert_path, _pem(certificate))
        return self._record("vtn", certificate, self.vtn_cert_path)

    def issue_ven(self, *, ean: str, key_type: KeyType = "ec", days: int = LEAF_DAYS) -> Issued:
        """A household VEN's client certificate (CN = the EAN). One current certificate per household: revoke
        the previous one first (``revoke(ean=...)``) to issue a new one."""
        check_ean(ean)
        cert_path, key_path = self.ven_paths(ean)
        if cert_path.exists() or key_path.exists():
            raise PkiError(f"{cert_path} exists; revoke it first ('dso-server pki revoke --ean {ean}') to issue a "
                           "new certificate for this household")
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                             x509.NameAttribute(NameOID.COMMON_NAME, ean)])
        key, certificate = self._leaf(subject=subject, usage=ExtendedKeyUsageOID.CLIENT_AUTH, key_type=key_type,
                                      days=days, alt_names=[x509.UniformResourceIdentifier(f"urn:ean:{ean}")])
        cert_path.parent.mkdir(mode=0o700, exist_ok=True)
        _write_private(key_path, _pem_key(key))
        _write_public(cert_path, _pem(certificate))
        return self._record("ven", certificate, cert_path, ean=ean)

    # ------------------------------------------------------------------------------------- revocation

    def revoke(self, *, ean: str | None = None, serial: str | None = None, vtn: bool = False,
               reason: str = "unspecified") -> Issued:
        """Revoke the current certificate of a household (``ean``), the VTN's, or one by serial: mark it in
        issued.json, rewrite the CRL, and move its files aside (``*.revoked-<serial>``) so a new one can be issued.
        Returns the revoked row (its fingerprint is what the VTN's store marks revoked)."""
        if sum(x is not None and x is not False for x in (ean, serial, vtn or None)) != 1:
            raise PkiError("name exactly one certificate to revoke: --ean, --serial or --vtn")
        ca_key, ca_cert = self._ca()
        rows = self.issued()
        if ean is not None:
            check_ean(ean)
            matches = [r for r in rows if r.kind == "ven" and r.ean == ean and r.revoked_at is None]
            what = f"household {ean}"
        elif vtn:
            matches = [r for r in rows if r.kind == "vtn" and r.revoked_at is None]
            what = "the VTN"
        else:
            wanted = (serial or "").lower().removeprefix("0x").lstrip("0")
            matches = [r for r in rows if r.serial.lstrip("0") == wanted and r.kind != "ca"]
            what = f"serial {serial}"
        if not matches:
            raise PkiError(f"no valid certificate of {what} was issued by the CA in {self.dir}")
        target = matches[-1]
        if target.revoked_at is not None:
            raise PkiError(f"the certificate with serial {target.serial} was already revoked at {target.revoked_at}")
        revoked = Issued(**{**asdict(target), "revoked_at": self.now.isoformat(), "revocation_reason": reason})
        self._save_index([revoked if r is target else r for r in rows])
        self._write_crl(ca_key, ca_cert)
        cert_path = self.dir / target.cert_path
        key_path = cert_path.with_suffix(".key")
        for path in (cert_path, key_path):
            if path.exists():
                path.replace(path.with_name(f"{path.name}.revoked-{target.serial}"))
        return revoked

    def _write_crl(self, ca_key: Any, ca_cert: x509.Certificate) -> None:
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
                   .last_update(self.now).next_update(self.now + timedelta(days=30)))
        for row in self.issued():
            if row.revoked_at is not None:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(int(row.serial, 16))
                    .revocation_date(datetime.fromisoformat(row.revoked_at)).build())
        crl = builder.sign(ca_key, hashes.SHA256())
        _write_public(self.dir / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))


def load_certificate(path: str | Path) -> x509.Certificate:
    """A PEM certificate from a file, with a readable error."""
    path = Path(path)
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as error:
        raise PkiError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError:
        with contextlib.suppress(ValueError, OSError):
            return x509.load_der_x509_certificate(path.read_bytes())
        raise PkiError(f"{path} holds no PEM or DER certificate") from None
