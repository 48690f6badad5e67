"""Stream state machines (RFC 9000, section 3), and what OpenSSL shows of them.

Everything that decides a stream part's state lives in this module, and
nothing else does.  Each part of a stream, sending and receiving, is an
explicit transition table of ``(state, event) -> next state``; a pair that
is missing from a table is a stream state error (for input from the peer
that is a protocol violation, for a local call a bug).

The core reassembles stream data before it reaches quicconn, so the
receiving part learns the final size and "all data received" at the same
moment (the FIN); both events are applied, in order.

The functions at the end derive OpenSSL's view from the tables' states:
``SSL_get_stream_read_state`` / ``SSL_get_stream_write_state``, their error
codes, and a stream's ``SSL_poll`` bits.
"""

from __future__ import annotations

import enum
from typing import Protocol

from .._constants import (
    POLL_EVENT_ER,
    POLL_EVENT_EW,
    POLL_EVENT_R,
    POLL_EVENT_W,
    STREAM_STATE_CONN_CLOSED,
    STREAM_STATE_FINISHED,
    STREAM_STATE_NONE,
    STREAM_STATE_OK,
    STREAM_STATE_RESET_LOCAL,
    STREAM_STATE_RESET_REMOTE,
    STREAM_STATE_WRONG_DIR,
)


class StreamStateError(Exception):
    """An event that a stream part's state does not allow."""


class SendState(enum.Enum):
    """The sending part of a stream (RFC 9000, figure 2)."""

    READY = "ready"
    SEND = "send"
    DATA_SENT = "data sent"
    DATA_RECVD = "data recvd"
    RESET_SENT = "reset sent"
    RESET_RECVD = "reset recvd"


class SendEvent(enum.Enum):
    WRITE = "application writes data"
    CONCLUDE = "application sends the FIN"
    RESET = "RESET_STREAM sent"
    ALL_ACKED = "all data and the FIN acknowledged"
    RESET_ACKED = "RESET_STREAM acknowledged"


_SEND: dict[tuple[SendState, SendEvent], SendState] = {
    (SendState.READY, SendEvent.WRITE): SendState.SEND,
    (SendState.SEND, SendEvent.WRITE): SendState.SEND,
    (SendState.READY, SendEvent.CONCLUDE): SendState.DATA_SENT,
    (SendState.SEND, SendEvent.CONCLUDE): SendState.DATA_SENT,
    (SendState.READY, SendEvent.RESET): SendState.RESET_SENT,
    (SendState.SEND, SendEvent.RESET): SendState.RESET_SENT,
    (SendState.DATA_SENT, SendEvent.RESET): SendState.RESET_SENT,
    (SendState.DATA_SENT, SendEvent.ALL_ACKED): SendState.DATA_RECVD,
    (SendState.RESET_SENT, SendEvent.RESET_ACKED): SendState.RESET_RECVD,
}


class RecvState(enum.Enum):
    """The receiving part of a stream (RFC 9000, figure 3)."""

    RECV = "recv"
    SIZE_KNOWN = "size known"
    DATA_RECVD = "data recvd"
    DATA_READ = "data read"
    RESET_RECVD = "reset recvd"
    RESET_READ = "reset read"


class RecvEvent(enum.Enum):
    DATA = "STREAM data received"
    FINAL_SIZE = "STREAM with FIN received: the final size is known"
    ALL_DATA = "all data up to the final size received"
    RESET = "RESET_STREAM received"
    APP_READ_ALL = "application read everything, and the FIN"
    APP_READ_RESET = "application learned of the reset"


_RECV: dict[tuple[RecvState, RecvEvent], RecvState] = {
    (RecvState.RECV, RecvEvent.DATA): RecvState.RECV,
    (RecvState.RECV, RecvEvent.FINAL_SIZE): RecvState.SIZE_KNOWN,
    (RecvState.SIZE_KNOWN, RecvEvent.ALL_DATA): RecvState.DATA_RECVD,
    (RecvState.RECV, RecvEvent.RESET): RecvState.RESET_RECVD,
    (RecvState.SIZE_KNOWN, RecvEvent.RESET): RecvState.RESET_RECVD,
    (RecvState.DATA_RECVD, RecvEvent.RESET): RecvState.RESET_RECVD,
    (RecvState.DATA_RECVD, RecvEvent.APP_READ_ALL): RecvState.DATA_READ,
    (RecvState.DATA_READ, RecvEvent.APP_READ_ALL): RecvState.DATA_READ,
    (RecvState.RESET_RECVD, RecvEvent.APP_READ_RESET): RecvState.RESET_READ,
    (RecvState.RESET_READ, RecvEvent.APP_READ_RESET): RecvState.RESET_READ,
}

#: Receiving-part states in which the peer's FIN has arrived.
FIN_RECEIVED = frozenset(
    {RecvState.SIZE_KNOWN, RecvState.DATA_RECVD, RecvState.DATA_READ}
)
#: Receiving-part states after the peer's RESET_STREAM.
RESET_RECEIVED = frozenset({RecvState.RESET_RECVD, RecvState.RESET_READ})
#: Sending-part states after the FIN was sent.
FIN_SENT = frozenset({SendState.DATA_SENT, SendState.DATA_RECVD})
#: Sending-part states after a RESET_STREAM was sent.
RESET_SENT = frozenset({SendState.RESET_SENT, SendState.RESET_RECVD})


def next_send_state(state: SendState, event: SendEvent) -> SendState:
    """The sending part's state after ``event``; StreamStateError if none."""
    try:
        return _SEND[state, event]
    except KeyError:
        raise StreamStateError(
            f"sending part in state {state.value!r}: {event.value} is not allowed"
        ) from None


def next_recv_state(state: RecvState, event: RecvEvent) -> RecvState:
    """The receiving part's state after ``event``; StreamStateError if none."""
    try:
        return _RECV[state, event]
    except KeyError:
        raise StreamStateError(
            f"receiving part in state {state.value!r}: {event.value} is not allowed"
        ) from None


class StreamView(Protocol):
    """What the derivations below read of a stream."""

    @property
    def send_state(self) -> SendState | None:
        """None for a receive-only stream."""

    @property
    def recv_state(self) -> RecvState | None:
        """None for a send-only stream."""

    @property
    def buffered(self) -> int:
        """Received bytes not yet read."""

    @property
    def reset_received_code(self) -> int | None:
        """The peer's RESET_STREAM code."""

    @property
    def reset_sent_code(self) -> int | None:
        """Our RESET_STREAM code."""

    @property
    def stop_received_code(self) -> int | None:
        """The peer's STOP_SENDING code."""

    @property
    def stop_sent_code(self) -> int | None:
        """Our STOP_SENDING code."""


def read_state(stream: StreamView | None, conn_closed: bool) -> int:
    """``SSL_get_stream_read_state`` of ``stream``.

    In OpenSSL's order of precedence: a missing direction, then a closed
    connection, then a FIN, then a local STOP_SENDING, then the peer's
    RESET_STREAM.  A FIN counts once the application has read every byte
    before it (OpenSSL 3.5 reports OK while data remains buffered, although
    its man page says FINISHED as soon as the peer signalled the end).
    """
    if stream is None:
        return STREAM_STATE_NONE
    state = stream.recv_state
    if state is None:
        return STREAM_STATE_WRONG_DIR
    if conn_closed:
        return STREAM_STATE_CONN_CLOSED
    if state in FIN_RECEIVED and stream.buffered == 0:
        return STREAM_STATE_FINISHED
    if stream.stop_sent_code is not None:
        return STREAM_STATE_RESET_LOCAL
    if state in RESET_RECEIVED:
        return STREAM_STATE_RESET_REMOTE
    return STREAM_STATE_OK


def write_state(stream: StreamView | None, conn_closed: bool) -> int:
    """``SSL_get_stream_write_state`` of ``stream``.

    A reset takes precedence over a conclusion (the peer may not have all
    the data).  A peer's STOP_SENDING makes the core reset the stream with
    its code, so it reads ``RESET_LOCAL`` as in OpenSSL 3.5 (its man page
    says ``RESET_REMOTE``); ``RESET_REMOTE`` remains for a STOP_SENDING that
    arrives after everything was acknowledged.  A concluded stream is
    ``FINISHED`` once the peer acknowledged all of it and the FIN
    (DATA_RECVD), ``OK`` until then, as in OpenSSL.
    """
    if stream is None:
        return STREAM_STATE_NONE
    state = stream.send_state
    if state is None:
        return STREAM_STATE_WRONG_DIR
    if conn_closed:
        return STREAM_STATE_CONN_CLOSED
    if state in RESET_SENT:
        return STREAM_STATE_RESET_LOCAL
    if stream.stop_received_code is not None:
        return STREAM_STATE_RESET_REMOTE
    if state is SendState.DATA_RECVD:
        return STREAM_STATE_FINISHED
    return STREAM_STATE_OK


def read_error_code(stream: StreamView | None, conn_closed: bool) -> int | None:
    """The application error code behind a reset receive part, else None.

    ``SSL_get_stream_read_error_code``: our STOP_SENDING code when the state
    is ``RESET_LOCAL``, the peer's RESET_STREAM code when ``RESET_REMOTE``.
    """
    state = read_state(stream, conn_closed)
    if stream is None:
        return None
    if state == STREAM_STATE_RESET_LOCAL:
        return stream.stop_sent_code
    if state == STREAM_STATE_RESET_REMOTE:
        return stream.reset_received_code
    return None


def write_error_code(stream: StreamView | None, conn_closed: bool) -> int | None:
    """The application error code behind a reset send part, else None.

    ``SSL_get_stream_write_error_code``: our RESET_STREAM code when the
    state is ``RESET_LOCAL``, the peer's STOP_SENDING code when
    ``RESET_REMOTE``.
    """
    state = write_state(stream, conn_closed)
    if stream is None:
        return None
    if state == STREAM_STATE_RESET_LOCAL:
        return stream.reset_sent_code
    if state == STREAM_STATE_RESET_REMOTE:
        return stream.stop_received_code
    return None


def poll_events(stream: StreamView, conn_failed: bool, write_space: int) -> int:
    """The stream-level ``SSL_poll`` bits (R, ER, W, EW) that hold now.

    * R: data to read, or a FIN to report (it stays asserted after the FIN
      was read, because a read returns at once with ZeroReturnError).
    * ER: the peer reset the receive part; also (a quicconn addition) the
      connection failed and nothing is left to read.
    * W: the send part is open and ``write_space`` bytes could be appended.
    * EW: the peer sent STOP_SENDING; also (a quicconn addition) the
      connection failed while the send part was still open.
    """
    events = 0
    recv = stream.recv_state
    if recv is not None:
        fin = recv in FIN_RECEIVED
        readable = (
            recv not in RESET_RECEIVED
            and stream.stop_sent_code is None
            and (stream.buffered > 0 or fin)
        )
        if readable:
            events |= POLL_EVENT_R
        if recv in RESET_RECEIVED or (conn_failed and not readable and not fin):
            events |= POLL_EVENT_ER
    send = stream.send_state
    if send is not None and stream.stop_received_code is not None:
        events |= POLL_EVENT_EW
    elif send is not None and send not in RESET_SENT:
        concluded = send in FIN_SENT
        if conn_failed and not concluded:
            events |= POLL_EVENT_EW
        elif not conn_failed and not concluded and write_space > 0:
            events |= POLL_EVENT_W
    return events


__all__ = [
    "FIN_RECEIVED",
    "FIN_SENT",
    "RESET_RECEIVED",
    "RESET_SENT",
    "RecvEvent",
    "RecvState",
    "SendEvent",
    "SendState",
    "StreamStateError",
    "StreamView",
    "next_recv_state",
    "next_send_state",
    "poll_events",
    "read_error_code",
    "read_state",
    "write_error_code",
    "write_state",
]
