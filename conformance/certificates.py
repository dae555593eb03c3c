"""The suite's own certificates for the security rules (VTN-SEC, VEN-SEC), made with ``cryptography``.

``issue(directory, eans)`` writes (ECDSA P-256, SHA-256; keys 0600)::

    ca.crt                       the suite's CA: a VTN under test must trust it for VEN certificates
    vtn.crt vtn.key              the scripted VTN's server certificate (127.0.0.1, localhost), from the suite's CA
    vens/<EAN>.crt .key          one client certificate per household, from the suite's CA (to be enrolled)
    stranger.crt stranger.key    a client certificate from the suite's CA that no VTN has enrolled
    impostor/ca.crt              another CA, nobody's trust anchor
    impostor/vtn.crt .key        a server certificate for 127.0.0.1/localhost from that other CA (an impostor VTN)
    impostor/ven.crt .key        a client certificate from that other CA

The suite imports only ``protocol`` from the project, so this is not ``dso_server.security.pki``: a vendor can run
the suite against any VTN or VEN with nothing else installed.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOSTS = ("127.0.0.1", "localhost")
STRANGER_EAN = "871687199999999996"
"""CN of the certificate nobody enrolled (a valid EAN18 no test household uses)."""


@dataclass(frozen=True)
class SuiteCertificates:
    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def vtn(self) -> tuple[Path, Path]:
        return self.directory / "vtn.crt", self.directory / "vtn.key"

    def ven(self, ean: str) -> tuple[Path, Path]:
        return self.directory / "vens" / f"{ean}.crt", self.directory / "vens" / f"{ean}.key"

    @property
    def stranger(self) -> tuple[Path, Path]:
        return self.directory / "stranger.crt", self.directory / "stranger.key"

    @property
    def impostor_vtn(self) -> tuple[Path, Path]:
        return self.directory / "impostor" / "vtn.crt", self.directory / "impostor" / "vtn.key"

    @property
    def impostor_ven(self) -> tuple[Path, Path]:
        return self.directory / "impostor" / "ven.crt", self.directory / "impostor" / "ven.key"

    def eans(self) -> list[str]:
        return sorted(path.stem for path in (self.directory / "vens").glob("*.crt"))

    def server_context(self, *, impostor: bool = False, client_ca: Path | None = None) -> ssl.SSLContext:
        """A VTN's context: TLS 1.2+, the (impostor's) server certificate, client certificates required and
        verified against ``client_ca`` (the suite's CA by default); the impostor asks for none."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        cert, key = self.impostor_vtn if impostor else self.vtn
        context.load_cert_chain(str(cert), str(key))
        if not impostor:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(client_ca or self.ca_file))
        return context

    def client_context(self, cert_key: tuple[Path, Path] | None, *, vtn_ca: Path | None) -> ssl.SSLContext:
        """A VEN's context presenting ``cert_key`` and verifying the VTN against ``vtn_ca`` (not at all: None)."""
        context = ssl.create_default_context(cafile=str(vtn_ca) if vtn_ca else None)
        if vtn_ca is None:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cert_key is not None:
            context.load_cert_chain(str(cert_key[0]), str(cert_key[1]))
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hems-conformance"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, certificate: x509.Certificate, key: Any | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_suffix(".key")
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))


def _ca(common_name: str, now: datetime) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .sign(key, hashes.SHA256()))
    return key, certificate


def _leaf(ca: tuple[Any, x509.Certificate], common_name: str, now: datetime, *, server: bool) -> tuple[Any, Any]:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    if server:
        for host in HOSTS:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def issue(directory: Path, eans: list[str], *, now: datetime | None = None) -> SuiteCertificates:
    """Write a fresh set of the suite's certificates into ``directory`` (see the module docstring)."""
    now = now or datetime.now(UTC)
    certificates = SuiteCertificates(directory)
    ca = _ca("hems-conformance CA", now)
    _write(certificates.ca_file, ca[1])
    key, certificate = _leaf(ca, "conformance scripted VTN", now, server=True)
    _write(certificates.vtn[0], certificate, key)
    for ean in eans:
        key, certificate = _leaf(ca, ean, now, server=False)
        _write(certificates.ven(ean)[0], certificate, key)
    key, certificate = _leaf(ca, STRANGER_EAN, now, server=False)
    _write(certificates.stranger[0], certificate, key)
    impostor = _ca("impostor CA", now)
    _write(directory / "impostor" / "ca.crt", impostor[1])
    key, certificate = _leaf(impostor, "impostor VTN", now, server=True)
    _write(certificates.impostor_vtn[0], certificate, key)
    key, certificate = _leaf(impostor, STRANGER_EAN, now, server=False)
    _write(certificates.impostor_ven[0], certificate, key)
    return certificates
