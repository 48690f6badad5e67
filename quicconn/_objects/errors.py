"""The one translator from QUIC conditions to quicconn's exception classes.

The quic layer reports why a call could not complete as a
:class:`~quicconn._quic.conditions.QuicFailure`; this table says which
OpenSSL-coded exception (``exc.code`` is ``SSL_get_error()``) each
condition becomes.  ``quicconn/_objects/call.py`` applies it to every
public call, so no other code raises these classes for QUIC objects.
"""

from __future__ import annotations

from collections.abc import Callable

from .._errors import (
    ConnectionTerminatedError,
    Error,
    SSLError,
    StreamCountLimitedError,
    StreamResetError,
    SyscallError,
    VerificationError,
    WantAsyncError,
    WantAsyncJobError,
    WantReadError,
    WantWriteError,
    ZeroReturnError,
)
from .._quic.conditions import Condition, QuicFailure


def _stream_reset(failure: QuicFailure) -> Error:
    assert failure.error_code is not None
    return StreamResetError(failure.message, failure.error_code)


_TRANSLATIONS: dict[Condition, Callable[[QuicFailure], Error]] = {
    Condition.WANT_READ: lambda f: WantReadError(f.message),
    Condition.WANT_WRITE: lambda f: WantWriteError(f.message),
    Condition.ASYNC_PENDING: lambda f: WantAsyncError(f.message),
    Condition.ASYNC_NO_JOB: lambda f: WantAsyncJobError(f.message),
    Condition.STREAM_FINISHED: lambda f: ZeroReturnError(f.message),
    Condition.STREAM_RESET_BY_PEER: _stream_reset,
    Condition.STREAM_STOPPED_BY_PEER: _stream_reset,
    Condition.STREAM_UNUSABLE: lambda f: SSLError(f.message),
    Condition.NO_DEFAULT_STREAM: lambda f: SSLError(f.message),
    Condition.STREAM_COUNT_LIMITED: lambda f: StreamCountLimitedError(f.message),
    Condition.BAD_WRITE_RETRY: lambda f: SSLError(f.message),
    Condition.WRONG_STATE: lambda f: SSLError(f.message),
    Condition.VERIFICATION_FAILED: lambda f: VerificationError(f.message),
    Condition.CONNECTION_CLOSED: lambda f: ConnectionTerminatedError(
        f.message, f.close_info
    ),
    Condition.SOCKET_FAILED: lambda f: SyscallError(f.message, f.errno),
}


def bind_error(where: object, exc: OSError) -> SyscallError:
    """The error of a listener that could not bind ``where``."""
    return SyscallError(f"cannot bind {where!r}: {exc.strerror}", exc.errno)


def translate(failure: QuicFailure) -> Error:
    """The exception a public call raises for ``failure``."""
    return _TRANSLATIONS[failure.condition](failure)


__all__ = ["bind_error", "translate"]
