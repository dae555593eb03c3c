"""The VTN's side of mutual TLS: the server context, loopback checks for plain HTTP, the peer's certificate.

TLS 1.2 or later, a client certificate required and verified against the configured CA bundle during the
handshake. OpenADR 2.0b mandates TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 (ECDSA certificates) and
TLS_RSA_WITH_AES_128_CBC_SHA256 (RSA certificates) for TLS 1.2; Python's default context disables both, so they
are enabled here after the AEAD suites (TLS 1.3 negotiates its own suites and is preferred when both sides can).
Which household a verified certificate speaks for is the store's enrolment (``dso_server.store.certificates``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dso_server.errors import ConfigurationError

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE-ECDSA-AES128-SHA256:AES128-SHA256"
"""The TLS 1.2 suites offered: forward-secret AEAD suites first, then the two 2.0b-mandated suites."""


@dataclass(frozen=True)
class VtnTls:
    cert: Path
    key: Path
    ca_file: Path
    passphrase: str | None = None

    def server_context(self) -> ssl.SSLContext:
        """The context the VTN's socket serves; refuses (``ConfigurationError``) files that do not load."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        # No renegotiation (TLS 1.2): a connection keeps the certificate it was accepted with (``peer_of``).
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
        context.set_ciphers(TLS12_CIPHERS)
        try:
            context.load_cert_chain(str(self.cert), str(self.key), self.passphrase)
        except (ssl.SSLError, OSError) as error:
            raise ConfigurationError(f"cannot serve TLS with certificate {self.cert} and key {self.key}: {error}",
                                     field="cert") from None
        try:
            context.load_verify_locations(cafile=str(self.ca_file))
        except (ssl.SSLError, OSError) as error:
            raise ConfigurationError(f"cannot load the VEN CA bundle {self.ca_file}: {error}",
                                     field="ca_file") from None
        return context


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1); false for 0.0.0.0, names, LAN addresses."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Peer:
    """The verified client certificate of a TLS connection."""

    fingerprint_sha256: str
    """SHA-256 of the DER certificate: the key of its enrolment."""

    @property
    def short(self) -> str:
        """OpenADR's form (last 10 bytes), for log lines an operator compares with 'pki list'."""
        tail = self.fingerprint_sha256[-20:].upper()
        return ":".join(tail[i:i + 2] for i in range(0, 20, 2))


_PEERS: weakref.WeakKeyDictionary[Any, Peer] = weakref.WeakKeyDictionary()
"""The peer of each open TLS connection (keyed by its SSLObject, gone with it): taken once per connection, not
per request, since the server context allows no renegotiation that could change it."""


def peer_of(transport: Any) -> Peer | None:
    """The client certificate of a connection (None on plain HTTP)."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    peer = _PEERS.get(ssl_object)
    if peer is None:
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            return None
        peer = _PEERS[ssl_object] = Peer(hashlib.sha256(der).hexdigest())
    return peer
