"""Per-stream state, and the public ``Stream`` object (a QUIC stream SSL object).

:class:`StreamRecord` is the bookkeeping the connection keeps for every
stream, whether or not the application holds a :class:`Stream` for it (the
default stream of a connection has a record but no object).  All stream I/O
is implemented once, on the connection, in terms of records; :class:`Stream`
forwards to it under the reactor lock.

Everything that *classifies* a stream lives here, as pure functions of a
record: the ``STREAM_STATE_*`` values of ``SSL_get_stream_read_state`` /
``SSL_get_stream_write_state``, their error codes, and the ``SSL_poll``
event bits of a stream.  Only the connection changes records.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .._constants import (
    POLL_EVENT_ER,
    POLL_EVENT_EW,
    POLL_EVENT_F,
    POLL_EVENT_R,
    POLL_EVENT_W,
    STREAM_STATE_CONN_CLOSED,
    STREAM_STATE_FINISHED,
    STREAM_STATE_NONE,
    STREAM_STATE_OK,
    STREAM_STATE_RESET_LOCAL,
    STREAM_STATE_RESET_REMOTE,
    STREAM_STATE_WRONG_DIR,
    STREAM_TYPE_BIDI,
    STREAM_TYPE_READ,
    STREAM_TYPE_WRITE,
    WRITE_FLAG_CONCLUDE,
)

if TYPE_CHECKING:
    from .._types import Buffer
    from .connection import Connection


def is_unidirectional(stream_id: int) -> bool:
    return bool(stream_id & 0x2)


def is_client_initiated(stream_id: int) -> bool:
    return not stream_id & 0x1


class StreamRecord:
    """What the connection knows about one stream."""

    __slots__ = (
        "_chunks",
        "_first_offset",
        "aon_len",
        "aon_pos",
        "buffered",
        "can_read",
        "can_write",
        "concluded",
        "fin_received",
        "handle_released",
        "is_local",
        "rejected",
        "reset_received_code",
        "reset_sent_code",
        "stop_received_code",
        "stop_sent_code",
        "stream_id",
    )

    def __init__(self, stream_id: int, is_client: bool) -> None:
        self.stream_id = stream_id
        self.is_local = is_client_initiated(stream_id) == is_client
        uni = is_unidirectional(stream_id)
        self.can_read = not (uni and self.is_local)
        self.can_write = not (uni and not self.is_local)
        self._chunks: deque[bytes] = deque()
        self._first_offset = 0
        self.buffered = 0
        self.fin_received = False
        self.concluded = False
        #: RESET_STREAM received from the peer (its application error code).
        self.reset_received_code: int | None = None
        #: RESET_STREAM sent by us (stream_reset(), or released unconcluded).
        self.reset_sent_code: int | None = None
        #: STOP_SENDING received from the peer.
        self.stop_received_code: int | None = None
        #: STOP_SENDING sent by us.
        self.stop_sent_code: int | None = None
        #: Rejected by the incoming stream policy: data is dropped.
        self.rejected = False
        #: The application released its Stream object (or never can get one).
        self.handle_released = False
        #: A nonblocking all-or-nothing write in progress: its total length
        #: and how much of it is already appended (OpenSSL's AON state).
        self.aon_len: int | None = None
        self.aon_pos = 0

    @property
    def stream_type(self) -> int:
        return (STREAM_TYPE_READ if self.can_read else 0) | (
            STREAM_TYPE_WRITE if self.can_write else 0
        )

    @property
    def is_bidi(self) -> bool:
        return self.stream_type == STREAM_TYPE_BIDI

    @property
    def is_uni(self) -> bool:
        return is_unidirectional(self.stream_id)

    @property
    def send_open(self) -> bool:
        """The send part can still take data (not concluded, reset or stopped)."""
        return (
            self.can_write
            and not self.concluded
            and self.reset_sent_code is None
            and self.stop_received_code is None
        )

    @property
    def receive_open(self) -> bool:
        """The receive part may still get data (no FIN, reset or STOP_SENDING)."""
        return (
            self.can_read
            and not self.fin_received
            and self.reset_received_code is None
            and self.stop_sent_code is None
        )

    # -- receive buffer ---------------------------------------------------

    def push(self, data: bytes, fin: bool) -> None:
        if data:
            self._chunks.append(data)
            self.buffered += len(data)
        if fin:
            self.fin_received = True

    def take(self, limit: int) -> bytes:
        """Remove and return up to ``limit`` bytes (all if ``limit`` < 0)."""
        if limit < 0 or limit >= self.buffered:
            if self._first_offset == 0 and len(self._chunks) == 1:
                data = self._chunks.popleft()
            else:
                parts = list(self._chunks)
                if parts:
                    parts[0] = parts[0][self._first_offset :]
                data = b"".join(parts)
                self._chunks.clear()
            self._first_offset = 0
            self.buffered = 0
            return data
        out = bytearray()
        while len(out) < limit:
            chunk = self._chunks[0]
            start = self._first_offset
            want = limit - len(out)
            end = start + want
            if end >= len(chunk):
                out += chunk[start:] if start else chunk
                self._chunks.popleft()
                self._first_offset = 0
            else:
                out += chunk[start:end]
                self._first_offset = end
        self.buffered -= len(out)
        return bytes(out)

    def take_into(self, buffer: memoryview) -> int:
        """Move as many bytes as fit into ``buffer``; return the count."""
        size = len(buffer)
        filled = 0
        while filled < size and self._chunks:
            chunk = self._chunks[0]
            start = self._first_offset
            n = min(size - filled, len(chunk) - start)
            buffer[filled : filled + n] = chunk[start : start + n]
            filled += n
            if start + n == len(chunk):
                self._chunks.popleft()
                self._first_offset = 0
            else:
                self._first_offset = start + n
        self.buffered -= filled
        return filled

    def peek(self, limit: int) -> bytes:
        if limit < 0 or limit > self.buffered:
            limit = self.buffered
        out = bytearray()
        offset = self._first_offset
        for chunk in self._chunks:
            if len(out) >= limit:
                break
            out += chunk[offset : offset + limit - len(out)]
            offset = 0
        return bytes(out)

    def discard(self) -> int:
        """Drop everything buffered; return how many bytes were dropped."""
        dropped = self.buffered
        self._chunks.clear()
        self._first_offset = 0
        self.buffered = 0
        return dropped


# ----------------------------------------------------------------------
# classification: stream states, error codes, poll events
# ----------------------------------------------------------------------


def read_state(record: StreamRecord | None, conn_closed: bool) -> int:
    """``SSL_get_stream_read_state`` of ``record``.

    In OpenSSL's order of precedence: a missing direction, then a closed
    connection, then a FIN (which, as the man page says, is reported as soon
    as the peer signalled it, with data possibly still to read), then a
    local STOP_SENDING, then the peer's RESET_STREAM.
    """
    if record is None:
        return STREAM_STATE_NONE
    if not record.can_read:
        return STREAM_STATE_WRONG_DIR
    if conn_closed:
        return STREAM_STATE_CONN_CLOSED
    if record.fin_received:
        return STREAM_STATE_FINISHED
    if record.stop_sent_code is not None:
        return STREAM_STATE_RESET_LOCAL
    if record.reset_received_code is not None:
        return STREAM_STATE_RESET_REMOTE
    return STREAM_STATE_OK


def write_state(record: StreamRecord | None, conn_closed: bool) -> int:
    """``SSL_get_stream_write_state`` of ``record``.

    A reset takes precedence over a conclusion (the peer may not have all
    the data).  A peer's STOP_SENDING is ``RESET_REMOTE``, as the man page
    says, unless the application reset the stream itself first.
    """
    if record is None:
        return STREAM_STATE_NONE
    if not record.can_write:
        return STREAM_STATE_WRONG_DIR
    if conn_closed:
        return STREAM_STATE_CONN_CLOSED
    if record.reset_sent_code is not None:
        return STREAM_STATE_RESET_LOCAL
    if record.stop_received_code is not None:
        return STREAM_STATE_RESET_REMOTE
    if record.concluded:
        return STREAM_STATE_FINISHED
    return STREAM_STATE_OK


def read_error_code(record: StreamRecord | None, conn_closed: bool) -> int | None:
    """The application error code behind a reset receive part, else None.

    ``SSL_get_stream_read_error_code``: our STOP_SENDING code when the state
    is ``RESET_LOCAL``, the peer's RESET_STREAM code when ``RESET_REMOTE``.
    """
    state = read_state(record, conn_closed)
    if record is None:
        return None
    if state == STREAM_STATE_RESET_LOCAL:
        return record.stop_sent_code
    if state == STREAM_STATE_RESET_REMOTE:
        return record.reset_received_code
    return None


def write_error_code(record: StreamRecord | None, conn_closed: bool) -> int | None:
    """The application error code behind a reset send part, else None.

    ``SSL_get_stream_write_error_code``: our RESET_STREAM code when the
    state is ``RESET_LOCAL``, the peer's STOP_SENDING code when
    ``RESET_REMOTE``.
    """
    state = write_state(record, conn_closed)
    if record is None:
        return None
    if state == STREAM_STATE_RESET_LOCAL:
        return record.reset_sent_code
    if state == STREAM_STATE_RESET_REMOTE:
        return record.stop_received_code
    return None


def stream_poll_events(
    record: StreamRecord, conn_failed: bool, write_space: int
) -> int:
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
    readable = False
    if record.can_read and record.reset_received_code is None:
        readable = record.stop_sent_code is None and (
            record.buffered > 0 or record.fin_received
        )
        if readable:
            events |= POLL_EVENT_R
    if record.can_read and (
        record.reset_received_code is not None
        or (conn_failed and not readable and not record.fin_received)
    ):
        events |= POLL_EVENT_ER
    if record.can_write and record.reset_sent_code is None:
        if record.stop_received_code is not None or (
            conn_failed and not record.concluded
        ):
            events |= POLL_EVENT_EW
        elif not conn_failed and not record.concluded and write_space > 0:
            events |= POLL_EVENT_W
    return events


# ----------------------------------------------------------------------
# the public object
# ----------------------------------------------------------------------


class Stream:
    """A QUIC stream SSL object (from ``new_stream`` or ``accept_stream``).

    Blocking mode is inherited from the connection unless set on the stream
    (``SSL_set_blocking_mode`` on a stream).  Releasing the object
    (:meth:`free`, or leaving a ``with`` block) resets a send part that was
    not concluded and sends STOP_SENDING for a receive part that has not
    seen its FIN, as ``SSL_free`` does on a QUIC stream.  Dropping the last
    reference without :meth:`free` releases nothing: the stream stays open.
    """

    __slots__ = ("__weakref__", "_blocking", "_conn", "_last_error", "_mode", "_rec")

    def __init__(self, conn: Connection, record: StreamRecord) -> None:
        self._conn = conn
        self._rec = record
        self._blocking: bool | None = None  # None: inherit the connection's
        self._mode = conn.get_mode()
        self._last_error = 0

    # -- I/O --------------------------------------------------------------

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all buffered if ``n`` < 0) (SSL_read_ex).

        Raises ``ZeroReturnError`` once the FIN was read, ``StreamResetError``
        (with ``.error_code``) after the peer reset the stream, and
        ``ConnectionTerminatedError`` when nothing is left to read on a
        closed connection.
        """
        return self._conn._stream_call(
            self, lambda: self._conn._read(self._rec, n, False, self._blocking)
        )

    def readinto(self, buffer: Buffer) -> int:
        """Read into a writable buffer; return the count (SSL_read_ex)."""
        return self._conn._stream_call(
            self, lambda: self._conn._readinto(self._rec, buffer, self._blocking)
        )

    def peek(self, n: int = -1) -> bytes:
        """Return buffered data without consuming it (SSL_peek_ex)."""
        return self._conn._stream_call(
            self, lambda: self._conn._read(self._rec, n, True, self._blocking)
        )

    def write(self, data: Buffer) -> int:
        """Write data; returns the count accepted (SSL_write_ex).

        Blocking: waits for flow-control credit until all of ``data`` is
        taken.  Nonblocking: see :meth:`Connection.write` for the
        all-or-nothing default and ``MODE_ENABLE_PARTIAL_WRITE``.
        """
        return self._conn._stream_call(
            self, lambda: self._conn._write(self._rec, data, 0, self._blocking)
        )

    def write_ex2(self, data: Buffer, flags: int = 0) -> int:
        """Write with ``WRITE_FLAG_CONCLUDE`` support (SSL_write_ex2)."""
        return self._conn._stream_call(
            self, lambda: self._conn._write(self._rec, data, flags, self._blocking)
        )

    def stream_conclude(self, flags: int = 0) -> None:
        """Send FIN after any buffered data (SSL_stream_conclude).

        Idempotent: later calls are successful no-ops.
        """
        self._conn._stream_call(self, lambda: self._conn._conclude(self._rec, flags))

    def stream_reset(self, error_code: int = 0) -> None:
        """Abort sending with RESET_STREAM (SSL_stream_reset).

        A second call is a no-op that keeps the first code; resetting a
        concluded or receive-only stream raises ``SSLError``.
        """
        self._conn._stream_call(self, lambda: self._conn._reset(self._rec, error_code))

    def pending(self) -> int:
        """Bytes readable now, without I/O (SSL_pending)."""
        return self._rec.buffered

    def has_pending(self) -> bool:
        """Whether a read would return data without I/O (SSL_has_pending)."""
        return self._rec.buffered > 0

    # -- state ------------------------------------------------------------

    def get_stream_read_state(self) -> int:
        """``STREAM_STATE_*`` of the receive part (SSL_get_stream_read_state)."""
        return read_state(self._rec, self._conn._conn_closed())

    def get_stream_write_state(self) -> int:
        """``STREAM_STATE_*`` of the send part (SSL_get_stream_write_state)."""
        return write_state(self._rec, self._conn._conn_closed())

    def get_stream_read_error_code(self) -> int | None:
        """Code of a reset receive part, else None (SSL_get_stream_read_error_code).

        The peer's RESET_STREAM code (state ``RESET_REMOTE``) or our
        STOP_SENDING code (``RESET_LOCAL``).  OpenSSL's return value 0
        ("finished normally") and -1 ("no code") are both None here; the
        read state tells them apart.
        """
        return read_error_code(self._rec, self._conn._conn_closed())

    def get_stream_write_error_code(self) -> int | None:
        """Code of a reset send part, else None (SSL_get_stream_write_error_code).

        The peer's STOP_SENDING code (``RESET_REMOTE``) or our RESET_STREAM
        code (``RESET_LOCAL``).
        """
        return write_error_code(self._rec, self._conn._conn_closed())

    def get_stream_id(self) -> int:
        """The QUIC stream ID (SSL_get_stream_id)."""
        return self._rec.stream_id

    def get_stream_type(self) -> int:
        """``STREAM_TYPE_READ``, ``_WRITE`` or ``_BIDI`` (SSL_get_stream_type)."""
        return self._rec.stream_type

    def is_stream_local(self) -> bool:
        """True if this endpoint opened the stream (SSL_is_stream_local)."""
        return self._rec.is_local

    def get0_connection(self) -> Connection:
        """The connection the stream belongs to (SSL_get0_connection)."""
        return self._conn

    def get_error(self) -> int:
        """``ERROR_*`` code of this stream's last failed call (SSL_get_error)."""
        return self._last_error

    def get_value_uint(self, value_class: int, value_id: int) -> int:
        """Write-buffer figures of this stream (SSL_get_value_uint).

        ``VALUE_STREAM_WRITE_BUF_SIZE`` / ``_USED`` / ``_AVAIL`` in class
        ``VALUE_CLASS_GENERIC``; other values live on the connection.
        """
        return self._conn._stream_value(self._rec, value_class, value_id)

    # -- modes ------------------------------------------------------------

    def set_blocking_mode(self, blocking: bool) -> None:
        """Blocking or nonblocking calls on this stream (SSL_set_blocking_mode)."""
        self._blocking = bool(blocking)

    def get_blocking_mode(self) -> bool:
        """Stream's own mode, else the connection's (SSL_get_blocking_mode)."""
        if self._blocking is not None:
            return self._blocking
        return self._conn.get_blocking_mode()

    def set_mode(self, mode: int) -> int:
        """Add mode bits such as MODE_ENABLE_PARTIAL_WRITE (SSL_set_mode)."""
        self._mode |= mode
        return self._mode

    def clear_mode(self, mode: int) -> int:
        """Remove mode bits of this stream (SSL_clear_mode)."""
        self._mode &= ~mode
        return self._mode

    def get_mode(self) -> int:
        """Mode bits, copied from the connection at creation (SSL_get_mode)."""
        return self._mode

    # -- events -----------------------------------------------------------

    def handle_events(self) -> None:
        """Tick the connection's reactor (SSL_handle_events)."""
        self._conn.handle_events()

    def get_event_timeout(self) -> float | None:
        """Seconds until events are due, None for infinite (SSL_get_event_timeout)."""
        return self._conn.get_event_timeout()

    def _poll_revents(self, events: int) -> int:
        """``SSL_poll`` bits of this stream; the reactor lock is held."""
        if self._rec.handle_released or self._conn._freed:
            return POLL_EVENT_F
        return self._conn._record_poll_events(self._rec) & events

    # -- lifetime ---------------------------------------------------------

    @property
    def freed(self) -> bool:
        """True once :meth:`free` was called (a quicconn addition)."""
        return self._rec.handle_released

    def free(self) -> None:
        """Release the stream object (SSL_free on a stream).

        An unconcluded send part is reset (code 0) and a receive part still
        waiting for data gets STOP_SENDING (code 0), as in OpenSSL.
        Idempotent.
        """
        if self._rec.handle_released:
            return
        self._conn._stream_call(self, lambda: self._conn._release_stream(self._rec))

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.free()

    def __repr__(self) -> str:
        kind = {1: "read-only", 2: "write-only", 3: "bidi"}[self._rec.stream_type]
        origin = "local" if self._rec.is_local else "remote"
        return f"<quicconn.Stream id={self._rec.stream_id} {kind} {origin}>"


def conclude_requested(flags: int) -> bool:
    if not isinstance(flags, int):
        raise TypeError(f"write flags must be an int, not {type(flags).__name__}")
    if flags & ~WRITE_FLAG_CONCLUDE:
        raise ValueError(f"unknown write flags 0x{flags:x}; only WRITE_FLAG_CONCLUDE")
    return bool(flags & WRITE_FLAG_CONCLUDE)


__all__ = [
    "Stream",
    "StreamRecord",
    "conclude_requested",
    "is_unidirectional",
    "read_error_code",
    "read_state",
    "stream_poll_events",
    "write_error_code",
    "write_state",
]
