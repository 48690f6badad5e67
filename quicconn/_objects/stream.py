"""Stream objects: OpenSSL's QUIC stream SSL object, and the handle behind it.

:class:`StreamHandle` is what OpenSSL keeps per stream object (its XSO):
the stream's record in the channel, its own blocking mode, mode bits
(``MODE_ENABLE_PARTIAL_WRITE``), event-handling mode and the
all-or-nothing write in progress.  All stream I/O is written once, here,
as the call discipline over the channel's attempts.  A connection's
default stream is a handle too, without a public object: the connection's
``read()``/``write()`` go through it, with the connection's settings.

:class:`Stream` is the public object from ``new_stream()`` /
``accept_stream()``: a thin OpenSSL-shaped surface over a handle.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._constants import (
    MODE_ENABLE_PARTIAL_WRITE,
    POLL_EVENT_F,
    VALUE_CLASS_GENERIC,
    VALUE_EVENT_HANDLING_MODE,
    VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    VALUE_EVENT_HANDLING_MODE_IMPLICIT,
    VALUE_EVENT_HANDLING_MODE_INHERIT,
    VALUE_STREAM_WRITE_BUF_AVAIL,
    VALUE_STREAM_WRITE_BUF_SIZE,
    VALUE_STREAM_WRITE_BUF_USED,
    WRITE_FLAG_CONCLUDE,
)
from .._quic.conditions import Condition, QuicFailure
from .._quic.stream_state import (
    read_error_code,
    read_state,
    write_error_code,
    write_state,
)
from .._quic.streams import StreamRecord
from .binding import Binding
from .call import api
from .kinds import QuicObjectKind

if TYPE_CHECKING:
    from .._types import Buffer
    from .connection import Connection


@dataclass
class PendingWrite:
    """A nonblocking all-or-nothing write in progress (OpenSSL's AON state):
    its total length and how much of it is already appended."""

    length: int
    position: int


def conclude_requested(flags: int) -> bool:
    if not isinstance(flags, int):
        raise TypeError(f"write flags must be an int, not {type(flags).__name__}")
    if flags & ~WRITE_FLAG_CONCLUDE:
        raise ValueError(f"unknown write flags 0x{flags:x}; only WRITE_FLAG_CONCLUDE")
    return bool(flags & WRITE_FLAG_CONCLUDE)


def check_error_code(code: int) -> None:
    if not isinstance(code, int) or not 0 <= code < 2**62:
        raise ValueError(f"QUIC error codes are integers in [0, 2**62): {code!r}")


class StreamHandle:
    """One stream as an object sees it; see the module docstring.

    ``record`` None makes the connection's default stream: it resolves to
    whatever the channel binds as the default stream, when it does.
    """

    __slots__ = ("_record", "binding", "blocking", "event_mode", "mode", "pending")

    def __init__(
        self, binding: Binding, record: StreamRecord | None, *, mode: int | None
    ) -> None:
        self.binding = binding
        self._record = record
        #: None: the connection's blocking mode.
        self.blocking: bool | None = None
        #: None: the connection's mode bits (the default stream).
        self.mode = mode
        self.event_mode = VALUE_EVENT_HANDLING_MODE_INHERIT
        self.pending: PendingWrite | None = None

    @property
    def record(self) -> StreamRecord | None:
        if self._record is not None:
            return self._record
        return self.binding.channel.streams.default

    def effective_blocking(self) -> bool:
        return self.binding.blocking if self.blocking is None else self.blocking

    def effective_mode(self) -> int:
        return self.binding.mode if self.mode is None else self.mode

    def _run(self, attempt: Any, want: Condition) -> Any:
        return self.binding.run(
            attempt,
            want,
            blocking=self.effective_blocking(),
            event_mode=self.event_mode,
        )

    # -- reading ----------------------------------------------------------

    def _read_target(self) -> StreamRecord | None:
        record = self.record
        if record is None:
            return self.binding.channel.default_for_read()
        return record

    def read(self, n: int, *, peek: bool) -> bytes:
        if not isinstance(n, int):
            raise TypeError(f"read size must be an int, not {type(n).__name__}")
        if n == 0:
            return b""
        channel = self.binding.channel
        self.binding.ready_for_stream_io()

        def attempt() -> bytes | None:
            record = self._read_target()
            if record is None or not channel.readable(record):
                return None
            return record.peek(n) if peek else channel.take(record, n)

        data: bytes = self._run(attempt, Condition.WANT_READ)
        return data

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError("readinto() needs a writable buffer")
        if len(view) == 0:
            return 0
        channel = self.binding.channel
        self.binding.ready_for_stream_io()

        def attempt() -> int | None:
            record = self._read_target()
            if record is None or not channel.readable(record):
                return None
            return channel.take_into(record, view)

        count: int = self._run(attempt, Condition.WANT_READ)
        return count

    # -- writing ----------------------------------------------------------

    def _write_target(self) -> StreamRecord:
        record = self.record
        if record is not None:
            return record
        channel = self.binding.channel
        created: StreamRecord = open_stream(
            self.binding,
            channel.default_for_write,
            channel.streams.default_uni(),
            no_block=False,
        )
        return created

    def write(self, data: Buffer, flags: int) -> int:
        conclude = conclude_requested(flags)
        view = memoryview(data).cast("B")
        total = len(view)
        if total == 0:
            # OpenSSL: an empty write touches nothing (no default stream is
            # created for it) unless it carries the FIN.
            if conclude:
                self.conclude(0)
            return 0
        channel = self.binding.channel
        channel.check_mutation_allowed()
        self.binding.ready_for_stream_io()
        record = self._write_target()
        channel.check_writable(record)
        if self.effective_blocking():
            offset = 0

            def attempt_all() -> int | None:
                nonlocal offset
                offset += channel.append(record, view, offset, conclude)
                return offset if offset == total else None

            written: int = self._run(attempt_all, Condition.WANT_WRITE)
            return written
        if self.effective_mode() & MODE_ENABLE_PARTIAL_WRITE:
            some: int = self._run(
                lambda: channel.append(record, view, 0, conclude) or None,
                Condition.WANT_WRITE,
            )
            return some
        return self._write_all_or_nothing(record, view, conclude)

    def _write_all_or_nothing(
        self, record: StreamRecord, view: memoryview, conclude: bool
    ) -> int:
        """OpenSSL's nonblocking write without MODE_ENABLE_PARTIAL_WRITE.

        What fits is taken at once, but the call only succeeds, returning
        the full length, when all of the buffer is taken; until then it
        raises WantWriteError and must be repeated with the same buffer
        (OpenSSL checks the length; the contents are the caller's promise).
        """
        total = len(view)
        pending = self.pending
        if pending is not None and pending.length != total:
            raise QuicFailure(
                Condition.BAD_WRITE_RETRY,
                f"bad write retry: a {pending.length}-byte write is in progress on "
                f"stream {record.stream_id}; repeat it with the same data, not "
                f"{total} bytes (or set MODE_ENABLE_PARTIAL_WRITE)",
            )
        position = pending.position if pending is not None else 0
        channel = self.binding.channel

        def attempt() -> int | None:
            nonlocal position
            position += channel.append(record, view, position, conclude)
            return total if position == total else None

        try:
            written: int = self._run(attempt, Condition.WANT_WRITE)
            return written
        except QuicFailure as failure:
            if failure.condition is Condition.WANT_WRITE and position > 0:
                self.pending = PendingWrite(total, position)
            raise
        finally:
            if position == total:
                self.pending = None

    def conclude(self, flags: int) -> None:
        if flags:
            raise ValueError("stream_conclude() takes no flags (pass 0)")
        channel = self.binding.channel
        channel.check_mutation_allowed()
        self.binding.ready_for_stream_io()
        channel.conclude(self._write_target())

    def reset(self, error_code: int) -> None:
        check_error_code(error_code)
        record = self.record
        if record is None:
            self.binding.ready_for_stream_io()
            record = self._write_target()
        self.binding.channel.reset(record, error_code)
        self.pending = None

    def release(self, error_code: int = 0) -> None:
        record = self.record
        if record is not None:
            self.pending = None
            self.binding.channel.release_stream(record, error_code)

    # -- states and values ------------------------------------------------

    def read_state(self) -> int:
        return read_state(self.record, self.binding.channel.terminating)

    def write_state(self) -> int:
        record = self.record
        if record is not None:
            self.binding.channel.refresh_send_state(record)
        return write_state(record, self.binding.channel.terminating)

    def read_error_code(self) -> int | None:
        return read_error_code(self.record, self.binding.channel.terminating)

    def write_error_code(self) -> int | None:
        return write_error_code(self.record, self.binding.channel.terminating)

    def write_buffer_value(self, value_id: int) -> int:
        """SSL_VALUE_STREAM_WRITE_BUF_{SIZE,USED,AVAIL} of the stream."""
        record = self.record
        if record is None or not record.can_write:
            raise ValueError("write-buffer values need a stream that can be written")
        channel = self.binding.channel
        core = channel.core
        used = core.send_buffered(record.stream_id) if core is not None else 0
        if value_id == VALUE_STREAM_WRITE_BUF_SIZE:
            return channel.write_buffer_size
        if value_id == VALUE_STREAM_WRITE_BUF_USED:
            return used
        return max(0, channel.write_buffer_size - used)


def open_stream(
    binding: Binding,
    attempt: Any,
    uni: bool,
    *,
    no_block: bool,
) -> StreamRecord:
    """Open a local stream under the peer's stream limit (SSL_new_stream).

    Blocking waits for MAX_STREAMS credit; nonblocking (or ``no_block``)
    ticks once and then fails with STREAM_COUNT_LIMITED.
    """
    channel = binding.channel
    channel.reap_streams()
    if no_block or not binding.blocking:
        record: StreamRecord | None = binding.poll_once(attempt)
        if record is None:
            raise channel.stream_count_limited(uni)
        return record
    opened: StreamRecord = binding.run(attempt, Condition.WANT_WRITE, blocking=True)
    return opened


_STREAM_VALUES = (
    VALUE_STREAM_WRITE_BUF_SIZE,
    VALUE_STREAM_WRITE_BUF_USED,
    VALUE_STREAM_WRITE_BUF_AVAIL,
)
_EVENT_HANDLING_MODES = (
    VALUE_EVENT_HANDLING_MODE_INHERIT,
    VALUE_EVENT_HANDLING_MODE_IMPLICIT,
    VALUE_EVENT_HANDLING_MODE_EXPLICIT,
)


class Stream(QuicObjectKind):
    """A QUIC stream SSL object (from ``new_stream`` or ``accept_stream``).

    Blocking mode is inherited from the connection unless set on the stream
    (``SSL_set_blocking_mode`` on a stream).  Releasing the object
    (:meth:`free`, or leaving a ``with`` block) resets a send part that was
    not concluded and sends STOP_SENDING for a receive part that has not
    seen its FIN, as ``SSL_free`` does on a QUIC stream.  Dropping the last
    reference without :meth:`free` releases nothing: the stream stays open.
    """

    __slots__ = ("__weakref__", "_conn", "_handle", "_last_error")

    def __init__(self, conn: Connection, handle: StreamHandle) -> None:
        self._conn = conn
        self._handle = handle
        self._last_error = 0

    def _call_lock(self) -> AbstractContextManager[object]:
        return self._handle.binding.lock()

    @property
    def _record(self) -> StreamRecord:
        record = self._handle.record
        assert record is not None
        return record

    # -- I/O --------------------------------------------------------------

    @api
    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all buffered if ``n`` < 0) (SSL_read_ex).

        Raises ``ZeroReturnError`` once the FIN was read, ``StreamResetError``
        (with ``.error_code``) after the peer reset the stream, and
        ``ConnectionTerminatedError`` when nothing is left to read on a
        closed connection.
        """
        return self._handle.read(n, peek=False)

    @api
    def readinto(self, buffer: Buffer) -> int:
        """Read into a writable buffer; return the count (SSL_read_ex)."""
        return self._handle.readinto(buffer)

    @api
    def peek(self, n: int = -1) -> bytes:
        """Return buffered data without consuming it (SSL_peek_ex)."""
        return self._handle.read(n, peek=True)

    @api
    def write(self, data: Buffer) -> int:
        """Write data; returns the count accepted (SSL_write_ex).

        Blocking: waits for flow-control credit until all of ``data`` is
        taken.  Nonblocking: all-or-nothing by default (see
        :meth:`Connection.write`); with ``set_mode(MODE_ENABLE_PARTIAL_WRITE)``
        the count that fitted (at least one byte), else ``WantWriteError``.
        """
        return self._handle.write(data, 0)

    @api
    def write_ex2(self, data: Buffer, flags: int = 0) -> int:
        """Write with ``WRITE_FLAG_CONCLUDE`` support (SSL_write_ex2)."""
        return self._handle.write(data, flags)

    @api
    def stream_conclude(self, flags: int = 0) -> None:
        """Send FIN after any buffered data (SSL_stream_conclude).

        Idempotent: later calls are successful no-ops.
        """
        self._handle.conclude(flags)

    @api
    def stream_reset(self, error_code: int = 0) -> None:
        """Abort sending with RESET_STREAM (SSL_stream_reset).

        A second call is a no-op that keeps the first code; resetting a
        concluded or receive-only stream raises ``SSLError``.
        """
        self._handle.reset(error_code)

    def pending(self) -> int:
        """Bytes readable now, without I/O (SSL_pending)."""
        return self._record.buffered

    def has_pending(self) -> bool:
        """Whether a read would return data without I/O (SSL_has_pending)."""
        return self._record.buffered > 0

    # -- state ------------------------------------------------------------

    def get_stream_read_state(self) -> int:
        """``STREAM_STATE_*`` of the receive part (SSL_get_stream_read_state)."""
        return self._handle.read_state()

    def get_stream_write_state(self) -> int:
        """``STREAM_STATE_*`` of the send part (SSL_get_stream_write_state)."""
        return self._handle.write_state()

    def get_stream_read_error_code(self) -> int | None:
        """Code of a reset receive part, else None (SSL_get_stream_read_error_code).

        The peer's RESET_STREAM code (state ``RESET_REMOTE``) or our
        STOP_SENDING code (``RESET_LOCAL``).  OpenSSL's return value 0
        ("finished normally") and -1 ("no code") are both None here; the
        read state tells them apart.
        """
        return self._handle.read_error_code()

    def get_stream_write_error_code(self) -> int | None:
        """Code of a reset send part, else None (SSL_get_stream_write_error_code).

        The peer's STOP_SENDING code (``RESET_REMOTE``) or our RESET_STREAM
        code (``RESET_LOCAL``).
        """
        return self._handle.write_error_code()

    def get_stream_id(self) -> int:
        """The QUIC stream ID (SSL_get_stream_id)."""
        return self._record.stream_id

    def get_stream_type(self) -> int:
        """``STREAM_TYPE_READ``, ``_WRITE`` or ``_BIDI`` (SSL_get_stream_type)."""
        return self._record.stream_type

    def is_stream_local(self) -> bool:
        """True if this endpoint opened the stream (SSL_is_stream_local)."""
        return self._record.is_local

    def is_server(self) -> bool:
        """Whether the stream's connection is the server end (SSL_is_server)."""
        return self._conn.is_server()

    def get0_connection(self) -> Connection:
        """The connection the stream belongs to (SSL_get0_connection)."""
        return self._conn

    def get_core_name(self) -> str:
        """The QUIC core the stream's connection runs on (a quicconn
        extension; see ``Connection.get_core_name``)."""
        return self._conn.get_core_name()

    def get_error(self) -> int:
        """``ERROR_*`` code of this stream's last failed call (SSL_get_error)."""
        return self._last_error

    @api
    def get_value_uint(self, value_class: int, value_id: int) -> int:
        """A value of this stream (SSL_get_value_uint).

        In ``VALUE_CLASS_GENERIC``: the write-buffer figures
        (``VALUE_STREAM_WRITE_BUF_SIZE`` / ``_USED`` / ``_AVAIL``) and the
        stream's own ``VALUE_EVENT_HANDLING_MODE`` (``INHERIT`` unless set);
        other values live on the connection.
        """
        if value_class != VALUE_CLASS_GENERIC:
            raise ValueError(
                f"stream values are in VALUE_CLASS_GENERIC, not class {value_class}"
            )
        if value_id == VALUE_EVENT_HANDLING_MODE:
            return self._handle.event_mode
        if value_id not in _STREAM_VALUES:
            raise ValueError(
                f"value {value_id} is not a stream value; ask the connection"
            )
        return self._handle.write_buffer_value(value_id)

    @api
    def set_value_uint(self, value_class: int, value_id: int, value: int) -> None:
        """Set this stream's event-handling mode (SSL_set_value_uint).

        ``VALUE_EVENT_HANDLING_MODE`` in ``VALUE_CLASS_GENERIC``:
        ``INHERIT`` (the connection's), ``IMPLICIT`` or ``EXPLICIT``.
        """
        if value_class != VALUE_CLASS_GENERIC or value_id != VALUE_EVENT_HANDLING_MODE:
            raise ValueError(
                f"value {value_id} (class {value_class}) cannot be set on a stream"
            )
        if value not in _EVENT_HANDLING_MODES:
            raise ValueError(f"unknown event handling mode {value!r}")
        self._handle.event_mode = value

    # -- modes ------------------------------------------------------------

    def set_blocking_mode(self, blocking: bool) -> None:
        """Blocking or nonblocking calls on this stream (SSL_set_blocking_mode)."""
        self._handle.blocking = bool(blocking)

    def get_blocking_mode(self) -> bool:
        """Stream's own mode, else the connection's (SSL_get_blocking_mode)."""
        return self._handle.effective_blocking()

    def set_mode(self, mode: int) -> int:
        """Add mode bits such as MODE_ENABLE_PARTIAL_WRITE (SSL_set_mode)."""
        self._handle.mode = self._handle.effective_mode() | mode
        return self._handle.mode

    def clear_mode(self, mode: int) -> int:
        """Remove mode bits of this stream (SSL_clear_mode)."""
        self._handle.mode = self._handle.effective_mode() & ~mode
        return self._handle.mode

    def get_mode(self) -> int:
        """Mode bits, copied from the connection at creation (SSL_get_mode)."""
        return self._handle.effective_mode()

    # -- events -----------------------------------------------------------

    def handle_events(self) -> None:
        """Tick the connection's reactor (SSL_handle_events)."""
        self._conn.handle_events()

    def get_event_timeout(self) -> float | None:
        """Seconds until events are due, None for infinite (SSL_get_event_timeout)."""
        return self._conn.get_event_timeout()

    def net_read_desired(self) -> bool:
        """The connection's SSL_net_read_desired (a stream has no I/O of its own)."""
        return self._conn.net_read_desired()

    def net_write_desired(self) -> bool:
        """The connection's SSL_net_write_desired."""
        return self._conn.net_write_desired()

    def get_rpoll_descriptor(self) -> int:
        """The connection's socket (SSL_get_rpoll_descriptor on a stream)."""
        return self._conn.get_rpoll_descriptor()

    def get_wpoll_descriptor(self) -> int:
        """The connection's socket (SSL_get_wpoll_descriptor on a stream)."""
        return self._conn.get_wpoll_descriptor()

    # -- lifetime ---------------------------------------------------------

    @property
    def freed(self) -> bool:
        """True once :meth:`free` was called (a quicconn addition)."""
        return self._record.released

    @api
    def free(self) -> None:
        """Release the stream object (SSL_free on a stream).

        An unconcluded send part is reset (code 0) and a receive part still
        waiting for data gets STOP_SENDING (code 0), as in OpenSSL.
        Idempotent.
        """
        self._handle.release()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.free()

    def __repr__(self) -> str:
        record = self._record
        kind = {1: "read-only", 2: "write-only", 3: "bidi"}[record.stream_type]
        origin = "local" if record.is_local else "remote"
        return f"<quicconn.Stream id={record.stream_id} {kind} {origin}>"


def stream_poll_revents(stream: Stream, events: int) -> int:
    """``SSL_poll`` bits of a stream object; the reactor lock is held."""
    handle = stream._handle
    record = handle.record
    if record is None or record.released or handle.binding.freed:
        return POLL_EVENT_F
    return handle.binding.channel.stream_poll_events(record) & events


def free_stream(stream: Stream, error_code: int) -> None:
    """:meth:`Stream.free`, with ``error_code`` in the RESET_STREAM and
    STOP_SENDING it may send (``SSL_free`` always uses 0).  For HTTP/3,
    whose cancelled requests carry H3_REQUEST_CANCELLED both ways
    (RFC 9114 section 4.1.1)."""
    check_error_code(error_code)
    with stream_binding(stream).lock():
        stream._handle.release(error_code)


def abort_reading(stream: Stream, error_code: int) -> None:
    """Stop reading ``stream``: STOP_SENDING with ``error_code``, unread data
    dropped.  For the HTTP layer, whose stream errors carry an HTTP/3 code;
    OpenSSL has no call for it (freeing a stream sends code 0)."""
    check_error_code(error_code)
    handle = stream._handle
    with handle.binding.lock():
        record = handle.record
        if record is not None and not record.released:
            handle.binding.channel.stop_sending(record, error_code)


def write_space(stream: Stream) -> int:
    """Bytes a write on ``stream`` could take now: the peer's stream and
    connection credit, and room in the stream's and the connection's send
    buffers (0 for a stream that cannot be written)."""
    handle = stream._handle
    with handle.binding.lock():
        record = handle.record
        if record is None or record.released or not record.send_open:
            return 0
        return handle.binding.channel.write_space(record)


def stream_binding(stream: Stream) -> Binding:
    """The binding (channel, reactor) behind a stream object."""
    return stream._handle.binding


__all__ = [
    "PendingWrite",
    "Stream",
    "StreamHandle",
    "abort_reading",
    "check_error_code",
    "conclude_requested",
    "free_stream",
    "open_stream",
    "stream_binding",
    "stream_poll_revents",
    "write_space",
]
