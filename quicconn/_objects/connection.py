"""``Connection``: a QUIC connection SSL object with OpenSSL's event semantics.

The connection is a :class:`~quicconn._core.interface.CoreSink`: its core reports
handshake progress, stream data, resets and closes to it during a reactor
tick, and it turns that into stream records, an accept queue and a close
record.  The public methods then read that state, and either finish, raise
an OpenSSL-coded exception, or (blocking mode) wait in the reactor.

Every public call follows one rule from OpenSSL's QUIC design: try; if the
call cannot complete, run the reactor (implicit event handling) and try
again; in nonblocking mode raise ``WantReadError``/``WantWriteError`` after
one tick; in blocking mode sleep in the reactor until it can complete.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import socket
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from .._asyncjob.engine import AsyncEngine
from .._asyncjob.job import JobHost
from .._constants import (
    ACCEPT_STREAM_BIDI,
    ACCEPT_STREAM_NO_BLOCK,
    ACCEPT_STREAM_UNI,
    ASYNC_STATUS_UNSUPPORTED,
    DEFAULT_STREAM_MODE_AUTO_BIDI,
    DEFAULT_STREAM_MODE_AUTO_UNI,
    DEFAULT_STREAM_MODE_NONE,
    EARLY_DATA_ACCEPTED,
    EARLY_DATA_NOT_SENT,
    EARLY_DATA_REJECTED,
    INCOMING_STREAM_POLICY_ACCEPT,
    INCOMING_STREAM_POLICY_AUTO,
    INCOMING_STREAM_POLICY_REJECT,
    KEY_UPDATE_NOT_REQUESTED,
    KEY_UPDATE_REQUESTED,
    MODE_ASYNC,
    MODE_ENABLE_PARTIAL_WRITE,
    POLL_EVENT_EC,
    POLL_EVENT_ECD,
    POLL_EVENT_F,
    POLL_EVENT_IS,
    POLL_EVENT_ISB,
    POLL_EVENT_ISU,
    POLL_EVENT_OS,
    POLL_EVENT_OSB,
    POLL_EVENT_OSU,
    POLL_EVENT_W,
    SHUTDOWN_FLAG_NO_BLOCK,
    SHUTDOWN_FLAG_NO_STREAM_FLUSH,
    SHUTDOWN_FLAG_RAPID,
    SHUTDOWN_FLAG_WAIT_PEER,
    STREAM_FLAG_ADVANCE,
    STREAM_FLAG_NO_BLOCK,
    STREAM_FLAG_UNI,
    STREAM_TYPE_BIDI,
    STREAM_TYPE_NONE,
    TLS13_CIPHERSUITES,
    VALUE_CLASS_FEATURE_NEGOTIATED,
    VALUE_CLASS_FEATURE_PEER_REQUEST,
    VALUE_CLASS_FEATURE_REQUEST,
    VALUE_CLASS_GENERIC,
    VALUE_EVENT_HANDLING_MODE,
    VALUE_EVENT_HANDLING_MODE_EXPLICIT,
    VALUE_EVENT_HANDLING_MODE_IMPLICIT,
    VALUE_EVENT_HANDLING_MODE_INHERIT,
    VALUE_QUIC_IDLE_TIMEOUT,
    VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL,
    VALUE_QUIC_STREAM_BIDI_REMOTE_AVAIL,
    VALUE_QUIC_STREAM_UNI_LOCAL_AVAIL,
    VALUE_QUIC_STREAM_UNI_REMOTE_AVAIL,
    VALUE_STREAM_WRITE_BUF_AVAIL,
    VALUE_STREAM_WRITE_BUF_SIZE,
    VALUE_STREAM_WRITE_BUF_USED,
    Role,
)
from .._core.interface import Capability, Core, H3Codec, H3Transport
from .._core.rules import is_verification_failure
from .._errors import (
    ConnCloseInfo,
    ConnectionTerminatedError,
    Error,
    SSLError,
    StreamCountLimitedError,
    StreamResetError,
    SyscallError,
    VerificationError,
    WantAsyncError,
    WantReadError,
    WantWriteError,
    ZeroReturnError,
)
from .._io.transport import (
    Address,
    DatagramTransport,
    UdpTransport,
    require_datagram_transport,
    resolve_address,
)
from .._quic.reactor import Reactor
from .context import AsyncCallback, Context
from .session import Session
from .stream import (
    Stream,
    StreamRecord,
    conclude_requested,
    read_error_code,
    read_state,
    stream_poll_events,
    write_error_code,
    write_state,
)

if TYPE_CHECKING:
    from .._types import Buffer

P = ParamSpec("P")
T = TypeVar("T")


class ConnState(enum.Enum):
    """Lifecycle of a connection object."""

    IDLE = "idle"  #: created, handshake not started
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSING = "closing"  #: a close began; the terminating period runs
    TERMINATED = "terminated"  #: fully closed; nothing more will be sent


def _api(method: Callable[Concatenate[Connection, P], T]) -> Callable[..., T]:
    """Run a public method under the reactor lock and record ``get_error()``."""

    @functools.wraps(method)
    def wrapper(self: Connection, *args: P.args, **kwargs: P.kwargs) -> T:
        reactor = self._reactor
        try:
            if reactor is None:
                if self._freed:
                    raise ValueError(
                        "the connection was freed (SSL_free); it is unusable"
                    )
                result = method(self, *args, **kwargs)
            else:
                with reactor.lock:
                    result = method(self, *args, **kwargs)
        except Error as exc:
            self._last_error = exc.code
            raise
        self._last_error = 0
        return result

    return wrapper


class Connection:
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

    def __init__(self, ctx: Context) -> None:
        if not isinstance(ctx, Context):
            raise TypeError(f"Connection() needs a quicconn.Context, got {ctx!r}")
        self._ctx = ctx
        self._settings = ctx._core_settings()
        #: The QUIC library behind this connection's core (resolved once).
        self._backend = ctx._backend()
        self._is_client = ctx.role is Role.CLIENT
        self._reactor: Reactor | None = None
        self._owns_socket = False
        self._core: Core | None = None
        self._state = ConnState.IDLE
        self._blocking = True
        self._event_mode = VALUE_EVENT_HANDLING_MODE_IMPLICIT
        self._peer_addr: Address | None = None
        self._sni: str | None = None
        self._verify_host: str | None = None
        self._streams: dict[int, StreamRecord] = {}
        self._default: StreamRecord | None = None
        self._default_created = False
        self._default_mode = DEFAULT_STREAM_MODE_AUTO_BIDI
        self._incoming_policy = INCOMING_STREAM_POLICY_AUTO
        self._incoming_error_code = 0
        self._accept_queue: deque[StreamRecord] = deque()
        #: Released (freed or rejected) streams, forgotten once the core is done.
        self._released: list[StreamRecord] = []
        #: shutdown() was called: send-side calls are refused, as in OpenSSL.
        self._shutting_down = False
        self._close_info: ConnCloseInfo | None = None
        self._last_error = 0
        self._mode = ctx.get_mode()
        # MODE_ASYNC: SSL_new copies the context's callback and argument.
        self._async_callback: AsyncCallback | None = ctx.async_callback
        self._async_callback_arg: Any = ctx.async_callback_arg
        self._async_engine: AsyncEngine | None = None  # None: the context's
        self._async_host: JobHost | None = None
        self._async_prepare_key()
        self._write_buffer_size = ctx.stream_write_buffer_size
        self._freed = False
        #: Depth of _batched_output() blocks: writes then wait for the end.
        self._output_batching = 0
        self._listener: Any = None
        self._session: Session | None = None
        self._new_session: Session | None = None
        self._early_data_sent = False
        self._early_data_enabled = False

    # ==================================================================
    # setup
    # ==================================================================

    @_api
    def set_fd(self, fd: socket.socket | int) -> None:
        """Use a UDP socket for I/O (SSL_set_fd).

        Accepts a ``socket.socket`` or a descriptor number; the socket is
        made nonblocking, and is not closed when the connection is freed
        (OpenSSL's ``BIO_NOCLOSE``).  A connected socket's peer becomes the
        initial peer address unless :meth:`set1_initial_peer_addr` said
        otherwise.
        """
        if isinstance(fd, int):
            # Work on a duplicate so that freeing the connection never closes
            # the caller's descriptor.
            sock = socket.socket(fileno=os.dup(fd))
            self._owns_socket = True
        elif isinstance(fd, socket.socket):
            sock = fd
        else:
            raise TypeError(f"set_fd() takes a socket or an int fd, not {fd!r}")
        self._attach(UdpTransport(sock))

    def set_transport(self, transport: DatagramTransport) -> None:
        """Use any datagram transport (SSL_set_bio with a datagram BIO).

        For example one end of :class:`quicconn.testing.DatagramPair`.
        """
        self._attach(require_datagram_transport(transport, "set_transport()"))

    def _attach(self, transport: DatagramTransport) -> None:
        if self._core is not None:
            raise ValueError("the transport cannot change once the handshake started")
        if self._reactor is not None:
            self._detach_reactor()
        reactor = Reactor(transport)
        reactor.retain()
        self._reactor = reactor
        if self._peer_addr is None:
            peer = transport.connected_peer()
            if peer is not None:
                self._peer_addr = peer

    def _use_reactor(self, reactor: Reactor) -> None:
        """Share a listener's reactor (accepted or ``new_from_listener``)."""
        reactor.retain()
        self._reactor = reactor

    def set1_initial_peer_addr(self, addr: tuple[Any, ...]) -> None:
        """The address to send the first datagram to (SSL_set1_initial_peer_addr)."""
        if self._core is not None:
            raise ValueError(
                "the peer address cannot change once the handshake started"
            )
        family = socket.AF_INET
        if self._reactor is not None and isinstance(
            self._reactor.transport, UdpTransport
        ):
            family = self._reactor.transport.family
        elif ":" in str(addr[0]):
            family = socket.AF_INET6
        self._peer_addr = resolve_address(family, addr)

    def set_tlsext_host_name(self, name: str) -> None:
        """The server name sent in SNI (SSL_set_tlsext_host_name)."""
        self._sni = self._check_name(name)

    def set1_host(self, name: str) -> None:
        """The name the server certificate must match (SSL_set1_host).

        quicconn checks the host name against this name or, failing that,
        the SNI name; see docs/api-mapping.md for where that differs.
        """
        self._verify_host = self._check_name(name)

    def _check_name(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise TypeError("a host name must be a non-empty str")
        if self._core is not None:
            raise ValueError("host names cannot change once the handshake started")
        return name

    def set_alpn_protos(self, protocols: list[str]) -> None:
        """Offer these ALPN protocols on this connection (SSL_set_alpn_protos)."""
        scratch = Context(self._ctx.role)
        scratch.set_alpn_protos(protocols)
        self._settings.alpn_protocols = scratch.get_alpn_protos() or None

    def get0_alpn_selected(self) -> str | None:
        """The negotiated ALPN protocol (SSL_get0_alpn_selected)."""
        return self._core.alpn_protocol if self._core is not None else None

    def get_current_cipher(self) -> str | None:
        """The negotiated TLS 1.3 cipher suite's name (SSL_get_current_cipher).

        OpenSSL returns an ``SSL_CIPHER``; this returns what
        ``SSL_CIPHER_get_name`` would, e.g. ``"TLS_AES_128_GCM_SHA256"``,
        or None before the handshake has chosen one.
        """
        suite = self._core.cipher_suite if self._core is not None else None
        names = {v: n for n, v in TLS13_CIPHERSUITES.items()}
        return None if suite is None else names.get(suite)

    def get_quic_version(self) -> int | None:
        """The QUIC version in use, after any version negotiation.

        A quicconn extension (OpenSSL 3.5 speaks only v1): QUIC_VERSION_1 or
        QUIC_VERSION_2, or None before the connection has started.
        """
        return self._core.version if self._core is not None else None

    def session_reused(self) -> bool:
        """Whether the TLS session was resumed (SSL_session_reused)."""
        return self._core is not None and self._core.session_resumed

    def set_session(self, session: Session | None) -> None:
        """Resume ``session`` on the next handshake (SSL_set_session).

        A session issued for another server name is ignored by the
        handshake, as in OpenSSL: a full handshake happens instead.
        """
        if session is not None and not isinstance(session, Session):
            raise TypeError(f"set_session() takes a quicconn.Session, not {session!r}")
        if not self._is_client:
            raise ValueError("only client connections resume sessions")
        if self._core is not None:
            raise ValueError("set_session() must be called before the handshake")
        self._session = session

    def get1_session(self) -> Session | None:
        """The newest session ticket the server sent, or None (SSL_get1_session).

        Servers send tickets after the handshake; read some data (or call
        :meth:`handle_events`) before asking.
        """
        return self._new_session

    def _on_session_ticket(self, ticket: Any) -> None:
        self._new_session = Session(ticket, self._backend)

    @_api
    def write_early_data(self, data: Buffer) -> int:
        """Send ``data`` as 0-RTT on the default stream (SSL_write_early_data).

        Needs a resumed session that allows early data (:meth:`set_session`)
        and must come before the handshake completes; it starts the handshake
        without waiting for it.  OpenSSL's QUIC stack has no 0-RTT; this
        follows its TLS function.  If the server rejects the early data, QUIC
        retransmits it after the handshake, so nothing is lost.
        """
        if not self._is_client:
            raise ValueError("only clients send early data")
        if self._session is None or not self._session.get_max_early_data():
            raise ValueError(
                "write_early_data() needs set_session() with a session that "
                "allows early data (Session.get_max_early_data() > 0)"
            )
        if self._core is None:
            self._start()
        if self._require_core().handshake_complete:
            raise ValueError("the handshake is complete: use write()")
        self._early_data_enabled = True
        return self._write(None, data, 0)

    def set_early_data_enabled(self, enabled: bool) -> None:
        """Let stream I/O before the handshake completes go as 0-RTT.

        A quicconn extension generalising SSL_write_early_data to every
        stream (HTTP/3 requests, for instance): with a session that allows
        early data (:meth:`set_session`), ``new_stream()`` and writes made
        before the handshake completes are sent in 0-RTT instead of waiting.
        Early data can be replayed by an attacker; enable it only for
        idempotent requests.
        """
        if enabled and not self._is_client:
            raise ValueError("only clients send early data")
        self._early_data_enabled = bool(enabled)

    def get_early_data_status(self) -> int:
        """EARLY_DATA_NOT_SENT, _REJECTED or _ACCEPTED (SSL_get_early_data_status)."""
        core = self._core
        if core is None or not self._early_data_sent or not core.handshake_complete:
            return EARLY_DATA_NOT_SENT
        return EARLY_DATA_ACCEPTED if core.early_data_accepted else EARLY_DATA_REJECTED

    def is_server(self) -> bool:
        """True for a server-side connection (SSL_is_server)."""
        return not self._is_client

    def is_listener(self) -> bool:
        """Always False for a connection (SSL_is_listener)."""
        return False

    def get0_listener(self) -> Any:
        """The listener this connection came from, or None (SSL_get0_listener)."""
        return self._listener

    # ==================================================================
    # blocking mode, events, polling
    # ==================================================================

    def set_blocking_mode(self, blocking: bool) -> None:
        """Choose blocking (default) or nonblocking calls (SSL_set_blocking_mode)."""
        self._blocking = bool(blocking)

    def get_blocking_mode(self) -> bool:
        """Whether calls block (SSL_get_blocking_mode)."""
        return self._blocking

    @_api
    def handle_events(self) -> None:
        """Perform one tick: timers, receive, send (SSL_handle_events).

        Never blocks and never raises for network trouble; failures surface
        on the next I/O call.  A no-op before a transport is set.
        """
        if self._reactor is not None:
            self._reactor.tick()

    @_api
    def get_event_timeout(self) -> float | None:
        """Seconds until :meth:`handle_events` is due; 0.0 if now, None if never.

        Mirrors SSL_get_event_timeout: ``None`` is OpenSSL's ``is_infinite``.
        It covers every connection sharing this connection's socket.
        """
        if self._reactor is None:
            return None
        return self._reactor.timeout()

    def net_read_desired(self) -> bool:
        """Whether the reactor wants to read the network (SSL_net_read_desired).

        True from the start of the handshake until the connection terminates.
        """
        return self._core is not None and self._state is not ConnState.TERMINATED

    def net_write_desired(self) -> bool:
        """Whether datagrams wait for the socket to drain (SSL_net_write_desired)."""
        return self._reactor is not None and self._reactor.net_write_desired()

    def get_rpoll_descriptor(self) -> int:
        """The descriptor to poll for readability (SSL_get_rpoll_descriptor)."""
        return self._require_reactor().transport.fileno()

    def get_wpoll_descriptor(self) -> int:
        """The descriptor to poll for writability (SSL_get_wpoll_descriptor)."""
        return self._require_reactor().transport.fileno()

    def fileno(self) -> int:
        """The socket's descriptor (SSL_get_fd), for selectors and asyncio."""
        return self._require_reactor().transport.fileno()

    def get_error(self) -> int:
        """The ``ERROR_*`` code of the last failed call; 0 after a success.

        Mirrors SSL_get_error, which quicconn also puts in ``exc.code``.
        """
        return self._last_error

    # ==================================================================
    # handshake
    # ==================================================================

    @_api
    def connect(self) -> None:
        """Run the client handshake to completion (SSL_connect)."""
        if not self._is_client:
            raise ValueError("connect() is for client connections; use accept()")
        self._handshake()

    @_api
    def do_handshake(self) -> None:
        """Run the handshake in this object's role (SSL_do_handshake)."""
        self._handshake()

    @_api
    def accept(self) -> None:
        """Complete the server handshake of an accepted connection (SSL_accept)."""
        if self._is_client:
            raise ValueError("accept() is for server connections; use connect()")
        self._handshake()

    def is_init_finished(self) -> bool:
        """Whether the handshake completed (SSL_is_init_finished)."""
        return self._core is not None and self._core.handshake_complete

    def _handshake(self) -> None:
        if self._core is None:
            self._start()
        self._run(self._handshake_done, WantReadError)

    def _handshake_done(self) -> bool | None:
        core = self._core
        assert core is not None
        if core.handshake_complete and self._close_info is None:
            return True
        self._raise_if_failed()
        return None

    def _start(self) -> None:
        """Create the client core and send the first flight."""
        if not self._is_client:
            raise ValueError(
                "a server connection comes from Listener.accept_connection()"
            )
        reactor = self._require_reactor()
        if self._peer_addr is None:
            raise ValueError(
                "no peer address: connect the socket, or call set1_initial_peer_addr()"
            )
        server_name = self._verify_host or self._sni
        if self._settings.verify_peer:
            if server_name is None:
                raise ValueError(
                    "certificate verification needs the server's name: call "
                    "set1_host() (an IP address is fine), or set "
                    "ctx.verify_mode = VERIFY_NONE to skip verification"
                )
            if self._sni and self._verify_host and self._sni != self._verify_host:
                raise ValueError(
                    "set_tlsext_host_name() and set1_host() name different hosts; "
                    "quicconn verifies the SNI name, so they must agree"
                )
        self._async_prepare_key()
        session = self._session
        ticket = None if session is None else session.ticket_for(self._backend)
        core = self._backend.new_client(
            self._settings,
            self,
            server_name=server_name,
            session_ticket=ticket,
            on_session_ticket=self._on_session_ticket,
        )
        self._core = core
        self._async_attach(core)
        self._state = ConnState.HANDSHAKING
        reactor.add_core(core, core.host_cid)
        core.connect(self._peer_addr, reactor.clock.now())
        reactor.mark_dirty(core)
        reactor.flush()

    def _adopt_core(self, core: Core, peer: Address) -> None:
        """Take over a server core the listener created."""
        self._core = core
        self._peer_addr = peer
        self._state = ConnState.HANDSHAKING
        self._async_attach(core)

    # ==================================================================
    # the core sink (called by the reactor during a tick, lock held)
    # ==================================================================

    def on_handshake_complete(
        self, alpn: str | None, session_resumed: bool, early_data_accepted: bool
    ) -> None:
        if self._state is ConnState.HANDSHAKING:
            self._state = ConnState.ESTABLISHED
        if self._listener is not None:
            self._listener._on_handshake_complete(self)

    def on_stream_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        record = self._streams.get(stream_id)
        if record is None:
            record = self._incoming_stream(stream_id)
        if record.rejected or record.stop_sent_code is not None:
            self._core_consume(stream_id, len(data))  # dropped, but credited
            return
        record.push(data, fin)

    def on_stream_reset(self, stream_id: int, error_code: int) -> None:
        record = self._streams.get(stream_id)
        if record is None:
            record = self._incoming_stream(stream_id)
        record.reset_received_code = error_code
        record.discard()  # the core already credited unread bytes

    def on_stop_sending(self, stream_id: int, error_code: int) -> None:
        record = self._streams.get(stream_id)
        if record is None:
            record = self._incoming_stream(stream_id)
        record.stop_received_code = error_code

    def on_connection_id_issued(self, cid: bytes) -> None:
        if self._reactor is not None and self._core is not None:
            self._reactor.add_cid(self._core, cid)

    def on_connection_id_retired(self, cid: bytes) -> None:
        if self._reactor is not None:
            self._reactor.remove_cid(cid)

    def on_closing(self, info: ConnCloseInfo) -> None:
        self._close_info = info
        if self._state is not ConnState.TERMINATED:
            self._state = ConnState.CLOSING
        if self._listener is not None:
            self._listener._on_connection_closing(self)

    def on_terminated(self) -> None:
        self._state = ConnState.TERMINATED
        if self._listener is not None:
            self._listener._on_connection_terminated(self)

    def _incoming_stream(self, stream_id: int) -> StreamRecord:
        """Record a peer-opened stream and apply the incoming stream policy."""
        record = StreamRecord(stream_id, self._is_client)
        self._streams[stream_id] = record
        if self._effective_incoming_policy() == INCOMING_STREAM_POLICY_REJECT:
            record.rejected = True
            record.handle_released = True
            if record.can_read:
                record.stop_sent_code = self._incoming_error_code
            self._mark_released(record)
            core = self._core
            assert core is not None
            core.stop_sending(stream_id, self._incoming_error_code)
            if record.can_write:
                core.reset_stream(stream_id, self._incoming_error_code)
                record.reset_sent_code = self._incoming_error_code
        else:
            self._accept_queue.append(record)
        return record

    def _effective_incoming_policy(self) -> int:
        policy = self._incoming_policy
        if policy != INCOMING_STREAM_POLICY_AUTO:
            return policy
        # OpenSSL's AUTO: accept until a default stream exists (the first
        # incoming stream may become it), or always when the application
        # manages streams itself (mode NONE).
        if self._default_mode == DEFAULT_STREAM_MODE_NONE or not self._default_created:
            return INCOMING_STREAM_POLICY_ACCEPT
        return INCOMING_STREAM_POLICY_REJECT

    # ==================================================================
    # the blocking / nonblocking engine
    # ==================================================================

    def _run(
        self,
        attempt: Callable[[], T | None],
        want: type[Error],
        blocking: bool | None = None,
    ) -> T:
        """Try ``attempt``; tick and retry; wait (blocking) or raise ``want``.

        ``attempt`` returns None when it cannot complete yet, a value when it
        did, and raises for a definite failure.  ``blocking`` overrides the
        connection's blocking mode (a stream may have its own).
        """
        result = attempt()
        if result is not None:
            return result
        reactor = self._require_reactor()
        if blocking is None:
            blocking = self._blocking
        if not blocking:
            if self._event_mode != VALUE_EVENT_HANDLING_MODE_EXPLICIT:
                reactor.tick()
                result = attempt()
                if result is not None:
                    return result
            self._raise_if_async_pending()
            raise want(self._want_message(want))
        box: list[T] = []

        def ready() -> bool:
            value = attempt()
            if value is None:
                return False
            box.append(value)
            return True

        reactor.block_until(ready)
        if not box:
            if self._freed:
                raise ValueError("the connection was freed while a call was waiting")
            raise SyscallError("the connection's transport was closed while waiting")
        return box[0]

    @staticmethod
    def _want_message(want: type[Error]) -> str:
        if want is WantWriteError:
            return "the operation would block until the peer grants buffer space"
        return "the operation would block until more data arrives or a timer fires"

    # ==================================================================
    # failures
    # ==================================================================

    def _raise_if_failed(self) -> None:
        """Raise the error that ended this connection, if any."""
        reactor = self._reactor
        if reactor is not None and reactor.transport.fatal_error is not None:
            err = reactor.transport.fatal_error
            raise SyscallError(f"the UDP socket failed: {err}", err.errno)
        info = self._close_info
        if info is None:
            return
        core = self._core
        if core is not None and not core.handshake_complete:
            raise self._handshake_error(info)
        raise ConnectionTerminatedError(f"connection {info}", info)

    def _handshake_error(self, info: ConnCloseInfo) -> Error:
        host = self._async_host
        if host is not None and host.failure is not None and info.is_local:
            return ConnectionTerminatedError(f"handshake failed: {host.failure}", info)
        if is_verification_failure(info):
            hint = ""
            if not self._settings.has_trust_anchors():
                hint = (
                    " (no CA certificates are loaded: call "
                    "ctx.load_default_verify_paths() or ctx.load_verify_locations())"
                )
            return VerificationError(
                f"certificate verification failed: {info.reason}{hint}"
            )
        if info.is_local and info.reason == "Idle timeout":
            return ConnectionTerminatedError(
                f"handshake timed out: no answer from {self._describe_peer()} within "
                f"the {self._settings.idle_timeout:g} s idle timeout",
                info,
            )
        return ConnectionTerminatedError(f"handshake failed: {info}", info)

    def _describe_peer(self) -> str:
        addr = self._peer_addr
        if addr is None and self._core is not None:
            addr = self._core.peer_address()
        return f"{addr[0]}:{addr[1]}" if addr else "the peer"

    def _require_reactor(self) -> Reactor:
        if self._reactor is None:
            if self._freed:
                raise ValueError("the connection was freed (SSL_free); it is unusable")
            raise ValueError("no transport: call set_fd() or set_transport() first")
        return self._reactor

    def _require_core(self) -> Core:
        if self._core is None:
            raise ValueError("the handshake has not started: call connect() first")
        return self._core

    # ==================================================================
    # default stream I/O
    # ==================================================================

    @_api
    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes from the default stream (SSL_read_ex).

        ``n`` < 0 returns everything buffered (at least one byte).  Raises
        ``ZeroReturnError`` once the peer's FIN has been read.  Without a
        default stream yet, a read binds the peer's first stream as the
        default stream (waiting for it in blocking mode), as OpenSSL does.
        """
        return self._read(None, n, peek=False)

    @_api
    def peek(self, n: int = -1) -> bytes:
        """Like :meth:`read` but leaves the data buffered (SSL_peek_ex)."""
        return self._read(None, n, peek=True)

    @_api
    def readinto(self, buffer: Buffer) -> int:
        """Read into ``buffer``; return the byte count (SSL_read_ex)."""
        return self._readinto(None, buffer)

    @_api
    def write(self, data: Buffer) -> int:
        """Write to the default stream; return the count (SSL_write_ex).

        Writes are accepted up to the stream's flow-control credit (the
        peer's MAX_STREAM_DATA) and the send buffer
        (``Context.stream_write_buffer_size``), as OpenSSL's are.

        Blocking: returns once all of ``data`` is taken, waiting for credit.
        Nonblocking, the default (all-or-nothing, OpenSSL without
        ``MODE_ENABLE_PARTIAL_WRITE``): returns ``len(data)`` once all of it
        is taken; until then raises ``WantWriteError`` and keeps what was
        taken, so the call must be repeated with the same data.  With
        ``set_mode(MODE_ENABLE_PARTIAL_WRITE)``: returns the count taken (at
        least one byte) or raises ``WantWriteError``.
        """
        return self._write(None, data, 0)

    @_api
    def write_ex2(self, data: Buffer, flags: int = 0) -> int:
        """Write, optionally concluding the stream (SSL_write_ex2).

        ``WRITE_FLAG_CONCLUDE`` sends the FIN with the last byte; with empty
        ``data`` it concludes at once.  An empty write without the flag
        does nothing and creates no default stream.
        """
        return self._write(None, data, flags)

    @_api
    def stream_conclude(self, flags: int = 0) -> None:
        """Send FIN on the default stream after buffered data (SSL_stream_conclude)."""
        self._conclude(None, flags)

    @_api
    def stream_reset(self, error_code: int = 0) -> None:
        """Reset the default stream's sending part (SSL_stream_reset)."""
        self._reset(None, error_code)

    def pending(self) -> int:
        """Bytes readable now on the default stream, without I/O (SSL_pending)."""
        return 0 if self._default is None else self._default.buffered

    def has_pending(self) -> bool:
        """Whether a read would return data without I/O (SSL_has_pending)."""
        return self.pending() > 0

    def get_stream_read_state(self) -> int:
        """Default stream's read state; NONE without one (SSL_get_stream_read_state)."""
        return self._read_state(self._default)

    def get_stream_write_state(self) -> int:
        """Default stream's write state (SSL_get_stream_write_state)."""
        return self._write_state(self._default)

    def get_stream_read_error_code(self) -> int | None:
        """Default stream's receive reset code (SSL_get_stream_read_error_code)."""
        return read_error_code(self._default, self._conn_closed())

    def get_stream_write_error_code(self) -> int | None:
        """Default stream's send reset code (SSL_get_stream_write_error_code)."""
        return write_error_code(self._default, self._conn_closed())

    def get_stream_id(self) -> int | None:
        """The default stream's ID, or None if there is none (SSL_get_stream_id)."""
        return None if self._default is None else self._default.stream_id

    def get_stream_type(self) -> int:
        """Type of the default stream (SSL_get_stream_type).

        Before a default stream exists: ``STREAM_TYPE_BIDI`` while one may
        still be created automatically, else ``STREAM_TYPE_NONE``.
        """
        if self._default is not None:
            return self._default.stream_type
        if self._default_created or self._default_mode == DEFAULT_STREAM_MODE_NONE:
            return STREAM_TYPE_NONE
        return STREAM_TYPE_BIDI

    def is_stream_local(self) -> bool:
        """Whether this endpoint opened the default stream (SSL_is_stream_local)."""
        if self._default is None:
            raise SSLError("there is no default stream")
        return self._default.is_local

    # -- stream API entry points used by Stream objects ---------------------

    def _locked(self, fn: Callable[[], T]) -> T:
        reactor = self._require_reactor()
        try:
            with reactor.lock:
                result = fn()
        except Error as exc:
            self._last_error = exc.code
            raise
        self._last_error = 0
        return result

    def _stream_call(self, stream: Stream, fn: Callable[[], T]) -> T:
        """Run a Stream method under the lock; record the stream's get_error()."""
        reactor = self._require_reactor()
        try:
            with reactor.lock:
                result = fn()
        except Error as exc:
            stream._last_error = exc.code
            raise
        stream._last_error = 0
        return result

    # -- reading ----------------------------------------------------------

    def _ensure_ready_for_stream_io(self) -> None:
        """Implicitly run the handshake, as SSL_read/SSL_write do.

        A client resuming a session that allows early data may use streams
        at once: what it writes before the handshake completes goes as 0-RTT.
        """
        if self._core is None:
            if not self._is_client:
                raise ValueError("this server connection has no handshake to run")
            self._start()
        core = self._core
        assert core is not None
        if core.handshake_complete:
            return
        if self._early_data_possible():
            self._raise_if_failed()
            self._early_data_sent = True
            return
        self._run(self._handshake_done, WantReadError)

    def _early_data_possible(self) -> bool:
        core = self._core
        return (
            self._early_data_enabled
            and core is not None
            and core.early_data_attempted
            and not core.handshake_complete
        )

    def _touch_default(self) -> None:
        """Inhibit automatic default stream creation (OpenSSL's touch)."""
        self._default_created = True

    def _no_default_stream(self, hint: str) -> SSLError:
        if self._default_mode == DEFAULT_STREAM_MODE_NONE:
            why = "the default stream mode is DEFAULT_STREAM_MODE_NONE"
        else:
            why = "new_stream()/accept_stream() was used, which inhibits it"
        return SSLError(f"no default stream ({why}): use {hint}")

    def _peer_first_stream(self) -> StreamRecord | None:
        """The peer's stream of ordinal 0 (bidi or uni), if it exists yet."""
        base = 0x1 if self._is_client else 0x0
        for stream_id in (base, base | 0x2):
            record = self._streams.get(stream_id)
            if record is not None and not record.rejected:
                return record
        return None

    def _default_for_read(self) -> StreamRecord | None:
        """The default stream; binds the peer's first stream if read comes first.

        OpenSSL waits for the stream of ordinal 0 the peer opens (either
        direction), takes it out of the accept queue and makes it the
        default stream.
        """
        if self._default is not None:
            return self._default
        if self._default_created or self._default_mode == DEFAULT_STREAM_MODE_NONE:
            raise self._no_default_stream("accept_stream()")
        record = self._peer_first_stream()
        if record is None:
            return None
        if record in self._accept_queue:
            self._accept_queue.remove(record)
        self._default = record
        self._touch_default()
        return record

    def _default_for_write(self) -> StreamRecord:
        """The default stream; creates a local one if write comes first."""
        if self._default is not None:
            return self._default
        if self._default_created or self._default_mode == DEFAULT_STREAM_MODE_NONE:
            raise self._no_default_stream("new_stream()")
        uni = self._default_mode == DEFAULT_STREAM_MODE_AUTO_UNI
        record = self._open_stream(uni, no_block=False, advance=False)
        self._default = record
        self._touch_default()
        return record

    def _read(
        self,
        record: StreamRecord | None,
        n: int,
        peek: bool,
        blocking: bool | None = None,
    ) -> bytes:
        if not isinstance(n, int):
            raise TypeError(f"read size must be an int, not {type(n).__name__}")
        if n == 0:
            return b""
        if peek:
            return self._read_with(record, blocking, lambda target: target.peek(n))

        def take(target: StreamRecord) -> bytes:
            data = target.take(n)
            self._core_consume(target.stream_id, len(data))
            return data

        return self._read_with(record, blocking, take)

    def _readinto(
        self, record: StreamRecord | None, buffer: Buffer, blocking: bool | None = None
    ) -> int:
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise TypeError("readinto() needs a writable buffer")
        if len(view) == 0:
            return 0

        def take(target: StreamRecord) -> int:
            count = target.take_into(view)
            self._core_consume(target.stream_id, count)
            return count

        return self._read_with(record, blocking, take)

    def _read_with(
        self,
        record: StreamRecord | None,
        blocking: bool | None,
        take: Callable[[StreamRecord], T],
    ) -> T:
        """Wait until ``record`` (or the default stream) has data; ``take`` it.

        Raises at once if no data will ever come (FIN, reset, closed).
        """
        self._ensure_ready_for_stream_io()
        target = record

        def attempt() -> T | None:
            nonlocal target
            if target is None:
                target = self._default_for_read()
                if target is None:
                    self._raise_if_failed()
                    return None
            if not self._readable_or_raise(target):
                return None
            return take(target)

        return self._run(attempt, WantReadError, blocking)

    def _readable_or_raise(self, record: StreamRecord) -> bool:
        """True if data is buffered; raise if none will ever come; else False.

        The order is OpenSSL's: buffered data first (even on a closed
        connection), then a reset, then the FIN, then a closed connection.
        """
        if not record.can_read:
            raise SSLError(f"stream {record.stream_id} is send-only; it cannot be read")
        if record.buffered:
            return True
        if record.reset_received_code is not None:
            raise StreamResetError(
                f"stream {record.stream_id} was reset by the peer "
                f"(error code {record.reset_received_code})",
                record.reset_received_code,
            )
        if record.fin_received:
            raise ZeroReturnError(f"stream {record.stream_id}: the peer concluded it")
        if record.stop_sent_code is not None:
            raise SSLError(f"stream {record.stream_id}: reading was stopped locally")
        self._raise_if_failed()
        return False

    def _core_consume(self, stream_id: int, count: int) -> None:
        core = self._core
        if core is not None and count:
            core.consume(stream_id, count)
            if self._reactor is not None:
                self._reactor.mark_dirty(core)

    # -- writing ----------------------------------------------------------

    def _write(
        self,
        record: StreamRecord | None,
        data: Buffer,
        flags: int,
        blocking: bool | None = None,
        partial: bool | None = None,
    ) -> int:
        conclude = conclude_requested(flags)
        view = memoryview(data).cast("B")
        total = len(view)
        if total == 0:
            # OpenSSL: an empty write touches nothing (no default stream is
            # created for it) unless it carries the FIN.
            if conclude:
                self._conclude(record, 0)
            return 0
        self._mutation_allowed_or_raise()
        self._ensure_ready_for_stream_io()
        target = record if record is not None else self._default_for_write()
        self._writable_or_raise(target)
        if blocking is None:
            blocking = self._blocking
        if partial is None:
            partial = self.partial_writes
        if blocking:
            offset = 0

            def attempt_all() -> int | None:
                nonlocal offset
                self._writable_or_raise(target)
                offset += self._append(target, view, offset, conclude)
                return offset if offset == total else None

            return self._run(attempt_all, WantWriteError, True)
        if partial:

            def attempt_some() -> int | None:
                self._writable_or_raise(target)
                return self._append(target, view, 0, conclude) or None

            return self._run(attempt_some, WantWriteError, False)
        return self._write_all_or_nothing(target, view, conclude)

    def _write_all_or_nothing(
        self, target: StreamRecord, view: memoryview, conclude: bool
    ) -> int:
        """OpenSSL's nonblocking write without MODE_ENABLE_PARTIAL_WRITE.

        What fits is taken at once, but the call only succeeds, returning
        the full length, when all of the buffer is taken; until then it
        raises WantWriteError and must be repeated with the same buffer
        (OpenSSL checks the length; the contents are the caller's promise).
        """
        total = len(view)
        if target.aon_len is not None and target.aon_len != total:
            raise SSLError(
                f"bad write retry: a {target.aon_len}-byte write is in progress on "
                f"stream {target.stream_id}; repeat it with the same data, not "
                f"{total} bytes (or set MODE_ENABLE_PARTIAL_WRITE)"
            )
        start = target.aon_pos if target.aon_len is not None else 0
        position = start

        def attempt() -> int | None:
            nonlocal position
            self._writable_or_raise(target)
            position += self._append(target, view, position, conclude)
            return total if position == total else None

        try:
            return self._run(attempt, WantWriteError, False)
        except WantWriteError:
            if position > 0:
                target.aon_len, target.aon_pos = total, position
            raise
        finally:
            if position == total:
                target.aon_len, target.aon_pos = None, 0

    def _write_space(self, record: StreamRecord) -> int:
        """Bytes a write could append now: credit, capped by the send buffer."""
        core = self._core
        if core is None:
            return 0
        credit = core.send_credit(record.stream_id)
        room = self._write_buffer_size - core.send_buffered(record.stream_id)
        return max(0, min(credit, room))

    def _append(
        self, target: StreamRecord, view: memoryview, offset: int, conclude: bool
    ) -> int:
        """Append what fits of ``view[offset:]``; FIN with the last byte."""
        total = len(view)
        count = min(self._write_space(target), total - offset)
        if count <= 0:
            return 0
        end = offset + count
        fin = conclude and end == total
        core = self._require_core()
        core.send_stream_data(target.stream_id, bytes(view[offset:end]), fin)
        if fin:
            target.concluded = True
        self._send_soon(core)
        return count

    def _send_soon(self, core: Core) -> None:
        """Send what a write queued: now, as OpenSSL's SSL_write does, or at
        the end of the enclosing :meth:`_batched_output` block."""
        reactor = self._require_reactor()
        reactor.mark_dirty(core)
        if not self._output_batching:
            reactor.flush()

    @contextlib.contextmanager
    def _batched_output(self) -> Iterator[None]:
        """Hold back the sending writes do until the block ends.

        For the HTTP layer, which answers many requests (or sends many) per
        tick: one send pass at the end packs their frames into few, full
        packets instead of one small packet per write.  Reads, timers and
        blocking waits still send as usual.
        """
        self._output_batching += 1
        try:
            yield
        finally:
            self._output_batching -= 1
            reactor = self._reactor
            if not self._output_batching and reactor is not None and not self._freed:
                with reactor.lock:
                    reactor.flush()

    def _mutation_allowed_or_raise(self) -> None:
        """OpenSSL refuses send-side calls once closing or shutting down."""
        if self._close_info is not None or (
            self._reactor is not None and self._reactor.transport.fatal_error
        ):
            self._raise_if_failed()
        if self._shutting_down:
            raise ConnectionTerminatedError(
                "the connection is shutting down (shutdown() was called)",
                self._close_info,
            )

    def _writable_or_raise(self, record: StreamRecord) -> None:
        if not record.can_write:
            raise SSLError(
                f"stream {record.stream_id} is receive-only; it cannot be written"
            )
        self._mutation_allowed_or_raise()
        if record.reset_sent_code is not None:
            raise SSLError(
                f"stream {record.stream_id} was reset locally "
                f"(error code {record.reset_sent_code})"
            )
        if record.stop_received_code is not None:
            raise StreamResetError(
                f"stream {record.stream_id}: the peer asked to stop sending "
                f"(STOP_SENDING, error code {record.stop_received_code})",
                record.stop_received_code,
            )
        if record.concluded:
            raise SSLError(f"stream {record.stream_id} was already concluded")

    def _conclude(self, record: StreamRecord | None, flags: int) -> None:
        if flags:
            raise ValueError("stream_conclude() takes no flags (pass 0)")
        self._mutation_allowed_or_raise()
        self._ensure_ready_for_stream_io()
        target = record if record is not None else self._default_for_write()
        if target.concluded and target.can_write and target.reset_sent_code is None:
            return  # only the first call has an effect (SSL_stream_conclude)
        self._writable_or_raise(target)
        core = self._require_core()
        core.send_stream_data(target.stream_id, b"", True)
        target.concluded = True
        self._send_soon(core)

    def _reset(self, record: StreamRecord | None, error_code: int) -> None:
        self._check_error_code(error_code)
        if record is None:
            self._ensure_ready_for_stream_io()
        target = record if record is not None else self._default_for_write()
        if not target.can_write:
            raise SSLError(
                f"stream {target.stream_id} is receive-only; it cannot be reset"
            )
        if target.reset_sent_code is not None:
            return  # later calls succeed and keep the first code
        if target.stop_received_code is not None:
            raise StreamResetError(
                f"stream {target.stream_id} was already reset after the peer's "
                f"STOP_SENDING (error code {target.stop_received_code})",
                target.stop_received_code,
            )
        if target.concluded:
            raise SSLError(
                f"stream {target.stream_id} was concluded; a finished stream "
                "cannot be reset"
            )
        if self._conn_closed():
            return  # nothing can be sent any more
        core = self._require_core()
        core.reset_stream(target.stream_id, error_code)
        target.reset_sent_code = error_code
        target.aon_len, target.aon_pos = None, 0
        self._send_soon(core)

    @staticmethod
    def _check_error_code(code: int) -> None:
        if not isinstance(code, int) or not 0 <= code < 2**62:
            raise ValueError(f"QUIC error codes are integers in [0, 2**62): {code!r}")

    # -- stream states ----------------------------------------------------

    def _conn_closed(self) -> bool:
        """Terminating or terminated, or the socket failed (OpenSSL's term_any)."""
        return self._close_info is not None or (
            self._reactor is not None
            and self._reactor.transport.fatal_error is not None
        )

    def _read_state(self, record: StreamRecord | None) -> int:
        return read_state(record, self._conn_closed())

    def _write_state(self, record: StreamRecord | None) -> int:
        return write_state(record, self._conn_closed())

    def _stream_value(
        self, record: StreamRecord, value_class: int, value_id: int
    ) -> int:
        """SSL_get_value_uint on a stream: its write-buffer figures."""
        if value_class != VALUE_CLASS_GENERIC:
            raise ValueError(
                f"stream values are in VALUE_CLASS_GENERIC, not class {value_class}"
            )
        if value_id not in (
            VALUE_STREAM_WRITE_BUF_SIZE,
            VALUE_STREAM_WRITE_BUF_USED,
            VALUE_STREAM_WRITE_BUF_AVAIL,
        ):
            raise ValueError(
                f"value {value_id} is not a stream value; ask the connection"
            )
        reactor = self._require_reactor()
        with reactor.lock:
            return self._write_buffer_value(record, value_id)

    # -- polling ----------------------------------------------------------

    def _record_poll_events(self, record: StreamRecord) -> int:
        """R/ER/W/EW of a stream of this connection (lock held)."""
        failed = self._conn_closed()
        space = 0
        if record.send_open and not failed and not self._shutting_down:
            space = self._write_space(record)
        return stream_poll_events(record, failed, space)

    def _poll_revents(self, events: int) -> int:
        """``SSL_poll`` bits of the connection object (lock held).

        Connection bits (EC, ECD, ISB, ISU, OSB, OSU) plus the stream bits of
        the default stream, if any.  Before the connection starts only W
        can be reported, as in OpenSSL.  F for a freed connection.
        """
        if self._freed:
            return POLL_EVENT_F
        core = self._core
        if core is None:
            return events & POLL_EVENT_W
        revents = 0
        if self._default is not None:
            revents |= self._record_poll_events(self._default)
        failed = self._conn_closed()
        if failed:
            revents |= POLL_EVENT_EC
            if self._state is ConnState.TERMINATED or (
                self._reactor is not None
                and self._reactor.transport.fatal_error is not None
            ):
                revents |= POLL_EVENT_ECD
        if events & POLL_EVENT_IS:
            for queued in self._accept_queue:
                revents |= POLL_EVENT_ISU if queued.is_uni else POLL_EVENT_ISB
        if events & POLL_EVENT_OS and not failed and not self._shutting_down:
            if core.local_streams_available(False) > 0:
                revents |= POLL_EVENT_OSB
            if core.local_streams_available(True) > 0:
                revents |= POLL_EVENT_OSU
        return revents & events

    # ==================================================================
    # multiple streams
    # ==================================================================

    @_api
    def new_stream(self, flags: int = 0) -> Stream:
        """Open a new local stream (SSL_new_stream).

        ``STREAM_FLAG_UNI`` for a send-only stream.  When the peer's stream
        limit (MAX_STREAMS) is reached, blocking mode waits for credit;
        nonblocking mode or ``STREAM_FLAG_NO_BLOCK`` raises
        ``StreamCountLimitedError`` (OpenSSL's SSL_R_STREAM_COUNT_LIMITED).
        ``STREAM_FLAG_ADVANCE`` opens the stream anyway: it can be written
        at once, and its data goes out when the peer allows the stream.
        Opening a stream inhibits the automatic default stream.
        """
        known = STREAM_FLAG_UNI | STREAM_FLAG_NO_BLOCK | STREAM_FLAG_ADVANCE
        if not isinstance(flags, int):
            raise TypeError(f"new_stream() flags must be an int, not {flags!r}")
        if flags & ~known:
            raise ValueError(f"unknown new_stream() flags 0x{flags & ~known:x}")
        self._mutation_allowed_or_raise()
        self._ensure_ready_for_stream_io()
        record = self._open_stream(
            bool(flags & STREAM_FLAG_UNI),
            no_block=bool(flags & STREAM_FLAG_NO_BLOCK),
            advance=bool(flags & STREAM_FLAG_ADVANCE),
        )
        self._touch_default()
        return Stream(self, record)

    def _open_stream(self, uni: bool, *, no_block: bool, advance: bool) -> StreamRecord:
        """Allocate a local stream, honouring the peer's stream limit."""
        self._reap_streams()

        def attempt() -> StreamRecord | None:
            self._mutation_allowed_or_raise()
            core = self._require_core()
            if not advance and core.local_streams_available(uni) <= 0:
                return None
            stream_id = core.open_stream(uni)
            record = StreamRecord(stream_id, self._is_client)
            self._streams[stream_id] = record
            return record

        record = attempt()
        if record is not None:
            return record
        if no_block or not self._blocking:
            if self._event_mode != VALUE_EVENT_HANDLING_MODE_EXPLICIT:
                self._require_reactor().tick()
                record = attempt()
                if record is not None:
                    return record
            kind = "unidirectional" if uni else "bidirectional"
            raise StreamCountLimitedError(
                f"the peer's limit on {kind} streams (MAX_STREAMS) is reached; "
                "retry when poll() reports POLL_EVENT_OS"
                f"{'U' if uni else 'B'}, or use blocking mode"
            )
        return self._run(attempt, WantWriteError, True)

    @_api
    def accept_stream(self, flags: int = 0) -> Stream | None:
        """Take the next peer-opened stream (SSL_accept_stream).

        Returns None when none is queued and ``ACCEPT_STREAM_NO_BLOCK`` is
        given or the connection is nonblocking (OpenSSL returns NULL there);
        a nonblocking call processes pending network events once first.
        ``ACCEPT_STREAM_UNI``/``ACCEPT_STREAM_BIDI`` restrict the kind.
        Raises ``ConnectionTerminatedError`` once the connection is closed,
        and ``ValueError`` if the incoming stream policy rejects streams
        (AUTO turns into REJECT once a default stream exists or
        new_stream()/accept_stream() was called, unless the default stream
        mode is NONE).  Accepting a stream inhibits the default stream.
        """
        known = ACCEPT_STREAM_NO_BLOCK | ACCEPT_STREAM_UNI | ACCEPT_STREAM_BIDI
        if not isinstance(flags, int):
            raise TypeError(f"accept_stream() flags must be an int, not {flags!r}")
        if flags & ~known:
            raise ValueError(f"unknown accept_stream() flags 0x{flags & ~known:x}")
        if self._effective_incoming_policy() == INCOMING_STREAM_POLICY_REJECT:
            raise ValueError(
                "accept_stream(): the incoming stream policy rejects peer streams; "
                "call set_incoming_stream_policy(INCOMING_STREAM_POLICY_ACCEPT) or "
                "set_default_stream_mode(DEFAULT_STREAM_MODE_NONE) first"
            )
        self._ensure_ready_for_stream_io()
        want_uni = bool(flags & ACCEPT_STREAM_UNI)
        want_bidi = bool(flags & ACCEPT_STREAM_BIDI)

        def attempt() -> StreamRecord | None:
            for record in self._accept_queue:
                if (want_uni and not record.is_uni) or (want_bidi and record.is_uni):
                    continue
                self._accept_queue.remove(record)
                return record
            self._raise_if_failed()
            return None

        if flags & ACCEPT_STREAM_NO_BLOCK or not self._blocking:
            record = attempt()
            if (
                record is None
                and self._event_mode != VALUE_EVENT_HANDLING_MODE_EXPLICIT
            ):
                self._require_reactor().tick()
                record = attempt()
            if record is None:
                return None
        else:
            record = self._run(attempt, WantReadError, True)
        self._touch_default()
        self._reap_streams()
        return Stream(self, record)

    def get_accept_stream_queue_len(self) -> int:
        """Peer-opened streams not yet accepted (SSL_get_accept_stream_queue_len)."""
        return len(self._accept_queue)

    def set_default_stream_mode(self, mode: int) -> None:
        """How the default stream is created (SSL_set_default_stream_mode).

        ``DEFAULT_STREAM_MODE_AUTO_BIDI`` (default): the first write opens a
        local bidirectional stream, or the first read binds the peer's first
        stream.  ``AUTO_UNI``: the same, but a write opens a unidirectional
        stream.  ``NONE``: no default stream; use new_stream()/
        accept_stream().  Only allowed before a default stream was created
        or inhibited (by new_stream()/accept_stream()), as in OpenSSL.
        """
        if mode not in (
            DEFAULT_STREAM_MODE_NONE,
            DEFAULT_STREAM_MODE_AUTO_BIDI,
            DEFAULT_STREAM_MODE_AUTO_UNI,
        ):
            raise ValueError(f"unknown default stream mode {mode!r}")
        if self._default_created:
            raise ValueError(
                "too late to change the default stream mode: a default stream was "
                "created, or new_stream()/accept_stream() was used; set it first"
            )
        self._default_mode = mode

    def set_incoming_stream_policy(self, policy: int, app_error_code: int = 0) -> None:
        """Accept or reject peer-opened streams (SSL_set_incoming_stream_policy).

        ``INCOMING_STREAM_POLICY_AUTO`` (default): accept while no default
        stream exists (and nothing inhibited it) or when the default stream
        mode is NONE; otherwise reject.  ``ACCEPT``/``REJECT``: always.
        Rejected streams get STOP_SENDING (and RESET_STREAM if they are
        bidirectional) with ``app_error_code`` as soon as they arrive.
        """
        if policy not in (
            INCOMING_STREAM_POLICY_AUTO,
            INCOMING_STREAM_POLICY_ACCEPT,
            INCOMING_STREAM_POLICY_REJECT,
        ):
            raise ValueError(f"unknown incoming stream policy {policy!r}")
        self._check_error_code(app_error_code)
        self._incoming_policy = policy
        self._incoming_error_code = app_error_code

    def _release_stream(self, record: StreamRecord) -> None:
        """SSL_free on a stream: reset the send part, stop the receive part.

        As OpenSSL: a send part not yet concluded is reset with code 0; a
        receive part still expecting data (no FIN, no reset) gets
        STOP_SENDING with code 0.  Data left unread is dropped and its
        flow-control credit returned.  The record is forgotten once the
        core discarded the stream.
        """
        if record.handle_released:
            return
        record.handle_released = True
        record.aon_len, record.aon_pos = None, 0
        self._mark_released(record)
        core = self._core
        if core is None or self._conn_closed():
            return
        if record.send_open:
            core.reset_stream(record.stream_id, 0)
            record.reset_sent_code = 0
        if record.receive_open:
            record.stop_sent_code = 0
            core.stop_sending(record.stream_id, 0)
        self._core_consume(record.stream_id, record.discard())
        self._send_soon(core)

    def _mark_released(self, record: StreamRecord) -> None:
        self._released.append(record)
        if self._core is not None:
            self._core.release_stream(record.stream_id)

    def _reap_streams(self) -> None:
        """Forget released streams whose state the core has discarded."""
        core = self._core
        if core is None or not self._released:
            return
        keep: list[StreamRecord] = []
        for record in self._released:
            if core.stream_discarded(record.stream_id):
                self._streams.pop(record.stream_id, None)
                core.forget_stream(record.stream_id)
            else:
                keep.append(record)
        self._released = keep

    # ==================================================================
    # closing
    # ==================================================================

    @_api
    def shutdown(self, flags: int = 0, error_code: int = 0, reason: str = "") -> bool:
        """Close the connection (SSL_shutdown_ex); True once fully closed.

        Unless ``SHUTDOWN_FLAG_NO_STREAM_FLUSH``, waits until the peer has
        acknowledged all stream data, then sends CONNECTION_CLOSE with
        ``error_code`` and ``reason`` and waits out the terminating period
        (skipped with ``SHUTDOWN_FLAG_RAPID``).  ``SHUTDOWN_FLAG_WAIT_PEER``
        waits for the peer to close instead of closing.  In nonblocking mode
        (or with ``SHUTDOWN_FLAG_NO_BLOCK``) returns False while in progress;
        call again.
        """
        known = (
            SHUTDOWN_FLAG_RAPID
            | SHUTDOWN_FLAG_NO_STREAM_FLUSH
            | SHUTDOWN_FLAG_NO_BLOCK
            | SHUTDOWN_FLAG_WAIT_PEER
        )
        if flags & ~known:
            raise ValueError(f"unknown shutdown flags 0x{flags & ~known:x}")
        self._check_error_code(error_code)
        core = self._core
        if core is None:
            return True  # nothing was ever sent
        reactor = self._require_reactor()
        blocking = self._blocking and not flags & SHUTDOWN_FLAG_NO_BLOCK
        if not flags & SHUTDOWN_FLAG_WAIT_PEER:
            self._shutting_down = True  # OpenSSL refuses new writes from here on

        def finished() -> bool:
            if core.is_terminated or reactor.transport.fatal_error is not None:
                return True
            if core.async_held:
                return False  # MODE_ASYNC: let the paused job finish first
            if not core.is_closing:
                if flags & SHUTDOWN_FLAG_WAIT_PEER:
                    return False
                if (
                    not flags & SHUTDOWN_FLAG_NO_STREAM_FLUSH
                    and not core.all_sends_acked()
                ):
                    return False
                core.close(error_code, reason)
                reactor.mark_dirty(core)
                reactor.flush()
            # After CONNECTION_CLOSE went out, RAPID does not wait for the
            # terminating period (and a peer's close needs no answer).
            return bool(flags & SHUTDOWN_FLAG_RAPID) and core.is_closing

        if finished():
            return True
        if not blocking:
            reactor.tick()
            done = finished()
            if not done:
                self._raise_if_async_pending()
            return done
        reactor.block_until(finished)
        return finished()

    def get_conn_close_info(self) -> ConnCloseInfo | None:
        """Why the connection closed, or None while open (SSL_get_conn_close_info)."""
        return self._close_info

    @_api
    def key_update(self, update_type: int = KEY_UPDATE_REQUESTED) -> None:
        """Start a 1-RTT key update (SSL_key_update).

        QUIC has no "update requested" signal, so both types do the same.
        """
        if update_type not in (KEY_UPDATE_NOT_REQUESTED, KEY_UPDATE_REQUESTED):
            raise ValueError(
                "update_type must be KEY_UPDATE_REQUESTED or _NOT_REQUESTED"
            )
        core = self._require_core()
        if not core.handshake_complete:
            raise SSLError("key_update() needs a completed handshake")
        self._raise_if_failed()
        core.request_key_update()
        reactor = self._require_reactor()
        reactor.mark_dirty(core)
        reactor.flush()

    # ==================================================================
    # values
    # ==================================================================

    def get_value_uint(self, value_class: int, value_id: int) -> int:
        """Read a numeric setting (SSL_get_value_uint).

        The idle timeout is in milliseconds, in classes FEATURE_REQUEST (what
        this side asks for), FEATURE_PEER_REQUEST and FEATURE_NEGOTIATED.
        """
        if value_id == VALUE_QUIC_IDLE_TIMEOUT:
            return self._idle_timeout_value(value_class)
        if value_class != VALUE_CLASS_GENERIC:
            raise ValueError(f"value {value_id} has no class {value_class}")
        if value_id == VALUE_EVENT_HANDLING_MODE:
            return self._event_mode
        if value_id in (
            VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL,
            VALUE_QUIC_STREAM_UNI_LOCAL_AVAIL,
            VALUE_QUIC_STREAM_BIDI_REMOTE_AVAIL,
            VALUE_QUIC_STREAM_UNI_REMOTE_AVAIL,
        ):
            core = self._require_core()
            uni = value_id in (
                VALUE_QUIC_STREAM_UNI_LOCAL_AVAIL,
                VALUE_QUIC_STREAM_UNI_REMOTE_AVAIL,
            )
            if value_id in (
                VALUE_QUIC_STREAM_BIDI_LOCAL_AVAIL,
                VALUE_QUIC_STREAM_UNI_LOCAL_AVAIL,
            ):
                return core.local_streams_available(uni)
            return core.remote_streams_available(uni)
        if value_id in (
            VALUE_STREAM_WRITE_BUF_SIZE,
            VALUE_STREAM_WRITE_BUF_USED,
            VALUE_STREAM_WRITE_BUF_AVAIL,
        ):
            return self._write_buffer_value(self._default, value_id)
        raise ValueError(f"unknown value id {value_id}")

    def _write_buffer_value(self, record: StreamRecord | None, value_id: int) -> int:
        if record is None or not record.can_write:
            raise ValueError("write-buffer values need a stream that can be written")
        used = self._core.send_buffered(record.stream_id) if self._core else 0
        if value_id == VALUE_STREAM_WRITE_BUF_SIZE:
            return self._write_buffer_size
        if value_id == VALUE_STREAM_WRITE_BUF_USED:
            return used
        return max(0, self._write_buffer_size - used)

    def _peer_max_datagram_frame_size(self) -> int | None:
        """The peer's max_datagram_frame_size transport parameter (RFC 9221),
        for HTTP/3's SETTINGS_H3_DATAGRAM check; None before the handshake or
        when the peer did not send it."""
        core = self._core
        return core.peer_max_datagram_frame_size() if core is not None else None

    def _idle_timeout_value(self, value_class: int) -> int:
        if value_class == VALUE_CLASS_FEATURE_REQUEST:
            return round(self._settings.idle_timeout * 1000)
        core = self._core
        if value_class == VALUE_CLASS_FEATURE_PEER_REQUEST:
            peer = core.peer_idle_timeout() if core else None
            if peer is None:
                raise ValueError("the peer's idle timeout is known after the handshake")
            return round(peer * 1000)
        if value_class == VALUE_CLASS_FEATURE_NEGOTIATED:
            if core is None or not core.handshake_complete:
                raise ValueError("the idle timeout is negotiated during the handshake")
            value = core.negotiated_idle_timeout()
            return 0 if value is None else round(value * 1000)
        raise ValueError(f"the idle timeout has no value class {value_class}")

    def set_value_uint(self, value_class: int, value_id: int, value: int) -> None:
        """Change a numeric setting (SSL_set_value_uint).

        The idle timeout request (milliseconds, FEATURE_REQUEST) can only be
        changed before the handshake starts, as in OpenSSL.
        """
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"values are non-negative integers, not {value!r}")
        if value_id == VALUE_QUIC_IDLE_TIMEOUT:
            if value_class != VALUE_CLASS_FEATURE_REQUEST:
                raise ValueError("only the FEATURE_REQUEST idle timeout can be set")
            if self._core is not None:
                raise ValueError(
                    "the idle timeout can only be set before the handshake"
                )
            self._settings.idle_timeout = value / 1000.0
            return
        if value_class == VALUE_CLASS_GENERIC and value_id == VALUE_EVENT_HANDLING_MODE:
            if value == VALUE_EVENT_HANDLING_MODE_INHERIT:
                value = VALUE_EVENT_HANDLING_MODE_IMPLICIT
            if value not in (
                VALUE_EVENT_HANDLING_MODE_IMPLICIT,
                VALUE_EVENT_HANDLING_MODE_EXPLICIT,
            ):
                raise ValueError(f"unknown event handling mode {value}")
            self._event_mode = value
            return
        raise ValueError(f"value {value_id} (class {value_class}) cannot be set")

    # ==================================================================
    # modes and async callbacks (the MODE_ASYNC machinery hooks in here)
    # ==================================================================

    def set_mode(self, mode: int) -> int:
        """Add mode bits for this connection (SSL_set_mode)."""
        self._mode |= mode
        return self._mode

    def clear_mode(self, mode: int) -> int:
        """Remove mode bits (SSL_clear_mode)."""
        self._mode &= ~mode
        return self._mode

    def get_mode(self) -> int:
        """This connection's mode bits (SSL_get_mode)."""
        return self._mode

    @property
    def partial_writes(self) -> bool:
        return bool(self._mode & MODE_ENABLE_PARTIAL_WRITE)

    # -- MODE_ASYNC (issue 5; the machinery is quicconn/_asyncjob/job.py) -------
    #
    # A connection in MODE_ASYNC with an engine runs its core's packet
    # processing in async jobs until the handshake completes.  A job that
    # needs the private key pauses while the engine signs; the call that
    # finds it paused raises WantAsyncError (nonblocking) or sleeps until the
    # engine finishes (blocking).  The next tick after the completion - any
    # call on this connection or its listener - resumes it.

    def set_async_engine(self, engine: AsyncEngine | None) -> None:
        """Offload this connection's private-key operations to ``engine``.

        quicconn's counterpart of using an async-capable ENGINE for the
        key; overrides the context's engine (Context.set_async_engine).
        Takes effect when the handshake starts, with MODE_ASYNC set.
        """
        if engine is not None and not isinstance(engine, AsyncEngine):
            raise TypeError(f"expected a quicconn.AsyncEngine, not {engine!r}")
        self._async_engine = engine

    def get_async_engine(self) -> AsyncEngine | None:
        """The engine this connection uses (its own, else the context's)."""
        return self._async_engine or self._ctx.get_async_engine()

    def set_async_callback(self, callback: AsyncCallback | None) -> None:
        """Call ``callback(conn, arg)`` when a paused job can resume.

        Mirrors SSL_set_async_callback.  The connection starts with its
        context's callback (SSL_CTX_set_async_callback); this one wins.  It
        runs once per engine completion, in the engine's thread (or, for an
        engine that asks for a retry, at once): like OpenSSL's, it must be
        small and nonblocking, and should only schedule the retry - calling
        back into the connection from it is not allowed.
        """
        if callback is not None and not callable(callback):
            raise TypeError("the async callback must be callable")
        self._async_callback = callback

    def set_async_callback_arg(self, arg: Any) -> None:
        """The ``arg`` given to the async callback (SSL_set_async_callback_arg)."""
        self._async_callback_arg = arg

    def waiting_for_async(self) -> bool:
        """Whether a job is paused for an engine (SSL_waiting_for_async)."""
        host = self._async_host
        return host is not None and host.waiting

    def get_all_async_fds(self) -> list[int]:
        """Descriptors that poll readable when the engine is done.

        Mirrors SSL_get_all_async_fds: wait for "read ready" with
        select/poll and do not read them; then retry the call that raised
        WantAsyncError.  Empty until an engine first paused a job.
        """
        host = self._async_host
        if host is None:
            return []
        return self._async_locked(host.wait_ctx.all_fds)

    def get_changed_async_fds(self) -> tuple[list[int], list[int]]:
        """``(added, deleted)`` wait fds since the last WANT_ASYNC.

        Mirrors SSL_get_changed_async_fds (two lists instead of four
        out-parameters).
        """
        host = self._async_host
        if host is None:
            return [], []
        return self._async_locked(host.wait_ctx.changed_fds)

    def get_async_status(self) -> int:
        """The engine's status: ``ASYNC_STATUS_*`` (SSL_get_async_status).

        UNSUPPORTED until an engine took an operation; then OK (submitted),
        EAGAIN (the engine was busy: retry, and the job submits again) or
        ERR (the engine failed: the handshake fails).
        """
        host = self._async_host
        return ASYNC_STATUS_UNSUPPORTED if host is None else host.wait_ctx.status

    def _async_locked(self, fn: Callable[[], T]) -> T:
        reactor = self._reactor
        if reactor is None:
            return fn()
        with reactor.lock:
            return fn()

    def _async_prepare_key(self) -> None:
        """Wrap the private key so it can pause a job (before the core exists)."""
        settings = self._settings
        settings.private_key = self._backend.prepare_private_key(
            settings.private_key, offload=bool(self._mode & MODE_ASYNC)
        )

    def _async_attach(self, core: Core) -> None:
        """Give ``core`` a job host if MODE_ASYNC is on and an engine is set."""
        engine = self.get_async_engine()
        if not self._mode & MODE_ASYNC or engine is None:
            return  # as in OpenSSL without an async engine: no pausing
        if Capability.ASYNC_SIGN not in self._backend.capabilities:
            raise ValueError(
                f"the {self._backend.name!r} QUIC core cannot pause a handshake "
                "for an async engine (MODE_ASYNC)"
            )
        if self._settings.private_key is None:
            return  # no key (a client without a certificate): nothing to offload
        reactor = self._require_reactor()
        host = JobHost(
            engine,
            notify_ready=lambda: reactor.post_async_ready(core),
            wake_app=self._async_wake_app,
            inline=reactor.async_inline,
        )
        core.attach_async_host(host)
        self._async_host = host

    def _async_wake_app(self) -> None:
        callback = self._async_callback
        if callback is not None:
            callback(self, self._async_callback_arg)

    def _raise_if_async_pending(self) -> None:
        """Raise WantAsyncError / WantAsyncJobError while a job is held up."""
        host = self._async_host
        if host is None:
            return
        wanted = host.want()
        if wanted is WantAsyncError:
            raise WantAsyncError(
                "an async private-key operation is in flight: wait for "
                "get_all_async_fds() to poll readable (or the async callback), "
                "then retry the call"
            )
        if wanted is not None:
            raise wanted(
                "no async job is free (async_init_thread limit): retry once a "
                "paused connection has resumed"
            )

    # ==================================================================
    # lifetime
    # ==================================================================

    def free(self) -> None:
        """Release the connection (SSL_free): no close is sent.

        The socket given to :meth:`set_fd` stays open (BIO_NOCLOSE).
        """
        if self._freed:
            return
        reactor = self._reactor
        if reactor is None:
            self._freed = True
            return
        with reactor.lock:
            self._forget()
        self._detach_reactor()

    def free_locked(self) -> None:
        """:meth:`free` for callers already holding the reactor lock."""
        if not self._freed:
            self._forget()
            self._detach_reactor()

    def _forget(self) -> None:
        self._freed = True
        reactor = self._reactor
        if self._async_host is not None:
            self._async_host.close()
        if self._core is not None:
            self._core.finish_qlog()
            if reactor is not None:
                reactor.remove_core(self._core)
        if self._listener is not None:
            self._listener._on_connection_freed(self)
            self._listener = None

    def _detach_reactor(self) -> None:
        reactor = self._reactor
        self._reactor = None
        if reactor is not None and reactor.release():
            reactor.close(close_transport=self._owns_socket)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._core is not None and not self._freed:
                self.shutdown(0 if self._blocking else SHUTDOWN_FLAG_NO_BLOCK)
        except Error:
            pass  # the connection already failed; nothing left to close
        finally:
            self.free()

    @property
    def state(self) -> ConnState:
        """Where the connection is in its lifecycle."""
        return self._state

    def __repr__(self) -> str:
        role = "client" if self._is_client else "server"
        peer = self._describe_peer()
        return f"<quicconn.Connection {role} {self._state.value} peer={peer}>"


def h3_codec(conn: Connection, transport: H3Transport) -> H3Codec:
    """An HTTP/3 codec for ``conn``, from the backend of its QUIC core.

    Internal API for the apps layer (quicconn/http/): the codec frames
    HTTP/3 and QPACK and speaks through ``transport``, which the caller
    builds over ``conn``'s streams.  ValueError if the backend has no
    HTTP/3 codec.
    """
    backend = conn._backend
    if Capability.HTTP3 not in backend.capabilities:
        raise ValueError(f"the {backend.name!r} QUIC core has no HTTP/3 codec")
    return backend.new_h3_codec(transport, is_client=conn._is_client)
