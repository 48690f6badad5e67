"""quicconn's neutral :class:`CoreSettings` as qh3's TLS configuration.

qh3 keeps TLS in Python (``qh3.tls``, driven through ``QuicTlsBridge``) and
wants its own certificate and key classes (Rust objects) rather than
``cryptography``'s.  Converting them costs a PEM round trip, so each
certificate and key is converted once and cached by identity: a context
hands the same objects to every connection it makes.

:class:`TlsBridge` is qh3's bridge with quicconn's transport parameters:
qh3 announces fixed stream limits (100 bidirectional, 103 unidirectional)
and, as a client, a DATAGRAM frame size even when none was configured;
quicconn announces the limits its settings ask for, which the core
enforces, and max_datagram_frame_size only when DATAGRAM frames are on
(``CoreSettings.max_datagram_frame_size``).
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import Any

from cryptography.hazmat.primitives import serialization
from qh3 import tls
from qh3._hazmat import Buffer
from qh3._hazmat import Certificate as X509Certificate
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.logger import QuicFileLogger
from qh3.quic.tls_bridge import QuicTlsBridge
from qh3.tls import CipherSuite, load_pem_private_key

from ..purpose import purpose_problem
from ..settings import CoreSettings

_QLOG_LOGGERS: dict[str, QuicFileLogger] = {}
_CONVERTED: dict[tuple[str, int], tuple[Any, Any]] = {}
_CONVERTED_MAX = 64
_DIRECTORIES: dict[str, tuple[int, bytes]] = {}
_lock = threading.Lock()


def _converted(kind: str, obj: Any) -> Any:
    """``obj`` as qh3 wants it, converted once (cache keyed by identity;
    the entry keeps ``obj`` alive so its id cannot be reused meanwhile)."""
    key = (kind, id(obj))
    with _lock:
        found = _CONVERTED.get(key)
    if found is not None and found[0] is obj:
        return found[1]
    if kind == "certificate":
        value: Any = X509Certificate(obj.public_bytes(serialization.Encoding.DER))
    else:
        try:
            value = load_pem_private_key(
                obj.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        except Exception as exc:
            raise ValueError(
                f"the qh3 QUIC core cannot use a {type(obj).__name__} "
                f"(RSA, ECDSA P-256/384/521 and Ed25519 keys work): {exc}"
            ) from exc
    with _lock:
        if len(_CONVERTED) >= _CONVERTED_MAX:
            _CONVERTED.pop(next(iter(_CONVERTED)))
        _CONVERTED[key] = (obj, value)
    return value


def qh3_private_key(key: Any) -> Any:
    """A ``cryptography`` private key as qh3's TLS stack holds one."""
    return _converted("key", key)


def _directory_pem(path: str) -> bytes:
    """The PEM certificates in the regular files of a CA directory
    (OpenSSL's ``capath``), read once per directory version."""
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        return b""
    with _lock:
        found = _DIRECTORIES.get(path)
    if found is not None and found[0] == stamp:
        return found[1]
    chunks = []
    with os.scandir(path) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if not entry.is_file():
                continue
            try:
                with open(entry.path, "rb") as fp:
                    data = fp.read()
            except OSError:
                continue
            if b"-----BEGIN CERTIFICATE-----" in data:
                chunks.append(data if data.endswith(b"\n") else data + b"\n")
    pem = b"".join(chunks)
    with _lock:
        _DIRECTORIES[path] = (stamp, pem)
    return pem


def _qlog_logger(directory: str) -> QuicFileLogger:
    """One file logger per directory: it writes one ``.qlog`` per connection."""
    with _lock:
        found = _QLOG_LOGGERS.get(directory)
        if found is None:
            os.makedirs(directory, exist_ok=True)
            found = _QLOG_LOGGERS[directory] = QuicFileLogger(directory)
        return found


def build_configuration(
    settings: CoreSettings,
    server_name: str | None = None,
    session_ticket: Any = None,
) -> QuicConfiguration:
    """qh3's configuration object for one connection."""
    config = QuicConfiguration(
        alpn_protocols=list(settings.alpn_protocols)
        if settings.alpn_protocols
        else None,
        connection_id_length=settings.connection_id_length,
        idle_timeout=settings.idle_timeout,
        is_client=settings.is_client,
        max_data=settings.max_data,
        max_datagram_size=settings.max_datagram_size,
        max_datagram_frame_size=settings.max_datagram_frame_size,
        max_stream_data=settings.max_stream_data,
        # qh3 types it as always present; None means no key log.
        secrets_log_file=settings.secrets_log_file,  # type: ignore[arg-type]
        server_name=server_name,
        session_ticket=session_ticket,
        supported_versions=list(settings.supported_versions),
        original_version=settings.original_version,
        verify_mode=ssl.CERT_REQUIRED if settings.verify_peer else ssl.CERT_NONE,
    )
    if settings.cipher_suites is not None:
        config.cipher_suites = [CipherSuite(v) for v in settings.cipher_suites]
    if settings.is_client and settings.verify_peer and not settings.has_trust_anchors():
        # OpenSSL trusts nothing until told to; qh3 would fall back to the
        # system store.  An empty store keeps OpenSSL's behaviour.
        config.cadata = b""
    else:
        config.cafile = settings.cafile
        config.cadata = settings.cadata
        if settings.capath is not None:
            # qh3 opens every entry of a CA directory, subdirectories too
            # (the system's /etc/ssl/certs has some): read its certificates
            # here instead.
            config.cadata = (settings.cadata or b"") + _directory_pem(settings.capath)
    if settings.certificate is not None:
        config.certificate = _converted("certificate", settings.certificate)
        config.certificate_chain = [
            _converted("certificate", c) for c in settings.certificate_chain
        ]
    if settings.private_key is not None:
        key = settings.private_key
        # An offloadable key (MODE_ASYNC) is already in qh3's terms.
        config.private_key = key if hasattr(key, "qh3_key") else qh3_private_key(key)
    if settings.qlog_dir is not None:
        config.quic_logger = _qlog_logger(settings.qlog_dir)
    return config


class _UnsupportedCertificate(tls.Alert):
    """TLS alert unsupported_certificate (qh3 names no class for it)."""

    description = tls.AlertDescription.unsupported_certificate


class TlsBridge(QuicTlsBridge):
    """qh3's TLS bridge announcing quicconn's transport parameters."""

    def __init__(
        self,
        configuration: QuicConfiguration,
        *,
        stream_limits: tuple[int, int],
        **kwargs: Any,
    ) -> None:
        # Set before the base class serialises the parameters.
        self.stream_limits = stream_limits
        super().__init__(configuration, **kwargs)

    def _on_traffic_secret(
        self,
        direction: tls.Direction,
        epoch: tls.Epoch,
        cipher_suite: tls.CipherSuite,
        secret: bytes,
    ) -> None:
        # The server's Finished was verified and the client is about to
        # answer with its own: the last moment to refuse a certificate whose
        # purpose is not a TLS server's (as OpenSSL checks it).
        configuration = self.configuration
        if (
            configuration.is_client
            and configuration.verify_mode != ssl.CERT_NONE
            and direction == tls.Direction.DECRYPT
            and epoch == tls.Epoch.ONE_RTT
        ):
            certificate = self.peer_certificate
            if certificate is not None:
                problem = purpose_problem(certificate.public_bytes(), "server")
                if problem is not None:
                    raise _UnsupportedCertificate(problem)
        super()._on_traffic_secret(direction, epoch, cipher_suite, secret)

    def serialize_transport_parameters(self) -> bytes:
        bidi, uni = self.stream_limits
        return rewrite_transport_parameters(
            super().serialize_transport_parameters(),
            {
                _INITIAL_MAX_STREAMS_BIDI: bidi,
                _INITIAL_MAX_STREAMS_UNI: uni,
                # Only when DATAGRAM frames are on (qh3's client always
                # offers them).
                _MAX_DATAGRAM_FRAME_SIZE: self.configuration.max_datagram_frame_size,
            },
        )


#: Transport parameters quicconn sets itself (RFC 9000 section 18.2,
#: RFC 9221 section 3).
_INITIAL_MAX_STREAMS_BIDI = 0x08
_INITIAL_MAX_STREAMS_UNI = 0x09
_MAX_DATAGRAM_FRAME_SIZE = 0x20


def rewrite_transport_parameters(data: bytes, values: dict[int, int | None]) -> bytes:
    """Encoded transport parameters with those named in ``values`` set to
    an integer (added if absent) or left out (None); the others untouched.

    Rewriting the encoding costs a tenth of decoding it into qh3's
    dataclass and encoding that again, once per handshake.
    """
    source = Buffer(data=data)
    out = Buffer(capacity=len(data) + 16 * len(values))
    for_later = dict(values)
    while not source.eof():
        parameter = source.pull_uint_var()
        value = source.pull_bytes(source.pull_uint_var())
        if parameter in for_later:
            replacement = for_later.pop(parameter)
            if replacement is None:
                continue
            value = _varint(replacement)
        out.push_uint_var(parameter)
        out.push_uint_var(len(value))
        out.push_bytes(value)
    for parameter, replacement in for_later.items():
        if replacement is not None:
            value = _varint(replacement)
            out.push_uint_var(parameter)
            out.push_uint_var(len(value))
            out.push_bytes(value)
    return bytes(out.data)


def _varint(value: int) -> bytes:
    buf = Buffer(capacity=8)
    buf.push_uint_var(value)
    return bytes(buf.data)


__all__ = [
    "TlsBridge",
    "build_configuration",
    "qh3_private_key",
    "rewrite_transport_parameters",
]
