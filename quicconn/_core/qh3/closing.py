"""Close information from qh3's core events, as on the aioquic core.

The Rust core reports a close as events (``peer_closed``,
``protocol_error``, ``connection_terminated``) or as its ``local_error``;
each becomes the same :class:`~quicconn._errors.ConnCloseInfo` the aioquic
core reports, the moment the close begins.  :class:`CloseReport` tells the
sink about it once: closing, then terminated.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cryptography import x509
from service_identity import CertificateError
from service_identity import VerificationError as IdentityMismatch
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)

from ..._errors import ConnCloseInfo
from ..interface import CoreSink
from ..rules import CERTIFICATE_ALERTS, CRYPTO_ERROR_BASE, idle_timeout_close

#: The frame type of a transport close not caused by a frame (PADDING).
PADDING_FRAME = 0x0


def peer_close_info(event: tuple[Any, ...]) -> ConnCloseInfo:
    """A ``peer_closed`` event: the peer's CONNECTION_CLOSE."""
    _, application, code, frame_type, reason = event
    return ConnCloseInfo(
        error_code=code,
        frame_type=None if application else (frame_type or 0),
        reason=reason.decode("utf8", "replace"),
        is_local=False,
        is_transport=not application,
    )


def protocol_error_info(event: tuple[Any, ...]) -> ConnCloseInfo:
    """A ``protocol_error`` event: the core closes over the peer's error."""
    _, code, frame_type, reason = event
    return ConnCloseInfo(
        error_code=code,
        frame_type=frame_type if frame_type is not None else 0,
        reason=str(reason),
        is_local=True,
        is_transport=True,
    )


def local_error_info(error: tuple[Any, ...]) -> ConnCloseInfo:
    """The core's ``local_error`` (code, frame type, reason) of a close it began."""
    return ConnCloseInfo(
        error_code=error[0],
        frame_type=error[1] if error[1] is not None else 0,
        reason=error[2],
        is_local=True,
        is_transport=True,
    )


def termination_info(event: tuple[Any, ...]) -> ConnCloseInfo:
    """The close info of a connection that ended without a CONNECTION_CLOSE:
    an idle timeout (local, as OpenSSL reports it:
    :func:`~quicconn._core.rules.idle_timeout_close`) or a stateless reset
    from the peer."""
    reason = event[3]
    text = reason.decode("utf8", "replace") if isinstance(reason, bytes) else reason
    if text == "Idle timeout":
        return idle_timeout_close()
    return ConnCloseInfo(
        error_code=0,
        frame_type=PADDING_FRAME,
        reason="stateless reset received",
        is_local=False,
        is_transport=True,
    )


#: qh3's reason for a chain no trust anchor vouches for, and OpenSSL's
#: (X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN) when that chain ends in a root.
_NO_LOCAL_ISSUER = "unable to get local issuer certificate"
_SELF_SIGNED_IN_CHAIN = "self-signed certificate in certificate chain"
#: qh3's reason for a chain it trusts but rejects for another cause; a
#: server certificate not valid for the name checked is one of them.
_UNACCEPTABLE = "the server certificate is unacceptable"


def hostname_mismatch(leaf_der: bytes, host: str) -> str | None:
    """Why the certificate ``leaf_der`` is not valid for ``host`` (a DNS
    name or an IP address), or None if it is.

    qh3 says only "the server certificate is unacceptable" of a trusted
    certificate issued for another name; OpenSSL reports
    X509_V_ERR_HOSTNAME_MISMATCH (62), whose check comes before the
    certificate's validity period is looked at.  The reason is worded as
    service_identity words it (as on the aioquic core), which
    :func:`~quicconn._core.rules.verify_result` reads as 62.
    """
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            verify_certificate_hostname(leaf, host)
        else:
            verify_certificate_ip_address(leaf, str(address))
    except IdentityMismatch:
        names = ", ".join(str(n.value) for n in _subject_alt_names(leaf))
        return f"hostname {host!r} doesn't match the certificate's names ({names})"
    except (CertificateError, ValueError):
        return None  # no usable names: qh3's own reason stands
    return None


def _subject_alt_names(leaf: x509.Certificate) -> list[x509.GeneralName]:
    try:
        ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def tls_failure_info(
    code: int,
    frame_type: int,
    reason: str,
    server_name: str | None,
    is_client: bool,
    *,
    self_signed_in_chain: bool = False,
    leaf_der: bytes | None = None,
) -> ConnCloseInfo:
    """A TLS failure's close (a CRYPTO_ERROR carrying the alert).

    A client's certificate failure names the server name it checked (qh3's
    reasons do not), says what OpenSSL says of a chain that ends in an
    untrusted self-signed root (``self_signed_in_chain``: the peer sent
    one), which qh3 reports as a missing local issuer, and of a trusted
    certificate not valid for the server name (checked here on the peer's
    certificate ``leaf_der``, see :func:`hostname_mismatch`), which qh3
    reports as "unacceptable".
    """
    certificate_failure = code - CRYPTO_ERROR_BASE in CERTIFICATE_ALERTS
    if certificate_failure and self_signed_in_chain and _NO_LOCAL_ISSUER in reason:
        reason = _SELF_SIGNED_IN_CHAIN
    if (
        is_client
        and certificate_failure
        and server_name
        and leaf_der is not None
        and _UNACCEPTABLE in reason
        and (mismatch := hostname_mismatch(leaf_der, server_name)) is not None
    ):
        reason = mismatch
    if is_client and server_name and certificate_failure and server_name not in reason:
        reason = f"{reason} (verifying {server_name!r})"
    return ConnCloseInfo(
        error_code=code,
        frame_type=frame_type,
        reason=reason,
        is_local=True,
        is_transport=True,
    )


class CloseReport:
    """Tells a sink once that the connection is closing, then once that it
    terminated."""

    __slots__ = ("closing_reported", "terminated_reported")

    def __init__(self) -> None:
        self.closing_reported = False
        self.terminated_reported = False

    def report(
        self, sink: CoreSink, info: ConnCloseInfo | None, terminated: bool
    ) -> None:
        """Report what is new: the close ``info`` (once known), termination
        (only after the close was reported)."""
        if not self.closing_reported and info is not None:
            self.closing_reported = True
            sink.on_closing(info)
        if self.closing_reported and not self.terminated_reported and terminated:
            self.terminated_reported = True
            sink.on_terminated()


__all__ = [
    "PADDING_FRAME",
    "CloseReport",
    "hostname_mismatch",
    "local_error_info",
    "peer_close_info",
    "protocol_error_info",
    "termination_info",
    "tls_failure_info",
]
