"""``DTLSConnection``: DTLS 1.2 with OpenSSL's DTLS event semantics.

OpenSSL's ``SSL_handle_events(3)`` names two kinds of object.  For QUIC
connections (:class:`~quicconn.Connection`) events are also handled
implicitly by every I/O call.  For DTLS objects it *is*
``DTLSv1_handle_timeout()``, and "event handling is not performed
automatically by calls to other SSL functions": a nonblocking application
must call :meth:`DTLSConnection.handle_events` when
:meth:`DTLSConnection.get_event_timeout` says so, or a lost flight is never
retransmitted.  Blocking calls handle the timer themselves, as OpenSSL does
behind a blocking datagram BIO.

The protocol is pyOpenSSL's (OpenSSL's own DTLS state machine) over memory
BIOs.  This module is the carrier around it:

* **Datagrams, not a byte stream.**  A memory BIO is a stream, so OpenSSL's
  output is cut back into records and each record is sent as one datagram
  (what OpenSSL does over a UDP socket); input is fed one datagram at a time
  and only when OpenSSL asks for more, so records never straddle datagrams.
  Handshake messages are fragmented by OpenSSL to the context's MTU.
* **Time.**  OpenSSL's retransmission timer reads the wall clock.  quicconn's
  objects read their transport's clock, which tests replace with a
  :class:`~quicconn.FakeClock`.  :class:`RetransmitTimer` therefore follows
  OpenSSL's timer on quicconn's clock: armed when OpenSSL arms its own, with
  OpenSSL's duration, doubled on each expiry up to 60 s, 12 expiries at most.
  When it fires, OpenSSL retransmits if its own timer agrees (always, on the
  real clock); if quicconn's clock ran ahead of the wall clock (a fake
  clock), the flight's datagrams are sent again as they were.
* **No implicit retransmission.**  OpenSSL's record layer retransmits from
  inside ``SSL_do_handshake``/``SSL_read`` when a read finds no data after
  its wall-clock timer expired.  To keep the documented rule, a nonblocking
  call does not enter OpenSSL's handshake while that timer is about to
  expire; :meth:`handle_events` must run first.

Every public call runs under :func:`~quicconn._objects.call.api` and
completes through :func:`~quicconn._objects.call.run_call`, the call
discipline of every quicconn object, with event handling always explicit
(nonblocking calls never tick).  The driver is the transport's
:class:`~quicconn._objects.dtls.router.DatagramRouter`, which files incoming
datagrams by peer address, so a :class:`~quicconn.DTLSListener` serves many
peers on one socket; a blocking call waits there, and wakes at its
connection's retransmission deadline.  See docs/dtls.md.
"""

from __future__ import annotations

import enum
import os
import socket
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography import x509
from OpenSSL import SSL

from ..._constants import Role
from ..._errors import (
    Error,
    SSLError,
    SyscallError,
    WantReadError,
    WantWriteError,
)
from ..._io.transport import (
    Address,
    DatagramTransport,
    UdpTransport,
    require_datagram_transport,
    resolve_address,
)
from ..._names import is_ip_address
from ..call import api, run_call
from .errors import translate_error
from .openssl import SslState, drain_records
from .records import MAX_RECORD_PLAINTEXT, well_formed
from .router import DatagramRouter
from .settings import MAX_MTU, MIN_MTU, DTLSSettings, new_ssl

if TYPE_CHECKING:
    from ..._types import Buffer

T = TypeVar("T")

#: OpenSSL's DTLS timer: 1 s initially, doubled per expiry, at most 60 s,
#: and the handshake fails after 12 expiries (DTLS1_TMO_ALERT_COUNT).
INITIAL_TIMEOUT = 1.0
MAX_TIMEOUT = 60.0
MAX_TIMEOUTS = 12
#: OpenSSL treats a timer with less than 15 ms left as expired; a call that
#: starts with less than this much left could expire it while running.
OPENSSL_TIMER_GUARD = 0.05
#: Datagrams held per connection before newer ones are dropped.
INBOX_LIMIT = 1024


def _openssl_duration(left: float) -> float:
    """The timer duration OpenSSL just started, from the time it has left.

    Without ``DTLS_set_timer_cb`` (which pyOpenSSL does not expose) OpenSSL's
    DTLS timer runs 1 s, doubled per expiry, at most 60 s.
    """
    duration = INITIAL_TIMEOUT
    while duration < left and duration < MAX_TIMEOUT:
        duration = min(duration * 2, MAX_TIMEOUT)
    return max(duration, left)


class DTLSState(enum.Enum):
    """Lifecycle of a DTLS connection object."""

    IDLE = "idle"  #: created, handshake not started
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSING = "closing"  #: one close_notify sent or received, not both
    CLOSED = "closed"  #: close_notify sent and received
    FAILED = "failed"  #: a fatal error ended the connection


@dataclass
class RetransmitTimer:
    """OpenSSL's DTLS retransmission timer, on quicconn's clock."""

    #: When the current flight is due for retransmission; None when unarmed.
    deadline: float | None = None
    #: The current timeout value (OpenSSL's ``timeout_duration``).
    interval: float = INITIAL_TIMEOUT
    #: Expiries of the current flight.
    expirations: int = 0
    #: The datagrams of the last flight sent, for a retransmission by quicconn.
    flight: list[bytes] = field(default_factory=list)

    def disarm(self) -> None:
        """Stop the timer (dtls1_stop_timer): the flight was answered."""
        self.deadline = None
        self.interval = INITIAL_TIMEOUT
        self.expirations = 0


class DTLSConnection:
    """A DTLS 1.2 connection (``SSL_new`` on a DTLS context).

    Client use::

        conn = quicconn.DTLSConnection(ctx)     # ctx = DTLSContext(CLIENT)
        conn.set_fd(sock)                       # a UDP socket
        conn.set1_initial_peer_addr(("192.0.2.1", 4433))  # unless connected
        conn.set1_host("example.com")
        conn.connect()
        conn.write(b"...")

    Server connections come from :meth:`DTLSListener.accept_connection`
    (cookie exchange, many peers per socket), or from
    ``DTLSConnection(DTLSContext(SERVER))`` on a socket of its own, whose
    first peer it then serves.  Blocking mode is the default.  In nonblocking
    mode calls raise ``WantReadError``/``WantWriteError`` as SSL_do_handshake
    does on a nonblocking BIO, and the application must call
    :meth:`handle_events` at the deadline :meth:`get_event_timeout` gives.
    """

    def __init__(self, ctx: DTLSSettings) -> None:
        if not isinstance(ctx, DTLSSettings):
            raise TypeError(
                f"DTLSConnection() needs a quicconn.DTLSContext, got {ctx!r} "
                "(a QUIC Context makes quicconn.Connection objects)"
            )
        self._ctx = ctx
        self._is_client = ctx.role is Role.CLIENT
        self._router: DatagramRouter | None = None
        self._owns_socket = False
        self._peer: Address | None = None
        self._sni: str | None = None
        self._verify_host: str | None = None
        self._mtu = ctx.max_datagram_size
        self._ssl: SSL.Connection | None = None
        self._ssl_state = SslState()
        self._state = DTLSState.IDLE
        self._blocking = True
        self._inbox: deque[bytes] = deque()
        self._timer = RetransmitTimer()
        self._failure: Error | None = None
        self._close_sent = False
        self._close_received = False
        self._last_error = 0
        #: Told when this connection is freed: the listener that made it.
        self._on_free: Callable[[DTLSConnection], None] | None = None
        self._freed = False
        #: Datagrams dropped because the inbox was full.
        self.datagrams_dropped = 0
        #: Datagrams dropped because they were not whole DTLS records.
        self.datagrams_malformed = 0

    @classmethod
    def _from_listener(
        cls,
        ctx: DTLSSettings,
        router: DatagramRouter,
        peer: Address,
        ssl: SSL.Connection | None,
        state: SslState | None,
        on_free: Callable[[DTLSConnection], None],
    ) -> DTLSConnection:
        """See :func:`new_listener_connection`."""
        conn = cls(ctx)
        conn._on_free = on_free
        conn._peer = peer
        router.retain()
        conn._router = router
        router.add_route(peer, conn._deliver)
        if ssl is not None and state is not None:
            conn._ssl = ssl
            conn._ssl_state = state  # keeps the cookie mint: OpenSSL checks
            # the cookie again when the handshake resumes from the buffered hello
            conn._state = DTLSState.HANDSHAKING
        return conn

    # ==================================================================
    # setup
    # ==================================================================

    @api
    def set_fd(self, fd: socket.socket | int) -> None:
        """Use a UDP socket for I/O (SSL_set_fd with a datagram BIO).

        Accepts a ``socket.socket`` or a descriptor number; the socket is
        made nonblocking and is not closed when the connection is freed
        (``BIO_NOCLOSE``).  A connected socket's peer becomes the peer.
        """
        if isinstance(fd, int):
            sock = socket.socket(fileno=os.dup(fd))
            self._attach(UdpTransport(sock))
            self._owns_socket = True
        elif isinstance(fd, socket.socket):
            self._attach(UdpTransport(fd))
        else:
            raise TypeError(f"set_fd() takes a socket or an int fd, not {fd!r}")

    def set_transport(self, transport: DatagramTransport) -> None:
        """Use any datagram transport (SSL_set_bio with a datagram BIO pair).

        For example one end of :class:`quicconn.testing.DatagramPair`.
        """
        self._attach(require_datagram_transport(transport, "set_transport()"))

    def _attach(self, transport: DatagramTransport) -> None:
        if self._ssl is not None:
            raise ValueError("the transport cannot change once the handshake started")
        self._drop_router()
        router = DatagramRouter(transport)
        router.retain()
        self._router = router
        if self._peer is None:
            self._peer = transport.connected_peer()

    def set1_initial_peer_addr(self, addr: tuple[Any, ...]) -> None:
        """The peer's address (BIO_dgram_set_peer; QUIC's SSL_set1_initial_peer_addr).

        Filled from a connected socket if not given.  Datagrams from any
        other address are ignored.
        """
        if self._ssl is not None:
            raise ValueError(
                "the peer address cannot change once the handshake started"
            )
        family = socket.AF_INET6 if ":" in str(addr[0]) else socket.AF_INET
        if self._router is not None and isinstance(
            self._router.transport, UdpTransport
        ):
            family = self._router.transport.family
        self._peer = resolve_address(family, addr)

    def set_tlsext_host_name(self, name: str) -> None:
        """The server name sent in SNI (SSL_set_tlsext_host_name)."""
        self._sni = self._check_name(name)

    def set1_host(self, name: str) -> None:
        """The name the server certificate must match (SSL_set1_host).

        Falls back to the SNI name when not set; an IP address is checked
        against the certificate's IP address entries.
        """
        self._verify_host = self._check_name(name)

    def _check_name(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise TypeError("a host name must be a non-empty str")
        if self._ssl is not None:
            raise ValueError("host names cannot change once the handshake started")
        return name

    def set_connect_state(self) -> None:
        """Make :meth:`do_handshake` run the client side (SSL_set_connect_state)."""
        self._set_role(True)

    def set_accept_state(self) -> None:
        """Make :meth:`do_handshake` run the server side (SSL_set_accept_state)."""
        self._set_role(False)

    def _set_role(self, client: bool) -> None:
        if self._ssl is not None:
            raise ValueError("the role cannot change once the handshake started")
        self._is_client = client

    def is_server(self) -> bool:
        """True for the server side (SSL_is_server)."""
        return not self._is_client

    def set_mtu(self, mtu: int) -> None:
        """Largest datagram this connection sends, bytes (SSL_set_mtu)."""
        if not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU:
            raise ValueError(f"the MTU must be between {MIN_MTU} and {MAX_MTU}")
        self._mtu = mtu
        if self._ssl is not None:
            self._ssl.set_ciphertext_mtu(mtu)

    def get_data_mtu(self) -> int:
        """Largest write that fits one datagram (DTLS_get_data_mtu)."""
        if self._ssl is None or self._state is DTLSState.HANDSHAKING:
            raise ValueError("the data MTU is known once the handshake completed")
        return int(self._ssl.get_cleartext_mtu())

    # ==================================================================
    # events (SSL_handle_events on DTLS = DTLSv1_handle_timeout)
    # ==================================================================

    def set_blocking_mode(self, blocking: bool) -> None:
        """Blocking (default) or nonblocking calls (SSL_set_blocking_mode).

        OpenSSL takes DTLS blocking behaviour from the BIO; quicconn's sockets
        are always nonblocking underneath, so the mode is set here instead.
        """
        self._blocking = bool(blocking)

    def get_blocking_mode(self) -> bool:
        """Whether calls block (SSL_get_blocking_mode)."""
        return self._blocking

    @api
    def handle_events(self) -> None:
        """Retransmit the flight if the DTLS timer expired (SSL_handle_events).

        For DTLS objects OpenSSL defines this as DTLSv1_handle_timeout(): no
        other processing happens (incoming datagrams wait for the next I/O
        call).  Never raises; a handshake that fails because the peer never
        answered surfaces on the next I/O call (OpenSSL returns 0 here).
        """
        self._handle_timeout()

    @api
    def get_event_timeout(self) -> float | None:
        """Seconds until :meth:`handle_events` is due; 0.0 if now, None if never.

        Mirrors SSL_get_event_timeout on a DTLS object: the retransmission
        timer, measured on the transport's clock.  None (OpenSSL's
        ``is_infinite``) when no flight awaits an answer.
        """
        return self._event_timeout()

    @api
    def DTLSv1_handle_timeout(self) -> int:
        """Handle a pending timeout (DTLSv1_handle_timeout), legacy convention.

        Returns 1 if the timer had expired and the flight was retransmitted,
        0 if no timeout was pending, -1 if one was pending but could not be
        handled (the handshake has failed; the next I/O call raises why).
        """
        return self._handle_timeout()

    @api
    def DTLSv1_get_timeout(self) -> float | None:
        """Time left on the DTLS timer (DTLSv1_get_timeout), legacy convention.

        Returns the seconds left (0.0 when due) where OpenSSL returns 1 and
        fills ``tv``, and None where it returns 0: no timer is active (which
        SSL_get_event_timeout instead reports as a successful infinity).
        """
        return self._event_timeout()

    def net_read_desired(self) -> bool:
        """Whether a datagram from the network would be useful now.

        OpenSSL answers this for QUIC objects only; for DTLS quicconn says
        True from the start of the handshake until the connection is closed
        or failed.
        """
        return self._state in (
            DTLSState.HANDSHAKING,
            DTLSState.ESTABLISHED,
            DTLSState.CLOSING,
        )

    def net_write_desired(self) -> bool:
        """Whether datagrams wait behind EAGAIN (SSL_net_write_desired)."""
        return self._router is not None and self._router.transport.has_pending_writes()

    def get_rpoll_descriptor(self) -> int:
        """The descriptor to poll for readability (SSL_get_rpoll_descriptor)."""
        return self._require_router().transport.fileno()

    def get_wpoll_descriptor(self) -> int:
        """The descriptor to poll for writability (SSL_get_wpoll_descriptor)."""
        return self._require_router().transport.fileno()

    def fileno(self) -> int:
        """The socket's descriptor (SSL_get_fd)."""
        return self._require_router().transport.fileno()

    def get_error(self) -> int:
        """The ``ERROR_*`` code of the last failed call, 0 if none (SSL_get_error)."""
        return self._last_error

    def _call_lock(self) -> AbstractContextManager[object]:
        """The router's lock, which every public call runs under (see ``api``)."""
        router = self._router
        return nullcontext() if router is None else router.lock

    # -- the timer ----------------------------------------------------------

    def _openssl_timeout(self) -> float | None:
        ssl = self._ssl
        return None if ssl is None else ssl.DTLSv1_get_timeout()

    def _event_timeout(self) -> float | None:
        timer = self._timer
        if timer.deadline is None or self._failure is not None:
            return None
        left = self._openssl_timeout()
        if left is None:
            return None  # pragma: no cover - kept in step after every call
        if left <= 0.0:
            return 0.0
        return max(0.0, timer.deadline - self._require_router().clock.now())

    def _wake_at(self) -> float | None:
        """When a blocking call must wake for the timer (the router's clock)."""
        timeout = self._event_timeout()
        if timeout is None:
            return None
        return self._require_router().clock.now() + timeout

    def _timer_due(self) -> bool:
        timer = self._timer
        if timer.deadline is None or self._failure is not None:
            return False
        left = self._openssl_timeout()
        if left is not None and left <= 0.0:
            return True
        return self._require_router().clock.now() >= timer.deadline

    def _handle_timeout(self) -> int:
        """DTLSv1_handle_timeout: 1 handled, 0 nothing due, -1 failed (lock held)."""
        ssl = self._ssl
        timer = self._timer
        if ssl is None or timer.deadline is None or self._failure is not None:
            return 0
        router = self._require_router()
        now = router.clock.now()
        left = ssl.DTLSv1_get_timeout()
        if left is None:  # pragma: no cover - kept in step after every call
            timer.disarm()
            return 0
        openssl_due = left <= 0.0
        ours_due = now >= timer.deadline
        if not (openssl_due or ours_due):
            return 0
        if openssl_due:
            try:
                handled = ssl.DTLSv1_handle_timeout()
            except SSL.Error as exc:
                self._fail(self._translate(exc))
                self._flush_output()
                return -1
            if handled:
                timer.expirations += 1
                self._flush_output(restart=True)
                return 1
            if not ours_due:  # pragma: no cover - OpenSSL's timer moved meanwhile
                return 0
        # quicconn's clock is ahead of OpenSSL's wall clock: resend the flight.
        timer.expirations += 1
        if timer.expirations > MAX_TIMEOUTS:
            self._fail(
                SSLError(
                    f"DTLS handshake timed out: no answer from {self._describe_peer()} "
                    f"after {MAX_TIMEOUTS} retransmissions"
                )
            )
            return -1
        self._send(timer.flight)
        timer.interval = min(timer.interval * 2, MAX_TIMEOUT)
        timer.deadline = now + timer.interval
        return 1

    def _sync_timer(self, sent: list[bytes], restart: bool) -> None:
        """Follow OpenSSL's timer after a call into OpenSSL.

        A new flight, or OpenSSL's own retransmission (``restart``), starts
        the timer again with OpenSSL's current duration.
        """
        timer = self._timer
        left = self._openssl_timeout()
        if left is None:
            timer.disarm()
            return
        now = self._require_router().clock.now()
        if sent or restart:
            # The timer was (re)started during this call with one of
            # OpenSSL's durations; what it reports is that less the time the
            # call took, which on a loaded machine can be milliseconds.
            timer.interval = _openssl_duration(left)
            timer.deadline = now + timer.interval
        elif timer.deadline is None:
            timer.interval = left
            timer.deadline = now + left
        if sent:
            timer.flight = sent
            if not restart:
                timer.expirations = 0

    def _gated(self) -> bool:
        """True while entering OpenSSL's handshake could retransmit implicitly."""
        if self._state is not DTLSState.HANDSHAKING:
            return False
        left = self._openssl_timeout()
        return left is not None and left < OPENSSL_TIMER_GUARD

    # ==================================================================
    # handshake
    # ==================================================================

    @api
    def connect(self) -> None:
        """Run the client handshake to completion (SSL_connect)."""
        if not self._is_client:
            raise ValueError("connect() is for client connections; use accept()")
        self._handshake()

    @api
    def accept(self) -> None:
        """Run the server handshake to completion (SSL_accept)."""
        if self._is_client:
            raise ValueError("accept() is for server connections; use connect()")
        self._handshake()

    @api
    def do_handshake(self) -> None:
        """Run the handshake in this object's role (SSL_do_handshake).

        Blocking: returns once the handshake finished, retransmitting at the
        timer's deadlines on the way.  Nonblocking: raises ``WantReadError``
        until the peer's flights arrived (or ``WantWriteError`` while the
        socket refuses datagrams); retransmission needs :meth:`handle_events`.
        """
        self._handshake()

    def is_init_finished(self) -> bool:
        """Whether the handshake completed (SSL_is_init_finished)."""
        return self._state in (
            DTLSState.ESTABLISHED,
            DTLSState.CLOSING,
            DTLSState.CLOSED,
        )

    def _handshake(self) -> None:
        if self._ssl is None:
            self._start()
        if self._state is not DTLSState.HANDSHAKING:
            self._raise_if_failed()
            return
        self._run(self._handshake_step, writes=True)

    def _handshake_step(self) -> bool:
        ssl = self._ssl
        assert ssl is not None
        ssl.do_handshake()
        self._state = DTLSState.ESTABLISHED
        return True

    def _start(self) -> None:
        """Create the SSL object; the first do_handshake sends the first flight."""
        router = self._require_router()
        if self._is_client:
            if self._peer is None:
                raise ValueError(
                    "no peer address: connect the socket, or call "
                    "set1_initial_peer_addr()"
                )
            name = self._verify_host or self._sni
            if self._ctx.verify_mode and name is None:
                raise ValueError(
                    "certificate verification needs the server's name: call "
                    "set1_host() (an IP address is fine), or set "
                    "ctx.verify_mode = VERIFY_NONE to skip verification"
                )
            self._ssl_state.verify_host = name if self._ctx.verify_mode else None
        elif not self._ctx.has_certificate():
            raise ValueError(
                "the server DTLSContext has no certificate: call load_cert_chain()"
            )
        ssl = new_ssl(self._ctx, self._ssl_state, self._mtu)
        if self._is_client:
            ssl.set_connect_state()
            if self._sni is not None and not is_ip_address(self._sni):
                ssl.set_tlsext_host_name(self._sni.encode("idna"))
            elif (
                self._sni is None
                and self._verify_host is not None
                and not (is_ip_address(self._verify_host))
            ):
                ssl.set_tlsext_host_name(self._verify_host.encode("idna"))
        else:
            ssl.set_accept_state()
        self._ssl = ssl
        self._state = DTLSState.HANDSHAKING
        if self._peer is not None:
            router.add_route(self._peer, self._deliver)
        else:
            router.unrouted = self._learn_peer

    # ==================================================================
    # the engine
    # ==================================================================

    def _run(self, step: Callable[[], T], *, writes: bool = False) -> T:
        """Drive ``step`` (one OpenSSL call) under the call discipline.

        Lock held.  Event handling is always explicit for DTLS: a
        nonblocking call makes one pass and raises ``WantReadError`` (or
        ``WantWriteError`` while the socket refuses datagrams), never
        retransmitting.  A blocking call waits on the router between passes
        and handles its timer at each deadline, as OpenSSL does behind a
        blocking datagram BIO.
        """
        router = self._require_router()
        blocking = self._blocking
        blocked_on_write = False

        def attempt() -> T | None:
            nonlocal blocked_on_write
            if self._freed:
                raise ValueError("the connection was freed during the call")
            if blocking and self._timer_due():
                self._handle_timeout()
            self._raise_if_failed()
            blocked_on_write = writes and self._send_queue_full()
            if blocked_on_write:
                return None
            return self._attempt(step)

        def would_block() -> Error:
            if blocked_on_write:
                return WantWriteError(
                    "the socket refuses datagrams; retry once it is writable"
                )
            return WantReadError(
                "the operation needs a datagram from the peer (or, in the "
                "handshake, handle_events() at get_event_timeout())"
            )

        return run_call(
            attempt,
            router,
            blocking=blocking,
            implicit_events=False,
            would_block=would_block,
            stopped=_transport_closed,
            wake_at=self._wake_at,
        )

    def _send_queue_full(self) -> bool:
        transport = self._require_router().transport
        if transport.has_pending_writes():
            transport.flush()
        return transport.has_pending_writes()

    def _attempt(self, step: Callable[[], T]) -> T | None:
        """Call ``step``, feeding queued datagrams one by one while it wants
        more; None when it still wants more (lock held)."""
        self._require_router().tick()
        ssl = self._ssl
        assert ssl is not None
        while True:
            self._raise_if_failed()
            if self._gated():
                return None
            try:
                result = step()
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError as exc:
                self._flush_output()
                self._close_received = True
                self._update_close_state()
                raise self._translate(exc) from None
            except SSL.SysCallError as exc:
                if not self._close_sent:
                    raise self._fail(self._translate(exc)) from None
                # After our close_notify OpenSSL discards incoming records and
                # reports the empty memory BIO as SSL_ERROR_SYSCALL: more is
                # needed, exactly as WANT_READ.
            except SSL.Error as exc:
                self._flush_output()
                raise self._fail(self._translate(exc)) from None
            else:
                self._flush_output()
                return result
            self._flush_output()
            if not self._inbox:
                return None
            ssl.bio_write(self._inbox.popleft())

    def _flush_output(self, restart: bool = False) -> None:
        """Send what OpenSSL wrote, one record per datagram; follow its timer."""
        ssl = self._ssl
        if ssl is None:
            return
        sent = drain_records(ssl)
        if sent:
            self._send(sent)
        if self._failure is None:
            self._sync_timer(sent, restart)

    def _send(self, datagrams: list[bytes]) -> None:
        peer = self._peer
        if not datagrams or peer is None:
            return
        self._require_router().transport.send_batch([(d, peer) for d in datagrams])

    def _deliver(self, data: bytes) -> None:
        """A datagram from the peer (router callback, lock held)."""
        if not well_formed(data):
            self.datagrams_malformed += 1
            return
        if len(self._inbox) >= INBOX_LIMIT:
            self.datagrams_dropped += 1
            return
        self._inbox.append(data)

    def _learn_peer(self, data: bytes, addr: Address) -> None:
        """A server on its own socket serves the first peer that writes."""
        router = self._require_router()
        if self._peer is None:
            self._peer = addr
            router.unrouted = None
            router.add_route(addr, self._deliver)
            self._deliver(data)

    # ==================================================================
    # failures
    # ==================================================================

    def _translate(self, exc: SSL.Error) -> Error:
        return translate_error(
            exc,
            handshaking=self._state is DTLSState.HANDSHAKING,
            verify_failure=self._ssl_state.verify_failure,
            no_trust_anchors=self._is_client and not self._ctx.has_trust_anchors(),
        )

    def _fail(self, error: Error) -> Error:
        if self._failure is None:
            self._failure = error
            self._state = DTLSState.FAILED
            self._timer.disarm()
        return self._failure

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure
        router = self._router
        if router is not None and router.transport.fatal_error is not None:
            err = router.transport.fatal_error
            raise self._fail(SyscallError(f"the UDP socket failed: {err}", err.errno))

    def _describe_peer(self) -> str:
        addr = self._peer
        return f"{addr[0]}:{addr[1]}" if addr else "the peer"

    def _require_router(self) -> DatagramRouter:
        if self._router is None:
            raise ValueError("no transport: call set_fd() or set_transport() first")
        return self._router

    # ==================================================================
    # data
    # ==================================================================

    @api
    def read(self, n: int = -1) -> bytes:
        """Read one record's data, at most ``n`` bytes (SSL_read_ex).

        ``n`` < 0 reads the whole record.  DTLS keeps message boundaries: a
        read never joins two records.  Raises ``ZeroReturnError`` once the
        peer's close_notify arrived.  Runs the handshake first if needed.
        After :meth:`shutdown` sent close_notify the peer's data can still be
        read until its own close_notify (a second ``shutdown()`` call
        discards it instead).
        """
        size = MAX_RECORD_PLAINTEXT if n < 0 else n
        if size == 0:
            return b""
        self._ensure_established()
        ssl = self._ssl
        assert ssl is not None
        return self._run(lambda: ssl.recv(size))

    @api
    def readinto(self, buffer: Buffer) -> int:
        """Read one record's data into ``buffer``; return the count (SSL_read_ex)."""
        view = memoryview(buffer).cast("B")
        if not view.nbytes:
            return 0
        self._ensure_established()
        ssl = self._ssl
        assert ssl is not None
        return self._run(lambda: ssl.recv_into(view, view.nbytes))

    def pending(self) -> int:
        """Bytes of the current record not yet read (SSL_pending)."""
        return 0 if self._ssl is None else int(self._ssl.pending())

    @api
    def write(self, data: Buffer) -> int:
        """Send ``data`` as one record (SSL_write_ex); returns ``len(data)``.

        Records are not split across datagrams: keep ``data`` within
        :meth:`get_data_mtu` to avoid IP fragmentation.  ``WantWriteError``
        (nonblocking) while the socket refuses datagrams.
        """
        view = memoryview(data).cast("B")
        if not 0 < view.nbytes <= MAX_RECORD_PLAINTEXT:
            raise ValueError(
                f"a DTLS record carries 1 to {MAX_RECORD_PLAINTEXT} bytes, "
                f"not {view.nbytes}"
            )
        self._ensure_established()
        if self._close_sent:
            raise SSLError("cannot write after shutdown() sent close_notify")
        ssl = self._ssl
        assert ssl is not None
        return self._run(lambda: int(ssl.send(view)), writes=True)

    def _ensure_established(self) -> None:
        """Implicitly run the handshake, as SSL_read/SSL_write do."""
        if self._state in (DTLSState.IDLE, DTLSState.HANDSHAKING):
            self._handshake()
        self._raise_if_failed()

    # ==================================================================
    # closing
    # ==================================================================

    @api
    def shutdown(self) -> bool:
        """Send close_notify; True once the peer's arrived too (SSL_shutdown).

        The first call sends close_notify and returns whether the peer's had
        already been received (OpenSSL's 1) or not (0: False).  Later calls
        wait for the peer's (blocking mode) or look for it once (nonblocking,
        False while it has not come); records that arrive meanwhile are
        discarded.  True when there is nothing to close (no handshake, or a
        failed connection).  Over UDP a close_notify can be lost: a blocking
        second call then waits for ever, as OpenSSL's does.
        """
        ssl = self._ssl
        if ssl is None or self._failure is not None or self._state is DTLSState.CLOSED:
            return True
        if self._state is DTLSState.HANDSHAKING:
            raise ValueError(
                "shutdown() during the handshake is not possible (OpenSSL: "
                "SHUTDOWN_WHILE_IN_INIT); free() the connection instead"
            )
        if not self._close_sent:
            self._close_sent = True
            self._call_shutdown()
            self._update_close_state()
            return self._close_received

        def wait_for_peer() -> bool | None:
            return True if ssl.shutdown() else None

        try:
            self._run(wait_for_peer)
        except WantReadError:
            return False
        finally:
            self._close_received = self._close_received or self._ssl_shutdown_received()
            self._update_close_state()
        return True

    def _call_shutdown(self) -> bool:
        ssl = self._ssl
        assert ssl is not None
        try:
            done = bool(ssl.shutdown())
        except SSL.Error as exc:
            self._flush_output()
            raise self._fail(self._translate(exc)) from None
        self._flush_output()
        if self._ssl_shutdown_received():
            self._close_received = True
        return done

    def _ssl_shutdown_received(self) -> bool:
        ssl = self._ssl
        return ssl is not None and bool(ssl.get_shutdown() & SSL.RECEIVED_SHUTDOWN)

    def _update_close_state(self) -> None:
        if self._close_sent and self._close_received:
            self._state = DTLSState.CLOSED
        elif self._close_sent or self._close_received:
            self._state = DTLSState.CLOSING

    # ==================================================================
    # information
    # ==================================================================

    def get_peer_certificate(self) -> x509.Certificate | None:
        """The peer's certificate, if it sent one (SSL_get1_peer_certificate)."""
        cert = None if self._ssl is None else self._ssl.get_peer_certificate()
        return None if cert is None else cert.to_cryptography()

    def get_version(self) -> str | None:
        """The protocol version, ``"DTLSv1.2"`` (SSL_get_version)."""
        if self._ssl is None or not self.is_init_finished():
            return None
        return str(self._ssl.get_protocol_version_name())

    def get_cipher_name(self) -> str | None:
        """The negotiated cipher suite (SSL_CIPHER_get_name(SSL_get_current_cipher))."""
        return None if self._ssl is None else self._ssl.get_cipher_name()

    def get0_alpn_selected(self) -> str | None:
        """The negotiated ALPN protocol (SSL_get0_alpn_selected)."""
        if self._ssl is None:
            return None
        name = self._ssl.get_alpn_proto_negotiated()
        return name.decode() if name else None

    def get_peer_addr(self) -> Address | None:
        """The peer's address (BIO_dgram_get_peer)."""
        return self._peer

    @property
    def state(self) -> DTLSState:
        """Where the connection is in its lifecycle (cf. SSL_get_state)."""
        return self._state

    # ==================================================================
    # lifetime
    # ==================================================================

    def free(self) -> None:
        """Release the connection (SSL_free): nothing is sent.

        The socket given to :meth:`set_fd` stays open (BIO_NOCLOSE).  A call
        blocked on the connection in another thread ends (``ValueError``).
        """
        router = self._router
        if router is None:
            self._freed = True
            return
        with router.lock:
            self.free_locked()

    def free_locked(self) -> None:
        """:meth:`free` for a caller already holding the router's lock."""
        if self._freed:
            return
        self._freed = True
        router = self._router
        if router is not None:
            if self._peer is not None:
                router.remove_route(self._peer)
            if router.unrouted == self._learn_peer:
                router.unrouted = None
            # A call blocked on this connection in another thread looks again
            # and ends; the socket may stay open for other objects.
            router.wake_waiters()
        if self._on_free is not None:
            self._on_free(self)
            self._on_free = None
        self._timer.disarm()
        self._inbox.clear()
        self._drop_router()

    def _drop_router(self) -> None:
        router = self._router
        self._router = None
        if router is not None and router.release():
            router.close(close_transport=self._owns_socket)

    def __enter__(self) -> DTLSConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.is_init_finished() and not self._close_sent:
                blocking = self._blocking
                self._blocking = False
                try:
                    self.shutdown()
                finally:
                    self._blocking = blocking
        except Error:
            pass  # the connection already failed; nothing left to close
        finally:
            self.free()

    def __repr__(self) -> str:
        role = "client" if self._is_client else "server"
        return (
            f"<quicconn.DTLSConnection {role} {self._state.value} "
            f"peer={self._describe_peer()}>"
        )


# -- for the listener (router lock held) ---------------------------------------


def new_listener_connection(
    ctx: DTLSSettings,
    router: DatagramRouter,
    peer: Address,
    ssl: SSL.Connection | None,
    state: SslState | None,
    on_free: Callable[[DTLSConnection], None],
    first_datagram: bytes | None = None,
) -> DTLSConnection:
    """A server connection for ``peer`` on a listener's socket.

    ``ssl`` is the listener's SSL object that passed ``DTLSv1_listen``, with
    its ``state`` (None without cookie exchange; the first ClientHello is
    then ``first_datagram``).  ``on_free`` is called when the connection is
    freed.
    """
    conn = DTLSConnection._from_listener(ctx, router, peer, ssl, state, on_free)
    if first_datagram is not None:
        conn._deliver(first_datagram)
    return conn


def handle_timeout_locked(conn: DTLSConnection) -> int:
    """``conn.DTLSv1_handle_timeout()`` for a caller holding the lock."""
    return conn._handle_timeout()


def event_timeout_locked(conn: DTLSConnection) -> float | None:
    """``conn.get_event_timeout()`` for a caller holding the lock."""
    return conn._event_timeout()


def _transport_closed() -> Error:
    return SyscallError("the transport was closed while waiting")


__all__ = [
    "DTLSConnection",
    "DTLSState",
    "event_timeout_locked",
    "handle_timeout_locked",
    "new_listener_connection",
]
