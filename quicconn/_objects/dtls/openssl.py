"""pyOpenSSL glue shared by the DTLS objects: callbacks and per-SSL state.

pyOpenSSL sets callbacks (verification, cookies, key logging) once per
``SSL.Context``; each finds what it needs about its ``SSL`` object in an
:class:`SslState` stored as the object's app data.  Stateless cookies
(:class:`CookieMint`) and the reading of OpenSSL's output
(:func:`drain_records`) live here too, so the listener and the connections
share them without importing each other.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass, field
from typing import TextIO

from OpenSSL import SSL, crypto
from service_identity import CertificateError
from service_identity import VerificationError as IdentityMismatch
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)

from ..._io.clock import Clock
from ..._io.transport import Address
from .records import split_records

__all__ = [
    "COOKIE_LIFETIME",
    "CookieMint",
    "SslState",
    "cookie_generate_callback",
    "cookie_verify_callback",
    "drain_records",
    "keylog_callback",
    "verify_callback",
]

#: Lifetime of a stateless cookie (HelloVerifyRequest), seconds.
COOKIE_LIFETIME = 60.0

_X509_ERROR_NAMES = {
    value: name[4:].lower().replace("_", " ")
    for name, value in vars(SSL.X509VerificationCodes).items()
    if name.startswith("ERR_") and isinstance(value, int)
}


@dataclass
class CookieMint:
    """Stateless DTLS cookies: HMAC of the peer address and a time window.

    A cookie proves the client receives datagrams at the address it sends
    from (RFC 6347 section 4.2.1).  It is valid in the window it was made in
    and the next one, so between one and two :data:`COOKIE_LIFETIME` s.
    """

    secret: bytes = field(default_factory=lambda: os.urandom(32))

    def make(self, peer: Address, now: float) -> bytes:
        """The cookie for ``peer`` now (SSL_CTX_set_cookie_generate_cb)."""
        return self._mac(peer, int(now // COOKIE_LIFETIME))

    def check(self, peer: Address, now: float, cookie: bytes) -> bool:
        """Whether ``cookie`` is ``peer``'s (SSL_CTX_set_cookie_verify_cb)."""
        window = int(now // COOKIE_LIFETIME)
        return any(
            hmac.compare_digest(cookie, self._mac(peer, w))
            for w in (window, window - 1)
        )

    def _mac(self, peer: Address, window: int) -> bytes:
        message = window.to_bytes(8, "big", signed=True) + repr(peer[:2]).encode()
        return hmac.new(self.secret, message, hashlib.sha256).digest()[:20]


@dataclass
class SslState:
    """What OpenSSL's callbacks need to know about one SSL object.

    Stored as the pyOpenSSL connection's app data: the verify, cookie and
    keylog callbacks are set once per ``SSL.Context`` and look here.  A
    listener's SSL objects carry its cookie mint and clock, also after they
    became connections: OpenSSL checks the cookie again when the handshake
    resumes from the buffered ClientHello.
    """

    verify_host: str | None = None
    verify_failure: str | None = None
    peer: Address | None = None
    cookies: CookieMint | None = None
    clock: Clock | None = None
    keylog: TextIO | None = None


def drain_records(ssl: SSL.Connection) -> list[bytes]:
    """Everything OpenSSL wrote to its memory BIO, one DTLS record each."""
    chunks: list[bytes] = []
    while True:
        try:
            chunks.append(ssl.bio_read(65536))
        except SSL.WantReadError:
            break
    return split_records(b"".join(chunks)) if chunks else []


def _state_of(conn: SSL.Connection) -> SslState | None:
    state = conn.get_app_data()
    return state if isinstance(state, SslState) else None


def verify_callback(
    conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int
) -> bool:
    """OpenSSL's chain check, then the host name at depth 0 (SSL_set1_host)."""
    state = _state_of(conn)
    if state is None:
        return bool(ok)
    if not ok:
        if state.verify_failure is None:
            reason = _X509_ERROR_NAMES.get(errnum, "unknown error")
            state.verify_failure = f"{reason} (X509 error {errnum}, depth {depth})"
        return False
    if depth == 0 and state.verify_host is not None:
        host = state.verify_host
        try:
            leaf = cert.to_cryptography()
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                verify_certificate_hostname(leaf, host)
            else:
                verify_certificate_ip_address(leaf, str(address))
        except (IdentityMismatch, CertificateError) as exc:
            state.verify_failure = f"the certificate does not match {host!r} ({exc})"
            return False
    return True


def cookie_generate_callback(conn: SSL.Connection) -> bytes:
    """SSL_CTX_set_cookie_generate_cb: the cookie for the SSL object's peer."""
    state = _state_of(conn)
    if (
        state is None
        or state.cookies is None
        or state.clock is None
        or state.peer is None
    ):
        raise ValueError("DTLS cookie requested outside a DTLS listener")
    return state.cookies.make(state.peer, state.clock.now())


def cookie_verify_callback(conn: SSL.Connection, cookie: bytes) -> bool:
    """SSL_CTX_set_cookie_verify_cb: whether ``cookie`` is the peer's."""
    state = _state_of(conn)
    if (
        state is None
        or state.cookies is None
        or state.clock is None
        or state.peer is None
    ):
        return False
    return state.cookies.check(state.peer, state.clock.now(), cookie)


def keylog_callback(conn: SSL.Connection, line: bytes) -> None:
    """SSL_CTX_set_keylog_callback: append to the context's key log file."""
    state = _state_of(conn)
    if state is not None and state.keylog is not None:
        state.keylog.write(line.decode("ascii") + "\n")
