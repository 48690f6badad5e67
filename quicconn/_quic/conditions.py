"""Why a QUIC operation did not complete, as the layers below the objects say it.

The quic layer knows nothing of OpenSSL's error codes: it raises
:class:`QuicFailure` carrying a :class:`Condition` and the facts behind it
(an application error code, the close record, an errno).  The objects
layer's one translator (``quicconn/_objects/errors.py``) turns each
condition into its exception class at the public API boundary.
"""

from __future__ import annotations

import enum

from .._errors import ConnCloseInfo


class Condition(enum.Enum):
    """Every way a QUIC call can fail to complete."""

    #: Nonblocking: more network input (or a timer) is needed.
    WANT_READ = "want read"
    #: Nonblocking: the peer must grant credit or acknowledge data.
    WANT_WRITE = "want write"
    #: MODE_ASYNC: an offloaded private-key operation is in flight.
    ASYNC_PENDING = "async operation pending"
    #: MODE_ASYNC: no async job is free.
    ASYNC_NO_JOB = "no async job"
    #: The peer's FIN was read: no more data will come.
    STREAM_FINISHED = "stream finished"
    #: The peer reset the stream's receiving part (error_code: its code).
    STREAM_RESET_BY_PEER = "stream reset by the peer"
    #: The peer sent STOP_SENDING for the sending part (error_code: its code).
    STREAM_STOPPED_BY_PEER = "peer asked to stop sending"
    #: An operation the stream's direction or state rules out.
    STREAM_UNUSABLE = "stream unusable"
    #: No default stream, and none can be made.
    NO_DEFAULT_STREAM = "no default stream"
    #: The peer's MAX_STREAMS allows no new stream now.
    STREAM_COUNT_LIMITED = "stream count limited"
    #: A nonblocking all-or-nothing write repeated with another length.
    BAD_WRITE_RETRY = "bad write retry"
    #: A call that needs a state the connection is not in (e.g. key update
    #: before the handshake completed).
    WRONG_STATE = "wrong state"
    #: The certificate of the peer was rejected during the handshake.
    VERIFICATION_FAILED = "certificate verification failed"
    #: The connection is closing or closed (close_info says why).
    CONNECTION_CLOSED = "connection closed"
    #: The socket failed, or was closed under a waiting call (errno).
    SOCKET_FAILED = "socket failed"


class QuicFailure(Exception):
    """A QUIC operation that cannot complete, and why."""

    def __init__(
        self,
        condition: Condition,
        message: str,
        *,
        error_code: int | None = None,
        close_info: ConnCloseInfo | None = None,
        errno: int | None = None,
    ) -> None:
        super().__init__(message)
        self.condition = condition
        self.message = message
        self.error_code = error_code
        self.close_info = close_info
        self.errno = errno


__all__ = ["Condition", "QuicFailure"]
