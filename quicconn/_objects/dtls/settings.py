"""What a DTLS ``SSL_CTX`` holds: certificates, verification, ALPN, MTU.

:class:`DTLSSettings` is :class:`~quicconn.DTLSContext` without its
factories: the settings DTLS connections and listeners are made from, and the
pyOpenSSL ``SSL.Context`` built from them.  The connection and the listener
depend on this class; the context, which makes listeners, sits above both.

pyOpenSSL freezes an ``SSL.Context`` once a connection has been made from
it, while OpenSSL lets an ``SSL_CTX`` change between connections; the
settings are therefore kept here, and a fresh ``SSL.Context`` is built for
the next connection whenever they changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL, crypto

from ..._certs import system_ca_locations
from ..._constants import Role
from ..context_base import ContextBase
from .errors import describe_error
from .openssl import (
    SslState,
    cookie_generate_callback,
    cookie_verify_callback,
    keylog_callback,
    verify_callback,
)

__all__ = ["DEFAULT_MTU", "MAX_MTU", "MIN_MTU", "DTLSSettings", "new_ssl"]

#: Wire value of DTLS 1.2 (``DTLS1_2_VERSION``); quicconn speaks only 1.2.
DTLS1_2_VERSION = 0xFEFD
#: Default largest UDP payload sent (``SSL_set_mtu``): fits any IPv4 or IPv6
#: path, like the QUIC default.
DEFAULT_MTU = 1200
#: Smallest and largest ciphertext MTU accepted by :meth:`set_mtu`-style
#: settings.  OpenSSL refuses MTUs under 256 bytes minus its overheads.
MIN_MTU = 512
MAX_MTU = 65507


@dataclass
class _CertChain:
    certfile: str
    keyfile: str
    password: bytes | None


class DTLSSettings(ContextBase):
    """The settings of a :class:`~quicconn.DTLSContext`, without its factories.

    Connections and listeners are made from these (see the module docstring
    for why the factories live in a class of their own).
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
                f"{describe_error(exc)}"
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

    # -- for the objects layer --------------------------------------------

    def _changed(self) -> None:
        self._built = None

    def _new_ssl(self, state: SslState, mtu: int) -> SSL.Connection:
        ssl = SSL.Connection(self._openssl_context(), None)
        state.keylog = self._keylog()
        ssl.set_app_data(state)
        ssl.set_ciphertext_mtu(mtu)
        return ssl

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
        ctx.set_verify(self._verify_mode, verify_callback)
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
        ctx.set_keylog_callback(keylog_callback)
        if self.role is Role.SERVER:
            ctx.set_cookie_generate_callback(cookie_generate_callback)
            ctx.set_cookie_verify_callback(cookie_verify_callback)
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


def new_ssl(ctx: DTLSSettings, state: SslState, mtu: int) -> SSL.Connection:
    """An ``SSL`` object (SSL_new) from ``ctx`` as it is now, over memory BIOs.

    ``state`` becomes its app data (for the callbacks), with the context's
    key log file; ``mtu`` is its ciphertext MTU (SSL_set_mtu).
    """
    return ctx._new_ssl(state, mtu)
