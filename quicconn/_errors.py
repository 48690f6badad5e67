"""Exceptions carrying OpenSSL's ``SSL_get_error()`` codes.

OpenSSL reports failure through a return value plus ``SSL_get_error()``;
quicconn raises an exception whose ``code`` is that value.  The "want"
exceptions are not failures: they tell a nonblocking caller to retry the same
call later, exactly as ``SSL_ERROR_WANT_READ`` and friends do.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._constants import (
    CONN_CLOSE_FLAG_LOCAL,
    CONN_CLOSE_FLAG_TRANSPORT,
    ERROR_SSL,
    ERROR_SYSCALL,
    ERROR_WANT_ASYNC,
    ERROR_WANT_ASYNC_JOB,
    ERROR_WANT_READ,
    ERROR_WANT_WRITE,
    ERROR_ZERO_RETURN,
    QUIC_LOCAL_ERR_IDLE_TIMEOUT,
)


@dataclass(frozen=True, slots=True)
class ConnCloseInfo:
    """Why a connection closed (``SSL_CONN_CLOSE_INFO``).

    ``frame_type`` is ``None`` for an application close, matching OpenSSL's
    convention of reporting 0 there.
    """

    error_code: int
    frame_type: int | None
    reason: str
    is_local: bool
    is_transport: bool

    @property
    def flags(self) -> int:
        """The ``SSL_CONN_CLOSE_FLAG_*`` bits OpenSSL would report."""
        return (CONN_CLOSE_FLAG_LOCAL if self.is_local else 0) | (
            CONN_CLOSE_FLAG_TRANSPORT if self.is_transport else 0
        )

    def __str__(self) -> str:
        if self.error_code == QUIC_LOCAL_ERR_IDLE_TIMEOUT and self.is_local:
            return f"closed locally: {self.reason or 'the idle timeout expired'}"
        side = "locally" if self.is_local else "by the peer"
        kind = "transport" if self.is_transport else "application"
        reason = f": {self.reason}" if self.reason else ""
        return f"closed {side} with {kind} error 0x{self.error_code:x}{reason}"


class Error(Exception):
    """Base class of every quicconn failure; ``code`` is ``SSL_get_error()``."""

    code: int = ERROR_SSL


class WantReadError(Error):
    """``SSL_ERROR_WANT_READ``: retry once the network has data or a timer fired."""

    code = ERROR_WANT_READ


class WantWriteError(Error):
    """``SSL_ERROR_WANT_WRITE``: retry once buffer space or credit is available."""

    code = ERROR_WANT_WRITE


class WantAsyncError(Error):
    """``SSL_ERROR_WANT_ASYNC``: an offloaded crypto operation is in flight."""

    code = ERROR_WANT_ASYNC


class WantAsyncJobError(Error):
    """``SSL_ERROR_WANT_ASYNC_JOB``: no async job is free; retry later."""

    code = ERROR_WANT_ASYNC_JOB


class ZeroReturnError(Error):
    """``SSL_ERROR_ZERO_RETURN``: the peer concluded the stream (FIN)."""

    code = ERROR_ZERO_RETURN


class SSLError(Error):
    """``SSL_ERROR_SSL``: a TLS or QUIC protocol failure."""

    code = ERROR_SSL


class VerificationError(SSLError):
    """The peer's certificate failed verification (chain, dates or hostname)."""


class StreamResetError(SSLError):
    """The peer reset the stream; ``error_code`` is its application error code."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class StreamCountLimitedError(SSLError):
    """The peer's stream limit (MAX_STREAMS) allows no new stream right now.

    ``SSL_R_STREAM_COUNT_LIMITED``: ``new_stream()`` in nonblocking mode (or
    with ``STREAM_FLAG_NO_BLOCK``).  Retry after the peer raises the limit,
    for example when ``poll()`` reports ``POLL_EVENT_OSB``/``OSU``.
    """


class ConnectionTerminatedError(SSLError):
    """The connection is closing or closed; ``close_info`` says why."""

    def __init__(self, message: str, close_info: ConnCloseInfo | None) -> None:
        super().__init__(message)
        self.close_info = close_info


class SyscallError(Error, OSError):
    """``SSL_ERROR_SYSCALL``: the socket failed.  Also an :class:`OSError`."""

    code = ERROR_SYSCALL

    def __init__(self, message: str, errno: int | None = None) -> None:
        Error.__init__(self, message)
        self.errno = errno
        self.strerror = message


__all__ = [
    "ConnCloseInfo",
    "ConnectionTerminatedError",
    "Error",
    "SSLError",
    "StreamCountLimitedError",
    "StreamResetError",
    "SyscallError",
    "VerificationError",
    "WantAsyncError",
    "WantAsyncJobError",
    "WantReadError",
    "WantWriteError",
    "ZeroReturnError",
]
