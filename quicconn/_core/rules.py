"""Protocol rules every core backend applies the same way.

Small decisions that follow from the RFCs, not from a QUIC library, kept
here so that each backend (and the objects above them) reads them from one
place.
"""

from __future__ import annotations

from .._errors import ConnCloseInfo

#: QUIC carries a TLS alert as the transport error 0x100 + alert
#: (CRYPTO_ERROR, RFC 9001 section 4.8).
CRYPTO_ERROR_BASE = 0x100
#: TLS alerts (RFC 8446 section 6) that mean "your certificate is not
#: acceptable": bad_certificate, unsupported_certificate,
#: certificate_revoked, certificate_expired, certificate_unknown, unknown_ca.
CERTIFICATE_ALERTS = frozenset({42, 43, 44, 45, 46, 48})


def is_verification_failure(info: ConnCloseInfo) -> bool:
    """Whether a close was this endpoint rejecting the peer's certificate."""
    alert = info.error_code - CRYPTO_ERROR_BASE
    return info.is_local and info.is_transport and alert in CERTIFICATE_ALERTS


def negotiated_idle_timeout(local: float, peer: float | None) -> float | None:
    """The effective idle timeout: the smaller non-zero of both requests.

    RFC 9000, section 10.1: 0 (or absent) means "no idle timeout" from that
    side; None means neither side has one.
    """
    if peer is None or peer == 0:
        return local or None
    if local == 0:
        return peer
    return min(local, peer)


#: The longest silence before a keep-alive PING, whatever the idle timeout:
#: NATs commonly forget a UDP flow after 30 s (RFC 9000, section 10.1.2).
KEEP_ALIVE_MAX_INTERVAL = 25.0


def keep_alive_interval(idle_timeout: float | None) -> float | None:
    """Silence (nothing received) after which a keep-alive PING goes out.

    OpenSSL's rule: half the effective idle timeout, at most 25 s; None
    without an idle timeout (nothing would end the connection).
    """
    if not idle_timeout:
        return None
    return min(idle_timeout / 2, KEEP_ALIVE_MAX_INTERVAL)


__all__ = [
    "CERTIFICATE_ALERTS",
    "CRYPTO_ERROR_BASE",
    "KEEP_ALIVE_MAX_INTERVAL",
    "is_verification_failure",
    "keep_alive_interval",
    "negotiated_idle_timeout",
]
