"""The one place where a pyOpenSSL error becomes a quicconn exception.

OpenSSL reports a failed DTLS call through ``SSL_get_error()``, and
pyOpenSSL raises one subclass of ``SSL.Error`` per code.
:func:`translate_error` maps each to the quicconn exception carrying the same
code (``exc.code``, ``get_error()``).  The "want" conditions are not
failures and are normally handled before this point (the connection feeds
the next datagram); they map to the matching ``Want*`` exception all the
same.
"""

from __future__ import annotations

from OpenSSL import SSL

from ..._errors import (
    Error,
    SSLError,
    SyscallError,
    VerificationError,
    WantReadError,
    WantWriteError,
    ZeroReturnError,
)

__all__ = ["describe_error", "translate_error"]


def describe_error(exc: SSL.Error) -> str:
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


def translate_error(
    exc: SSL.Error,
    *,
    handshaking: bool,
    verify_failure: str | None = None,
    no_trust_anchors: bool = False,
) -> Error:
    """The quicconn exception for ``exc``, raised by a DTLS connection's SSL.

    ``handshaking`` names the stage in the message; ``verify_failure`` is
    what the verify callback recorded (the X509 error, or the host name
    mismatch); ``no_trust_anchors`` adds a hint to a verification failure
    of a client that loaded no CA certificates.
    """
    if isinstance(exc, SSL.ZeroReturnError):
        return ZeroReturnError("the peer sent close_notify")
    if isinstance(exc, SSL.WantReadError):
        return WantReadError("OpenSSL needs a datagram from the peer")
    if isinstance(exc, SSL.WantWriteError):
        return WantWriteError("OpenSSL cannot write its output")
    if isinstance(exc, SSL.SysCallError):
        return SyscallError(f"DTLS memory BIO failure: {exc}")
    detail = describe_error(exc)
    if verify_failure is not None or "certificate verify failed" in detail:
        hint = ""
        if no_trust_anchors:
            hint = (
                " (no CA certificates are loaded: call "
                "ctx.load_default_verify_paths() or ctx.load_verify_locations())"
            )
        return VerificationError(
            f"certificate verification failed: {verify_failure or detail}{hint}"
        )
    stage = "handshake" if handshaking else "connection"
    return SSLError(f"DTLS {stage} failed: {detail}")
