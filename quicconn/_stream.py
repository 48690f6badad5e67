"""Per-stream state, and the public ``Stream`` object (a QUIC stream SSL object).

:class:`StreamRecord` is the bookkeeping the connection keeps for every
stream, whether or not the application holds a :class:`Stream` for it (the
default stream of a connection has a record but no object).  All stream I/O
is implemented once, on the connection, in terms of records; :class:`Stream`
forwards to it under the reactor lock.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ._constants import (
    STREAM_TYPE_BIDI,
    STREAM_TYPE_READ,
    STREAM_TYPE_WRITE,
    WRITE_FLAG_CONCLUDE,
)

if TYPE_CHECKING:
    from ._connection import Connection
    from ._types import Buffer


def is_unidirectional(stream_id: int) -> bool:
    return bool(stream_id & 0x2)


def is_client_initiated(stream_id: int) -> bool:
    return not stream_id & 0x1


class StreamRecord:
    """What the connection knows about one stream."""

    __slots__ = (
        "_chunks",
        "_first_offset",
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
        #: RESET_STREAM sent by us.
        self.reset_sent_code: int | None = None
        #: STOP_SENDING received from the peer.
        self.stop_received_code: int | None = None
        #: STOP_SENDING sent by us.
        self.stop_sent_code: int | None = None
        #: Rejected by the incoming stream policy: data is dropped.
        self.rejected = False
        #: The application released its Stream object.
        self.handle_released = False

    @property
    def stream_type(self) -> int:
        return (STREAM_TYPE_READ if self.can_read else 0) | (
            STREAM_TYPE_WRITE if self.can_write else 0
        )

    @property
    def is_bidi(self) -> bool:
        return self.stream_type == STREAM_TYPE_BIDI

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


class Stream:
    """A QUIC stream SSL object (from ``new_stream`` or ``accept_stream``).

    Blocking mode is inherited from the connection.  Releasing the object
    (:meth:`free`, or leaving a ``with`` block) with unread incoming data
    asks the peer to stop sending (STOP_SENDING), as OpenSSL does.
    """

    __slots__ = ("__weakref__", "_conn", "_rec")

    def __init__(self, conn: Connection, record: StreamRecord) -> None:
        self._conn = conn
        self._rec = record

    # -- I/O --------------------------------------------------------------

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all buffered if ``n`` < 0) (SSL_read_ex)."""
        return self._conn._api_read(self._rec, n, peek=False)

    def readinto(self, buffer: Buffer) -> int:
        """Read into a writable buffer; return the count (SSL_read_ex)."""
        return self._conn._api_readinto(self._rec, buffer)

    def peek(self, n: int = -1) -> bytes:
        """Return buffered data without consuming it (SSL_peek_ex)."""
        return self._conn._api_read(self._rec, n, peek=True)

    def write(self, data: Buffer) -> int:
        """Write data; returns the count accepted (SSL_write_ex)."""
        return self._conn._api_write(self._rec, data, 0)

    def write_ex2(self, data: Buffer, flags: int = 0) -> int:
        """Write with ``WRITE_FLAG_CONCLUDE`` support (SSL_write_ex2)."""
        return self._conn._api_write(self._rec, data, flags)

    def stream_conclude(self, flags: int = 0) -> None:
        """Send FIN after any buffered data (SSL_stream_conclude)."""
        self._conn._api_conclude(self._rec, flags)

    def stream_reset(self, error_code: int = 0) -> None:
        """Abort sending with RESET_STREAM (SSL_stream_reset)."""
        self._conn._api_reset(self._rec, error_code)

    def pending(self) -> int:
        """Bytes readable now, without I/O (SSL_pending)."""
        return self._rec.buffered

    def has_pending(self) -> bool:
        """Whether a read would return data without I/O (SSL_has_pending)."""
        return self._rec.buffered > 0

    # -- state ------------------------------------------------------------

    def get_stream_read_state(self) -> int:
        """``STREAM_STATE_*`` of the receive part (SSL_get_stream_read_state)."""
        return self._conn._read_state(self._rec)

    def get_stream_write_state(self) -> int:
        """``STREAM_STATE_*`` of the send part (SSL_get_stream_write_state)."""
        return self._conn._write_state(self._rec)

    def get_stream_read_error_code(self) -> int | None:
        """The peer's RESET_STREAM code, or None (SSL_get_stream_read_error_code)."""
        return self._rec.reset_received_code

    def get_stream_write_error_code(self) -> int | None:
        """The peer's STOP_SENDING code, or None (SSL_get_stream_write_error_code)."""
        return self._rec.stop_received_code

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

    # -- events -----------------------------------------------------------

    def handle_events(self) -> None:
        """Tick the connection's reactor (SSL_handle_events)."""
        self._conn.handle_events()

    def get_event_timeout(self) -> float | None:
        """Seconds until events are due, None for infinite (SSL_get_event_timeout)."""
        return self._conn.get_event_timeout()

    def get_blocking_mode(self) -> bool:
        """Blocking mode, inherited from the connection (SSL_get_blocking_mode)."""
        return self._conn.get_blocking_mode()

    # -- lifetime ---------------------------------------------------------

    def free(self) -> None:
        """Release the stream object (SSL_free on a stream)."""
        self._conn._api_release_stream(self._rec)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.free()

    def __repr__(self) -> str:
        kind = {1: "read-only", 2: "write-only", 3: "bidi"}[self._rec.stream_type]
        origin = "local" if self._rec.is_local else "remote"
        return f"<quicconn.Stream id={self._rec.stream_id} {kind} {origin}>"


def conclude_requested(flags: int) -> bool:
    if flags & ~WRITE_FLAG_CONCLUDE:
        raise ValueError(f"unknown write flags 0x{flags:x}; only WRITE_FLAG_CONCLUDE")
    return bool(flags & WRITE_FLAG_CONCLUDE)
