"""Protocol rules every core backend applies the same way.

Small decisions that follow from the RFCs, not from a QUIC library, kept
here so that each backend (and the objects above them) reads them from one
place.
"""

from __future__ import annotations

from .._constants import QUIC_ERR_INTERNAL_ERROR, QUIC_LOCAL_ERR_IDLE_TIMEOUT
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


#: How long a handshake may go without a datagram from the peer before it is
#: abandoned (quic-go's HandshakeIdleTimeout): short, so that a client that
#: sent one ClientHello and went silent (a half-open connection) holds a
#: server's state for seconds, not for the whole idle timeout.
DEFAULT_HANDSHAKE_TIMEOUT = 5.0
_HANDSHAKE_TIMEOUT_REASON = "the handshake timeout expired"


def handshake_deadline(
    last_heard: float, handshake_timeout: float, handshake_complete: bool
) -> float | None:
    """When an unfinished handshake is abandoned: ``handshake_timeout`` after
    the peer was last heard from (or the connection started); None once the
    handshake completed, or with the timeout off (0)."""
    if handshake_complete or not handshake_timeout:
        return None
    return last_heard + handshake_timeout


def handshake_timeout_close(handshake_timeout: float) -> ConnCloseInfo:
    """The close record of an abandoned handshake: like an idle timeout (the
    connection ends silently, nothing is sent), with a reason saying which."""
    return ConnCloseInfo(
        error_code=QUIC_LOCAL_ERR_IDLE_TIMEOUT,
        frame_type=0,
        reason=f"{_HANDSHAKE_TIMEOUT_REASON} (nothing from the peer for "
        f"{handshake_timeout:g} s)",
        is_local=True,
        is_transport=True,
    )


def is_handshake_timeout(info: ConnCloseInfo) -> bool:
    """Whether a close record is :func:`handshake_timeout_close`'s."""
    return (
        info.is_local
        and info.error_code == QUIC_LOCAL_ERR_IDLE_TIMEOUT
        and info.reason.startswith(_HANDSHAKE_TIMEOUT_REASON)
    )


#: RFC 9002 doubles the probe timeout after every probe that goes
#: unanswered.  Under sustained heavy loss that backoff outgrows the idle
#: timeout (2^10 x PTO is 30 s on a fast path), the next probe comes after
#: the connection was already given up, and a transfer that was still
#: progressing dies.  quicconn stops doubling once the wait between probes
#: reaches 1/PROBES_PER_TIMEOUT of the timeout that would end the connection,
#: so that many probes are sent before it ends and one that gets through
#: (its acknowledgement resets the backoff) keeps the connection alive.
PROBES_PER_TIMEOUT = 10


def max_probe_interval(
    idle_timeout: float | None,
    handshake_timeout: float,
    handshake_complete: bool,
) -> float | None:
    """The longest wait between probes (PTO backoff stops growing there).

    A tenth of the timeout that ends the connection if nothing is heard:
    the handshake timeout until the handshake completes, the effective idle
    timeout after; None when neither applies.  A core never probes faster
    than its un-backed-off probe timeout, whatever this says.
    """
    timeouts = [t for t in (idle_timeout,) if t]
    if not handshake_complete and handshake_timeout:
        timeouts.append(handshake_timeout)
    if not timeouts:
        return None
    return min(timeouts) / PROBES_PER_TIMEOUT


#: TLS alerts sent when the TLS code raised instead of failing with an alert
#: of its own: bad_certificate while it was checking the peer's certificate
#: (the peer's certificate is what it could not handle), internal_error
#: otherwise (RFC 8446, section 6.2).
ALERT_BAD_CERTIFICATE = 42
ALERT_INTERNAL_ERROR = 80


def tls_exception_close(
    exc: BaseException, *, checking_certificate: bool
) -> tuple[int, str]:
    """The CRYPTO_ERROR code and reason for an exception out of TLS code.

    A TLS library reports a bad handshake message with an alert; anything
    else it raises is a failure of its own, which must still end the
    connection at once with an error naming it (not leave it to time out).
    """
    what = f"{type(exc).__name__}: {exc}"
    if checking_certificate:
        return (
            CRYPTO_ERROR_BASE + ALERT_BAD_CERTIFICATE,
            f"the peer's certificate could not be checked ({what})",
        )
    return CRYPTO_ERROR_BASE + ALERT_INTERNAL_ERROR, f"TLS failed: {what}"


def core_failure_close(exc: BaseException, doing: str) -> ConnCloseInfo:
    """The close record of a connection whose core raised while ``doing``
    something ("processing a datagram", ...): a core that raised can no
    longer be trusted, so the connection ends with INTERNAL_ERROR and a
    reason naming the exception, instead of dropping datagrams forever."""
    return ConnCloseInfo(
        error_code=QUIC_ERR_INTERNAL_ERROR,
        frame_type=0,
        reason=f"the QUIC core failed {doing}: {type(exc).__name__}: {exc}",
        is_local=True,
        is_transport=True,
    )


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
    "ALERT_BAD_CERTIFICATE",
    "ALERT_INTERNAL_ERROR",
    "CERTIFICATE_ALERTS",
    "CRYPTO_ERROR_BASE",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "KEEP_ALIVE_MAX_INTERVAL",
    "PROBES_PER_TIMEOUT",
    "X509_V_ERR_UNSPECIFIED",
    "X509_V_OK",
    "core_failure_close",
    "handshake_deadline",
    "handshake_timeout_close",
    "idle_timeout_close",
    "is_handshake_timeout",
    "is_verification_failure",
    "keep_alive_interval",
    "max_probe_interval",
    "negotiated_idle_timeout",
    "tls_exception_close",
    "verify_result",
]
