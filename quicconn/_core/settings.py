"""``CoreSettings``: what a core needs to know before it starts.

Neutral between backends: certificates and keys are ``cryptography``
objects, names and numbers are plain values; each backend turns them into
its own library's configuration.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .._certs import system_ca_locations
from .._constants import QUIC_VERSION_1, QUIC_VERSION_2
from .pmtud import ETHERNET_IPV4_PAYLOAD
from .rules import DEFAULT_HANDSHAKE_TIMEOUT

_PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S
)

#: The QUIC versions a context supports unless told otherwise, preferred first.
SUPPORTED_VERSIONS = (QUIC_VERSION_1, QUIC_VERSION_2)


@dataclass
class CoreSettings:
    """Everything a core needs to know before it starts.

    A :class:`~quicconn.Context` owns one and copies it per connection.
    """

    is_client: bool = True
    alpn_protocols: list[str] | None = None
    idle_timeout: float = 30.0
    #: An unfinished handshake is abandoned after this long without a
    #: datagram from the peer (0: only the idle timeout applies).
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    #: The largest UDP payload sent: every path starts at 1200 bytes, and
    #: path MTU discovery raises that up to here where the path carries it
    #: (the default: a 1500-byte Ethernet MTU over IPv4).
    max_datagram_size: int = ETHERNET_IPV4_PAYLOAD
    #: DATAGRAM frames (RFC 9221): the max_datagram_frame_size transport
    #: parameter; None does not offer them.
    max_datagram_frame_size: int | None = None
    max_data: int = 4 * 1024 * 1024
    max_stream_data: int = 1024 * 1024
    #: Server: NewSessionTickets after a full handshake (SSL_CTX_set_num_tickets;
    #: OpenSSL's default 2).  The cores send at most one; 0 sends none.
    num_tickets: int = 2
    #: The congestion controller; None: the core's default.
    congestion_control: str | None = None
    verify_peer: bool = True
    cafile: str | None = None
    capath: str | None = None
    cadata: bytes | None = None
    certificate: Any = None
    certificate_chain: list[Any] = field(default_factory=list)
    private_key: Any = None
    server_name: str | None = None
    secrets_log_file: TextIO | None = None
    qlog_dir: str | None = None
    supported_versions: list[int] = field(
        default_factory=lambda: list(SUPPORTED_VERSIONS)
    )
    #: The version of the first Initial (None: the first supported version);
    #: the others are offered by compatible version negotiation (RFC 9368).
    original_version: int | None = None
    #: TLS 1.3 cipher suites to offer, by IANA value (None: the core's default).
    cipher_suites: list[int] | None = None
    connection_id_length: int = 8
    #: Server: makes the connection IDs the server chooses, each
    #: ``connection_id_length`` bytes (a QUIC-LB configuration's
    #: ``new_cid``, see quic_lb.py); None: random ones.
    server_cid_factory: Callable[[], bytes] | None = None
    #: Server: the AES-GCM key (16, 24 or 32 bytes) Retry tokens are sealed
    #: with; servers that share it accept each other's tokens.  None: a
    #: random key per listener.
    retry_token_key: bytes | None = None
    #: Streams of each kind the peer may open at once (initial_max_streams_*).
    max_streams_bidi: int = 128
    max_streams_uni: int = 128
    #: Send a PING after a silence of half the idle timeout (at most 25 s),
    #: as OpenSSL's channel does, so that a connection whose application
    #: waits (or is thread-assisted) outlives the idle timeout.
    keep_alive: bool = False

    def load_cert_chain(
        self,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str] | None = None,
        password: bytes | str | None = None,
    ) -> None:
        """Load a PEM certificate chain and its private key.

        The key must be the certificate's (OpenSSL's SSL_CTX_use_PrivateKey
        checks this too and fails with "key values mismatch"); on any error
        the settings keep what they had.
        """
        with open(certfile, "rb") as fp:
            pem = fp.read()
        try:
            certificates = x509.load_pem_x509_certificates(pem)
        except ValueError:
            certificates = []
        if not certificates:
            raise ValueError(f"{os.fspath(certfile)!r} holds no PEM certificate")
        key_pem = pem
        if keyfile is not None:
            with open(keyfile, "rb") as fp:
                key_pem = fp.read()
        match = _PEM_PRIVATE_KEY.search(key_pem)
        if match is None:
            raise ValueError(
                "no PEM private key found: pass keyfile=, or put the key in certfile"
            )
        pw = password.encode() if isinstance(password, str) else password
        try:
            private_key = serialization.load_pem_private_key(
                match.group(0), password=pw
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot load the private key: {exc}") from exc
        if not _same_public_key(certificates[0], private_key):
            raise ValueError(
                "the private key does not match the certificate "
                f"(certificate {os.fspath(certfile)!r}, key "
                f"{os.fspath(keyfile if keyfile is not None else certfile)!r}); "
                "OpenSSL says: key values mismatch"
            )
        self.private_key = private_key
        self.certificate = certificates[0]
        self.certificate_chain = certificates[1:]

    def load_default_verify_paths(self) -> None:
        """Trust the system's CA store (OpenSSL's default locations)."""
        cafile, capath = system_ca_locations()
        self.cafile = cafile or self.cafile
        self.capath = capath or self.capath

    def has_trust_anchors(self) -> bool:
        return bool(self.cafile or self.capath or self.cadata)


def _same_public_key(certificate: x509.Certificate, key: object) -> bool:
    """Whether ``key`` is the private half of the certificate's public key."""
    public_key = getattr(key, "public_key", None)
    if public_key is None:
        return False
    encoding = serialization.Encoding.DER
    info = serialization.PublicFormat.SubjectPublicKeyInfo
    mine: bytes = public_key().public_bytes(encoding, info)
    theirs: bytes = certificate.public_key().public_bytes(encoding, info)
    return mine == theirs


__all__ = ["SUPPORTED_VERSIONS", "CoreSettings"]
