"""``Connection``: the QUIC connection SSL object, with OpenSSL's event semantics.

A thin OpenSSL-shaped surface.  What the connection *is* lives in its
channel (``quicconn/_quic/channel.py``: handshake and close state, streams,
policies); what the application's calls share lives in its
:class:`~quicconn._objects.binding.Binding` (blocking and event-handling
modes, mode bits, the call discipline); default-stream I/O goes through a
:class:`~quicconn._objects.stream.StreamHandle` without a public object.
Every public call completes by OpenSSL's rule: try; tick and retry
(implicit event handling); then raise ``Want*`` (nonblocking) or wait.

The module-level functions at the end are the internal API that other
modules (poll, the listener, the HTTP layer) use instead of reaching into
a connection.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .._constants import (
    ACCEPT_STREAM_BIDI,
    ACCEPT_STREAM_NO_BLOCK,
    ACCEPT_STREAM_UNI,
    INCOMING_STREAM_POLICY_REJECT,
    KEY_UPDATE_NOT_REQUESTED,
    KEY_UPDATE_REQUESTED,
    MODE_ASYNC,
    POLL_EVENT_F,
    SHUTDOWN_FLAG_NO_BLOCK,
    SHUTDOWN_FLAG_NO_STREAM_FLUSH,
    SHUTDOWN_FLAG_RAPID,
    SHUTDOWN_FLAG_WAIT_PEER,
    STREAM_FLAG_ADVANCE,
    STREAM_FLAG_NO_BLOCK,
    STREAM_FLAG_UNI,
    STREAM_TYPE_BIDI,
    STREAM_TYPE_NONE,
    Role,
)
from .._core.interface import H3Codec, H3Transport
from .._errors import ConnCloseInfo, Error, SSLError
from .._quic.channel import Channel, ConnState
from .._quic.conditions import Condition
from .._quic.reactor import Reactor
from .async_surface import AsyncSurface
from .binding import Binding
from .call import api
from .client_setup import ClientSetup
from .context_settings import ContextSettings, channel_config
from .datagrams import DatagramSurface
from .kinds import QuicObjectKind
from .session import Session
from .stream import Stream, StreamHandle, check_error_code, open_stream
from .surface import EventSurface
from .values import ValueSurface

if TYPE_CHECKING:
    from .._types import Buffer

_SHUTDOWN_FLAGS = (
    SHUTDOWN_FLAG_RAPID
    | SHUTDOWN_FLAG_NO_STREAM_FLUSH
    | SHUTDOWN_FLAG_NO_BLOCK
    | SHUTDOWN_FLAG_WAIT_PEER
)


class Connection(
    ClientSetup,
    EventSurface,
    AsyncSurface,
    ValueSurface,
    DatagramSurface,
    QuicObjectKind,
):
    """A QUIC connection (``SSL_new`` on a QUIC context).

    Client use, as in OpenSSL's guide demos::

        conn = quicconn.Connection(ctx)
        conn.set_fd(sock)
        conn.set1_host("example.com")
        conn.connect()
        conn.write(b"...")

    Blocking mode is the default; :meth:`set_blocking_mode` ``(False)`` makes
    every call tick once and raise ``WantReadError``/``WantWriteError``
    instead of waiting.
    """

    _IS_CONNECTION = True

    def __init__(self, ctx: ContextSettings) -> None:
        if not isinstance(ctx, ContextSettings):
            raise TypeError(f"Connection() needs a quicconn.Context, got {ctx!r}")
        self._ctx = ctx
        channel = Channel(channel_config(ctx), is_client=ctx.role is Role.CLIENT)
        channel.on_async_ready = self._async_wake_app
        self._binding = Binding(channel, ctx.get_mode(), self._start)
        self._channel = channel
        self._default = StreamHandle(self._binding, None, mode=None)
        self._last_error = 0
        self._owns_socket = False
        self._sni: str | None = None
        self._verify_host: str | None = None
        self._session: Session | None = None
        self._new_session: Session | None = None
        self._listener: Any = None
        # MODE_ASYNC: SSL_new copies the context's callback and argument.
        self._async_callback = ctx.async_callback
        self._async_callback_arg = ctx.async_callback_arg
        self._async_engine = None

    def _call_lock(self) -> AbstractContextManager[object]:
        return self._binding.lock()

    def _events_reactor(self) -> Reactor | None:
        return self._channel.reactor

    def _require_events_reactor(self) -> Reactor:
        return self._binding.require_reactor()

    def _inject_default_peer(self) -> tuple[Any, ...] | None:
        channel = self._channel
        if channel.peer_addr is not None:
            return channel.peer_addr
        core = channel.core
        return None if core is None else core.peer_address()

    def _io_started(self) -> bool:
        return self._channel.started

    def _due_before_first_tick(self) -> bool:
        return self._channel.is_client and not self._channel.started

    def _context_engine(self) -> Any:
        return self._ctx.get_async_engine()

    def is_server(self) -> bool:
        """True for a server-side connection (SSL_is_server)."""
        return not self._channel.is_client

    def get0_listener(self) -> Any:
        """The listener this connection came from, or None (SSL_get0_listener)."""
        return self._listener

    # -- blocking mode and events -----------------------------------------

    def set_blocking_mode(self, blocking: bool) -> None:
        """Choose blocking (default) or nonblocking calls (SSL_set_blocking_mode)."""
        self._binding.blocking = bool(blocking)

    def get_blocking_mode(self) -> bool:
        """Whether calls block (SSL_get_blocking_mode)."""
        return self._binding.blocking

    def get_error(self) -> int:
        """The ``ERROR_*`` code of the last failed call, 0 after a success
        (SSL_get_error; quicconn also puts it in ``exc.code``)."""
        return self._last_error

    # -- handshake --------------------------------------------------------

    @api
    def connect(self) -> None:
        """Run the client handshake to completion (SSL_connect)."""
        if not self._channel.is_client:
            raise ValueError("connect() is for client connections; use accept()")
        self._handshake()

    @api
    def do_handshake(self) -> None:
        """Run the handshake in this object's role (SSL_do_handshake)."""
        self._handshake()

    @api
    def accept(self) -> None:
        """Complete the server handshake of an accepted connection (SSL_accept)."""
        if self._channel.is_client:
            raise ValueError("accept() is for server connections; use connect()")
        self._handshake()

    def is_init_finished(self) -> bool:
        """Whether the handshake completed (SSL_is_init_finished)."""
        core = self._channel.core
        return core is not None and core.handshake_complete

    def _handshake(self) -> None:
        if not self._channel.started:
            self._start()
        self._binding.run(self._channel.handshake_done, Condition.WANT_READ)

    # -- default stream I/O -------------------------------------------------

    @api
    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes from the default stream (SSL_read_ex).

        ``n`` < 0 returns everything buffered (at least one byte).  Raises
        ``ZeroReturnError`` once the peer's FIN has been read.  Without a
        default stream yet, a read binds the peer's first stream as the
        default stream (waiting for it in blocking mode), as OpenSSL does.
        """
        return self._default.read(n, peek=False)

    @api
    def peek(self, n: int = -1) -> bytes:
        """Like :meth:`read` but leaves the data buffered (SSL_peek_ex)."""
        return self._default.read(n, peek=True)

    @api
    def readinto(self, buffer: Buffer) -> int:
        """Read into ``buffer``; return the byte count (SSL_read_ex)."""
        return self._default.readinto(buffer)

    @api
    def write(self, data: Buffer) -> int:
        """Write to the default stream; return the count (SSL_write_ex).

        Writes are accepted up to the stream's flow-control credit and the
        send buffer (``Context.stream_write_buffer_size``), as OpenSSL's are.
        Blocking: returns once all of ``data`` is taken.  Nonblocking,
        all-or-nothing by default: ``len(data)`` once all of it is taken;
        until then ``WantWriteError``, keeping what was taken, and the call
        must be repeated with the same data.  With
        ``set_mode(MODE_ENABLE_PARTIAL_WRITE)``: the count taken (at least
        one byte) or ``WantWriteError``.
        """
        return self._default.write(data, 0)

    @api
    def write_ex2(self, data: Buffer, flags: int = 0) -> int:
        """Write, optionally concluding the stream (SSL_write_ex2).

        ``WRITE_FLAG_CONCLUDE`` sends the FIN with the last byte; with empty
        ``data`` it concludes at once.  An empty write without the flag
        does nothing and creates no default stream.
        """
        return self._default.write(data, flags)

    @api
    def stream_conclude(self, flags: int = 0) -> None:
        """Send FIN on the default stream after buffered data (SSL_stream_conclude)."""
        self._default.conclude(flags)

    @api
    def stream_reset(self, error_code: int = 0) -> None:
        """Reset the default stream's sending part (SSL_stream_reset)."""
        self._default.reset(error_code)

    def pending(self) -> int:
        """Bytes readable now on the default stream, without I/O (SSL_pending)."""
        record = self._default.record
        return 0 if record is None else record.buffered

    def has_pending(self) -> bool:
        """Whether a read would return data without I/O (SSL_has_pending)."""
        return self.pending() > 0

    def get_stream_read_state(self) -> int:
        """Default stream's read state; NONE without one (SSL_get_stream_read_state)."""
        return self._default.read_state()

    def get_stream_write_state(self) -> int:
        """Default stream's write state (SSL_get_stream_write_state)."""
        return self._default.write_state()

    def get_stream_read_error_code(self) -> int | None:
        """Default stream's receive reset code (SSL_get_stream_read_error_code)."""
        return self._default.read_error_code()

    def get_stream_write_error_code(self) -> int | None:
        """Default stream's send reset code (SSL_get_stream_write_error_code)."""
        return self._default.write_error_code()

    def get_stream_id(self) -> int | None:
        """The default stream's ID, or None if there is none (SSL_get_stream_id)."""
        record = self._default.record
        return None if record is None else record.stream_id

    def get_stream_type(self) -> int:
        """Type of the default stream (SSL_get_stream_type): before one
        exists, ``STREAM_TYPE_BIDI`` while it may still be made, else NONE."""
        streams = self._channel.streams
        if streams.default is not None:
            return streams.default.stream_type
        return STREAM_TYPE_BIDI if streams.default_possible() else STREAM_TYPE_NONE

    def is_stream_local(self) -> bool:
        """Whether this endpoint opened the default stream (SSL_is_stream_local)."""
        record = self._default.record
        if record is None:
            raise SSLError("there is no default stream")
        return record.is_local

    # -- multiple streams -------------------------------------------------

    @api
    def new_stream(self, flags: int = 0) -> Stream:
        """Open a new local stream (SSL_new_stream).

        ``STREAM_FLAG_UNI`` for a send-only stream.  At the peer's stream
        limit (MAX_STREAMS), blocking mode waits for credit; nonblocking
        mode or ``STREAM_FLAG_NO_BLOCK`` raises ``StreamCountLimitedError``.
        ``STREAM_FLAG_ADVANCE`` opens it anyway: its data goes out when the
        peer allows the stream.  Opening a stream inhibits the default stream.
        """
        known = STREAM_FLAG_UNI | STREAM_FLAG_NO_BLOCK | STREAM_FLAG_ADVANCE
        if not isinstance(flags, int):
            raise TypeError(f"new_stream() flags must be an int, not {flags!r}")
        if flags & ~known:
            raise ValueError(f"unknown new_stream() flags 0x{flags & ~known:x}")
        channel = self._channel
        channel.check_mutation_allowed()
        self._binding.ready_for_stream_io()
        uni = bool(flags & STREAM_FLAG_UNI)
        advance = bool(flags & STREAM_FLAG_ADVANCE)
        record = open_stream(
            self._binding,
            lambda: channel.open_stream(uni, advance=advance),
            uni,
            no_block=bool(flags & STREAM_FLAG_NO_BLOCK),
        )
        channel.streams.inhibit_default()
        return Stream(
            self, StreamHandle(self._binding, record, mode=self._binding.mode)
        )

    @api
    def accept_stream(self, flags: int = 0) -> Stream | None:
        """Take the next peer-opened stream (SSL_accept_stream).

        None when none is queued and ``ACCEPT_STREAM_NO_BLOCK`` is given or
        the connection is nonblocking (after one tick), as OpenSSL returns
        NULL.  ``ACCEPT_STREAM_UNI``/``_BIDI`` restrict the kind.  Raises
        ``ConnectionTerminatedError`` once the connection is closed, and
        ``ValueError`` while the incoming stream policy rejects streams.
        Accepting a stream inhibits the default stream.
        """
        known = ACCEPT_STREAM_NO_BLOCK | ACCEPT_STREAM_UNI | ACCEPT_STREAM_BIDI
        if not isinstance(flags, int):
            raise TypeError(f"accept_stream() flags must be an int, not {flags!r}")
        if flags & ~known:
            raise ValueError(f"unknown accept_stream() flags 0x{flags & ~known:x}")
        channel = self._channel
        if channel.streams.effective_incoming_policy() == INCOMING_STREAM_POLICY_REJECT:
            raise ValueError(
                "accept_stream(): the incoming stream policy rejects peer streams; "
                "call set_incoming_stream_policy(INCOMING_STREAM_POLICY_ACCEPT) or "
                "set_default_stream_mode(DEFAULT_STREAM_MODE_NONE) first"
            )
        self._binding.ready_for_stream_io()

        def attempt() -> Any:
            return channel.accept_stream(
                uni=bool(flags & ACCEPT_STREAM_UNI),
                bidi=bool(flags & ACCEPT_STREAM_BIDI),
            )

        if flags & ACCEPT_STREAM_NO_BLOCK or not self._binding.blocking:
            record = self._binding.poll_once(attempt)
            if record is None:
                return None
        else:
            record = self._binding.run(attempt, Condition.WANT_READ, blocking=True)
        channel.streams.inhibit_default()
        channel.reap_streams()
        return Stream(
            self, StreamHandle(self._binding, record, mode=self._binding.mode)
        )

    def get_accept_stream_queue_len(self) -> int:
        """Peer-opened streams not yet accepted (SSL_get_accept_stream_queue_len)."""
        return len(self._channel.streams.accept_queue)

    @api
    def set_default_stream_mode(self, mode: int) -> None:
        """How the default stream is made (SSL_set_default_stream_mode).

        ``DEFAULT_STREAM_MODE_AUTO_BIDI`` (default): the first write opens a
        local bidirectional stream, or the first read binds the peer's first
        stream; ``AUTO_UNI``: a write opens a unidirectional one; ``NONE``:
        no default stream.  Only before a default stream was made or
        inhibited (by new_stream()/accept_stream()), as in OpenSSL.
        """
        self._channel.streams.set_default_mode(mode)

    @api
    def set_incoming_stream_policy(self, policy: int, app_error_code: int = 0) -> None:
        """Accept or reject peer-opened streams (SSL_set_incoming_stream_policy).

        ``INCOMING_STREAM_POLICY_AUTO`` (default): accept while no default
        stream exists (and nothing inhibited it) or when the default stream
        mode is NONE; otherwise reject.  ``ACCEPT``/``REJECT``: always.
        Rejected streams get STOP_SENDING (and RESET_STREAM if they are
        bidirectional) with ``app_error_code`` as soon as they arrive.
        """
        check_error_code(app_error_code)
        self._channel.streams.set_incoming_policy(policy, app_error_code)

    # -- closing ------------------------------------------------------------

    @api
    def shutdown(self, flags: int = 0, error_code: int = 0, reason: str = "") -> bool:
        """Close the connection (SSL_shutdown_ex); True once fully closed.

        Unless ``SHUTDOWN_FLAG_NO_STREAM_FLUSH``, waits until the peer has
        acknowledged all stream data, then sends CONNECTION_CLOSE with
        ``error_code`` and ``reason`` and waits out the terminating period.
        ``SHUTDOWN_FLAG_RAPID`` does not wait for it: the call returns as
        soon as CONNECTION_CLOSE is out, False (OpenSSL's 0) until the
        terminating period has ended, True after.  ``SHUTDOWN_FLAG_WAIT_PEER``
        waits for the peer to close instead.  Nonblocking (or with
        ``SHUTDOWN_FLAG_NO_BLOCK``): False while in progress; call again.
        """
        if flags & ~_SHUTDOWN_FLAGS:
            raise ValueError(f"unknown shutdown flags 0x{flags & ~_SHUTDOWN_FLAGS:x}")
        check_error_code(error_code)
        if not self._channel.started:
            return True  # nothing was ever sent
        binding = self._binding

        def step() -> bool | None:
            return self._channel.shutdown_step(flags, error_code, reason)

        if binding.blocking and not flags & SHUTDOWN_FLAG_NO_BLOCK:
            done: bool = binding.run(step, Condition.WANT_READ, blocking=True)
            return done
        if binding.poll_once(step):
            return True
        condition = self._channel.async_condition()
        if condition is not None:
            raise binding.would_block(condition)
        return False

    def get_conn_close_info(self) -> ConnCloseInfo | None:
        """Why the connection closed, or None while open (SSL_get_conn_close_info)."""
        return self._channel.close_info

    @api
    def key_update(self, update_type: int = KEY_UPDATE_REQUESTED) -> None:
        """Start a 1-RTT key update (SSL_key_update); QUIC has no "update
        requested" signal, so both types do the same."""
        if update_type not in (KEY_UPDATE_NOT_REQUESTED, KEY_UPDATE_REQUESTED):
            raise ValueError(
                "update_type must be KEY_UPDATE_REQUESTED or _NOT_REQUESTED"
            )
        self._channel.key_update()

    # -- lifetime -----------------------------------------------------------

    def free(self) -> None:
        """Release the connection (SSL_free): no close is sent.

        The socket given to :meth:`set_fd` stays open (BIO_NOCLOSE).
        """
        if self._binding.freed:
            return
        reactor = self._channel.reactor
        if reactor is None:
            self._binding.freed = True
            return
        with reactor.lock:
            self.free_locked()

    def free_locked(self) -> None:
        """:meth:`free` for callers already holding the reactor lock."""
        if self._binding.freed:
            return
        self._binding.freed = True
        reactor = self._channel.reactor
        self._channel.release()
        self._listener = None
        if reactor is not None and reactor.release():
            reactor.close(close_transport=self._owns_socket)

    def _detach_reactor(self) -> None:
        reactor = self._channel.reactor
        self._channel.reactor = None
        if reactor is not None and reactor.release():
            reactor.close(close_transport=self._owns_socket)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._channel.started and not self._binding.freed:
                self.shutdown(0 if self._binding.blocking else SHUTDOWN_FLAG_NO_BLOCK)
        except Error:
            pass  # the connection already failed; nothing left to close
        finally:
            self.free()

    @property
    def state(self) -> ConnState:
        """Where the connection is in its lifecycle."""
        return self._channel.state

    def __repr__(self) -> str:
        role = "client" if self._channel.is_client else "server"
        peer = self._channel.describe_peer()
        return f"<quicconn.Connection {role} {self._channel.state.value} peer={peer}>"


# -- the internal API of a connection, for the rest of the package ----------


def poll_source(conn: Connection) -> tuple[Reactor | None, Callable[[int], int]]:
    """The reactor a poll() item waits on, and its revents (lock held)."""

    def revents(events: int) -> int:
        if conn._binding.freed:
            return POLL_EVENT_F
        return conn._channel.poll_events(events)

    return conn._channel.reactor, revents


def progress_key(conn: Connection) -> object | None:
    """What the reactor names this connection by when it reports progress
    (``ReactorObserver.on_progress``): its core, once the handshake began."""
    return conn._channel.core


def channel_of(conn: Connection) -> Channel:
    """The connection's channel (tests and diagnostics look at its state)."""
    return conn._channel


def server_connection(
    ctx: ContextSettings, reactor: Reactor, listener: Any
) -> tuple[Channel, Connection]:
    """A server connection for a listener's port: its channel, and the object."""
    conn = Connection(ctx)
    reactor.retain()
    conn._channel.reactor = reactor
    conn._listener = listener
    channel = conn._channel
    asynchronous = bool(conn._binding.mode & MODE_ASYNC)
    settings = channel.settings
    settings.private_key = channel.backend.prepare_private_key(
        settings.private_key, offload=asynchronous
    )
    channel.async_engine = ctx.get_async_engine() if asynchronous else None
    return channel, conn


def client_on_reactor(ctx: ContextSettings, reactor: Reactor) -> Connection:
    """A client connection sharing a listener's socket (SSL_new_from_listener)."""
    conn = Connection(ctx)
    reactor.retain()
    conn._channel.reactor = reactor
    return conn


def batched_output(conn: Connection) -> AbstractContextManager[None]:
    """Hold back sending until the block ends: the HTTP layer's many writes
    per tick then share full packets (see Channel.batched_output)."""
    return conn._channel.batched_output()


def h3_codec(conn: Connection, transport: H3Transport, field_limit: int) -> H3Codec:
    """An HTTP/3 codec from the connection's core backend."""
    channel = conn._channel
    return channel.backend.new_h3_codec(
        transport, is_client=channel.is_client, max_field_section_size=field_limit
    )


def peer_max_datagram_frame_size(conn: Connection) -> int | None:
    """The peer's max_datagram_frame_size transport parameter (RFC 9221)."""
    core = conn._channel.core
    return core.peer_max_datagram_frame_size() if core is not None else None


def local_max_datagram_frame_size(conn: Connection) -> int | None:
    """Ours (None: DATAGRAM frames are off for this connection)."""
    return conn._channel.settings.max_datagram_frame_size


__all__ = [
    "ConnState",
    "Connection",
    "batched_output",
    "channel_of",
    "client_on_reactor",
    "h3_codec",
    "local_max_datagram_frame_size",
    "peer_max_datagram_frame_size",
    "poll_source",
    "progress_key",
    "server_connection",
]
