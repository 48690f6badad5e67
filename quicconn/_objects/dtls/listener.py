"""``DTLSListener``: a DTLS server for many peers on one UDP socket.

OpenSSL's DTLS servers call ``DTLSv1_listen()`` on a fresh ``SSL`` object
until a ClientHello arrives whose cookie proves the sender receives at its
address; only then is that ``SSL`` object the peer's connection, and a new
one listens.  The listener does exactly that, per datagram from an address
it does not know yet: it writes the datagram into its listening ``SSL``
object and calls ``DTLSv1_listen``, which either answers with a
HelloVerifyRequest (sent back to that address; nothing is remembered) or
succeeds.  A success becomes a :class:`~quicconn.DTLSConnection` routed by
the peer's address and queued for :meth:`DTLSListener.accept_connection`;
its ``accept()`` continues the handshake, as ``SSL_accept`` does after
``DTLSv1_listen``.

The listener has the same object shape as the QUIC
:class:`~quicconn.Listener` (``listen``, ``accept_connection``,
``handle_events``, ``get_event_timeout``) and the same call discipline
(:mod:`quicconn._objects.call`); see docs/dtls.md.
"""

from __future__ import annotations

from collections import deque
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL

from ..._constants import ACCEPT_CONNECTION_NO_BLOCK, LISTENER_FLAG_NO_VALIDATE, Role
from ..._errors import Error, SyscallError, WantReadError
from ..._io.transport import Address, DatagramTransport, open_transport
from ..call import api, poll_once, run_call
from ..errors import bind_error
from .connection import (
    DTLSConnection,
    event_timeout_locked,
    handle_timeout_locked,
    new_listener_connection,
)
from .openssl import CookieMint, SslState, drain_records
from .router import DatagramRouter
from .settings import DTLSSettings, new_ssl

__all__ = ["DTLSListener", "DTLSListenerStats", "make_listener"]

#: What an attempt of ``accept_connection()`` finds: ``(connection,)``,
#: ``(None,)`` once the listener was freed (nothing left to wait for), or
#: None while no connection is queued.
_Accepted = tuple[DTLSConnection | None]


@dataclass
class DTLSListenerStats:
    """What the listener did with datagrams from unknown addresses."""

    hello_verify_requests_sent: int = 0
    connections_accepted: int = 0
    datagrams_dropped: int = 0


class DTLSListener:
    """A DTLS server socket: stateless cookie exchange, then one connection per peer.

    Made by :meth:`DTLSContext.new_listener`.  Blocking by default; the
    connections it returns inherit its blocking mode.
    """

    def __init__(
        self,
        ctx: DTLSSettings,
        transport: DatagramTransport,
        flags: int = 0,
        *,
        owns_socket: bool = False,
    ) -> None:
        if flags & ~LISTENER_FLAG_NO_VALIDATE:
            raise ValueError(
                f"unknown DTLS listener flags 0x{flags & ~LISTENER_FLAG_NO_VALIDATE:x}"
            )
        self._ctx = ctx
        self._validate = not flags & LISTENER_FLAG_NO_VALIDATE
        self._owns_socket = owns_socket
        router = DatagramRouter(transport)
        router.unrouted = self._on_unknown_peer
        router.retain()
        self._router: DatagramRouter | None = router
        self._mint = CookieMint()
        self._gate: SSL.Connection | None = None
        self._gate_state: SslState | None = None
        self._listening = False
        self._blocking = True
        self._accept_queue: deque[DTLSConnection] = deque()
        self._connections: dict[Address, DTLSConnection] = {}
        self._last_error = 0
        self.stats = DTLSListenerStats()
        #: Connections queued for accept_connection() before new ClientHellos
        #: are ignored (the client retransmits; nothing is allocated).
        self.max_pending_connections = ctx.max_pending_connections

    # -- OpenSSL-shaped API ---------------------------------------------------

    def listen(self) -> None:
        """Start answering ClientHellos (SSL_listen)."""
        self._require_router()
        self._listening = True

    @api
    def accept_connection(self, flags: int = 0) -> DTLSConnection | None:
        """Return the next cookie-verified connection (SSL_accept_connection).

        Its handshake is still to be completed by its ``accept()``.  A
        blocking listener waits for one; with ``ACCEPT_CONNECTION_NO_BLOCK``
        or a nonblocking listener, None is returned when none is queued
        (after draining the socket once).  A blocking call also returns None
        when another thread frees the listener meanwhile.
        """
        if flags & ~ACCEPT_CONNECTION_NO_BLOCK:
            raise ValueError(f"unknown accept_connection() flags 0x{flags:x}")
        router = self._require_router()
        self._listening = True
        blocking = self._blocking and not flags & ACCEPT_CONNECTION_NO_BLOCK

        def attempt() -> _Accepted | None:
            if self._router is None:
                return (None,)  # freed by another thread while this call waited
            conn = self._pop_accepted()
            if conn is None:
                router.tick()
                conn = self._pop_accepted()
            return None if conn is None else (conn,)

        if not blocking:
            found = poll_once(attempt, router, implicit_events=False)
        else:
            found = run_call(
                attempt,
                router,
                blocking=True,
                implicit_events=False,
                would_block=_nothing_queued,
                stopped=_socket_closed,
            )
        return None if found is None else found[0]

    def get_accept_connection_queue_len(self) -> int:
        """Connections waiting to be accepted (SSL_get_accept_connection_queue_len)."""
        return len(self._accept_queue)

    @api
    def handle_events(self) -> None:
        """Drain the socket, answer ClientHellos, and retransmit due flights.

        For the listener this is SSL_handle_events over everything it owns:
        datagrams are read and filed (cookie exchange for unknown peers), and
        DTLSv1_handle_timeout runs on every connection whose timer is due.
        Never raises.
        """
        router = self._router
        if router is None:
            return
        router.tick()
        for conn in list(self._connections.values()):
            handle_timeout_locked(conn)

    @api
    def get_event_timeout(self) -> float | None:
        """The earliest deadline of its connections (SSL_get_event_timeout).

        None (infinite) when no connection waits for an answer: the cookie
        exchange itself is stateless and has no timer.
        """
        if self._router is None:
            return None
        timeouts = [
            t
            for t in (event_timeout_locked(c) for c in self._connections.values())
            if t is not None
        ]
        return min(timeouts) if timeouts else None

    def net_read_desired(self) -> bool:
        """True while listening (SSL_net_read_desired)."""
        return self._listening and self._router is not None

    def net_write_desired(self) -> bool:
        """Whether datagrams wait behind EAGAIN (SSL_net_write_desired)."""
        router = self._router
        return router is not None and router.transport.has_pending_writes()

    def get_rpoll_descriptor(self) -> int:
        """The descriptor to poll for readability (SSL_get_rpoll_descriptor)."""
        return self._require_router().transport.fileno()

    def get_wpoll_descriptor(self) -> int:
        """The descriptor to poll for writability (SSL_get_wpoll_descriptor)."""
        return self._require_router().transport.fileno()

    def fileno(self) -> int:
        """The socket's descriptor (SSL_get_fd)."""
        return self._require_router().transport.fileno()

    def set_blocking_mode(self, blocking: bool) -> None:
        """Blocking (default) or nonblocking accepts (SSL_set_blocking_mode)."""
        self._blocking = bool(blocking)

    def get_blocking_mode(self) -> bool:
        """Whether accept_connection() blocks (SSL_get_blocking_mode)."""
        return self._blocking

    def get_error(self) -> int:
        """The code of the last failed call, 0 if none (SSL_get_error)."""
        return self._last_error

    def _call_lock(self) -> AbstractContextManager[object]:
        """The router's lock, which every public call runs under (see ``api``)."""
        router = self._router
        return nullcontext() if router is None else router.lock

    def local_address(self) -> Address:
        """The address the socket is bound to (BIO_get_... / getsockname)."""
        return self._require_router().transport.local_address()

    # -- lifetime ---------------------------------------------------------

    def free(self) -> None:
        """Stop listening and release the listener (SSL_free).

        Connections already accepted keep working until they are freed; the
        socket closes when the last of them (and the listener) is gone, and
        only if the listener created it.  Queued, unaccepted connections are
        freed.
        """
        router = self._router
        if router is None:
            return
        with router.lock:
            self._listening = False
            self._router = None
            router.unrouted = None
            queued = list(self._accept_queue)
            self._accept_queue.clear()
            for conn in queued:
                conn.free_locked()
            router.wake_waiters()  # a blocked accept_connection() returns None
            if router.release():
                router.close(close_transport=self._owns_socket)

    def __enter__(self) -> DTLSListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.free()

    def __repr__(self) -> str:
        where = self.local_address() if self._router is not None else "freed"
        return f"<quicconn.DTLSListener {where} peers={len(self._connections)}>"

    # -- datagrams from unknown addresses (router callback, lock held) ------

    def _on_unknown_peer(self, data: bytes, addr: Address) -> None:
        router = self._router
        if (
            router is None
            or not data
            or not self._listening
            or len(self._accept_queue) >= self.max_pending_connections
        ):
            self.stats.datagrams_dropped += 1
            return
        if not self._validate:
            self._admit(router, addr, None, None, data)
            return
        gate, state = self._listening_ssl(router)
        state.peer = addr
        try:
            gate.bio_write(data)
            gate.DTLSv1_listen()
        except SSL.WantReadError:
            # A HelloVerifyRequest, or nothing for a datagram that is not a
            # ClientHello; either way no state is kept.
            self._reply(router, gate, addr)
            return
        except (SSL.Error, ValueError):
            drain_records(gate)
            self._gate = None  # start from a clean SSL object
            self.stats.datagrams_dropped += 1
            return
        drain_records(gate)
        self._gate = None
        self._gate_state = None
        self._admit(router, addr, gate, state)

    def _admit(
        self,
        router: DatagramRouter,
        addr: Address,
        ssl: SSL.Connection | None,
        state: SslState | None,
        first_datagram: bytes | None = None,
    ) -> DTLSConnection:
        conn = new_listener_connection(
            self._ctx,
            router,
            addr,
            ssl,
            state,
            self._on_connection_freed,
            first_datagram,
        )
        self._connections[addr] = conn
        self._accept_queue.append(conn)
        self.stats.connections_accepted += 1
        return conn

    def _listening_ssl(self, router: DatagramRouter) -> tuple[SSL.Connection, SslState]:
        if self._gate is None or self._gate_state is None:
            state = SslState(cookies=self._mint, clock=router.clock)
            ssl = new_ssl(self._ctx, state, self._ctx.max_datagram_size)
            ssl.set_accept_state()
            self._gate, self._gate_state = ssl, state
        return self._gate, self._gate_state

    def _reply(
        self, router: DatagramRouter, gate: SSL.Connection, addr: Address
    ) -> None:
        records = drain_records(gate)
        if records:
            self.stats.hello_verify_requests_sent += 1
            router.transport.send_batch([(r, addr) for r in records])

    def _on_connection_freed(self, conn: DTLSConnection) -> None:
        peer = conn.get_peer_addr()
        if peer is not None and self._connections.get(peer) is conn:
            del self._connections[peer]
        if conn in self._accept_queue:
            self._accept_queue.remove(conn)

    def _pop_accepted(self) -> DTLSConnection | None:
        if not self._accept_queue:
            return None
        conn = self._accept_queue.popleft()
        conn.set_blocking_mode(self._blocking)
        return conn

    def _require_router(self) -> DatagramRouter:
        if self._router is None:
            raise ValueError("the listener was freed")
        return self._router


def make_listener(ctx: DTLSSettings, where: Any, flags: int) -> DTLSListener:
    """Build a DTLS listener on a socket, an address to bind, or a transport."""
    if ctx.role is not Role.SERVER:
        raise ValueError(
            "new_listener() needs a server context: DTLSContext(quicconn.SERVER)"
        )
    if not ctx.has_certificate():
        raise ValueError(
            "the server DTLSContext has no certificate: call load_cert_chain()"
        )
    try:
        transport, owns_socket = open_transport(where, "new_listener()")
    except OSError as exc:
        raise bind_error(where, exc) from exc
    return DTLSListener(ctx, transport, flags, owns_socket=owns_socket)


def _nothing_queued() -> Error:
    return WantReadError("no connection is queued")


def _socket_closed() -> Error:
    return SyscallError("the listener's socket was closed while accepting")
