"""``DTLSContext``: the ``SSL_CTX`` of quicconn's DTLS objects (DTLS 1.2).

OpenSSL picks the protocol with the method given to ``SSL_CTX_new``
(``DTLS_client_method()`` versus ``OSSL_QUIC_client_method()``); quicconn
picks it with the context class, so a DTLS context can never reach a QUIC
connection by mistake.  The certificate and verification API is the QUIC
:class:`~quicconn.Context`'s: same names, same defaults (clients verify the
peer and its host name; nothing is trusted until CA certificates are loaded).

This module and :mod:`quicconn._objects.dtls.connection` are the only ones that import
pyOpenSSL.  pyOpenSSL freezes an ``SSL.Context`` once a connection has been
made from it, while OpenSSL lets an ``SSL_CTX`` change between connections;
:class:`DTLSContext` therefore keeps the settings itself and builds a fresh
``SSL.Context`` for the next connection whenever they changed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from OpenSSL import SSL, crypto
from service_identity import CertificateError
from service_identity import VerificationError as IdentityMismatch
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)

from ..._certs import system_ca_locations
from ..._constants import (
    Role,
)
from ..context_base import ContextBase

if TYPE_CHECKING:
    from ..._io.transport import Address
    from .listener import DTLSListener

#: Wire value of DTLS 1.2 (``DTLS1_2_VERSION``); quicconn speaks only 1.2.
DTLS1_2_VERSION = 0xFEFD
#: Default largest UDP payload sent (``SSL_set_mtu``): fits any IPv4 or IPv6
#: path, like the QUIC default.
DEFAULT_MTU = 1200
#: Smallest and largest ciphertext MTU accepted by :meth:`set_mtu`-style
#: settings.  OpenSSL refuses MTUs under 256 bytes minus its overheads.
MIN_MTU = 512
MAX_MTU = 65507
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
    keylog callbacks are set once per ``SSL.Context`` and look here.
    """

    verify_host: str | None = None
    verify_failure: str | None = None
    peer: Address | None = None
    listener: DTLSListener | None = None
    keylog: TextIO | None = None


def _state_of(conn: SSL.Connection) -> SslState | None:
    state = conn.get_app_data()
    return state if isinstance(state, SslState) else None


def _verify_callback(
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


def _cookie_generate(conn: SSL.Connection) -> bytes:
    state = _state_of(conn)
    if state is None or state.listener is None or state.peer is None:
        raise ValueError("DTLS cookie requested outside a DTLS listener")
    return state.listener._make_cookie(state.peer)


def _cookie_verify(conn: SSL.Connection, cookie: bytes) -> bool:
    state = _state_of(conn)
    if state is None or state.listener is None or state.peer is None:
        return False
    return state.listener._check_cookie(state.peer, cookie)


def _keylog_callback(conn: SSL.Connection, line: bytes) -> None:
    state = _state_of(conn)
    if state is not None and state.keylog is not None:
        state.keylog.write(line.decode("ascii") + "\n")


@dataclass
class _CertChain:
    certfile: str
    keyfile: str
    password: bytes | None


class DTLSContext(ContextBase):
    """Settings from which DTLS connections and listeners are made.

    Mirrors ``SSL_CTX_new(DTLS_client_method())`` (``DTLSContext(CLIENT)``)
    and ``SSL_CTX_new(DTLS_server_method())`` (``DTLSContext(SERVER)``),
    limited to DTLS 1.2.  Like the QUIC :class:`~quicconn.Context`, a client
    context verifies the server's certificate and host name by default
    (``VERIFY_PEER``) but trusts no CA until :meth:`load_verify_locations` or
    :meth:`load_default_verify_paths` is called; a server context needs
    :meth:`load_cert_chain`.
    """

    def __init__(self, role: Role | int = Role.CLIENT) -> None:
        super().__init__(role)
        self._cafiles: list[str] = []
        self._capaths: list[str] = []
        self._cadata: list[crypto.X509] = []
        self._chain: _CertChain | None = None
        self._alpn: list[str] = []
        self._mtu = DEFAULT_MTU
        #: Server: cookie-verified connections a listener queues for
        #: ``accept_connection()`` before it ignores new ClientHellos.
        self.max_pending_connections = 256
        self._built: SSL.Context | None = None

    # -- verification -----------------------------------------------------

    def load_verify_locations(
        self,
        cafile: str | os.PathLike[str] | None = None,
        capath: str | os.PathLike[str] | None = None,
        cadata: bytes | str | None = None,
    ) -> None:
        """Trust the CAs in a PEM file, a hashed directory or PEM data.

        Mirrors SSL_CTX_load_verify_locations (plus ``cadata`` as in CPython's
        ``ssl``).
        """
        file_path, dir_path, data = self._checked_ca_locations(cafile, capath, cadata)
        if file_path is not None:
            self._cafiles.append(file_path)
        if dir_path is not None:
            self._capaths.append(dir_path)
        if data is not None:
            try:
                certs = [
                    crypto.X509.from_cryptography(c)
                    for c in _load_pem_certificates(data)
                ]
            except ValueError as exc:
                raise ValueError(
                    f"cadata holds no usable PEM certificate: {exc}"
                ) from exc
            self._cadata.extend(certs)
        self._changed()

    def load_default_verify_paths(self) -> None:
        """Trust the system's CAs (SSL_CTX_set_default_verify_paths).

        Uses the same locations as the QUIC :class:`~quicconn.Context` (the
        system OpenSSL's defaults), not those compiled into the OpenSSL that
        pyOpenSSL carries.
        """
        cafile, capath = system_ca_locations()
        if cafile:
            self._cafiles.append(cafile)
        if capath:
            self._capaths.append(capath)
        self._changed()

    def has_trust_anchors(self) -> bool:
        """Whether any CA certificate was loaded (quicconn addition)."""
        return bool(self._cafiles or self._capaths or self._cadata)

    def load_cert_chain(
        self,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str] | None = None,
        password: bytes | str | None = None,
    ) -> None:
        """Load this endpoint's certificate chain and private key.

        Mirrors SSL_CTX_use_certificate_chain_file + SSL_CTX_use_PrivateKey_file.
        The files are checked now (readable, key matching the certificate),
        so a mistake raises here rather than in a handshake.
        """
        chain = _CertChain(
            os.fspath(certfile),
            os.fspath(keyfile if keyfile is not None else certfile),
            password.encode() if isinstance(password, str) else password,
        )
        for path in (chain.certfile, chain.keyfile):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"certificate or key file not found: {path}")
        scratch = SSL.Context(SSL.DTLS_METHOD)
        try:
            _apply_chain(scratch, chain)
        except SSL.Error as exc:
            raise ValueError(
                f"cannot use {chain.certfile!r} / {chain.keyfile!r}: "
                f"{_describe_openssl_error(exc)}"
            ) from exc
        self._chain = chain
        self._changed()

    def has_certificate(self) -> bool:
        """Whether load_cert_chain() was called (cf. SSL_CTX_get0_certificate)."""
        return self._chain is not None

    # -- protocol ---------------------------------------------------------

    def set_alpn_protos(self, protocols: Iterable[str]) -> None:
        """Offer (client) or accept (server) these ALPN protocols.

        Mirrors SSL_CTX_set_alpn_protos; takes a list of names instead of
        OpenSSL's length-prefixed wire format.
        """
        names = self._checked_alpn(protocols)
        self._alpn = names
        self._changed()

    def get_alpn_protos(self) -> list[str]:
        """The ALPN names given to set_alpn_protos (SSL_CTX_set_alpn_protos)."""
        return list(self._alpn)

    @property
    def max_datagram_size(self) -> int:
        """Largest UDP payload sent, bytes: the DTLS ciphertext MTU (SSL_set_mtu).

        OpenSSL fragments handshake messages to fit it.  Application records
        are not split: keep writes within ``conn.get_data_mtu()`` bytes.
        """
        return self._mtu

    @max_datagram_size.setter
    def max_datagram_size(self, size: int) -> None:
        if not isinstance(size, int) or not MIN_MTU <= size <= MAX_MTU:
            raise ValueError(
                f"max_datagram_size must be between {MIN_MTU} and {MAX_MTU}"
            )
        self._mtu = size

    # -- factories --------------------------------------------------------

    def new_listener(self, where: Any, flags: int = 0) -> DTLSListener:
        """Make a DTLS listener on a UDP socket (DTLSv1_listen, server side).

        ``where`` is a bound UDP socket (not closed by the listener), a
        ``(host, port)`` to bind (the listener owns that socket), or a
        datagram transport such as ``DatagramPair.server``.  Cookie exchange
        (HelloVerifyRequest) is on; ``LISTENER_FLAG_NO_VALIDATE`` turns it off.
        """
        from .listener import make_listener

        return make_listener(self, where, flags)

    # -- for the objects layer --------------------------------------------

    def _changed(self) -> None:
        self._built = None

    def _openssl_context(self) -> SSL.Context:
        """The pyOpenSSL context for the next connection (built on demand)."""
        if self._built is None:
            self._built = self._build()
        return self._built

    def _build(self) -> SSL.Context:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_min_proto_version(DTLS1_2_VERSION)
        ctx.set_max_proto_version(DTLS1_2_VERSION)
        # The carrier is a memory BIO: the MTU is set on each connection.
        ctx.set_options(SSL.OP_NO_QUERY_MTU)
        if self._chain is not None:
            _apply_chain(ctx, self._chain)
        ctx.set_verify(self._verify_mode, _verify_callback)
        for cafile in self._cafiles:
            ctx.load_verify_locations(cafile)
        for capath in self._capaths:
            ctx.load_verify_locations(None, capath)
        store = ctx.get_cert_store()
        if store is not None:
            for cert in self._cadata:
                store.add_cert(cert)
        if self._alpn:
            wire = [name.encode() for name in self._alpn]
            if self.role is Role.CLIENT:
                ctx.set_alpn_protos(wire)
            else:
                ctx.set_alpn_select_callback(_alpn_selector(wire))
        ctx.set_keylog_callback(_keylog_callback)
        if self.role is Role.SERVER:
            ctx.set_cookie_generate_callback(_cookie_generate)
            ctx.set_cookie_verify_callback(_cookie_verify)
        return ctx


def _apply_chain(ctx: SSL.Context, chain: _CertChain) -> None:
    if chain.password is not None:
        password = chain.password
        ctx.set_passwd_cb(lambda *_: password)
    ctx.use_certificate_chain_file(chain.certfile)
    ctx.use_privatekey_file(chain.keyfile)
    ctx.check_privatekey()


def _alpn_selector(supported: list[bytes]) -> Any:
    def select(_conn: SSL.Connection, offered: list[bytes]) -> bytes | object:
        for name in supported:
            if name in offered:
                return name
        return SSL.NO_OVERLAPPING_PROTOCOLS

    return select


def _load_pem_certificates(data: bytes) -> list[Any]:
    from cryptography.x509 import load_pem_x509_certificates

    return load_pem_x509_certificates(data)


def _describe_openssl_error(exc: SSL.Error) -> str:
    """Turn pyOpenSSL's ``[(lib, func, reason), ...]`` into one line."""
    reasons: list[str] = []
    args = exc.args[0] if exc.args else None
    if isinstance(args, list):
        for item in args:
            if isinstance(item, tuple) and len(item) == 3:
                reasons.append(str(item[2]))
    if not reasons:
        reasons.append(str(exc) or type(exc).__name__)
    return "; ".join(dict.fromkeys(reasons))


__all__ = ["DTLSContext"]
