"""quicconn's neutral :class:`CoreSettings` as aioquic's ``QuicConfiguration``."""

from __future__ import annotations

import os
import ssl

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.logger import QuicFileLogger
from aioquic.tls import CipherSuite

from ..pmtud import BASE_PLPMTU
from ..settings import CoreSettings

_QLOG_LOGGERS: dict[str, QuicFileLogger] = {}


def _qlog_logger(directory: str) -> QuicFileLogger:
    """One file logger per directory: it writes one ``.qlog`` per connection."""
    found = _QLOG_LOGGERS.get(directory)
    if found is None:
        os.makedirs(directory, exist_ok=True)
        found = _QLOG_LOGGERS[directory] = QuicFileLogger(directory)
    return found


def build_configuration(
    settings: CoreSettings, server_name: str | None = None
) -> QuicConfiguration:
    """Make aioquic's configuration object from quicconn's settings."""
    config = QuicConfiguration(
        alpn_protocols=list(settings.alpn_protocols)
        if settings.alpn_protocols
        else None,
        congestion_control_algorithm=settings.congestion_control or "reno",
        connection_id_length=settings.connection_id_length,
        idle_timeout=settings.idle_timeout,
        is_client=settings.is_client,
        max_data=settings.max_data,
        # Every path starts at the size all paths carry; path MTU discovery
        # (.mtu) raises it towards settings.max_datagram_size.
        max_datagram_size=BASE_PLPMTU,
        max_datagram_frame_size=settings.max_datagram_frame_size,
        max_stream_data=settings.max_stream_data,
        secrets_log_file=settings.secrets_log_file,
        server_name=server_name,
        supported_versions=list(settings.supported_versions),
    )
    config.verify_mode = ssl.CERT_REQUIRED if settings.verify_peer else ssl.CERT_NONE
    if settings.original_version is not None:
        config.original_version = settings.original_version
    if settings.cipher_suites is not None:
        config.cipher_suites = [CipherSuite(v) for v in settings.cipher_suites]
    if settings.is_client and settings.verify_peer and not settings.has_trust_anchors():
        # OpenSSL trusts nothing until told to; aioquic would fall back to
        # certifi.  An empty store keeps OpenSSL's behaviour.
        config.cadata = b""
    else:
        config.cafile = settings.cafile
        config.capath = settings.capath
        config.cadata = settings.cadata
    config.certificate = settings.certificate
    config.certificate_chain = list(settings.certificate_chain)
    config.private_key = settings.private_key
    if settings.qlog_dir is not None:
        config.quic_logger = _qlog_logger(settings.qlog_dir)
    return config


__all__ = ["build_configuration"]
