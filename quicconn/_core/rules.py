"""Protocol rules every core backend applies the same way.

Small decisions that follow from the RFCs, not from a QUIC library, kept
here so that each backend (and the objects above them) reads them from one
place.
"""

from __future__ import annotations

from .._constants import QUIC_LOCAL_ERR_IDLE_TIMEOUT
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


#: OpenSSL's X509_V_ERR_* code for each verification message the backends
#: put in their CONNECTION_CLOSE reason (both word them as OpenSSL's
#: X509_verify_cert_error_string, and the name check as service_identity).
_VERIFY_MESSAGES: tuple[tuple[str, int], ...] = (
    ("hostname", 62),  # X509_V_ERR_HOSTNAME_MISMATCH
    ("self-signed certificate in certificate chain", 19),
    ("self-signed certificate", 18),  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    ("unable to get local issuer certificate", 20),
    ("unable to get issuer certificate", 2),
    ("unable to verify the first certificate", 21),
    ("no longer valid", 10),  # X509_V_ERR_CERT_HAS_EXPIRED
    ("certificate has expired", 10),
    ("not valid yet", 9),  # X509_V_ERR_CERT_NOT_YET_VALID
    ("certificate is not yet valid", 9),
    ("unsupported certificate purpose", 26),  # X509_V_ERR_INVALID_PURPOSE
)
X509_V_OK = 0
X509_V_ERR_UNSPECIFIED = 1


def verify_result(info: ConnCloseInfo | None) -> int:
    """``SSL_get_verify_result`` from a connection's close record.

    X509_V_OK (0) unless the close was this endpoint rejecting the peer's
    certificate; then the X509_V_ERR_* code its reason names, or
    X509_V_ERR_UNSPECIFIED (1) for a reason not in the table.
    """
    if info is None or not is_verification_failure(info):
        return X509_V_OK
    reason = info.reason.lower()
    for text, code in _VERIFY_MESSAGES:
        if text in reason:
            return code
    return X509_V_ERR_UNSPECIFIED


def idle_timeout_close() -> ConnCloseInfo:
    """The close record of an expired idle timeout, as OpenSSL 3.5 reports it:
    OSSL_QUIC_LOCAL_ERR_IDLE_TIMEOUT, frame type 0, no reason, LOCAL and
    TRANSPORT (the transport closed it, and no frame was sent)."""
    return ConnCloseInfo(
        error_code=QUIC_LOCAL_ERR_IDLE_TIMEOUT,
        frame_type=0,
        reason="",
        is_local=True,
        is_transport=True,
    )


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
    "X509_V_ERR_UNSPECIFIED",
    "X509_V_OK",
    "idle_timeout_close",
    "is_verification_failure",
    "keep_alive_interval",
    "negotiated_idle_timeout",
    "verify_result",
]
